"""Each import (and each export) is one partition of its assets, keyed by its id."""
import dagster as dg

from assets.names import EXPORTS_PARTITIONS, IMPORTS_PARTITIONS

imports_partitions = dg.DynamicPartitionsDefinition(name=IMPORTS_PARTITIONS)
exports_partitions = dg.DynamicPartitionsDefinition(name=EXPORTS_PARTITIONS)

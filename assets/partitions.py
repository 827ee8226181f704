"""Each import is one partition of the import assets, keyed by its import id."""
import dagster as dg

imports_partitions = dg.DynamicPartitionsDefinition(name="imports")

"""The code location: one Definitions for everything (`dagster dev -m assets.definitions`)."""
import dagster as dg

from assets.imports import import_job, import_logs, raw_file, subscribers, validated_frame
from assets.resources import StoreResource

defs = dg.Definitions(
    assets=[raw_file, validated_frame, subscribers, import_logs],
    jobs=[import_job],
    resources={"store": StoreResource()},
)

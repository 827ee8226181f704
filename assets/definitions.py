"""The code location: one Definitions for everything (`dagster dev -m assets.definitions`)."""
import dagster as dg

from assets.exports import export_job, exports_automation, named_exports_assets, subscriber_export
from assets.imports import (import_job, import_logs, raw_file, store_integrity, subscribers,
                            validated_frame)
from assets.launch import new_import_job
from assets.resources import StoreResource
from assets.revert import revert_job
from assets.retention import retention_job, retention_schedule
from assets.sensors import inbox_sensor, scheduled_imports
from assets.sources import source_schedules, source_sensors

defs = dg.Definitions(
    assets=[raw_file, validated_frame, subscribers, import_logs, subscriber_export,
            *named_exports_assets],
    asset_checks=[store_integrity],
    jobs=[import_job, export_job, retention_job, new_import_job, revert_job],
    schedules=[retention_schedule, *source_schedules],
    sensors=[inbox_sensor, scheduled_imports, *([exports_automation] if named_exports_assets else []),
             *source_sensors],
    resources={"store": StoreResource()},
    # In process: the multiprocess executor costs seconds per step, and every job here is short.
    executor=dg.in_process_executor,
)

"""Exports as assets (spec §6): one partition per `mail-pipeline export`, and one asset per named
export declared in `exports.toml`, refreshed whenever the subscriber table changes."""
import os
from typing import Optional

import dagster as dg

from assets.config import config_class
from assets.imports import subscribers
from assets.names import EXPORT_JOB, POOL
from assets.partitions import exports_partitions
from assets.resources import StoreResource
from mail_pipeline import exports, named_exports
from mail_pipeline.errors import MailPipelineError

ExportConfig = config_class(exports.ExportOptions, "ExportConfig")


def _metadata(result: dict) -> dict:
    where = result["path"]
    return {"path": dg.MetadataValue.url(where) if "://" in where else dg.MetadataValue.path(where), "row_count": result["rows"],
            "sha256": result["sha256"], "size": result["size"]}


@dg.asset(partitions_def=exports_partitions, deps=[subscribers], pool=POOL, group_name="exports",
          kinds={"duckdb"})
def subscriber_export(context: dg.AssetExecutionContext, config: ExportConfig,
                      store: StoreResource) -> dg.MaterializeResult:
    """One export of the subscriber table (`mail-pipeline export`), filtered, as CSV, JSON Lines
    or Parquet; the file's path, row count and checksum are the metadata."""
    try:
        options = exports.build_export(config.model_dump())
        result = exports.run_export(context.partition_key, options, store.path())
    except MailPipelineError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    return dg.MaterializeResult(metadata={**_metadata(result), "filters": dg.MetadataValue.json(
        options.model_dump(exclude={"format", "gzip", "out"}))})


def named_export_asset(name: str, options: exports.ExportOptions) -> dg.AssetsDefinition:
    @dg.asset(name=f"export_{name}", deps=[subscribers], pool=POOL, group_name="exports",
              kinds={"duckdb", options.format}, automation_condition=dg.AutomationCondition.eager(),
              description=f"Named export {name!r} ({options.format}), refreshed when the subscriber "
                          "table changes.")
    def _export(store: StoreResource) -> dg.MaterializeResult:
        try:
            result = named_exports.materialize(name, options, store.path())
        except MailPipelineError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        return dg.MaterializeResult(metadata=_metadata(result))
    return _export


def _declared() -> tuple[dict[str, exports.ExportOptions], Optional[str]]:
    """The named exports. A bad declarations file fails the code location's load (the UI shows
    why), except for the command line, which sets MAIL_PIPELINE_IGNORE_BAD_EXPORTS: an
    import must not stop over a typo in an export."""
    try:
        return named_exports.load(named_exports.declarations_file()), None
    except MailPipelineError as exc:
        if not os.environ.get("MAIL_PIPELINE_IGNORE_BAD_EXPORTS"):
            raise
        return {}, str(exc)


_named, declaration_error = _declared()
named_exports_assets = [named_export_asset(name, options) for name, options in _named.items()]

# Dagster's default automation sensor starts stopped; this one runs as soon as the daemon does
# (`mail-pipeline ui`), so named exports follow the subscriber table without a click. It reads
# only the instance's event log, never the store.
exports_automation = dg.AutomationConditionSensorDefinition(
    "named_exports_automation", target=dg.AssetSelection.assets(*named_exports_assets),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-materialises each named export after the subscriber table changes.")

export_job = dg.define_asset_job(
    EXPORT_JOB, selection=[subscriber_export], executor_def=dg.in_process_executor,
    description="One export: pick a partition (the export id) and give its filters and format.")

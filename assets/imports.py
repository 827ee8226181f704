"""The import assets, one partition per import: raw file → validated frame → subscribers → logs."""
from contextlib import contextmanager
from typing import Optional

import dagster as dg

from assets.config import ImportConfig
from assets.partitions import imports_partitions
from assets.resources import StoreResource
from mail_pipeline import control, home, logs, pipeline
from mail_pipeline.errors import MailPipelineError, disk_full, disk_full_message
from mail_pipeline.home import POOL
from mail_pipeline.options import build


@contextmanager
def reported(import_id: str, run_id: Optional[str] = None):
    """A user's mistake fails the step with its one plain sentence, which the run keeps for the
    import document, and adds it to the import's log. Each stage first notes the run's process
    and honours a pause or cancel asked for in the meantime."""
    try:
        if run_id is not None:
            folder = pipeline.Folder.of(import_id)
            control.register(folder.path, run_id)  # (its write creates the folder)
            control.check(folder.path)
        yield
    except MailPipelineError as exc:
        try:
            folder = pipeline.Folder.of(import_id)
        except MailPipelineError:  # the partition key itself is not a valid import id
            folder = None
        if folder is not None and folder.path.is_dir():
            logs.append_log(folder.path, f"error: {exc}")
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except Exception as exc:
        # A full disk is the user's to mend, not a bug: one sentence, and how to carry on.
        if not disk_full(exc, home.home()):
            raise
        message = disk_full_message(home.home(), import_id)
        try:
            logs.append_log(pipeline.Folder.of(import_id).path, f"error: {message}")
        except OSError:
            pass  # (the log is on the full disk too)
        raise dg.Failure(description=message, allow_retries=False) from None


def _failed_preview(folder: pipeline.Folder) -> dg.MetadataValue:
    """The first failed rows as a table: the file's columns, then the reason."""
    header, rows = logs.failed_preview(folder.path)
    names = [f"{i}: {name}" for i, name in enumerate(header)]  # header names may repeat
    schema = dg.TableSchema(columns=[dg.TableColumn(n, "string") for n in names])
    return dg.MetadataValue.table(records=[dg.TableRecord(dict(zip(names, row))) for row in rows],
                                  schema=schema)


@dg.asset(partitions_def=imports_partitions, group_name="imports", kinds={"csv"})
def raw_file(context: dg.AssetExecutionContext, config: ImportConfig) -> dg.MaterializeResult:
    """The source, copied into the import's folder as UTF-8 CSV (a ZIP gives its first CSV).
    Its `row_count` counts lines after the header; `validated_frame` counts parsed records."""
    with reported(context.partition_key, context.run.run_id):
        options = build(config.model_dump())
        staged = pipeline.stage_raw(pipeline.Folder.of(context.partition_key), options)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(staged["path"]), "origin": staged["origin"],
        "size": staged["size"], "sha256": staged["sha256"], "row_count": staged["lines"],
    })


@dg.asset(partitions_def=imports_partitions, deps=[raw_file], group_name="imports",
          kinds={"polars", "parquet"})
def validated_frame(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Rows read, mapped, checked (Pandera) and deduplicated; failures and duplicates routed."""
    with reported(context.partition_key, context.run.run_id):
        summary = pipeline.validate_import(pipeline.Folder.of(context.partition_key))
    return dg.MaterializeResult(metadata={
        "number_of_records": summary["number_of_records"], "valid": summary["valid"],
        "failed": summary["failed"], "skipped_duplicate": summary["skipped_duplicate"],
        "mapping": dg.MetadataValue.md("\n".join(f"- {line}" for line in summary["mapping"])),
    })


@dg.asset(deps=[validated_frame], pool=POOL, group_name="store", kinds={"duckdb"})
def subscribers(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
    """The subscriber table in DuckDB, merged with the run's import in batches (one transaction
    each). It is not partitioned: every import merges into the same table."""
    import_id = context.partition_key

    def progress(p) -> None:
        context.log.info(f"import {import_id}: committed batch {p.batch}/{p.batches} ({p.rows_done} rows)")

    with reported(import_id, context.run.run_id):
        counts = pipeline.merge_import(pipeline.Folder.of(import_id), store.path(), progress)
    return dg.MaterializeResult(metadata={
        "import_id": import_id, "database": dg.MetadataValue.path(str(store.path())),
        **{f"rows_{category}": int(n) for category, n in sorted(counts.items())},
    })


@dg.asset(partitions_def=imports_partitions, deps=[subscribers], group_name="imports", kinds={"csv"})
def import_logs(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """One log per category (added, updated, failed, skipped_*), the plain-text log, the stats.
    Built from the merge's per-batch outcomes, so it never opens the store."""
    import_id = context.partition_key
    with reported(import_id):
        folder = pipeline.Folder.of(import_id)
        stats = pipeline.write_import_logs(folder)
    return dg.MaterializeResult(metadata={
        "number_of_records": stats["number_of_records"],
        **{category: n for category, n in stats["subscribers"].items()},
        "logs": dg.MetadataValue.path(str(folder.path / "logs")),
        "failed_preview": _failed_preview(folder),
    })


import_job = dg.define_asset_job(
    "import_job",
    selection=[raw_file, validated_frame, subscribers, import_logs],  # partitioned by import
    executor_def=dg.in_process_executor,  # the multiprocess executor costs seconds per step
    description="One subscriber import: pick a partition (the import id) and give its options.",
)

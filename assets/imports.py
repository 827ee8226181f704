"""The import assets, one partition per import: raw file → validated frame → subscribers → logs."""
from contextlib import contextmanager

import dagster as dg
import duckdb
from dagster._core.errors import DagsterExecutionInterruptedError

from assets.config import ImportConfig
from assets.names import IMPORT_JOB, POOL, Tags
from assets.partitions import imports_partitions
from assets.resources import StoreResource
from mail_pipeline import control, home, logs, pipeline
from mail_pipeline import store as subscriber_store
from mail_pipeline.errors import (MailPipelineError, disk_full, disk_full_message, out_of_memory,
                                   out_of_memory_message)
from mail_pipeline.options import build


def _asked(context: dg.AssetExecutionContext, interrupted: bool = False):
    """The request the run is under: its tag (`imports pause`, `cancel`); else a termination from
    the UI (the run CANCELING, or marked CANCELED at once), a cancel, since Dagster does not stop a
    run that no launcher started; else, once interrupted mid-step (Ctrl-C), a pause. A request
    decided here is noted on the run, where readers look."""
    run = context.instance.get_run_by_id(context.run.run_id)
    noted = (run.tags.get(Tags.REQUEST) or None) if run else None
    asked = noted
    if asked is None and run is not None and run.status in (dg.DagsterRunStatus.CANCELING,
                                                            dg.DagsterRunStatus.CANCELED):
        asked = "cancel"
    elif asked is None and interrupted:
        asked = "pause"
    if asked != noted:
        context.instance.add_run_tags(context.run.run_id, {Tags.REQUEST: asked})
    return asked


def _requested(context: dg.AssetExecutionContext) -> control.Requested:
    """What the stages ask between batches."""
    return lambda: _asked(context)


def _on_stage(context: dg.AssetExecutionContext) -> pipeline.OnStage:
    """A stage that downloads, or waits for the store, says so on its run, where readers look."""
    def say(stage: str, detail: str) -> None:
        shown = stage if stage in ("downloading", "waiting") else ""
        context.instance.add_run_tags(context.run.run_id, {
            Tags.STAGE: shown, Tags.WAITING_FOR: detail if stage == "waiting" else ""})
    return say


@contextmanager
def reported(context: dg.AssetExecutionContext, stoppable: bool = True, again: str = "resume"):
    """A user's mistake fails the step with its one plain sentence, which the run keeps for the
    import document, and adds it to the import's log. Each stage first honours a pause or cancel
    asked for in the meantime. `again` is the command that carries on after a pause."""
    import_id = context.partition_key
    try:
        if stoppable:
            control.check(_requested(context), import_id, again)
        yield
    except MailPipelineError as exc:
        raise _failure(context, exc) from None
    except (DagsterExecutionInterruptedError, KeyboardInterrupt, duckdb.InterruptException):
        # Interrupted mid-batch, which rolled back: by Ctrl-C a pause, by Terminate a cancel.
        raise _failure(context, control.stopped(_asked(context, interrupted=True), import_id,
                                                again)) from None
    except Exception as exc:
        # DuckDB reports an interrupt that reached it through an Arrow stream in these words.
        if isinstance(exc, RuntimeError) and str(exc) == "Query interrupted":
            raise _failure(context, control.stopped(_asked(context, interrupted=True), import_id,
                                                    again)) from None
        # A full disk, or a memory cap too low, is the user's to mend, not a bug: one sentence,
        # and how to carry on (the batches committed stay; a resume goes on from there).
        if out_of_memory(exc):
            raise _failure(context, MailPipelineError(
                out_of_memory_message(subscriber_store.memory_limit(), import_id))) from None
        if not disk_full(exc, home.home()):
            raise
        raise _failure(context, MailPipelineError(disk_full_message(home.home(), import_id))) from None


def _failure(context: dg.AssetExecutionContext, exc: MailPipelineError) -> dg.Failure:
    """The step's failure with the sentence, which also goes to the import's log and the run's."""
    _log_error(context.partition_key, str(exc))
    context.log.error(str(exc))
    # A stop says which request it honoured, so a failure after a request is told from it.
    stopped = {Tags.REQUEST: exc.request} if isinstance(exc, control.Stopped) else {}
    return dg.Failure(description=str(exc), allow_retries=False, metadata=stopped)


def _log_error(import_id: str, message: str) -> None:
    try:
        folder = pipeline.Folder.of(import_id)
        if folder.path.is_dir():
            logs.append_log(folder.path, f"error: {message}")
    except (MailPipelineError, OSError):
        pass  # (not a valid import id, or the log is on the full disk too)


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
    with reported(context):
        options = build(config.model_dump())
        staged = pipeline.stage_raw(pipeline.Folder.of(context.partition_key), options,
                                    on_stage=_on_stage(context))
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(staged["path"]), "origin": staged["origin"],
        "size": staged["size"], "sha256": staged["sha256"], "row_count": staged["lines"],
    })


@dg.asset(partitions_def=imports_partitions, deps=[raw_file], group_name="imports",
          kinds={"polars", "parquet"})
def validated_frame(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Rows read, mapped, checked (Pandera) and deduplicated; failures and duplicates routed."""
    with reported(context):
        summary = pipeline.validate_import(pipeline.Folder.of(context.partition_key))
    return dg.MaterializeResult(metadata={
        "number_of_records": summary["number_of_records"], "valid": summary["valid"],
        "failed": summary["failed"], "skipped_duplicate": summary["skipped_duplicate"],
        "mapping": dg.MetadataValue.md("\n".join(f"- {line}" for line in summary["mapping"])),
    })


@dg.asset(deps=[validated_frame], pool=POOL, group_name="store", kinds={"duckdb"})
def subscribers(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
    """The subscriber table in DuckDB, merged with the run's import in batches (one transaction
    each). It is not partitioned: every import merges into the same table. Its metadata are the
    store's totals after the import."""
    import_id = context.partition_key

    def progress(p) -> None:
        context.log.info(f"import {import_id}: committed batch {p.batch}/{p.batches} ({p.rows_done} rows)")

    with reported(context):
        counts = pipeline.merge_import(pipeline.Folder.of(import_id), store.path(), progress,
                                       requested=_requested(context), on_stage=_on_stage(context))
        with subscriber_store.writer(store.path()) as con:
            totals = subscriber_store.totals(con)
    return dg.MaterializeResult(metadata={
        "import_id": import_id, "database": dg.MetadataValue.path(str(store.path())),
        **{f"rows_{category}": int(n) for category, n in sorted(counts.items())},
        "subscribers_total": totals["subscribers"],
        "subscribers_by_status": dg.MetadataValue.json(totals["by_status"]),
        "subscriptions_by_list": dg.MetadataValue.json(totals["by_list"]),
    })


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec("emails_unique", asset=subscribers,
                             description="Each normalized email is one subscriber."),
           dg.AssetCheckSpec("no_subscription_without_subscriber", asset=subscribers,
                             description="Every subscription belongs to a stored subscriber, "
                                         "once per list.")],
    pool=POOL)
def store_integrity(store: StoreResource):
    """The store's invariants, after every import (and on demand from the UI). A store that
    cannot be read now (held too long by another process) fails the checks, not the import."""
    try:
        with subscriber_store.writer(store.path()) as con:
            found = subscriber_store.integrity(con)
    except MailPipelineError as exc:
        for name in ("emails_unique", "no_subscription_without_subscriber"):
            yield dg.AssetCheckResult(check_name=name, asset_key=subscribers.key, passed=False,
                                      metadata={"error": str(exc)})
        return
    yield dg.AssetCheckResult(check_name="emails_unique", asset_key=subscribers.key,
                              passed=found["duplicate_emails"] == 0,
                              metadata={"duplicate_emails": found["duplicate_emails"]})
    broken = found["orphan_subscriptions"] + found["duplicate_subscriptions"]
    yield dg.AssetCheckResult(check_name="no_subscription_without_subscriber",
                              asset_key=subscribers.key, passed=broken == 0,
                              metadata={k: found[k] for k in ("orphan_subscriptions",
                                                              "duplicate_subscriptions")})


@dg.asset(partitions_def=imports_partitions, deps=[subscribers], group_name="imports", kinds={"csv"},
          check_specs=[dg.AssetCheckSpec("categories_add_up", asset="import_logs",
                                         description="Every record read is in exactly one category.")])
def import_logs(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """One log per category (added, updated, failed, skipped_*), the plain-text log, the stats.
    Built from the merge's per-batch outcomes, so it never opens the store."""
    with reported(context, stoppable=False):
        folder = pipeline.Folder.of(context.partition_key)
        stats = pipeline.write_import_logs(folder)
    counted = sum(stats["subscribers"].values())
    return dg.MaterializeResult(
        metadata={
            "number_of_records": stats["number_of_records"],
            **{category: n for category, n in stats["subscribers"].items()},
            "logs": dg.MetadataValue.path(str(folder.logs)),
            "failed_preview": _failed_preview(folder),
        },
        check_results=[dg.AssetCheckResult(
            check_name="categories_add_up", passed=counted == stats["number_of_records"],
            metadata={"records_read": stats["number_of_records"], "in_categories": counted})])


import_job = dg.define_asset_job(
    IMPORT_JOB,
    selection=dg.AssetSelection.assets(raw_file, validated_frame, subscribers, import_logs),
    executor_def=dg.in_process_executor,  # the multiprocess executor costs seconds per step
    description="One subscriber import: pick a partition (the import id) and give its options. "
                "To start one without choosing an id, launch `new_import`.",
)

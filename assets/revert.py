"""`revert_job`: undo an import (issue 16), as a run of its own on the import's partition, so the
UI shows it beside the import's runs. Its one op claims the store's pool and calls the core."""
import dagster as dg

from assets.imports import reported, _requested
from assets.names import POOL, REVERT_JOB
from assets.partitions import imports_partitions
from assets.resources import StoreResource
from mail_pipeline import logs, pipeline, revert
from mail_pipeline import store as subscriber_store


@dg.op(pool=POOL,
       description="Put back the before-images of the import's batches, newest first, one "
                   "transaction each (batches already put back are skipped).")
def revert_import(context: dg.OpExecutionContext, store: StoreResource) -> dict:
    import_id = context.partition_key
    folder = pipeline.Folder.of(import_id)

    def progress(p: revert.Progress) -> None:
        said = f"reverted batch {p.batch}/{p.batches} ({p.subscribers} subscribers put back)"
        context.log.info(f"import {import_id}: {said}")
        if folder.path.is_dir():
            logs.append_log(folder.path, said)

    with reported(context, again="revert"):
        with subscriber_store.writer(store.path()) as con:
            done = revert.revert(con, import_id, progress, _requested(context))
            totals = subscriber_store.totals(con)
        if folder.path.is_dir():
            logs.append_log(folder.path, f"reverted: {done['subscribers_removed']} subscribers "
                            f"removed, {done['subscribers_restored']} restored")
    # The subscriber table changed: the UI (and named exports) see it as a materialization.
    context.log_event(dg.AssetMaterialization("subscribers", metadata={
        "reverted_import": import_id, "subscribers_total": totals["subscribers"], **done}))
    return done


@dg.job(name=REVERT_JOB, partitions_def=imports_partitions, executor_def=dg.in_process_executor,
        description="Undo an import: pick its partition (the import id). Refused when a later "
                    "import changed the same subscribers; resumable after a kill.")
def revert_job():
    revert_import()

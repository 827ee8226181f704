"""The retention schedule (spec §4, §5): every night, purge the logs and working files of imports
finished more than `days` ago (7 by default), their before-images in the store (after which they
cannot be reverted) and their partitions."""
from datetime import datetime, timezone

import dagster as dg
from pydantic import Field

from assets.names import IMPORT_JOB, POOL, Tags
from assets.partitions import imports_partitions
from assets.resources import StoreResource
from mail_pipeline import retention, reuse, revert
from mail_pipeline import store as subscriber_store
from mail_pipeline.layout import Folder


class RetentionConfig(dg.Config):
    days: int = Field(retention.DEFAULT_DAYS,
                      description="Purge the logs and working files of imports finished more than "
                                  "this many days ago.")


def _finished_at(instance: dg.DagsterInstance, import_id: str):
    runs = instance.get_run_records(dg.RunsFilter(job_name=IMPORT_JOB,
                                                  tags={Tags.PARTITION: import_id}), limit=1)
    # Only imports that are over for good: a failed or paused one may still be resumed.
    if (not runs or runs[0].end_time is None or runs[0].dagster_run.status != dg.DagsterRunStatus.SUCCESS
            and not _cancelled(runs[0].dagster_run)):
        return None
    return datetime.fromtimestamp(runs[0].end_time, timezone.utc)


def _cancelled(run: dg.DagsterRun) -> bool:
    asked = run.tags.get(Tags.REQUEST)
    if run.status == dg.DagsterRunStatus.CANCELED:
        return asked != "pause"
    return asked == "cancel"


@dg.op(pool=POOL)
def purge_old_imports(context: dg.OpExecutionContext, config: RetentionConfig,
                      store: StoreResource) -> int:
    """Purge what is due, never an import that has not finished. The before-images go first:
    a purge cut short is finished by the next one (the partitions, which name what is due, go
    last)."""
    instance = context.instance
    now = retention.utcnow()
    ids = instance.get_dynamic_partitions(imports_partitions.name)
    due = retention.due({i: _finished_at(instance, i) for i in ids}, config.days, now)
    images = 0
    if due and store.path().exists():  # (a purge never creates the store)
        with subscriber_store.writer(store.path()) as con:
            images = revert.forget(con, due)
    for import_id in due:
        if retention.purge(Folder.of(import_id), now):
            context.log.info(f"import {import_id}: logs and working files purged")
        instance.delete_dynamic_partition(imports_partitions.name, import_id)
    previews = retention.purge_previews(config.days, now)
    reused = retention.purge_older(reuse.root(), config.days, now)  # unused validated frames
    context.add_output_metadata({"imports_purged": len(due), "before_images_purged": images,
                                 "previews_purged": previews,
                                 "validated_frames_purged": reused})
    return len(due)


@dg.job(executor_def=dg.in_process_executor,
        description="Purge logs and working files of imports finished more than N days ago.")
def retention_job():
    purge_old_imports()


retention_schedule = dg.ScheduleDefinition(
    job=retention_job, cron_schedule="0 3 * * *", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 03:00: purge imports finished more than 7 days ago "
                "(set `days` in the run config to change it).")

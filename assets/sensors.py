"""The file-drop sensor (spec §5). It only looks at files and the instance: it never opens the
store, so it never waits on an import's lock."""
from datetime import datetime, timezone

import dagster as dg

from assets.imports import import_job
from assets.partitions import imports_partitions
from mail_pipeline import home, inbox, pending
from mail_pipeline.files import read_json


@dg.sensor(job=import_job, minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING,
           description="A file dropped into $MAIL_PIPELINE_HOME/inbox/ (or inbox/<list>/) becomes "
                       "one import; a sidecar <file>.json configures it.")
def inbox_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    requests, new_ids = [], []
    for dropped in inbox.settled_files():
        try:
            options = inbox.options_for(dropped)
        except Exception as exc:  # one bad file never holds up the others
            context.log.warning(f"inbox: {dropped.relative!r} not imported: {exc}")
            continue
        owner = home.key_owner(dropped.key)
        if owner is not None:
            # Taken before. Requested again only if its run never started (the daemon stopped
            # between the claim and the launch); the run key keeps that from running twice.
            if _has_run(context.instance, owner):
                continue
            import_id = owner
        else:
            import_id = home.new_import_id()
            if home.claim_key(dropped.key, import_id) is not None:  # another tick won the race
                home.import_dir(import_id).rmdir()
                continue
        new_ids.append(import_id)
        requests.append(dg.RunRequest(
            run_key=dropped.key, partition_key=import_id,
            run_config={"ops": {"raw_file": {"config": options.model_dump()}}},
            tags={"mail_pipeline/kind": "import", "mail_pipeline/inbox": dropped.relative}))
        context.log.info(f"inbox: {dropped.relative} → import {import_id}")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[imports_partitions.build_add_request(new_ids)] if new_ids else [])


def _has_run(instance: dg.DagsterInstance, import_id: str) -> bool:
    return instance.get_runs_count(dg.RunsFilter(job_name=import_job.name,
                                                 tags={"dagster/partition": import_id})) > 0


@dg.sensor(job=import_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts scheduled imports (--at, GreenArrow begins_at) when their time comes.")
def scheduled_imports(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    now = datetime.now(timezone.utc)
    requests = []
    root = home.imports_dir()
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not pending.due(folder, now) or _has_run(context.instance, folder.name):
            continue
        requested = read_json(folder / "requested.json") or {}
        requests.append(dg.RunRequest(
            run_key=f"scheduled:{folder.name}", partition_key=folder.name,
            run_config={"ops": {"raw_file": {"config": requested.get("options", {})}}},
            tags={"mail_pipeline/kind": "import"}))
        context.log.info(f"import {folder.name}: its time has come")
    return dg.SensorResult(run_requests=requests)

"""The file-drop sensor (spec §5) and the start of scheduled imports. Both only look at files and
the instance: they never open the store, so they never wait on an import."""
import json
from datetime import datetime, timezone
from typing import Optional

import dagster as dg

from assets.imports import import_job
from assets.names import IMPORT_JOB, Tags, import_run_config, pending_key, readable_tags
from assets.partitions import imports_partitions
from mail_pipeline import home, inbox
from mail_pipeline.options import ImportOptions
from mail_pipeline.clock import iso_utc


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
        request = claimed_request(context.instance, dropped.key, options, new_ids, {
            Tags.KIND: "import", Tags.INBOX: dropped.relative, **readable_tags(options)})
        if request is not None:
            requests.append(request)
            context.log.info(f"inbox: {dropped.relative} → import {request.partition_key}")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[imports_partitions.build_add_request(new_ids)] if new_ids else [])


def claimed_request(instance: dg.DagsterInstance, key: str, options: ImportOptions, new_ids: list[str],
                    tags: dict[str, str]) -> Optional[dg.RunRequest]:
    """The run request of a file bound to `key` (its run key too), or None when it was imported
    already or another tick has just taken it. A new import's id is added to `new_ids`, whose
    partitions the sensor adds with its requests."""
    import_id, state = claim(instance, key)
    if state in ("ran", "lost"):
        return None
    if state == "new":
        new_ids.append(import_id)
    return dg.RunRequest(run_key=key, partition_key=import_id, run_config=import_run_config(options),
                         tags=tags)


def claim(instance: dg.DagsterInstance, key: str) -> tuple[Optional[str], str]:
    """The import a file's identity (or a pull's bytes) is bound to, and what to do about it:
    `new` (a new import, whose partition must be added), `again` (bound before but its run never
    started: the daemon stopped between the claim and the launch; the run key keeps it from
    running twice), `ran` (nothing to do), `lost` (another tick bound it a moment ago)."""
    owner = home.key_owner(key)
    if owner is not None:
        return owner, "ran" if _has_run(instance, owner) else "again"
    import_id = home.new_import_id()
    if home.claim_key(key, import_id) is not None:
        home.import_dir(import_id).rmdir()
        return None, "lost"
    # Its run is made by the daemon a moment later: until then it reads `scheduled`.
    instance.run_storage.set_cursor_values({pending_key(import_id): json.dumps(
        {"state": "starting", "created_at": iso_utc(datetime.now(timezone.utc))})})
    return import_id, "new"


def _has_run(instance: dg.DagsterInstance, import_id: str) -> bool:
    return instance.get_runs_count(dg.RunsFilter(job_name=IMPORT_JOB,
                                                 tags={Tags.PARTITION: import_id})) > 0


@dg.sensor(job=import_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts scheduled imports (--at, GreenArrow begins_at) when their time comes.")
def scheduled_imports(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """A scheduled import has a partition and, until it runs, a record in the instance's
    key-value storage with its time and options; when the time comes it becomes a run (its run
    key: once only). A cancelled one says so in its record and never starts."""
    instance = context.instance
    now = iso_utc(datetime.now(timezone.utc))
    ids = instance.get_dynamic_partitions(imports_partitions.name)
    records = instance.run_storage.get_cursor_values({pending_key(i) for i in ids}) if ids else {}
    requests = []
    for import_id in ids:
        record = json.loads(records.get(pending_key(import_id)) or "null")
        if (not record or record["state"] != "scheduled" or record["begins_at"] > now
                or _has_run(instance, import_id)):  # (its record stays once it runs)
            continue
        options = ImportOptions.model_validate(record["options"])
        requests.append(dg.RunRequest(
            run_key=f"scheduled:{import_id}", partition_key=import_id,
            run_config=import_run_config(options),
            tags={Tags.KIND: "import", Tags.BEGINS_AT: record["begins_at"], **readable_tags(options),
                  **record.get("tags", {})}))  # (the HTTP API's and its key's)
        context.log.info(f"import {import_id}: its time has come")
    return dg.SensorResult(run_requests=requests)

"""Declared sources (`imports.toml`): a schedule for each source pulled on a cron, a sensor for
each watched folder or prefix, both named after the source and running by default under
`mail-pipeline ui`. They only look at the source and the instance: the runs they request
download the files (state `downloading`) and import them like any other."""
from typing import Optional, Union

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string

from assets.imports import import_job
from assets.names import IMPORT_JOB, Tags, import_run_config, options_of, source_tags
from assets.partitions import imports_partitions
from assets.sensors import claim, claimed_request
from mail_pipeline import remote, sources
from mail_pipeline.errors import MailPipelineError

# Names the code location already uses: a source may not take one.
_TAKEN = {"inbox_sensor", "scheduled_imports", "named_exports_automation", "retention_job_schedule"}


def pull_schedule(declared: sources.Declared) -> dg.ScheduleDefinition:
    @dg.schedule(name=declared.name, cron_schedule=declared.schedule, job=import_job,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Pulls {declared.source} ({declared.schedule}) and imports it, unless "
                             "it holds the same bytes as the last pull.")
    def _pull(context: dg.ScheduleEvaluationContext) -> Union[dg.RunRequest, dg.SkipReason]:
        try:
            digest = sources.fingerprint(declared.source)
        except MailPipelineError as exc:
            return dg.SkipReason(f"source {declared.name!r}: {exc}")
        last = _last_pull(context.instance, declared.name)
        if last is not None and sources.digest_of(last[1]) == digest:
            return dg.SkipReason(sources.same_bytes(declared, last[0], digest))
        # (bound to the pull before it, so bytes that come back after others import again)
        key = sources.pull_key(declared.name, digest, after=last[0] if last else None)
        import_id, state = claim(context.instance, key)
        if state == "ran":
            return dg.SkipReason(sources.same_bytes(declared, import_id, digest))
        if state == "lost":
            return dg.SkipReason("another tick is importing these bytes")
        if state == "new":
            context.instance.add_dynamic_partitions(imports_partitions.name, [import_id])
        options = declared.pull_options(key)
        context.log.info(f"source {declared.name}: {declared.source} → import {import_id}")
        return dg.RunRequest(run_key=key, partition_key=import_id,
                             run_config=import_run_config(options),
                             tags=source_tags(declared.name, options))
    return _pull


def _last_pull(instance: dg.DagsterInstance, name: str) -> Optional[tuple[str, str]]:
    """The import the source's last pull made, and its key (which holds the bytes' sha256)."""
    runs = instance.get_runs(dg.RunsFilter(job_name=IMPORT_JOB, tags={Tags.DECLARED: name}), limit=1)
    if not runs:
        return None
    return runs[0].tags.get(Tags.PARTITION), options_of(runs[0].run_config).get("idempotency_key") or ""


def watch_sensor(declared: sources.Declared) -> dg.SensorDefinition:
    @dg.sensor(name=declared.name, job=import_job, minimum_interval_seconds=declared.interval,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Imports each new file under {declared.source} (a <list>/ folder "
                           "below it names the list).")
    def _watch(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        try:
            listed = remote.entries(declared.source)
        except MailPipelineError as exc:
            return dg.SensorResult(skip_reason=f"source {declared.name!r}: {exc}")
        ready, cursor = sources.settle(listed, context.cursor)
        requests, new_ids = [], []
        for entry in ready:
            options = declared.file_options(entry)
            request = claimed_request(context.instance, options.idempotency_key, options, new_ids,
                                      source_tags(declared.name, options))
            if request is not None:
                requests.append(request)
                context.log.info(f"source {declared.name}: {entry.url} → import {request.partition_key}")
        return dg.SensorResult(
            run_requests=requests, cursor=cursor,
            dynamic_partitions_requests=[imports_partitions.build_add_request(new_ids)] if new_ids else [])
    return _watch


def refused_sensor(name: str, reason: str) -> dg.SensorDefinition:
    """A declaration that was refused still shows under its name, each tick saying why."""
    @dg.sensor(name=name, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=300,
               description=f"Refused: {reason}")
    def _refused(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        return dg.SkipReason(reason)
    return _refused


def definitions(path) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    """The schedules and sensors `path` declares. Nothing here stops the code location from
    loading: a refused declaration becomes a sensor that says why."""
    declared, refused = sources.load(path, is_valid_cron_string)
    for name in [n for n in declared if n in _TAKEN]:
        declared.pop(name)
        refused[name + "_source"] = (f"source {name!r} in {path}: the name {name!r} is taken by the "
                                     "code location; choose another")
    schedules = [pull_schedule(d) for d in declared.values() if not d.watch]
    sensors = [watch_sensor(d) for d in declared.values() if d.watch]
    return schedules, sensors + [refused_sensor(n, r) for n, r in refused.items()]


source_schedules, source_sensors = definitions(sources.declarations_file())

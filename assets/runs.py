"""Imports as Dagster runs: create, execute and look up imports through the local instance.

The command line uses these; each import is a run of `import_job` on its own partition, so the
UI shows every import however it was launched.
"""
import fcntl
import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from typing import Optional

import dagster as dg

from assets.definitions import defs
from assets.exports import exports_partitions
from assets.partitions import imports_partitions
from mail_pipeline import control, home, pending, retention
from mail_pipeline.document import import_document
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.files import read_json, write_json
from mail_pipeline.home import POOL
from mail_pipeline.exports import ExportOptions, export_document
from mail_pipeline.options import ImportOptions
from mail_pipeline.pipeline import Folder
from mail_pipeline.times import iso_utc

JOB = "import_job"
PARTITION_TAG = "dagster/partition"

_STATES = {
    dg.DagsterRunStatus.QUEUED: "scheduled", dg.DagsterRunStatus.NOT_STARTED: "scheduled",
    dg.DagsterRunStatus.SUCCESS: "finished", dg.DagsterRunStatus.FAILURE: "failed",
    dg.DagsterRunStatus.CANCELED: "cancelled", dg.DagsterRunStatus.CANCELING: "cancelled",
}


def instance() -> dg.DagsterInstance:
    """The Dagster instance under the home folder (its dagster.yaml written on first use).
    Opening its storage costs about a second: callers open it once and pass it on."""
    path = home.dagster_home()
    os.environ["DAGSTER_HOME"] = str(path)
    ready = path / "storage.ready"
    if not ready.exists():
        # Dagster creates its SQLite storage on first open with nothing to stop two processes
        # doing it at once: two commands started together on a new home left two Alembic heads,
        # and every command after failed. The first open holds a lock, and registers the store's
        # pool: the daemon reads which pools have limits before registering the pools of the runs
        # it finds queued, so on an instance that has none yet it started every queued import at
        # once.
        with open(path / "storage.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not ready.exists():
                inst = dg.DagsterInstance.get()
                inst.event_log_storage.initialize_concurrency_limit_to_default(POOL)
                ready.touch()
                return inst
    return dg.DagsterInstance.get()


def run_config(options: ImportOptions) -> dict:
    """The launchpad's config for an import: the canonical options on the raw_file step."""
    return {"ops": {"raw_file": {"config": options.model_dump()}}}


def create_import(inst: dg.DagsterInstance, idempotency_key: Optional[str] = None,
                  options: Optional[ImportOptions] = None) -> tuple[str, bool]:
    """A new import id, registered as a partition so the UI lists it, and True; or, when the
    idempotency key already names an import, that import's id and False (Mailrith). `options`
    (an import that runs now) are noted at once, so a process killed before its run started
    leaves an import that resumes."""
    import_id = home.new_import_id()
    if options is not None:
        note_request(import_id, options)
    if idempotency_key:
        existing = home.claim_key(idempotency_key, import_id)
        if existing is not None:
            shutil.rmtree(home.import_dir(import_id))  # allocated a moment ago
            return existing, False
    inst.add_dynamic_partitions(imports_partitions.name, [import_id])
    return import_id, True


def execute_import(inst: dg.DagsterInstance, import_id: str, options: ImportOptions) -> dg.ExecuteInProcessResult:
    """Run the import in this process; the run is recorded in the instance like any other."""
    job = defs.resolve_job_def(JOB)
    # The run's events, errors included, go to the instance (the UI shows them); the terminal
    # shows our progress and, on failure, the one-line error of the import document.
    config = {**run_config(options), "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    return job.execute_in_process(
        run_config=config, instance=inst, partition_key=import_id,
        raise_on_error=False, tags={"mail_pipeline/kind": "import"}, run_id=_registered(import_id))


def _registered(import_id: str) -> str:
    """A new run id, noted with this process before the run exists: a process killed while
    Dagster creates or starts the run is then known to be gone, and the import resumes."""
    run_id = str(uuid.uuid4())
    try:
        folder = Folder.of(import_id).path
    except MailPipelineError:
        return run_id  # not an import id: the run fails on it, in one sentence
    control.register(folder, run_id)
    return run_id


def runs_of(inst: dg.DagsterInstance, import_id: str) -> list[dg.DagsterRun]:
    """The import's runs, newest first (a re-execution keeps the import id)."""
    return list(inst.get_runs(dg.RunsFilter(job_name=JOB, tags={PARTITION_TAG: import_id})))


def _iso(timestamp: Optional[float]) -> Optional[str]:
    if timestamp is None:
        return None
    return iso_utc(datetime.fromtimestamp(timestamp, timezone.utc))


def state_of(run: dg.DagsterRun, import_id: str) -> str:
    """The import's state from its run and, while it runs, the stage it is in; a run stopped
    on a pause or cancel request (or terminated from the UI) is paused or cancelled."""
    folder = Folder.of(import_id)
    if run.is_finished and run.status != dg.DagsterRunStatus.SUCCESS:
        asked = control.requested(folder.path, run.run_id)
        if asked:
            return "paused" if asked == "pause" else "cancelled"
    if run.status in _STATES:
        return _STATES[run.status]
    if (folder.path / "downloading").exists():
        return "downloading"
    if (folder.path / "waiting").exists():
        return "scheduled"  # waiting for the store, behind another import or export
    # validation.json is written once the validated frame is whole (its parts appear earlier).
    return "importing" if folder.progress.exists() or folder.validation.exists() else "splitting"


def failure_message(inst: dg.DagsterInstance, run_id: str) -> Optional[str]:
    """Why the run failed: a user's mistake is its one sentence (the step's Failure), anything
    else the first line of the underlying error."""
    for record in inst.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records:
        data = record.event_log_entry.dagster_event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            return data.user_failure_data.description  # our own one-sentence Failure
        error = data.error
        while error is not None and error.cause is not None:  # Dagster wraps the real error
            error = error.cause
        if error is not None:
            # The first line says what went wrong; later ones may be context or a caret line.
            lines = [line for line in error.message.strip().splitlines() if line.strip(" ^")]
            return lines[0] if lines else error.message.strip()
    return None


def document(inst: dg.DagsterInstance, import_id: str) -> dict:
    """The import document of one import."""
    runs = _settled_runs(inst, import_id)
    if not runs:
        folder = Folder.of(import_id).path
        if not folder.is_dir():
            raise MailPipelineError(f"import {import_id} not found")
        created = _iso(folder.stat().st_ctime)
        if _launch_died(folder):
            return import_document(import_id, "failed", created_at=created, begins_at=None,
                                   finished_at=None, run_id=None, error_message=_DIED_BEFORE_RUN)
        note = pending.pending(folder) or {"kind": "draft"}
        return import_document(import_id, note["kind"], created_at=created,
                               begins_at=note.get("begins_at"), finished_at=None, run_id=None)
    run = runs[0]
    record = inst.get_run_record_by_id(run.run_id)
    first = inst.get_run_record_by_id(runs[-1].run_id)
    state = state_of(run, import_id)
    error = failure_message(inst, run.run_id) if state == "failed" else None
    return import_document(
        import_id, state,
        created_at=_iso(first.create_timestamp.timestamp()),
        begins_at=_iso(record.start_time or record.create_timestamp.timestamp()),
        finished_at=_iso(record.end_time) if run.is_finished else None,
        run_id=run.run_id, error_message=error)


def all_import_ids(inst: dg.DagsterInstance) -> list[str]:
    """Every import: the partitions, and the purged ones whose partitions retention removed."""
    ids = set(inst.get_dynamic_partitions(imports_partitions.name))
    root = home.imports_dir()
    if root.is_dir():
        ids |= {p.name for p in root.iterdir() if (p / "purged.json").exists()}
    return sorted(ids, key=lambda i: (len(i), i))


# --- exports: runs of `export_job`, one partition per export ---------------------------------------

EXPORT_JOB = "export_job"


def create_export(inst: dg.DagsterInstance) -> str:
    export_id = home.new_export_id()
    inst.add_dynamic_partitions(exports_partitions.name, [export_id])
    return export_id


def execute_export(inst: dg.DagsterInstance, export_id: str,
                   options: ExportOptions) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(EXPORT_JOB)
    config = {"ops": {"subscriber_export": {"config": options.model_dump()}},
              "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    return job.execute_in_process(run_config=config, instance=inst, partition_key=export_id,
                                  raise_on_error=False, tags={"mail_pipeline/kind": "export"})


def export_doc(inst: dg.DagsterInstance, export_id: str) -> dict:
    """The export document of one export."""
    runs = list(inst.get_runs(dg.RunsFilter(job_name=EXPORT_JOB, tags={PARTITION_TAG: export_id})))
    if not runs:
        raise MailPipelineError(f"export {export_id} not found")
    run = runs[0]
    record = inst.get_run_record_by_id(run.run_id)
    state = _STATES.get(run.status, "exporting")
    return export_document(
        export_id, state, created_at=_iso(record.create_timestamp.timestamp()),
        finished_at=_iso(record.end_time) if run.is_finished else None, run_id=run.run_id,
        error_message=failure_message(inst, run.run_id) if state == "failed" else None)


# --- pause, cancel, resume (GreenArrow) ------------------------------------------------------------

_WAITING = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED)
_RUNNING = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)


def _settled_runs(inst: dg.DagsterInstance, import_id: str) -> list[dg.DagsterRun]:
    """The import's runs, newest first; a last run whose process died (killed, machine
    restarted) is marked failed here, since nothing else will."""
    runs = runs_of(inst, import_id)
    folder = Folder.of(import_id).path
    if not runs:
        return runs
    # (NOT_STARTED: an in-process run, noted in run.json before Dagster created it, whose
    # process died before it started; a queued run is QUEUED and never noted there.)
    noted = (control.read_run(folder) or {}).get("run_id") == runs[0].run_id
    started = runs[0].status in _RUNNING or (runs[0].status == dg.DagsterRunStatus.NOT_STARTED and noted)
    if started and not control.is_alive(folder, runs[0].run_id):
        inst.report_run_failed(runs[0], message="the process running this import is gone (killed?)")
        runs[0] = inst.get_run_by_id(runs[0].run_id)
    return runs


def _settle(inst: dg.DagsterInstance, import_id: str) -> Optional[dg.DagsterRun]:
    """The import's last run, settled (see `_settled_runs`)."""
    return next(iter(_settled_runs(inst, import_id)), None)


def stop(inst: dg.DagsterInstance, import_id: str, what: str) -> dict:
    """Ask the import to pause or cancel: it stops after the batch in progress (a queued run
    is withdrawn at once). Finished imports cannot be stopped; a paused one can be cancelled."""
    folder = Folder.of(import_id)
    run = _settle(inst, import_id)
    state = document(inst, import_id)["state"]
    verb = {"pause": "paused", "cancel": "cancelled"}[what]
    if run is None and state in ("draft", "scheduled") and what == "cancel":
        pending.cancel(folder.path)  # never started: withdrawn for good
        return document(inst, import_id)
    if run is None or state in ("finished", "failed", "cancelled") or (state == "paused" and what == "pause"):
        raise MailPipelineError(f"import {import_id} is {state}: it cannot be {verb}")
    control.request(folder.path, what)
    if run.status in _WAITING:
        inst.run_coordinator.cancel_run(run.run_id)
    return document(inst, import_id)


def resume(inst: dg.DagsterInstance, import_id: str) -> dg.ExecuteInProcessResult:
    """Run a paused or interrupted import again, in this process, as a re-execution linked to the
    first run; its committed batches are skipped, so no row is applied twice."""
    run = _settle(inst, import_id)
    if run is None:
        folder = Folder.of(import_id).path
        if not (folder / "requested.json").exists() and not pending.pending(folder):
            raise MailPipelineError(f"import {import_id} was interrupted as it was being created, "
                                    "before its options were saved: import the file again")
        if not _launch_died(folder):
            raise MailPipelineError(f"import {import_id} has not run: only a paused or failed import resumes")
        # Its process died after creating it, before its run existed: run it now, as asked.
        control.clear(folder)
        if not inst.has_dynamic_partition(imports_partitions.name, import_id):
            inst.add_dynamic_partitions(imports_partitions.name, [import_id])
        options = ImportOptions.model_validate(read_json(folder / "requested.json")["options"])
        return execute_import(inst, import_id, options)
    state = document(inst, import_id)["state"]
    if retention.purged_at(Folder.of(import_id).path):
        raise MailPipelineError(f"import {import_id} was purged: its files are gone, so it cannot resume")
    if state not in ("paused", "failed"):
        raise MailPipelineError(f"import {import_id} is {state}: only a paused or failed import resumes")
    control.clear(Folder.of(import_id).path)
    job = defs.resolve_job_def(JOB)
    tags = {"mail_pipeline/kind": "import", "dagster/parent_run_id": run.run_id,
            "dagster/root_run_id": run.root_run_id or run.run_id}
    return job.execute_in_process(run_config=run.run_config, instance=inst, partition_key=import_id,
                                  raise_on_error=False, tags=tags, run_id=_registered(import_id))


def note_request(import_id: str, options: ImportOptions) -> None:
    """What the import was asked to do, shown by its document until its file is staged; and
    which process asked, so an import whose process died before its run existed can resume."""
    write_json(Folder.of(import_id).path / "requested.json",
               {"options": options.model_dump(), "origin": options.source, "pid": os.getpid()})


_DIED_BEFORE_RUN = "its process was gone before its run started (killed?)"


def _launch_died(folder) -> bool:
    """An import with no run, not a draft or scheduled one, whose requesting process is gone:
    killed between creating the import and starting (or queueing) its run."""
    if pending.pending(folder):
        return False
    requested = read_json(folder / "requested.json") or {}
    pid = requested.get("pid")
    return pid is not None and not control.process_alive(pid)


def submit_import(inst: dg.DagsterInstance, import_id: str, options: ImportOptions) -> str:
    """Queue the import as a run for the daemon (`mail-pipeline ui`) to start, like the UI's
    launchpad does, and return its run id. It goes through the instance's run queue, so the
    store's pool holds it back while another import or export runs."""
    run_id = str(uuid.uuid4())
    command = [sys.executable, "-m", "dagster", "job", "launch", "-m", "assets.definitions",
               "-j", JOB, "--run-id", run_id, "--config-json", json.dumps(run_config(options)),
               "--tags", json.dumps({PARTITION_TAG: import_id, "mail_pipeline/kind": "import"})]
    env = dict(os.environ, DAGSTER_HOME=str(home.dagster_home()))
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0 or inst.get_run_by_id(run_id) is None:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise MailPipelineError(f"the import could not be queued: {lines[-1] if lines else 'no reason given'}")
    return run_id

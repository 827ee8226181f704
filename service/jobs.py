"""Imports and exports as Dagster runs: launch them, read their state from the run record, pause,
cancel and resume them, and build their documents.

Every launch goes through `_create_run`: a run of the job in the instance, with the import's
partition, options and readable tags. The command line then executes it in its own process
(`execute_run`, as a run worker does) or submits it to the run queue for the daemon (`--detach`,
the deployer's daemon included); the sensors' runs come through the daemon the same way. Whichever
executes it, the step that writes the store claims the store's pool, so one import writes at a
time across hosts.

State is read, never written: from the run's status, its current step (step events), its tags
and the store's pool. Drafts and scheduled imports have no run yet: their record is a value in
the instance's key-value storage (`assets.names.pending_key`), so every host sees it.
"""
import functools
import json
import os
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.errors import DagsterRunAlreadyExists
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import (ManagedGrpcPythonEnvCodeLocationOrigin, RemoteJobOrigin,
                                         RemoteRepositoryOrigin)
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from assets.names import (EXPORT_JOB, IMPORT_JOB, IMPORTS_PARTITIONS, EXPORTS_PARTITIONS, POOL,
                          Tags, import_run_config, options_of, pending_key, readable_tags)
from mail_pipeline import drafts, home, retention
from mail_pipeline.document import import_document
from mail_pipeline.errors import MailPipelineError, first_line
from mail_pipeline.exports import ExportOptions, export_document
from mail_pipeline.layout import Folder
from mail_pipeline.options import ImportOptions
from mail_pipeline.times import iso_utc
from service import process
from service.instance import instance, location_name, pools_per_op  # noqa: F401 (instance: for callers)

_STATES = {
    dg.DagsterRunStatus.QUEUED: "scheduled", dg.DagsterRunStatus.NOT_STARTED: "scheduled",
    dg.DagsterRunStatus.SUCCESS: "finished", dg.DagsterRunStatus.FAILURE: "failed",
    dg.DagsterRunStatus.CANCELED: "cancelled", dg.DagsterRunStatus.CANCELING: "cancelled",
}
# The console logger stays quiet: the terminal shows the service's progress, the UI the events.
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
DIED = "its process is gone (killed?)"
_CUT_SHORT = "was interrupted as it was being created, before its run existed: import the file again"
_VALIDATING = (None, "raw_file", "validated_frame")
_SWEEP_SECONDS = 5
# A new import's folder exists a moment (milliseconds) before its record in the instance.
_CREATING_SECONDS = 5


# --- launching -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _recon(job_name: str) -> ReconstructableJob:
    repository = ReconstructableRepository.for_module("assets.definitions", "defs")
    return repository.get_reconstructable_job(job_name)


def _origins(inst: dg.DagsterInstance, job_name: str, queued: bool) -> tuple:
    """Where the daemon finds the job's code (the code location, by its name in the workspace)
    and how a run worker loads it. A queued run on a deployer's instance takes both from the
    deployer's workspace (MAIL_PIPELINE_WORKSPACE: its workspace.yaml), as `dagster job launch`
    does, so launchers that start workers elsewhere (an image, a pod) know what to start; else
    they describe this process's own code."""
    workspace = os.environ.get("MAIL_PIPELINE_WORKSPACE")
    if queued and workspace:
        return _origins_from_workspace(inst, workspace, job_name)
    target = LoadableTargetOrigin(executable_path=sys.executable, module_name="assets.definitions")
    location = ManagedGrpcPythonEnvCodeLocationOrigin(target, location_name())
    return (RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), job_name),
            _recon(job_name).get_python_origin())


def _origins_from_workspace(inst: dg.DagsterInstance, workspace: str, job_name: str) -> tuple:
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    try:
        with WorkspaceProcessContext(inst, WorkspaceFileTarget(paths=[workspace])) as context:
            location = context.create_request_context().get_code_location(location_name())
            remote = location.get_repository("__repository__").get_full_job(job_name)
            return remote.get_remote_origin(), remote.get_python_origin()
    except Exception as exc:
        raise MailPipelineError(f"the code location {location_name()!r} of {workspace} cannot be "
                                f"reached: {first_line(exc)}") from None


def _create_run(inst: dg.DagsterInstance, job_name: str, partition: str, run_config: dict,
                tags: dict, parent: Optional[dg.DagsterRun] = None, queued: bool = False) -> dg.DagsterRun:
    """A run of the job for the partition. Its id is derived from what it follows (the partition
    for a first run, the parent for a re-execution), so two commands racing to start a draft or
    to resume the same run create one run, and the second is refused."""
    recon = _recon(job_name)
    run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"mail-pipeline:{home.home()}:{job_name}:{partition}:"
                                                f"{parent.run_id if parent else 'first'}"))
    tags = {Tags.PARTITION: partition, **tags}
    lineage = {}
    if parent is not None:
        lineage = {"parent_run_id": parent.run_id, "root_run_id": parent.root_run_id or parent.run_id}
        tags.update({Tags.PARENT_RUN: lineage["parent_run_id"], Tags.ROOT_RUN: lineage["root_run_id"]})
    remote_origin, code_origin = _origins(inst, job_name, queued)
    try:
        return inst.create_run_for_job(
            recon.get_definition(), run_id=run_id, run_config={**run_config, **_QUIET}, tags=tags,
            status=dg.DagsterRunStatus.NOT_STARTED, remote_job_origin=remote_origin,
            job_code_origin=code_origin, **lineage)
    except DagsterRunAlreadyExists:
        raise MailPipelineError(f"{job_name.removesuffix('_job')} {partition} was started by another "
                                "command a moment ago") from None


def _execute(inst: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Execute the run in this process, as a run worker would; its events go to the instance.
    Meanwhile, every few seconds, the store's slot held or awaited by a run killed on this host
    is freed: no daemon may be running to do it, and this run would wait for it for ever."""
    done = threading.Event()

    def sweep() -> None:
        while not done.wait(_SWEEP_SECONDS):
            try:
                _free_slots_of_dead_runs(inst)
            except Exception:  # (a passing database error: the next sweep tries again)
                pass

    _free_slots_of_dead_runs(inst)
    threading.Thread(target=sweep, daemon=True).start()
    try:
        execute_run(_recon(run.job_name), run, inst)
    finally:
        done.set()


def _submit(inst: dg.DagsterInstance, run: dg.DagsterRun) -> None:
    """Hand the run to the instance's run queue; the daemon starts it when the pool allows."""
    if not isinstance(inst.run_coordinator, QueuedRunCoordinator):
        raise MailPipelineError("--detach needs an instance with the queued run coordinator "
                                "(run_coordinator: QueuedRunCoordinator in dagster.yaml; see docs/deploy.md)")
    inst.submit_run(run.run_id, workspace=None)


def _free_slots_of_dead_runs(inst: dg.DagsterInstance) -> None:
    """A run killed on this host keeps the store's slot it held, or its place in the slot's
    queue, and the next run would wait for it for ever where no daemon frees it: both are freed
    (the run's state is left to resume)."""
    storage = inst.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    info = storage.get_concurrency_info(POOL)
    for run_id in {slot.run_id for slot in info.claimed_slots} | {step.run_id for step in info.pending_steps}:
        run = inst.get_run_by_id(run_id)
        if run is None or run.is_finished or process.gone(run.tags):
            _free_slots(inst, run_id)


def _free_slots(inst: dg.DagsterInstance, run_id: str) -> None:
    """The store's slot the run holds, and its place in the slot's queue, given up."""
    if inst.event_log_storage.supports_global_concurrency_limits:
        inst.event_log_storage.free_concurrency_slots_for_run(run_id)


def create_import(inst: dg.DagsterInstance, idempotency_key: Optional[str] = None) -> tuple[str, bool]:
    """A new import id, registered as a partition so the UI lists it, and True; or, when the
    idempotency key already names an import, that import's id and False (Mailrith)."""
    import_id = home.new_import_id()
    if idempotency_key:
        existing = home.claim_key(idempotency_key, import_id)
        if existing is not None:
            home.import_dir(import_id).rmdir()  # allocated a moment ago
            return existing, False
    # Noted with this process, so that an import whose process dies before its run exists is
    # told (on this host) from one whose run is about to be made.
    _set_pending(inst, import_id, {"state": "starting", "created_at": iso_utc(), **process.tags()})
    inst.add_dynamic_partitions(IMPORTS_PARTITIONS, [import_id])
    return import_id, True


def _import_tags(options: ImportOptions) -> dict:
    return {Tags.KIND: "import", **readable_tags(options)}


def attachable(inst: dg.DagsterInstance) -> None:
    """A run executed in this process takes its turn on the store only where the instance holds
    steps back per op; refused, in one sentence, where it would not."""
    if not pools_per_op(inst):
        raise MailPipelineError(
            "this Dagster instance limits pools per run (concurrency.pools.granularity), so a run "
            "the command line executes would not wait its turn on the store: set it to op "
            "(docs/deploy.md), or use --detach")


def launch_import(inst: dg.DagsterInstance, import_id: str, options: ImportOptions, *,
                  detach: bool, tags: Optional[dict] = None) -> dg.DagsterRun:
    """Run the import: in this process (returning when it ends), or queued for the daemon.
    `tags` say more of where it came from (the HTTP API and its key)."""
    if not detach:
        attachable(inst)
    tags = {**_import_tags(options), **(tags or {}), **({} if detach else process.tags())}
    run = _create_run(inst, IMPORT_JOB, import_id, import_run_config(options), tags, queued=detach)
    if detach:
        _submit(inst, run)
    else:
        _execute(inst, run)
    return run


def submit_import(inst: dg.DagsterInstance, options: ImportOptions, file: Optional[Path] = None, *,
                  draft: bool = False, tags: Optional[dict] = None) -> tuple[str, bool]:
    """Create an import for a client that does not wait for it (the HTTP API): queued for the
    daemon, scheduled for its `begins_at`, or held as a draft. `file` (an upload, already
    checked) moves into the import's folder. Returns (import id, created); an idempotency key
    already used returns its import, and the file is dropped."""
    when = drafts.parse_when(options.begins_at, options.date_format) if options.begins_at else None
    import_id, created = create_import(inst, options.idempotency_key)
    if not created:
        if file is not None:
            file.unlink(missing_ok=True)
        return import_id, False
    folder = Folder.of(import_id)
    try:
        if file is not None:
            folder.uploads.mkdir(parents=True, exist_ok=True)
            kept = folder.uploads / file.name
            os.replace(file, kept)
            options = options.model_copy(update={"source": str(kept), "content": None})
        if draft:
            hold(inst, import_id, drafts.draft(folder, Path(options.source), options), "draft", tags=tags)
        elif when is not None and when > datetime.now(timezone.utc):
            hold(inst, import_id, options, "scheduled", when, tags=tags)
        else:
            launch_import(inst, import_id, options, detach=True, tags=tags)
    except BaseException as exc:
        # Not left `scheduled` for ever: it failed, says why, and its idempotency key is free.
        _set_pending(inst, import_id, {**(pending(inst, import_id) or {}), "state": "failed",
                                       "error_message": f"it could not be queued: {first_line(exc)}",
                                       "options": options.model_dump()})
        if options.idempotency_key:
            home.release_key(options.idempotency_key, import_id)
        raise
    return import_id, True


def imports_tagged(inst: dg.DagsterInstance, tags: dict, limit: Optional[int] = None) -> list[dg.DagsterRun]:
    """Import runs with these tags, newest first."""
    return list(inst.get_runs(dg.RunsFilter(job_name=IMPORT_JOB, tags=tags), limit=limit))


# --- drafts and scheduled imports: no run yet ------------------------------------------------------

def pending(inst: dg.DagsterInstance, import_id: str) -> Optional[dict]:
    """The record of an import kept in the instance: {state: starting (its run about to be made
    by the process the record names) | draft | scheduled | cancelled, created_at, begins_at,
    options}. It stays once the import runs, for when it was made and due."""
    value = inst.run_storage.get_cursor_values({pending_key(import_id)}).get(pending_key(import_id))
    return json.loads(value) if value else None


def _set_pending(inst: dg.DagsterInstance, import_id: str, record: dict) -> None:
    inst.run_storage.set_cursor_values({pending_key(import_id): json.dumps(record)})


def hold(inst: dg.DagsterInstance, import_id: str, options: ImportOptions, state: str,
         begins_at: Optional[datetime] = None, tags: Optional[dict] = None) -> None:
    """Record a draft, or an import scheduled for `begins_at` (the scheduled_imports sensor starts
    it then, with `tags`)."""
    created = (pending(inst, import_id) or {}).get("created_at") or iso_utc()
    _set_pending(inst, import_id, {
        "state": state, "created_at": created, "options": options.model_dump(),
        "begins_at": iso_utc(begins_at) if begins_at else None, "tags": tags or {}})


def draft_options(inst: dg.DagsterInstance, import_id: str) -> ImportOptions:
    """The options of a draft, which must still be one (it is until its run exists: the record
    stays, for when it was created)."""
    record = pending(inst, import_id)
    if not runs_of(inst, import_id) and record and record["state"] == "draft":
        return ImportOptions.model_validate(record["options"])
    raise MailPipelineError(f"import {import_id} is not a draft: only a draft is started or takes more rows")


def replace_draft(inst: dg.DagsterInstance, import_id: str, options: ImportOptions, file: Path) -> None:
    """A draft's file and options replaced whole (Mailcoach's update)."""
    draft_options(inst, import_id)
    hold(inst, import_id, drafts.draft(Folder.of(import_id), file, options), "draft")
    file.unlink(missing_ok=True)


def forget(inst: dg.DagsterInstance, import_id: str) -> None:
    """Mailcoach's delete: the import is cancelled if it has not ended, and its record notes the
    deletion, so that API stops showing it. Its runs, files and logs stay (the command line and
    the UI still show it) until retention purges them: a delete loses no record of what was done."""
    state = document(inst, import_id)["state"]
    if state not in ("finished", "failed", "cancelled", "reverted"):
        stop(inst, import_id, "cancel")
    record = pending(inst, import_id) or {"state": "cancelled", "created_at": None, "begins_at": None,
                                          "options": {}}
    _set_pending(inst, import_id, {**record, "deleted_at": iso_utc()})


def forgotten(inst: dg.DagsterInstance, import_id: str) -> bool:
    return bool((pending(inst, import_id) or {}).get("deleted_at"))


# --- reading state ---------------------------------------------------------------------------------

def runs_of(inst: dg.DagsterInstance, import_id: str, job_name: str = IMPORT_JOB) -> list[dg.DagsterRun]:
    """The import's runs, newest first (a re-execution keeps the import id)."""
    return list(inst.get_runs(dg.RunsFilter(job_name=job_name, tags={Tags.PARTITION: import_id})))


def _iso(timestamp: Optional[float]) -> Optional[str]:
    if timestamp is None:
        return None
    return iso_utc(datetime.fromtimestamp(timestamp, timezone.utc))


def _current_step(inst: dg.DagsterInstance, run_id: str) -> Optional[str]:
    records = inst.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return records[-1].event_log_entry.step_key if records else None


def _holder(inst: dg.DagsterInstance, run_id: str) -> Optional[str]:
    """Who holds the store's pool while `run_id` waits for it, in words; None if it does not wait."""
    storage = inst.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None
    info = storage.get_concurrency_info(POOL)
    if run_id not in {step.run_id for step in info.pending_steps}:
        return None
    holders = [inst.get_run_by_id(slot.run_id) for slot in info.claimed_slots]
    return ", ".join(_describe(other) for other in holders if other is not None) or "the store's pool"


def _describe(run: dg.DagsterRun) -> str:
    kind = run.tags.get(Tags.KIND, run.job_name)
    said = f"{kind} {run.tags.get(Tags.PARTITION, '?')} (run {run.run_id[:8]})"
    if process.gone(run.tags):
        said += (": its process is gone; resume it with: mail-pipeline imports resume "
                 f"{run.tags.get(Tags.PARTITION)}")
    return said


def _ahead_in_queue(inst: dg.DagsterInstance, run: dg.DagsterRun) -> Optional[str]:
    """The import runs in progress that a queued import waits for (the daemon starts one import
    at a time), in words."""
    ahead = inst.get_runs(dg.RunsFilter(job_name=IMPORT_JOB, tags={Tags.KIND: "import"}, statuses=[
        dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]))
    return ", ".join(_describe(other) for other in ahead if other.run_id != run.run_id) or None


def state_of(inst: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[str, Optional[str]]:
    """The import's state from its newest run, and whom it waits for while `scheduled`."""
    tags = run.tags
    if run.is_finished:
        stopped = stopped_by(inst, run)
        if stopped:
            return ("paused" if stopped == "pause" else "cancelled"), None
        return _STATES[run.status], None
    if run.status == dg.DagsterRunStatus.QUEUED:
        return "scheduled", _ahead_in_queue(inst, run)
    if process.gone(tags):
        return "failed", None
    if run.status == dg.DagsterRunStatus.NOT_STARTED:
        return "scheduled", None
    if tags.get(Tags.STAGE) == "downloading":
        return "downloading", None
    if tags.get(Tags.STAGE) == "waiting":
        return "scheduled", tags.get(Tags.WAITING_FOR) or None
    if _current_step(inst, run.run_id) in _VALIDATING:
        holder = _holder(inst, run.run_id)
        return ("scheduled", holder) if holder else ("splitting", None)
    return "importing", None


def stopped_by(inst: dg.DagsterInstance, run: dg.DagsterRun) -> Optional[str]:
    """"pause" or "cancel" when the finished run stopped on that request: it failed with the
    stages' own stop (its step failure says which), or was cancelled (a queued run withdrawn,
    Terminate in the UI: a cancel unless a pause was asked for). A run that failed for another
    reason after a request is failed."""
    asked = run.tags.get(Tags.REQUEST)
    if run.status == dg.DagsterRunStatus.CANCELED:
        return "pause" if asked == "pause" else "cancel"
    if run.status != dg.DagsterRunStatus.FAILURE or asked not in ("pause", "cancel"):
        return None
    for record in inst.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records:
        data = record.event_log_entry.dagster_event.step_failure_data.user_failure_data
        if data and data.metadata and Tags.REQUEST in data.metadata:
            # (a paused import cancelled afterwards is cancelled)
            return "cancel" if asked == "cancel" else data.metadata[Tags.REQUEST].value
    return None


def failure_message(inst: dg.DagsterInstance, run: dg.DagsterRun) -> Optional[str]:
    """Why the run failed: a user's mistake is its one sentence (the step's Failure), anything
    else the first line of the underlying error, or what Dagster said of the run."""
    if not run.is_finished and process.gone(run.tags):
        return f"{DIED}; resume with: mail-pipeline imports resume {run.tags.get(Tags.PARTITION)}"
    for record in inst.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records:
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
    # No step failed: the run itself did (its worker died, run monitoring gave up on it). Dagster's
    # engine event says why; its run failure only that it was failed from outside.
    resume = f"; resume with: mail-pipeline imports resume {run.tags.get(Tags.PARTITION)}"
    for record in reversed(inst.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records):
        message = (record.event_log_entry.dagster_event.message or "").strip()
        if any(word in message for word in ("unexpectedly exited", "terminated by signal",
                                             "timed out", "worker status")):
            first = message.splitlines()[0].removeprefix("[DagsterApiServer] ")
            return first.split(". ")[0] + resume
    for record in inst.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records:
        message = (record.event_log_entry.dagster_event.message or "").strip()
        if message:
            return message.splitlines()[0] + resume
    return None


def document(inst: dg.DagsterInstance, import_id: str) -> dict:
    """The import document of one import. Reading it writes nothing."""
    folder = Folder.of(import_id)
    runs = runs_of(inst, import_id)
    held = pending(inst, import_id)
    if not runs:
        if held is None or held["state"] == "starting":
            if held is None and not folder.path.is_dir() and not inst.has_dynamic_partition(
                    IMPORTS_PARTITIONS, import_id):
                raise MailPipelineError(f"import {import_id} not found")
            created = folder.path.stat().st_ctime if folder.path.is_dir() else time.time()
            # Its run is about to be made (the sensor's: by the daemon, a tick later), unless the
            # process making it is gone (judged on this host only), or it never got as far as
            # its record (a moment after its folder).
            if held is None:
                starting = time.time() - created < _CREATING_SECONDS
            else:
                starting = not process.gone(held)
            return import_document(
                import_id, "scheduled" if starting else "failed",
                created_at=(held or {}).get("created_at") or _iso(created),
                begins_at=None, finished_at=None, run_id=None, folder=folder,
                error_message=None if starting else _CUT_SHORT)
        return import_document(import_id, held["state"], created_at=held["created_at"],
                               begins_at=held.get("begins_at"), finished_at=None, run_id=None,
                               folder=folder, requested=held["options"],
                               error_message=held.get("error_message"))
    run = runs[0]
    record = inst.get_run_record_by_id(run.run_id)
    first = inst.get_run_record_by_id(runs[-1].run_id)
    state, waiting_for = state_of(inst, run)
    held = held or {}  # a draft's or scheduled import's record keeps when it was made and due
    return import_document(
        import_id, state,
        created_at=held.get("created_at") or _iso(first.create_timestamp.timestamp()),
        begins_at=held.get("begins_at") or _iso(first.start_time or first.create_timestamp.timestamp()),
        finished_at=_iso(record.end_time) if run.is_finished else None,
        run_id=run.run_id, folder=folder, requested=options_of(run.run_config),
        error_message=failure_message(inst, run) if state == "failed" else None,
        waiting_for=waiting_for)


def all_import_ids(inst: dg.DagsterInstance) -> list[str]:
    """Every import: those with runs (purged ones included), and those without one yet."""
    ids = set(inst.get_dynamic_partitions(IMPORTS_PARTITIONS))
    ids |= {run.tags[Tags.PARTITION] for run in inst.get_runs(dg.RunsFilter(job_name=IMPORT_JOB))
            if Tags.PARTITION in run.tags}
    return sorted(ids, key=lambda i: (len(i), i))


# --- pause, cancel, resume (GreenArrow) ------------------------------------------------------------

def stop(inst: dg.DagsterInstance, import_id: str, what: str) -> dict:
    """Ask the import to pause or cancel, through its run: a tag its stages read between batches
    (the batch in progress commits or rolls back whole), and a queued run is withdrawn at once.
    A draft or scheduled import is cancelled for good; a paused one can still be cancelled."""
    verb = {"pause": "paused", "cancel": "cancelled"}[what]
    state = document(inst, import_id)["state"]
    runs = runs_of(inst, import_id)
    if not runs and state in ("draft", "scheduled") and what == "cancel":
        record = pending(inst, import_id)
        _set_pending(inst, import_id, {**record, "state": "cancelled"})
        return document(inst, import_id)
    if not runs or state in ("finished", "failed", "cancelled", "reverted") or (
            state == "paused" and what == "pause"):
        raise MailPipelineError(f"import {import_id} is {state}: it cannot be {verb}")
    request(inst, runs[0], what)
    return document(inst, import_id)


def request(inst: dg.DagsterInstance, run: dg.DagsterRun, what: str) -> None:
    inst.add_run_tags(run.run_id, {Tags.REQUEST: what})
    if run.status == dg.DagsterRunStatus.QUEUED:
        inst.run_coordinator.cancel_run(run.run_id)
    elif run.status == dg.DagsterRunStatus.NOT_STARTED:
        inst.report_run_canceled(run, message=f"{what} requested before it started")


def resume(inst: dg.DagsterInstance, import_id: str, detach: bool = False) -> dg.DagsterRun:
    """Run a paused or interrupted import again, in this process (or queued for the daemon), as
    a re-execution linked to the last run; its committed batches are skipped, so no row is
    applied twice. A last run whose process is gone is marked failed first, and the store's
    slot it held freed."""
    runs = runs_of(inst, import_id)
    if not runs:
        held = pending(inst, import_id)
        if held is None or (held["state"] == "starting" and held.get(Tags.PID) and process.gone(held)):
            # (asked for by someone who saw its command die: the moment it may still have had
            # before its record does not matter)
            raise MailPipelineError(f"import {import_id} {_CUT_SHORT}")
        state = document(inst, import_id)["state"]
        raise MailPipelineError(f"import {import_id} is {state}: only a paused or failed import resumes")
    run = runs[0]
    state, _ = state_of(inst, run)
    if retention.purged_at(Folder.of(import_id)):
        raise MailPipelineError(f"import {import_id} was purged: its files are gone, so it cannot resume")
    if not detach:
        attachable(inst)
    if state not in ("paused", "failed"):
        raise MailPipelineError(f"import {import_id} is {state}: only a paused or failed import resumes")
    if not run.is_finished:  # judged gone on this host (state_of): settle it
        inst.report_run_failed(run, message=DIED)
    _free_slots(inst, run.run_id)
    if not inst.has_dynamic_partition(IMPORTS_PARTITIONS, import_id):
        inst.add_dynamic_partitions(IMPORTS_PARTITIONS, [import_id])
    kept = {k: v for k, v in run.tags.items()
            if k in (Tags.KIND, Tags.SOURCE, Tags.LISTS, Tags.INBOX, Tags.API, Tags.API_KEY)}
    config = {k: v for k, v in run.run_config.items() if k != "loggers"}
    if detach:
        again = _create_run(inst, IMPORT_JOB, import_id, config, kept, parent=run, queued=True)
        _submit(inst, again)
        return again
    again = _create_run(inst, IMPORT_JOB, import_id, config, {**kept, **process.tags()}, parent=run)
    _execute(inst, again)
    return again


# --- exports: runs of `export_job`, one partition per export ---------------------------------------

def create_export(inst: dg.DagsterInstance) -> str:
    export_id = home.new_export_id()
    inst.add_dynamic_partitions(EXPORTS_PARTITIONS, [export_id])
    return export_id


def execute_export(inst: dg.DagsterInstance, export_id: str, options: ExportOptions, *,
                   detach: bool = False, tags: Optional[dict] = None) -> dg.DagsterRun:
    """Run the export in this process, or queue it for the daemon (the HTTP API)."""
    if not detach:
        attachable(inst)
    config = {"ops": {"subscriber_export": {"config": options.model_dump()}}}
    tags = {Tags.KIND: "export", **(tags or {}), **({} if detach else process.tags())}
    run = _create_run(inst, EXPORT_JOB, export_id, config, tags, queued=detach)
    if detach:
        _submit(inst, run)
    else:
        _execute(inst, run)
    return run


def export_doc(inst: dg.DagsterInstance, export_id: str) -> dict:
    """The export document of one export."""
    runs = runs_of(inst, export_id, EXPORT_JOB)
    if not runs:
        raise MailPipelineError(f"export {export_id} not found")
    run = runs[0]
    record = inst.get_run_record_by_id(run.run_id)
    state = _STATES.get(run.status, "exporting")
    if not run.is_finished and process.gone(run.tags):
        state = "failed"
    return export_document(
        export_id, state, created_at=_iso(record.create_timestamp.timestamp()),
        finished_at=_iso(record.end_time) if run.is_finished else None, run_id=run.run_id,
        error_message=failure_message(inst, run) if state == "failed" else None)

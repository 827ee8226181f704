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
                          REVERT_JOB, Tags, import_run_config, pending_key, readable_tags)
from mail_pipeline import drafts, home, retention, revert, store
from mail_pipeline.document import FINISHED_STATES
from mail_pipeline.errors import MailPipelineError, first_line
from mail_pipeline.exports import ExportOptions
from mail_pipeline.layout import Folder
from mail_pipeline.options import ImportOptions
from mail_pipeline.clock import iso_utc
from service import process, state
from service.records import Run
from service.instance import instance, location_name, pools_per_op  # noqa: F401 (instance: for callers)

# The console logger stays quiet: the terminal shows the service's progress, the UI the events.
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
_SWEEP_SECONDS = 5


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
                tags: dict, parent: Optional[Run] = None, queued: bool = False) -> dg.DagsterRun:
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
        _set_pending(inst, import_id, {**(_pending(import_id) or {}), "state": "failed",
                                       "error_message": f"it could not be queued: {first_line(exc)}",
                                       "options": options.model_dump()})
        if options.idempotency_key:
            home.release_key(options.idempotency_key, import_id)
        raise
    return import_id, True


def _pending(import_id: str) -> Optional[dict]:
    return state.pending(state.records(), import_id)


def _set_pending(inst: dg.DagsterInstance, import_id: str, record: dict) -> None:
    inst.run_storage.set_cursor_values({pending_key(import_id): json.dumps(record)})


def hold(inst: dg.DagsterInstance, import_id: str, options: ImportOptions, state: str,
         begins_at: Optional[datetime] = None, tags: Optional[dict] = None) -> None:
    """Record a draft, or an import scheduled for `begins_at` (the scheduled_imports sensor starts
    it then, with `tags`)."""
    created = (_pending(import_id) or {}).get("created_at") or iso_utc()
    _set_pending(inst, import_id, {
        "state": state, "created_at": created, "options": options.model_dump(),
        "begins_at": iso_utc(begins_at) if begins_at else None, "tags": tags or {}})


def replace_draft(inst: dg.DagsterInstance, import_id: str, options: ImportOptions, file: Path) -> None:
    """A draft's file and options replaced whole (Mailcoach's update)."""
    state.draft_options(state.records(), import_id)
    hold(inst, import_id, drafts.draft(Folder.of(import_id), file, options), "draft")
    file.unlink(missing_ok=True)


def forget(inst: dg.DagsterInstance, import_id: str) -> None:
    """Mailcoach's delete: the import is cancelled if it has not ended, and its record notes the
    deletion, so that API stops showing it. Its runs, files and logs stay (the command line and
    the UI still show it) until retention purges them: a delete loses no record of what was done."""
    if state.document(state.records(), import_id)["state"] not in FINISHED_STATES:
        stop(inst, import_id, "cancel")
    record = _pending(import_id) or {"state": "cancelled", "created_at": None, "begins_at": None,
                                          "options": {}}
    _set_pending(inst, import_id, {**record, "deleted_at": iso_utc()})


def stop(inst: dg.DagsterInstance, import_id: str, what: str) -> dict:
    """Ask the import to pause or cancel, through its run: a tag its stages read between batches
    (the batch in progress commits or rolls back whole), and a queued run is withdrawn at once.
    A draft or scheduled import is cancelled for good; a paused one can still be cancelled."""
    verb = {"pause": "paused", "cancel": "cancelled"}[what]
    rec = state.records()
    now = state.document(rec, import_id)["state"]
    runs = state.runs_of(rec, import_id)
    if not runs and now in ("draft", "scheduled") and what == "cancel":
        _set_pending(inst, import_id, {**state.pending(rec, import_id), "state": "cancelled"})
        return state.document(rec, import_id)
    if not runs or now in FINISHED_STATES or (now == "paused" and what == "pause"):
        raise MailPipelineError(f"import {import_id} is {now}: it cannot be {verb}")
    request(inst, runs[0].run_id, what)
    return state.document(rec, import_id)


def request(inst: dg.DagsterInstance, run_id: str, what: str) -> None:
    inst.add_run_tags(run_id, {Tags.REQUEST: what})
    run = inst.get_run_by_id(run_id)
    if run.status == dg.DagsterRunStatus.QUEUED:
        inst.run_coordinator.cancel_run(run_id)
    elif run.status == dg.DagsterRunStatus.NOT_STARTED:
        inst.report_run_canceled(run, message=f"{what} requested before it started")


def resume(inst: dg.DagsterInstance, import_id: str, detach: bool = False) -> dg.DagsterRun:
    """Run a paused or interrupted import again, in this process (or queued for the daemon), as
    a re-execution linked to the last run; its committed batches are skipped, so no row is
    applied twice. A last run whose process is gone is marked failed first, and the store's
    slot it held freed."""
    rec = state.records()
    runs = state.runs_of(rec, import_id)
    if not runs:
        held = state.pending(rec, import_id)
        if held is None or (held["state"] == "starting" and held.get(Tags.PID) and process.gone(held)):
            # (asked for by someone who saw its command die: the moment it may still have had
            # before its record does not matter)
            raise MailPipelineError(f"import {import_id} {state.CUT_SHORT}")
        now = state.document(rec, import_id)["state"]
        raise MailPipelineError(f"import {import_id} is {now}: only a paused or failed import resumes")
    run = runs[0]
    now, _ = state.state_of(rec, run)
    if retention.purged_at(Folder.of(import_id)):
        raise MailPipelineError(f"import {import_id} was purged: its files are gone, so it cannot resume")
    if not detach:
        attachable(inst)
    if now not in ("paused", "failed"):
        raise MailPipelineError(f"import {import_id} is {now}: only a paused or failed import resumes")
    if not run.is_finished:  # judged gone on this host (state_of): settle it
        inst.report_run_failed(inst.get_run_by_id(run.run_id), message=state.DIED)
    _free_slots(inst, run.run_id)
    if not inst.has_dynamic_partition(IMPORTS_PARTITIONS, import_id):
        inst.add_dynamic_partitions(IMPORTS_PARTITIONS, [import_id])
    kept = {k: v for k, v in run.tags.items()
            if k in (Tags.KIND, Tags.SOURCE, Tags.LISTS, Tags.INBOX, Tags.API, Tags.API_KEY, Tags.DECLARED)}
    config = {k: v for k, v in run.run_config.items() if k != "loggers"}
    if detach:
        again = _create_run(inst, IMPORT_JOB, import_id, config, kept, parent=run, queued=True)
        _submit(inst, again)
        return again
    again = _create_run(inst, IMPORT_JOB, import_id, config, {**kept, **process.tags()}, parent=run)
    _execute(inst, again)
    return again


# --- reverts: runs of `revert_job`, on the import's partition ---------------------------------------

def revert_import(inst: dg.DagsterInstance, import_id: str, detach: bool = False) -> dg.DagsterRun:
    """Undo the import as a run of revert_job on its partition, tagged with the import's last
    run so the UI links them; a revert cut short is resumed (a re-execution of its last run,
    which skips the batches already put back). Refused first, creating no run, when the
    import cannot be reverted (`state.refuse_revert`) or later imports changed the same
    subscribers."""
    rec = state.records()
    reverts = state.refuse_revert(rec, import_id)
    if not store.held(home.database_path()):  # (else the run checks, once it holds the store)
        with store.reader(home.database_path()) as con:
            revert.refuse_if_changed_later(con, import_id)
    if not detach:
        attachable(inst)
    parent = reverts[0] if reverts else None
    if parent is not None and not parent.is_finished:  # its process is gone (refuse_revert)
        inst.report_run_failed(inst.get_run_by_id(parent.run_id), message=state.DIED)
        _free_slots(inst, parent.run_id)
    if not inst.has_dynamic_partition(IMPORTS_PARTITIONS, import_id):
        inst.add_dynamic_partitions(IMPORTS_PARTITIONS, [import_id])
    imports = state.runs_of(rec, import_id)
    tags = {Tags.KIND: "revert", Tags.IMPORT_RUN: imports[0].run_id if imports else "",
            **{k: v for k, v in (imports[0].tags.items() if imports else ())
               if k in (Tags.SOURCE, Tags.LISTS)}}
    run = _create_run(inst, REVERT_JOB, import_id, {}, {**tags, **({} if detach else process.tags())},
                      parent=parent, queued=detach)
    if detach:
        _submit(inst, run)
    else:
        _execute(inst, run)
    return run


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

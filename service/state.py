"""An import's state and documents, read from its run record (spec §4): the run's status, its
current step, its tags and the store's pool, read through `service.records` (SQL, without
Dagster), so that `imports`, `imports show` and the HTTP API's reads answer at once. Reading
writes nothing.

Drafts and scheduled imports have no run yet: their record is a value in the instance's key-value
storage (`assets.names.pending_key`), so every host sees it.
"""
import json
import time
from datetime import datetime, timezone
from typing import Optional

from assets.names import (EXPORT_JOB, IMPORT_JOB, IMPORTS_PARTITIONS, POOL, REVERT_JOB, Tags,
                          options_of, pending_key)
from mail_pipeline.document import import_document
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.layout import Folder
from mail_pipeline.retention import purged_at
from mail_pipeline.clock import iso_utc
from service import process
from service.records import Records, Run

_STATES = {"QUEUED": "scheduled", "NOT_STARTED": "scheduled", "SUCCESS": "finished",
           "FAILURE": "failed", "CANCELED": "cancelled", "CANCELING": "cancelled"}
DIED = "its process is gone (killed?)"
CUT_SHORT = "was interrupted as it was being created, before its run existed: import the file again"
_VALIDATING = (None, "raw_file", "validated_frame")
# A new import's folder exists a moment (milliseconds) before its record in the instance.
_CREATING_SECONDS = 5


def records() -> Records:
    return Records()


def runs_of(rec: Records, import_id: str, job_name: str = IMPORT_JOB) -> list[Run]:
    """The import's runs, newest first (a re-execution keeps the import id)."""
    return rec.runs(job_name, partition=import_id)


def imports_tagged(rec: Records, tags: dict, limit: Optional[int] = None) -> list[Run]:
    """Import runs with these tags, newest first."""
    return rec.runs(IMPORT_JOB, tags=tags, limit=limit)


def pending(rec: Records, import_id: str) -> Optional[dict]:
    """The record of an import kept in the instance: {state: starting (its run about to be made
    by the process the record names) | draft | scheduled | cancelled, created_at, begins_at,
    options}. It stays once the import runs, for when it was made and due."""
    value = rec.values([pending_key(import_id)]).get(pending_key(import_id))
    return json.loads(value) if value else None


def forgotten(rec: Records, import_id: str) -> bool:
    return bool((pending(rec, import_id) or {}).get("deleted_at"))


def draft_options(rec: Records, import_id: str):
    """The options of a draft, which must still be one (it is until its run exists: the record
    stays, for when it was created)."""
    from mail_pipeline.options import ImportOptions
    record = pending(rec, import_id)
    if not runs_of(rec, import_id) and record and record["state"] == "draft":
        return ImportOptions.model_validate(record["options"])
    raise MailPipelineError(f"import {import_id} is not a draft: only a draft is started or takes more rows")


def _iso(timestamp: Optional[float]) -> Optional[str]:
    if timestamp is None:
        return None
    return iso_utc(datetime.fromtimestamp(timestamp, timezone.utc))


def _holder(rec: Records, run_id: str) -> Optional[str]:
    """Who holds the store's pool while `run_id` waits for it, in words; None if it does not wait."""
    held, waiting = rec.pool(POOL)
    if run_id not in waiting:
        return None
    holders = [rec.run(other) for other in held]
    return ", ".join(describe(other) for other in holders if other is not None) or "the store's pool"


def describe(run: Run) -> str:
    kind = run.tags.get(Tags.KIND, run.job_name)
    said = f"{kind} {run.tags.get(Tags.PARTITION, '?')} (run {run.run_id[:8]})"
    if process.gone(run.tags):
        said += (": its process is gone; resume it with: mail-pipeline imports resume "
                 f"{run.tags.get(Tags.PARTITION)}")
    return said


def _ahead_in_queue(rec: Records, run: Run) -> Optional[str]:
    """The import runs in progress that a queued import waits for (the daemon starts one import
    at a time), in words."""
    ahead = rec.runs(IMPORT_JOB, tags={Tags.KIND: "import"}, statuses=("STARTING", "STARTED"))
    return ", ".join(describe(other) for other in ahead if other.run_id != run.run_id) or None


def state_of(rec: Records, run: Run) -> tuple[str, Optional[str]]:
    """The import's state from its newest run, and whom it waits for while `scheduled`."""
    tags = run.tags
    if run.is_finished:
        stopped = stopped_by(rec, run)
        if stopped:
            return ("paused" if stopped == "pause" else "cancelled"), None
        return _STATES[run.status], None
    if run.status == "QUEUED":
        return "scheduled", _ahead_in_queue(rec, run)
    if process.gone(tags):
        return "failed", None
    if run.status == "NOT_STARTED":
        return "scheduled", None
    if tags.get(Tags.STAGE) == "downloading":
        return "downloading", None
    if tags.get(Tags.STAGE) == "waiting":
        return "scheduled", tags.get(Tags.WAITING_FOR) or None
    if rec.last_step_started(run.run_id) in _VALIDATING:
        holder = _holder(rec, run.run_id)
        return ("scheduled", holder) if holder else ("splitting", None)
    return "importing", None


def stopped_by(rec: Records, run: Run) -> Optional[str]:
    """"pause" or "cancel" when the finished run stopped on that request: it failed with the
    stages' own stop (its step failure says which), or was cancelled (a queued run withdrawn,
    Terminate in the UI: a cancel unless a pause was asked for). A run that failed for another
    reason after a request is failed."""
    asked = run.tags.get(Tags.REQUEST)
    if run.status == "CANCELED":
        return "pause" if asked == "pause" else "cancel"
    if run.status != "FAILURE" or asked not in ("pause", "cancel"):
        return None
    for event in rec.events(run.run_id, "STEP_FAILURE"):
        said = event.metadata().get(Tags.REQUEST)
        if said:
            # (a paused import cancelled afterwards is cancelled)
            return "cancel" if asked == "cancel" else said
    return None


def failure_message(rec: Records, run: Run) -> Optional[str]:
    """Why the run failed: a user's mistake is its one sentence (the step's Failure), anything
    else the first line of the underlying error, or what Dagster said of the run."""
    if not run.is_finished and process.gone(run.tags):
        return f"{DIED}; resume with: mail-pipeline imports resume {run.tags.get(Tags.PARTITION)}"
    for event in rec.events(run.run_id, "STEP_FAILURE"):
        description = (event.data.get("user_failure_data") or {}).get("description")
        if description:
            return description  # our own one-sentence Failure
        error = event.data.get("error")
        while error is not None and error.get("cause") is not None:  # Dagster wraps the real error
            error = error["cause"]
        if error is not None:
            # The first line says what went wrong; later ones may be context or a caret line.
            message = error.get("message") or ""
            lines = [line for line in message.strip().splitlines() if line.strip(" ^")]
            return lines[0] if lines else message.strip()
    # No step failed: the run itself did (its worker died, run monitoring gave up on it). Dagster's
    # engine event says why; its run failure only that it was failed from outside.
    resume = f"; resume with: mail-pipeline imports resume {run.tags.get(Tags.PARTITION)}"
    for event in reversed(rec.events(run.run_id, "ENGINE_EVENT")):
        message = event.message.strip()
        if any(word in message for word in ("unexpectedly exited", "terminated by signal",
                                             "timed out", "worker status")):
            first = message.splitlines()[0].removeprefix("[DagsterApiServer] ")
            return first.split(". ")[0] + resume
    for event in rec.events(run.run_id, "RUN_FAILURE"):
        if event.message.strip():
            return event.message.strip().splitlines()[0] + resume
    return None


_UNREAD = object()  # (`held` not read yet: None means the import has no such record)


def document(rec: Records, import_id: str, runs: Optional[list[Run]] = None,
             held: Optional[dict] = _UNREAD, reverts: Optional[list[Run]] = None) -> dict:
    """The import document of one import. `runs`, `held` and `reverts` (its runs of
    revert_job) may be given when already read (a listing reads every import's at once)."""
    folder = Folder.of(import_id)
    runs = runs_of(rec, import_id) if runs is None else runs
    held = pending(rec, import_id) if held is _UNREAD else held
    if not runs:
        if held is None or held["state"] == "starting":
            if held is None and not folder.path.is_dir() and not rec.has_partition(
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
                error_message=None if starting else CUT_SHORT)
        return import_document(import_id, held["state"], created_at=held["created_at"],
                               begins_at=held.get("begins_at"), finished_at=None, run_id=None,
                               folder=folder, requested=held["options"],
                               error_message=held.get("error_message"))
    run, first = runs[0], runs[-1]
    state, waiting_for = state_of(rec, run)
    reverts = runs_of(rec, import_id, REVERT_JOB) if reverts is None else reverts
    reverted_at = reverted(reverts)
    if reverted_at:
        state = "reverted"
    held = held or {}  # a draft's or scheduled import's record keeps when it was made and due
    return import_document(
        import_id, state,
        created_at=held.get("created_at") or _iso(first.create_timestamp),
        begins_at=held.get("begins_at") or _iso(first.start_time or first.create_timestamp),
        finished_at=_iso(run.end_time) if run.is_finished else None,
        run_id=run.run_id, folder=folder, requested=options_of(run.run_config),
        error_message=failure_message(rec, run) if state == "failed" else None,
        waiting_for=waiting_for, reverted_at=reverted_at)


def reverted(reverts: list[Run]) -> Optional[str]:
    """When the import's revert finished (its newest run of revert_job succeeded), else None."""
    if reverts and reverts[0].status == "SUCCESS":
        return _iso(reverts[0].end_time)
    return None


def refuse_revert(rec: Records, import_id: str) -> list[Run]:
    """Refuse, in one sentence, to revert an import that is reverted already, being reverted,
    still running (or paused), or purged; else its runs of revert_job, newest first (a failed
    one is resumed)."""
    doc = document(rec, import_id)
    reverts = runs_of(rec, import_id, REVERT_JOB)
    if doc["state"] == "reverted":
        raise MailPipelineError(f"import {import_id} was reverted already on {doc['reverted_at']}: "
                                "there is nothing left to undo")
    purged = purged_at(Folder.of(import_id))
    if purged:
        raise MailPipelineError(f"import {import_id} was purged on {purged}: its before-images are "
                                "gone, so it cannot be reverted")
    if reverts and not reverts[0].is_finished and not process.gone(reverts[0].tags):
        raise MailPipelineError(f"import {import_id} is being reverted already (run "
                                f"{reverts[0].run_id[:8]}): wait for it to finish")
    if doc["state"] not in ("finished", "failed", "cancelled"):
        hint = (f"; cancel it first (mail-pipeline imports cancel {import_id})"
                if doc["state"] == "paused" else "")
        raise MailPipelineError(f"import {import_id} is {doc['state']}: only an import that has "
                                f"ended (finished, failed or cancelled) can be reverted{hint}")
    return reverts


def all_import_ids(rec: Records) -> list[str]:
    """Every import: those with runs (purged ones included), and those without one yet."""
    ids = set(rec.partitions(IMPORTS_PARTITIONS)) | rec.partitions_with_runs(IMPORT_JOB)
    return sorted(ids, key=lambda i: (len(i), i))


def documents(rec: Records) -> list[dict]:
    """Every import's document, its runs and records read once for all."""
    ids = all_import_ids(rec)
    runs, reverts = _by_partition(rec, IMPORT_JOB), _by_partition(rec, REVERT_JOB)
    held = {key: json.loads(value) for key, value in rec.values(pending_key(i) for i in ids).items()}
    return [document(rec, i, runs.get(i, []), held.get(pending_key(i)), reverts.get(i, []))
            for i in ids]


def _by_partition(rec: Records, job_name: str) -> dict[str, list[Run]]:
    """The job's runs, newest first, by the import (partition) they belong to."""
    found: dict[str, list[Run]] = {}
    for run in rec.runs(job_name):
        found.setdefault(run.tags.get(Tags.PARTITION), []).append(run)
    return found


def export_doc(rec: Records, export_id: str) -> dict:
    """The export document of one export."""
    from mail_pipeline.exports import export_document
    runs = runs_of(rec, export_id, EXPORT_JOB)
    if not runs:
        raise MailPipelineError(f"export {export_id} not found")
    run = runs[0]
    state = _STATES.get(run.status, "exporting")
    if not run.is_finished and process.gone(run.tags):
        state = "failed"
    return export_document(
        export_id, state, created_at=_iso(run.create_timestamp),
        finished_at=_iso(run.end_time) if run.is_finished else None, run_id=run.run_id,
        error_message=failure_message(rec, run) if state == "failed" else None)

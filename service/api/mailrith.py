"""Mailrith's async jobs (seed 000): subscriber imports and exports, 202 on create, polled until
Completed or Failed, `Idempotency-Key`, errors as {"error": {"type", "code", "message"}}.

    POST /v1/jobs/subscriber-imports            {"csv_text", "mappings", "new_tag_name"}
    GET  /v1/jobs/subscriber-imports/{job_id}
    POST /v1/jobs/subscriber-exports            {"status", "query", "cold_only", ...}
    GET  /v1/jobs/subscriber-exports/{job_id}   its `download_url` once Completed
    GET  /v1/jobs/subscriber-exports/{job_id}/download

The same key with the same body returns the job it made; with another body it is a 409. A job id
is the import's or export's id with a prefix (`imp_12`, `exp_3`).
"""
import csv
import hashlib
import io
import json
import re
import time
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from assets.names import EXPORT_JOB, EXPORTS_PARTITIONS, IMPORT_JOB, Tags
from mail_pipeline import home
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.exports import build_export
from service import jobs, state
from service.api import common
from service.api.auth import EXPORT, IMPORT, key
from service.api.errors import ApiError
from service.api.uploads import read_json

router = APIRouter()
SYSTEM = "mailrith"
_STATUS = {"draft": "Queued", "scheduled": "Queued", "finished": "Completed", "failed": "Failed",
           "cancelled": "Failed", "reverted": "Completed", "exporting": "Processing"}
_FAILED_ROWS = 100
_RUN_WAIT_SECONDS = 5.0
# Mailrith's subscriber statuses → the export's filters.
_EXPORT_STATUS = {"active": {"status": ["enabled"]}, "inactive": {"status": ["disabled"]},
                  "disabled": {"status": ["disabled"]}, "blocked": {"status": ["blocklisted"]},
                  "blocklisted": {"status": ["blocklisted"]},
                  "unsubscribed": {"subscription_status": ["unsubscribed"]},
                  "bounced": {"subscription_status": ["bounced"]},
                  "complained": {"subscription_status": ["complained"]},
                  "unconfirmed": {"subscription_status": ["unconfirmed"]}, "all": {}}
_EXPORT_FIELDS = {"status", "query", "cold_only", "cold_days", "list", "lists", "format"}


def _digest(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _job_id(prefix: str, value: str) -> str:
    found = re.fullmatch(prefix + r"_(\d{1,12})", value)
    if not found:
        raise ApiError(404, f"no job {value!r}", code="job_not_found")
    return found.group(1)


def _idempotency_key(request: Request) -> Optional[str]:
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not value.strip() or len(value) > 255:
        raise ApiError(400, "the Idempotency-Key header must be 1 to 255 characters",
                       code="invalid_idempotency_key")
    return value.strip()


def _conflict() -> ApiError:
    return ApiError(409, "this Idempotency-Key was used with a different request body; use a new "
                         "key for a new job", code="idempotency_key_reused")


# --- imports ---------------------------------------------------------------------------------------

def _failed_rows(import_id: str) -> list[dict]:
    text = common.log_text(import_id, "failed")
    if not text:
        return []
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    rows = []
    for values in reader:
        if len(rows) == _FAILED_ROWS:
            break
        rows.append({"values": dict(zip(header[:-1], values[:-1])), "error": values[-1] if values else ""})
    return rows


def _import_job(request: Request, import_id: str) -> dict:
    document = common.document(request, SYSTEM, import_id)
    state = document["state"]
    stats = document["stats"]
    counts = stats["subscribers"]
    status = _STATUS.get(state, "Processing")
    skipped = sum(n for c, n in counts.items() if c.startswith("skipped_"))
    return {"id": f"imp_{import_id}", "object": "subscriber_import_job", "status": status,
            "created_at": document["created_at"], "completed_at": document["finished_at"],
            "result": {"total_rows": stats["number_of_records"], "processed_rows": stats["records_imported"],
                       "created": counts["added"], "updated": counts["updated"],
                       "skipped": skipped, "failed": counts["failed"],
                       "failed_rows": _failed_rows(import_id) if status in ("Completed", "Failed") else []},
            "error": {"message": document["error_message"] or f"the import was {state}"}
            if status == "Failed" else None,
            "run_id": document["run_id"]}


@router.post("/v1/jobs/subscriber-imports", status_code=202)
async def create_import(request: Request, token=Depends(key(SYSTEM, IMPORT))) -> JSONResponse:
    idempotency = _idempotency_key(request)
    body = await read_json(request, request.app.state.limits)
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object with csv_text and mappings",
                       code="invalid_request")
    digest = _digest(body)
    # A key's idempotency keys are its own: another client's same key is another job.
    fields = {"idempotency_key": f"mailrith-import:{token.name}:{idempotency}"} if idempotency else {}
    options = common.options_from(SYSTEM, body, fields)
    import_id, created = await common.create(request, SYSTEM, token, options,
                                             tags={Tags.BODY_SHA256: digest})
    return await _answer(request, import_id, created, digest)


async def _answer(request: Request, import_id: str, created: bool, digest: str) -> JSONResponse:
    """The job, 202 as when it was made (a retry gets the first answer's status); a key reused
    with another body is a 409."""
    def work() -> JSONResponse:
        if not created:
            first = _first_digest(common.records(request), import_id, IMPORT_JOB)
            if first not in (None, digest):
                raise _conflict()
        return JSONResponse(_import_job(request, import_id), 202)
    return await run_in_threadpool(work)


def _first_digest(rec, job_id: str, job_name: str) -> Optional[str]:
    """The body digest the job was made with (its first run's tag). A job made a moment ago by a
    request still in flight has no run yet: waited for a few seconds."""
    deadline = time.monotonic() + _RUN_WAIT_SECONDS
    while True:
        runs = state.runs_of(rec, job_id, job_name)
        if runs or time.monotonic() > deadline:
            return runs[-1].tags.get(Tags.BODY_SHA256) if runs else None
        time.sleep(0.2)


@router.get("/v1/jobs/subscriber-imports/{job_id}")
def get_import(request: Request, job_id: str, token=Depends(key(SYSTEM, IMPORT))) -> dict:
    import_id = _job_id("imp", job_id)
    if not home.import_dir(import_id).is_dir():
        raise ApiError(404, f"no job {job_id!r}", code="job_not_found")
    return _import_job(request, import_id)


# --- exports ---------------------------------------------------------------------------------------

def _export_options(body: Any):
    if not isinstance(body, dict):
        body = {} if body is None else body
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_request")
    unknown = sorted(set(body) - _EXPORT_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}: use " + ", ".join(sorted(_EXPORT_FIELDS)),
                       code="invalid_request")
    fields: dict[str, Any] = {}
    status = body.get("status")
    if status is not None:
        if not isinstance(status, str) or status.lower() not in _EXPORT_STATUS:
            raise ApiError(400, f"invalid status {status!r}: use Active, Unsubscribed, Bounced, "
                                "Complained, Unconfirmed, Blocked, Inactive or All", code="invalid_status")
        fields.update(_EXPORT_STATUS[status.lower()])
    if body.get("query") is not None:
        fields["search"] = body["query"]
    for name in ("cold_only", "cold_days", "format"):
        if body.get(name) is not None:
            fields[name] = body[name]
    lists = body.get("lists") or ([body["list"]] if body.get("list") else [])
    if lists:
        fields["lists"] = lists
    try:
        return build_export(fields)
    except MailPipelineError as exc:
        raise ApiError(400, str(exc), code="invalid_request") from None


def _export_job(request: Request, export_id: str) -> dict:
    try:
        document = state.export_doc(common.records(request), export_id)
    except MailPipelineError:
        raise ApiError(404, f"no job 'exp_{export_id}'", code="job_not_found") from None
    status = _STATUS.get(document["state"], "Processing")
    if document["state"] == "scheduled" or document["state"] == "exporting":
        status = "Queued" if document["state"] == "scheduled" else "Processing"
    ready = status == "Completed" and document["path"]
    return {"id": f"exp_{export_id}", "object": "subscriber_export_job", "status": status,
            "created_at": document["created_at"], "completed_at": document["finished_at"],
            "filters": document["filters"], "format": document["format"], "row_count": document["rows"],
            "download_url": str(request.url_for("download_export", job_id=f"exp_{export_id}")) if ready else None,
            "error": {"message": document["error_message"] or "the export failed"} if status == "Failed" else None,
            "run_id": document["run_id"]}


@router.post("/v1/jobs/subscriber-exports", status_code=202)
async def create_export(request: Request, token=Depends(key(SYSTEM, EXPORT))) -> JSONResponse:
    idempotency = _idempotency_key(request)
    body = await read_json(request, request.app.state.limits)
    options = _export_options(body)
    digest = _digest(body)

    def work() -> JSONResponse:
        inst = common.inst(request)
        export_id = jobs.create_export(inst)
        claim = f"mailrith-export:{token.name}:{idempotency}"
        if idempotency:
            existing = home.claim_key(claim, export_id)
            if existing is not None:
                inst.delete_dynamic_partition(EXPORTS_PARTITIONS, export_id)
                home.export_dir(export_id).rmdir()
                if _first_digest(common.records(request), existing, EXPORT_JOB) not in (None, digest):
                    raise _conflict()
                return JSONResponse(_export_job(request, existing), 202)
        try:
            jobs.execute_export(inst, export_id, options, detach=True, tags={
                Tags.API: SYSTEM, Tags.API_KEY: token.name, Tags.BODY_SHA256: digest})
        except BaseException:
            if idempotency:
                home.release_key(claim, export_id)
            raise
        return JSONResponse(_export_job(request, export_id), 202)
    return await run_in_threadpool(work)


@router.get("/v1/jobs/subscriber-exports/{job_id}")
def get_export(request: Request, job_id: str, token=Depends(key(SYSTEM, EXPORT))) -> dict:
    return _export_job(request, _job_id("exp", job_id))


@router.get("/v1/jobs/subscriber-exports/{job_id}/download", name="download_export")
def download_export(request: Request, job_id: str, token=Depends(key(SYSTEM, EXPORT))):
    job = _export_job(request, _job_id("exp", job_id))
    if job["download_url"] is None:
        raise ApiError(409, f"export {job_id} is {job['status']}: its file is not ready",
                       code="export_not_ready")
    document = state.export_doc(common.records(request), job_id.removeprefix("exp_"))
    path = Path(document["path"])
    if not path.is_file():
        raise ApiError(410, f"export {job_id}'s file is gone", code="export_file_gone")
    return FileResponse(path, filename=path.name)

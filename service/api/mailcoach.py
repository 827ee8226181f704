"""Mailcoach's subscriber imports API (seed 003): draft → append → start, Laravel's answers
(201 on create, 204 on delete and start, 422 with `errors` per field) and pagination.

    GET    /api/subscriber-imports                 {"data": [...], "links": {...}, "meta": {...}}
    POST   /api/subscriber-imports                 a draft (201)
    GET    /api/subscriber-imports/{uuid}
    PUT    /api/subscriber-imports/{uuid}          a draft's CSV and flags replaced
    DELETE /api/subscriber-imports/{uuid}          204 (cancelled if it has not ended)
    POST   /api/subscriber-imports/{uuid}/append   more CSV text for a draft
    POST   /api/subscriber-imports/{uuid}/start    204; queued for the daemon

An import's uuid is derived from its id (every import has one, whichever way it was made);
`email_list_uuid` is a list's uuid (`mail-pipeline lists`).
"""
import hashlib
import math
import threading
import uuid as uuidlib
from pathlib import Path
from typing import Any, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from assets.names import Tags
from mail_pipeline import catalog, drafts
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.layout import Folder
from mail_pipeline.pipeline import preflight
from service import jobs, state
from service.api import common
from service.api.auth import IMPORT, key
from service.api.errors import ApiError
from service.api.uploads import read_json, spool_text

router = APIRouter()
SYSTEM = "mailcoach"
_KEY = key(SYSTEM, IMPORT)
PER_PAGE = 15
_STATUS = {"draft": "draft", "scheduled": "pending", "finished": "completed", "failed": "failed",
           "cancelled": "failed", "reverted": "completed"}
_REQUIRED = ("subscribers_csv", "email_list_uuid", "subscribe_unsubscribed", "unsubscribe_others")
_FLAGS = ("subscribe_unsubscribed", "unsubscribe_others", "replace_tags")
# The first 20 hex digits of every import uuid of this product; the last 12 are the import id.
_PREFIX = hashlib.sha256(b"mail-pipeline subscriber import").hexdigest()[:20]
# The draft's CSV is given back inline up to this size (Mailcoach returns `subscribers_csv`).
_INLINE_BYTES = 1024 * 1024


def import_uuid(import_id: str) -> str:
    text = f"{_PREFIX}{int(import_id):012x}"
    return str(uuidlib.UUID(text[:12] + "8" + text[13:16] + "a" + text[17:]))  # version 8, RFC variant


def import_id_of(value: str) -> Optional[str]:
    try:
        parsed = uuidlib.UUID(value)
    except ValueError:
        return None
    if str(parsed) != value.lower() or import_uuid(str(int(parsed.hex[20:], 16))) != str(parsed):
        return None
    return str(int(parsed.hex[20:], 16))


def _words(field: str) -> str:
    return field.replace("_", " ")


def _validated(body: Any, required: tuple[str, ...]) -> dict:
    """Laravel's validation of the create, update and append bodies: every fault, by field."""
    if not isinstance(body, dict):
        raise ApiError(422, "the request body must be a JSON object", field="request")
    faults: dict[str, list[str]] = {}
    for field in required:
        if body.get(field) is None:
            faults[field] = [f"The {_words(field)} field is required."]
    if "subscribers_csv" in body and body["subscribers_csv"] is not None and not isinstance(body["subscribers_csv"], str):
        faults["subscribers_csv"] = ["The subscribers csv field must be a string."]
    for flag in _FLAGS:
        if flag in body and body[flag] is not None and not isinstance(body[flag], bool):
            faults[flag] = [f"The {_words(flag)} field must be true or false."]
    if isinstance(body.get("email_list_uuid"), str):
        if catalog.list_by_uuid(body["email_list_uuid"]) is None:
            faults["email_list_uuid"] = ["The selected email list uuid is invalid."]
    elif body.get("email_list_uuid") is not None:
        faults["email_list_uuid"] = ["The email list uuid field must be a string."]
    unknown = sorted(set(body) - {"subscribers_csv", "email_list_uuid", *_FLAGS})
    for field in unknown:
        faults[field] = [f"The {_words(field)} field is not accepted."]
    if faults:
        first = next(iter(faults.values()))[0]
        raise ApiError(422, first, field=next(iter(faults)), errors=faults)
    return body


def _resource(request: Request, import_id: str, with_csv: bool = False) -> dict:
    document = common.document(request, SYSTEM, import_id)
    options = document["options"]
    state = document["state"]
    listed = catalog.list_by_name(document["lists"][0]) if document["lists"] else None
    counts = document["stats"]["subscribers"]
    csv = None
    if with_csv and state == "draft":
        draft = Folder.of(import_id).draft
        if draft.exists() and draft.stat().st_size <= _INLINE_BYTES:
            csv = draft.read_text(encoding=options.get("encoding", "utf-8"), errors="replace")
    return {"id": int(import_id), "uuid": import_uuid(import_id), "subscribers_csv": csv,
            "status": _STATUS.get(state, "importing"),
            "email_list_uuid": listed.uuid if listed else None,
            **{flag: bool(options.get(flag, False)) for flag in _FLAGS},
            "imported_subscribers_count": None if state == "draft" else counts["added"] + counts["updated"],
            "error_count": counts["failed"]}


def _found(request: Request, value: str) -> str:
    import_id = import_id_of(value)
    if import_id is None or not Folder.of(import_id).path.is_dir() or state.forgotten(common.records(request), import_id):
        raise ApiError(404, "No query results for model [SubscriberImport].", code="not_found")
    return import_id


# A draft's changes and its start, one at a time per import (in this server): an append cannot
# slip in between a start's check and its run.
_guard = threading.Lock()
_draft_locks: dict[str, threading.Lock] = {}


def _locked(import_id: str) -> threading.Lock:
    with _guard:
        return _draft_locks.setdefault(import_id, threading.Lock())


def _draft(request: Request, import_id: str):
    try:
        return state.draft_options(common.records(request), import_id)
    except MailPipelineError:
        raise ApiError(422, "Only a draft import can be changed or started.", field="status") from None


@router.get("/api/subscriber-imports")
def index(request: Request, page: int = 1, token=Depends(_KEY)) -> dict:
    rec = common.records(request)
    ids = [i for i in state.all_import_ids(rec) if i.isdigit() and not state.forgotten(rec, i)]
    last = max(1, math.ceil(len(ids) / PER_PAGE))
    page = max(page, 1)
    chosen = ids[(page - 1) * PER_PAGE:page * PER_PAGE]
    path = str(request.url.replace(query="")).rstrip("/")
    link = lambda n: f"{path}?page={n}"  # noqa: E731
    return {"data": [_resource(request, i) for i in chosen],
            "links": {"first": link(1), "last": link(last), "prev": link(page - 1) if page > 1 else None,
                      "next": link(page + 1) if page < last else None},
            "meta": {"current_page": page, "from": (page - 1) * PER_PAGE + 1 if chosen else None,
                     "last_page": last, "path": path, "per_page": PER_PAGE,
                     "to": (page - 1) * PER_PAGE + len(chosen) if chosen else None, "total": len(ids)}}


@router.post("/api/subscriber-imports", status_code=201)
async def store(request: Request, token=Depends(_KEY)) -> JSONResponse:
    body = await read_json(request, request.app.state.limits)
    body = await run_in_threadpool(_validated, body, _REQUIRED)
    options = common.options_from(SYSTEM, body)
    import_id, _ = await common.create(request, SYSTEM, token, options, draft=True)
    resource = await run_in_threadpool(_resource, request, import_id, True)
    return JSONResponse({"data": resource}, 201)


@router.get("/api/subscriber-imports/{value}")
def show(request: Request, value: str, token=Depends(_KEY)) -> dict:
    return {"data": _resource(request, _found(request, value), True)}


@router.put("/api/subscriber-imports/{value}")
async def update(request: Request, value: str, token=Depends(_KEY)) -> dict:
    body = await read_json(request, request.app.state.limits)

    def work() -> dict:
        import_id = _found(request, value)
        with _locked(import_id):
            _draft(request, import_id)
            options = common.options_from(SYSTEM, _validated(body, _REQUIRED))
            file = spool_text(options.content.encode(options.encoding or "utf-8", errors="replace"))
            jobs.replace_draft(common.inst(request), import_id,
                               options.model_copy(update={"content": None}), file)
        return {"data": _resource(request, import_id, True)}
    return await run_in_threadpool(work)


@router.delete("/api/subscriber-imports/{value}", status_code=204)
def destroy(request: Request, value: str, token=Depends(_KEY)) -> Response:
    jobs.forget(common.inst(request), _found(request, value))
    return Response(status_code=204)


@router.post("/api/subscriber-imports/{value}/append")
async def append(request: Request, value: str, token=Depends(_KEY)) -> dict:
    body = await read_json(request, request.app.state.limits)

    def work() -> dict:
        import_id = _found(request, value)
        text = _validated(body, ("subscribers_csv",))["subscribers_csv"]
        if set(body) - {"subscribers_csv"}:
            raise ApiError(422, "Only subscribers_csv is appended.", field="subscribers_csv")
        with _locked(import_id):
            options = _draft(request, import_id)
            file = spool_text(text.encode(options.encoding or "utf-8", errors="replace"))
            try:
                drafts.append(Folder.of(import_id), file)
            finally:
                file.unlink(missing_ok=True)
        return {"data": _resource(request, import_id, True)}
    return await run_in_threadpool(work)


@router.post("/api/subscriber-imports/{value}/start", status_code=204)
def start(request: Request, value: str, token=Depends(_KEY)) -> Response:
    import_id = _found(request, value)
    with _locked(import_id):
        options = _draft(request, import_id)
        try:
            preflight(Path(options.source), options)
        except MailPipelineError as exc:
            raise ApiError(422, str(exc), field="subscribers_csv") from None
        jobs.launch_import(common.inst(request), import_id, options, detach=True,
                           tags={Tags.API: SYSTEM, Tags.API_KEY: token.name})
    return Response(status_code=204)

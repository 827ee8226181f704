"""listmonk's import API (seeds 004/001): one import at a time, its status object, its log, and
DELETE to stop it or clear it.

    POST   /api/import/subscribers       multipart `file` + `params` (JSON string)
    GET    /api/import/subscribers       {"data": {"name", "total", "imported", "status"}}
    GET    /api/import/subscribers/logs  {"data": "<the log as text>"}
    DELETE /api/import/subscribers       stop the running import, or clear a finished one
    GET    /api/health                   {"data": true}

"The current import" is the newest import made through this API (a run tagged with it); a
DELETE on a finished one tags its run as cleared, and the status reads `none` again.
"""
import asyncio
import json
from typing import Optional

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from assets.names import Tags
from mail_pipeline.document import FINISHED_STATES
from mail_pipeline.errors import MailPipelineError
from service import jobs, state
from service.api import common
from service.records import Run
from service.api.auth import IMPORT, key
from service.api.errors import ApiError
from service.api.uploads import read_form

router = APIRouter()
SYSTEM = "listmonk"
_NONE = {"name": "", "total": 0, "imported": 0, "status": "none"}
# Only one request at a time decides whether an import is running and starts one.
_starting = asyncio.Lock()


def _current(request: Request) -> Optional[Run]:
    runs = state.imports_tagged(common.records(request), {Tags.API: SYSTEM}, limit=1)
    return runs[0] if runs and Tags.CLEARED not in runs[0].tags else None


def _status(request: Request, run: Optional[Run]) -> dict:
    """listmonk's status object: none | importing | stopping | finished | failed."""
    if run is None:
        return dict(_NONE)
    document = common.document(request, SYSTEM, run.tags[Tags.PARTITION])
    now = document["state"]
    if now in ("finished", "reverted"):  # (a reverted import finished first, as Mailcoach's says)
        status = "finished"
    elif now in FINISHED_STATES or now == "paused":
        # listmonk's stopped import ends failed; a paused one (paused through another API or the
        # command line) is stopped as far as listmonk can tell, and a DELETE clears it.
        status = "failed"
    elif run.tags.get(Tags.REQUEST) in ("cancel", "pause"):
        status = "stopping"
    else:
        status = "importing"
    stats = document["stats"]
    return {"name": run.tags.get(Tags.SOURCE, ""), "total": stats["number_of_records"] or 0,
            "imported": stats["records_imported"], "status": status}


def _running(request: Request) -> bool:
    return _status(request, _current(request))["status"] in ("importing", "stopping")


@router.get("/api/health")
def health() -> dict:
    return {"data": True}


@router.post("/api/import/subscribers")
async def start_import(request: Request, token=Depends(key(SYSTEM, IMPORT))) -> dict:
    limits = request.app.state.limits
    upload = await read_form(request, limits)
    try:
        if upload.file is None or upload.filename is None:
            raise ApiError(400, "invalid file: the form has no 'file' part with a file name")
        if "params" not in upload.fields:
            raise ApiError(400, "invalid params: the form has no 'params' part")
        try:
            body = json.loads(upload.fields["params"])
        except (json.JSONDecodeError, RecursionError):
            raise ApiError(400, "invalid params: 'params' is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid params: 'params' must be a JSON object")
        options = common.options_from(SYSTEM, body)
    except BaseException:
        upload.discard()
        raise
    async with _starting:
        if await run_in_threadpool(_running, request):
            upload.discard()
            raise ApiError(400, "an import is already running")
        # (the upload's name is only a label: it never names a path here)
        named = upload.named()
        import_id, _ = await common.create(request, SYSTEM, token, options, named)
    run = await run_in_threadpool(lambda: state.runs_of(common.records(request), import_id)[0])
    return {"data": await run_in_threadpool(_status, request, run)}


@router.get("/api/import/subscribers")
def status(request: Request, token=Depends(key(SYSTEM, IMPORT))) -> dict:
    return {"data": _status(request, _current(request))}


@router.get("/api/import/subscribers/logs")
def import_logs(request: Request, token=Depends(key(SYSTEM, IMPORT))) -> dict:
    run = _current(request)
    text = common.log_text(run.tags[Tags.PARTITION], "log") if run else None
    return {"data": text or ""}


@router.delete("/api/import/subscribers")
def stop_import(request: Request, token=Depends(key(SYSTEM, IMPORT))) -> dict:
    run = _current(request)
    if run is None:
        return {"data": dict(_NONE)}
    now = _status(request, run)
    if now["status"] == "stopping":
        return {"data": now}
    if now["status"] == "importing":
        try:
            jobs.stop(common.inst(request), run.tags[Tags.PARTITION], "cancel")
        except MailPipelineError:
            pass  # it finished a moment ago: this DELETE clears it, as listmonk's would
        else:
            return {"data": _status(request, state.runs_of(common.records(request), run.tags[Tags.PARTITION])[0])}
    common.inst(request).add_run_tags(run.run_id, {Tags.CLEARED: "true"})
    return {"data": dict(_NONE)}

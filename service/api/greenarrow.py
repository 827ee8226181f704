"""GreenArrow's subscriber imports API (seed 002), every JSON answer in its envelope
{"success", "data", "error_code", "error_message"}.

    GET  /ga/api/v2/subscriber_imports[?scope=&page=&per_page=]
    GET  /ga/api/v2/mailing_lists/:id/subscriber_imports[?scope=…]
    POST /ga/api/v2/mailing_lists/:id/subscriber_imports     {"subscriber_import": {...}}
    GET  /ga/api/v2/subscriber_imports/:id                   (also under mailing_lists/:id/)
    POST /ga/api/v2/subscriber_imports/:id/pause|unpause|cancel
    GET  /ga/api/v2/subscriber_imports/:id/logs/:category

The seed's own examples leave out the `v2` (`/ga/api/mailing_lists/1/…`): those paths answer too.
Mailing lists are the lists' integer ids (`mail-pipeline lists`).
"""
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mail_pipeline import catalog, layout
from mail_pipeline.document import listing
from mail_pipeline.errors import MailPipelineError
from service import jobs, state
from service.api import common
from service.api.auth import IMPORT, key
from service.api.errors import ApiError
from service.api.uploads import read_json

router = APIRouter()
SYSTEM = "greenarrow"
_KEY = key(SYSTEM, IMPORT)
_SCOPES = ("recent", "active", "finished", "all")
_DEFAULT_STATUS = {"confirmed": "active", "unconfirmed": "active", "unsubscribed": "unsubscribed",
                   "bounced": "bounced", "deactivated": "deactivated", "complained": "scomp"}


def _ok(data, **extra) -> JSONResponse:
    return JSONResponse({"success": True, **extra, "data": data, "error_code": None, "error_message": None})


def _mailing_list(list_id: int) -> catalog.MailingList:
    found = catalog.list_by_id(list_id)
    if found is None:
        raise ApiError(404, f"mailing list {list_id} not found", code="not_found")
    return found


def _file_source(document: dict) -> dict:
    source = document.get("source") or ""
    if "://" in source:
        return {"type": "url", "url": source}
    name = Path(source).name
    if name.startswith("content-") or not source:
        return {"type": "json", "filename": "data"}  # CSV text sent in the request
    return {"type": "upload_directory", "filename": name}


def _list_of(document: dict) -> tuple[Optional[int], Optional[str]]:
    names = document["lists"]
    if not names:
        return None, None
    found = catalog.list_by_name(names[0])
    return (found.id if found else None), names[0]


def _summary(document: dict) -> dict:
    list_id, list_name = _list_of(document)
    stats = document["stats"]
    return {"id": _int(document["id"]), "mailing_list_id": list_id, "mailing_list_name": list_name,
            "created_at": document["created_at"], "state": document["state"],
            "begins_at": document["begins_at"], "finished_at": document["finished_at"],
            "stats": {"number_of_records": stats["number_of_records"],
                      "records_imported": stats["records_imported"]},
            "file_source": _file_source(document)}


def _details(document: dict) -> dict:
    options = document["options"]
    status = options.get("subscription_status")
    return {**_summary(document), "stats": document["stats"],
            "error_message": document["error_message"],
            # (before the file is staged, a separator or character set not given reads as
            # GreenArrow's defaults; once staged, as detected)
            "file_format": {"character_set": options.get("encoding") or "utf-8",
                            "csv_has_headers": options.get("header", True),
                            "csv_field_enclosure": options.get("quote", '"'),
                            "csv_field_separator": options.get("delimiter") or ",",
                            "date_format": options.get("date_format", "mdy")},
            "subscriber_defaults": {"status": _DEFAULT_STATUS.get(status or "unconfirmed", status)},
            "overwrite": options.get("overwrite", False),
            "overwrite_when_status": options.get("overwrite_when_status", {}),
            "column_mapping": options.get("mapping"),
            "default_custom_fields": options.get("default_custom_fields", {}),
            "overwrite_what": options.get("overwrite_what", {})}


def _int(value: str):
    return int(value) if str(value).isdigit() else value


def _listing(request: Request, list_name: Optional[str], scope: str, page: int, per_page: int) -> JSONResponse:
    if scope not in _SCOPES:
        raise ApiError(422, f"invalid scope {scope!r}: use " + ", ".join(_SCOPES), code="validation_failed")
    if not 1 <= per_page <= 500:
        raise ApiError(422, "invalid per_page: must be between 1 and 500", code="validation_failed")
    if page < 0:
        raise ApiError(422, "invalid page: pages start at 0", code="validation_failed")
    documents = state.documents(common.records(request))
    result = listing(documents, scope, list_name, page, per_page)
    return _ok([_summary(d) for d in result["data"]], page=result["page"], per_page=result["per_page"],
               num_records=result["num_records"], num_pages=result["num_pages"])


for prefix in ("/ga/api/v2", "/ga/api"):
    @router.get(f"{prefix}/subscriber_imports")
    def all_imports(request: Request, scope: str = "recent", page: int = 0, per_page: int = 100,
                    token=Depends(_KEY)):
        return _listing(request, None, scope, page, per_page)

    @router.get(f"{prefix}/mailing_lists/{{list_id}}/subscriber_imports")
    def list_imports(request: Request, list_id: int, scope: str = "recent", page: int = 0,
                     per_page: int = 100, token=Depends(_KEY)):
        return _listing(request, _mailing_list(list_id).name, scope, page, per_page)

    @router.post(f"{prefix}/mailing_lists/{{list_id}}/subscriber_imports")
    async def create_import(request: Request, list_id: int, token=Depends(_KEY)):
        target = await run_in_threadpool(_mailing_list, list_id)
        body = await read_json(request, request.app.state.limits)
        if not isinstance(body, dict) or "subscriber_import" not in body:
            raise ApiError(422, "missing parameter 'subscriber_import'", code="missing_parameter")
        options = common.options_from(SYSTEM, body, {"lists": [target.name]})
        import_id, _ = await common.create(request, SYSTEM, token, options)
        document = await run_in_threadpool(state.document, common.records(request), import_id)
        return _ok(_details(document))

    @router.get(f"{prefix}/subscriber_imports/{{import_id}}")
    def show(request: Request, import_id: int, token=Depends(_KEY)):
        return _ok(_details(common.document(request, SYSTEM, str(import_id))))

    @router.get(f"{prefix}/mailing_lists/{{list_id}}/subscriber_imports/{{import_id}}")
    def show_in_list(request: Request, list_id: int, import_id: int, token=Depends(_KEY)):
        document = common.document(request, SYSTEM, str(import_id))
        if _mailing_list(list_id).name not in document["lists"]:
            raise ApiError(404, f"subscriber import {import_id} not found in mailing list {list_id}",
                           code="not_found")
        return _ok(_details(document))

    @router.post(f"{prefix}/subscriber_imports/{{import_id}}/{{action}}")
    def control(request: Request, import_id: int, action: str, token=Depends(_KEY)):
        if action not in ("pause", "unpause", "cancel"):
            raise ApiError(404, "no such route")
        inst, id_ = common.inst(request), str(import_id)
        common.document(request, SYSTEM, id_)  # 404 for an unknown import
        try:
            if action == "unpause":
                jobs.resume(inst, id_, detach=True)
            else:
                jobs.stop(inst, id_, action)
        except MailPipelineError as exc:
            raise ApiError(422, str(exc), code="validation_failed") from None
        return _ok(_details(state.document(common.records(request), id_)))

    @router.get(f"{prefix}/subscriber_imports/{{import_id}}/logs/{{category}}")
    def read_log(request: Request, import_id: int, category: str, token=Depends(_KEY)):
        if category not in layout.LOGS or category == "log":
            raise ApiError(404, f"unknown log {category!r}", code="not_found")
        common.document(request, SYSTEM, str(import_id))
        text = common.log_text(str(import_id), category)
        if text is None:
            raise ApiError(404, f"subscriber import {import_id} has no {category} log", code="not_found")
        media = "text/csv" if category == "failed" else "text/plain"
        return Response(text, media_type=f"{media}; charset=utf-8")

"""The web page (spec §7, `GET /`): for people who are not data engineers. Sign in with a key,
upload a CSV, pick the lists and options, see the dry run (counts, column mapping, first failed
rows), start the import, watch it, read its logs and follow its Dagster run.

    GET  /                                   the page, or the sign-in form without a valid key
    POST /signin                             name + token → the cookie `mail_pipeline_key`
    GET|POST /signout                        clears it
    GET  /ui/static/page.js|page.css         the page's script and style (no build step)
    POST /ui/preview                         multipart file + options → the dry run's summary
    POST /ui/imports                         multipart file + options → {"id"}
    GET  /ui/imports/{id}                    the import document, with `run_url`
    GET  /ui/imports/{id}/logs/{category}    one log, as text

The page is plain HTML; its script only sends the form and writes answers with `textContent`.
Every value the server puts into HTML is escaped. The cookie is HttpOnly and SameSite=Strict, so
another site can neither read it nor make the browser send it with a request of its own.
"""
import asyncio
import html
import json
import shutil
from pathlib import Path
from string import Template
from typing import Optional
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mail_pipeline import catalog, home, layout, logs, store
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.files import read_json
from mail_pipeline.layout import Folder
from mail_pipeline.options import ImportOptions, build
from mail_pipeline.pipeline import preflight
from mail_pipeline.preview import preview
from service.api import common
from service.api.auth import COOKIE, IMPORT, key
from service.api.errors import ApiError
from service.api.uploads import Upload, read_form

router = APIRouter()
SYSTEM = "page"
_KEY = key(SYSTEM, IMPORT)
STATIC = Path(__file__).with_name("static")
_ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}
_FIELDS = ("lists", "mode", "subscription_status", "overwrite", "delimiter")
FAILED_ROWS_SHOWN = 10
_MAX_SIGNIN_BYTES = 16 * 1024
# The page's own files only: no inline script or style, nothing from elsewhere, never in a frame.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # (same-origin, not no-referrer: with no-referrer the browser sends "Origin: null", and the
    # forms could not be told from another origin's)
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# --- HTML ------------------------------------------------------------------------------------------

def _render(template: str, status: int = 200, **values: str) -> HTMLResponse:
    """A template of static/ with `values` (already escaped) in its $placeholders."""
    text = Template((STATIC / template).read_text(encoding="utf-8")).substitute(values)
    return HTMLResponse(text, status, headers=_HEADERS)


def _signin(error: Optional[str] = None, name: str = "", status: int = 200) -> HTMLResponse:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    response = _render("signin.html", status, error=shown, name=html.escape(name))
    if error:
        response.delete_cookie(COOKIE, path="/")
    return response


def _list_boxes(lists: list[catalog.MailingList]) -> str:
    if not lists:
        return '<p class="hint" id="no-lists">No lists yet: name a new one below.</p>'
    return "\n".join(
        f'<label class="list"><input type="checkbox" name="list" value="{html.escape(m.name)}"> '
        f"{html.escape(m.name)}</label>" for m in lists)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request):
    """The page for a valid key (cookie or Authorization header); else the sign-in form."""
    try:
        token = await _KEY(request)
    except ApiError as exc:
        if exc.status == 403:
            return _signin(f"This key cannot import subscribers: it lacks the {IMPORT} permission.")
        if COOKIE in request.cookies:
            return _signin("This key is no longer accepted: sign in again.")
        return _signin()
    lists = await run_in_threadpool(catalog.all_lists)
    limit = request.app.state.limits.max_upload_bytes / (1024 * 1024)
    return _render("page.html", key_name=html.escape(token.name), lists=_list_boxes(lists),
                   max_upload=html.escape(f"{limit:g} MB"))


async def _small_form(request: Request) -> dict[str, str]:
    """A URL-encoded form of a few fields (the sign-in), refused beyond a few kilobytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_SIGNIN_BYTES:
            raise ApiError(413, "the form is too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def same_origin(request: Request) -> None:
    """A form or script of another origin may not post here with the visitor's cookie: SameSite
    keeps other sites out, this keeps out other origins of the same site (another port, a
    sibling subdomain). Browsers say where a request comes from (Origin, Sec-Fetch-Site)."""
    origin = request.headers.get("origin")
    ours = f"{request.url.scheme}://{request.url.netloc}"
    site = request.headers.get("sec-fetch-site")
    if (origin is not None and origin != ours) or (origin is None and site not in (None, "same-origin", "none")):
        raise ApiError(403, "this form may only be sent from the page itself")


@router.post("/signin", include_in_schema=False, dependencies=[Depends(same_origin)])
async def signin(request: Request):
    """Check the key; keep it in the cookie the page's routes read, then back to the page."""
    form = await _small_form(request)
    name, secret = form.get("name", "").strip(), form.get("token", "").strip()
    if not secret:
        return _signin("Enter the key's token.", name, 401)
    token = await run_in_threadpool(catalog.authenticate, secret, name or None)
    if token is None:
        return _signin("That key name and token are not accepted.", name, 401)
    if IMPORT not in token.permissions:
        return _signin(f"This key cannot import subscribers: it lacks the {IMPORT} permission.",
                       name, 403)
    response = RedirectResponse("/", 303, headers={"Cache-Control": "no-store"})
    response.set_cookie(COOKIE, f"token {token.name}:{secret}", path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.api_route("/signout", methods=["GET", "POST"], include_in_schema=False,
                  dependencies=[Depends(same_origin)])
def signout():
    response = RedirectResponse("/", 303, headers={"Cache-Control": "no-store"})
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/ui/static/{name}", include_in_schema=False)
def asset(name: str):
    if name not in _ASSETS:
        raise ApiError(404, "no such file")
    return Response((STATIC / name).read_bytes(), media_type=f"{_ASSETS[name]}; charset=utf-8",
                    headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})


# --- the page's script's routes --------------------------------------------------------------------

def options_from_form(fields: dict[str, str]) -> ImportOptions:
    """The page's form fields as import options: `lists` is a JSON array of list names."""
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown form field {unknown[0]!r}", code="validation_failed")
    try:
        lists = json.loads(fields.get("lists") or "[]")
    except (json.JSONDecodeError, RecursionError):
        lists = None
    if not isinstance(lists, list) or not all(isinstance(name, str) for name in lists):
        raise ApiError(400, "invalid lists: expected a JSON array of list names", code="validation_failed")
    canonical = {"lists": list(dict.fromkeys(n.strip() for n in lists if n.strip())),
                 "mode": fields.get("mode") or "subscribe",
                 "overwrite": fields.get("overwrite", "").lower() in ("true", "on", "1", "yes"),
                 "delimiter": fields.get("delimiter") or None}  # (none given: detected)
    if fields.get("subscription_status"):
        canonical["subscription_status"] = fields["subscription_status"]
    try:
        return build(canonical)
    except MailPipelineError as exc:
        raise common.refused(SYSTEM, exc) from None


def _upload_with_file(upload: Upload) -> Path:
    if upload.file is None:
        raise ApiError(400, "choose a CSV file to upload", code="validation_failed")
    return upload.file


def dry_run(options: ImportOptions, file: Path) -> dict:
    """The preview of importing `file`: counts, column mapping, the first failed rows and the
    lists it would create. Its folder under previews/ is removed once read."""
    preflight(file, options)  # a wrong file or mapping is refused before any folder is made
    document = preview(options.model_copy(update={"source": str(file)}))
    path = Path(document["logs"]).parent
    try:
        folder = Folder(path.name, path)
        validation = read_json(folder.validation, {})
        header, rows = logs.failed_preview(folder.path, limit=FAILED_ROWS_SHOWN)
        stats = document["stats"]
        return {"number_of_records": stats["number_of_records"], "counts": stats["subscribers"],
                "mapping": validation.get("mapping", []), "columns": validation.get("columns", []),
                "failed": {"header": header, "rows": rows, "shown": len(rows),
                           "total": stats["subscribers"]["failed"]},
                "lists": options.lists,
                "new_lists": [n for n in options.lists if catalog.list_by_name(n) is None]}
    finally:
        shutil.rmtree(path, ignore_errors=True)


# A dry run merges into the store in a transaction it rolls back, so it needs the store's file
# lock like a writer: one at a time, and none while an import writes (answered at once rather
# than holding a server thread for as long as the import takes).
_previewing = asyncio.Semaphore(1)
_BUSY = "the subscriber store is busy with an import: preview again when it has finished, or start the import (it waits its turn)"


@router.post("/ui/preview", include_in_schema=False, dependencies=[Depends(same_origin)])
async def preview_import(request: Request, token=Depends(_KEY)):
    upload = await read_form(request, request.app.state.limits)
    try:
        file = _upload_with_file(upload)
        options = options_from_form(upload.fields)
        if _previewing.locked():
            raise ApiError(409, "another preview is running: try again in a moment")
        async with _previewing:
            if await run_in_threadpool(store.held, home.database_path()):
                raise ApiError(409, _BUSY)
            try:
                return await run_in_threadpool(dry_run, options, file)
            except MailPipelineError as exc:
                raise common.refused(SYSTEM, exc, field="file") from None
    finally:
        upload.discard()


@router.post("/ui/imports", status_code=201, include_in_schema=False, dependencies=[Depends(same_origin)])
async def start_import(request: Request, token=Depends(_KEY)):
    upload = await read_form(request, request.app.state.limits)
    try:
        _upload_with_file(upload)
        options = options_from_form(upload.fields)
        # (the file keeps its name: the import's source, as the runs list shows it)
        import_id, _ = await common.create(request, SYSTEM, token, options, upload.named())
    finally:
        upload.discard()
    return JSONResponse({"id": import_id}, 201)


@router.get("/ui/imports/{import_id}", include_in_schema=False)
def show_import(request: Request, import_id: str, token=Depends(_KEY)):
    document = common.document(request, SYSTEM, import_id)
    run_id = document.get("run_id")
    return {**document, "run_url": f"{request.app.state.dagster_url}/runs/{run_id}" if run_id else None}


@router.get("/ui/imports/{import_id}/logs/{category}", include_in_schema=False)
def read_log(request: Request, import_id: str, category: str, token=Depends(_KEY)):
    if category not in layout.LOGS:
        raise ApiError(404, f"unknown log {category!r}: use " + ", ".join(layout.LOGS))
    common.document(request, SYSTEM, import_id)  # 404 for an unknown import
    text = common.log_text(import_id, category) or ""
    # Plain text whatever the log (the failed CSV too): the browser shows it, never runs it.
    return Response(text, media_type="text/plain; charset=utf-8",
                    headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

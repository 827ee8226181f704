"""What the four APIs share: options from a request body, an import created from it (checked
before anything is written), documents and logs read from the job service."""
import shutil
from pathlib import Path
from typing import Any, Optional

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from assets.names import Tags
from mail_pipeline import catalog, download, layout
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.layout import Folder
from mail_pipeline.options import ImportOptions, build
from mail_pipeline.params import from_body
from mail_pipeline.pipeline import content_bytes, preflight
from mail_pipeline.retention import purged_at
from service import jobs, state
from service.api.errors import ApiError
from service.api.uploads import incoming_dir, spool_text

# The status each system answers a request it cannot take (a bad option, an unknown list).
INVALID = {"listmonk": 400, "greenarrow": 422, "mailcoach": 422, "mailrith": 400, "page": 400}


def inst(request: Request):
    """The Dagster instance the server opened once, as the command line's (for what writes)."""
    return request.app.state.instance


def records(request: Request):
    """The run records the server reads imports' state from (`service.state`)."""
    return request.app.state.records


def refused(system: str, exc: MailPipelineError, field: Optional[str] = None) -> ApiError:
    text = str(exc)
    if text.endswith(" not found") or " not found:" in text:
        return ApiError(404, text, code="not_found")
    return ApiError(INVALID[system], text, code="validation_failed", field=field)


def options_from(system: str, body: Any, fields: Optional[dict] = None) -> ImportOptions:
    """A system's request body (its own shape only) as the import's options, with `fields` on top."""
    try:
        _, canonical = from_body(body, {"listmonk": "listmonk", "greenarrow": "GreenArrow",
                                        "mailcoach": "Mailcoach", "mailrith": "Mailrith"}[system])
        return build({**canonical, **(fields or {})})
    except MailPipelineError as exc:
        raise refused(system, exc) from None


def _prepare(options: ImportOptions, file: Optional[Path],
             draft: bool = False) -> tuple[ImportOptions, Optional[Path]]:
    """The file the import reads, checked (readable, CSV or ZIP, its mapping's columns there)
    before the import exists: an upload, inline CSV text spooled like one, a URL (checked when
    downloaded) or a file of the uploads folder. A draft's file is checked when it starts (it
    may still be a header waiting for rows)."""
    if options.content is not None:
        file = spool_text(content_bytes(options))
        options = options.model_copy(update={"content": None})
    try:
        if draft:
            pass
        elif file is not None:
            preflight(file, options)
        elif "://" in options.source:
            download.check_url(options.source, options.public_urls_only)
        elif options.source:
            preflight(Path(options.source), options)
        else:
            raise MailPipelineError("no CSV given: send a file or CSV text")
        catalog.ensure_lists(options.lists)
    except BaseException:
        if file is not None:
            file.unlink(missing_ok=True)
        raise
    return options, file


async def create(request: Request, system: str, key: catalog.Token, options: ImportOptions,
                 file: Optional[Path] = None, draft: bool = False,
                 tags: Optional[dict] = None) -> tuple[str, bool]:
    """Create the import (queued for the daemon, scheduled, or a draft), tagged with the API and
    the key that made it. Returns (import id, created: False when its idempotency key had made
    one already)."""
    # (a client may not make the server fetch from its own network, unless serve allows it)
    options = options.model_copy(update={"public_urls_only": not request.app.state.private_urls})

    def work() -> tuple[str, bool]:
        prepared, spooled = _prepare(options, file, draft)
        return jobs.submit_import(inst(request), prepared, spooled, draft=draft,
                                  tags={Tags.API: system, Tags.API_KEY: key.name, **(tags or {})})
    try:
        return await run_in_threadpool(work)
    except MailPipelineError as exc:
        raise refused(system, exc, field="subscribers_csv") from None
    finally:  # an upload's own folder (Upload.named), empty once its file moved or was dropped
        if file is not None and file.parent.parent == incoming_dir():
            shutil.rmtree(file.parent, ignore_errors=True)


def document(request: Request, system: str, import_id: str) -> dict:
    """The import document; an unknown import is that system's 404."""
    try:
        return state.document(records(request), import_id)
    except MailPipelineError as exc:
        raise refused(system, exc) from None  # ("import N not found" is the 404)


def log_text(import_id: str, category: str) -> Optional[str]:
    """One of the import's logs, or None when it has none (not started, empty, purged)."""
    folder = Folder.of(import_id)
    if not folder.path.is_dir() or purged_at(folder):
        return None
    path = layout.log_path(folder.path, category)
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    return text or None

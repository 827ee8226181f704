"""Request bodies read as they arrive: a multipart upload streams to a file on disk (never held
in memory), within a size cap, a count of parts and a time limit per chunk; a JSON body is
read within the same cap. Whatever goes wrong, the partial file is removed."""
import asyncio
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from mail_pipeline import home
from service.api.errors import ApiError

# A form of the four systems has two or three parts (file, params); more is not a client of theirs.
MAX_PARTS = 16
MAX_FIELD_BYTES = 1024 * 1024  # a part that is not the file (listmonk's params)


@dataclass
class Limits:
    """The server's limits on a request body, set by `mail-pipeline serve`."""

    max_upload_bytes: int = 200 * 1024 * 1024
    chunk_timeout: float = 60.0   # seconds without a byte: a slow (or stalled) client is cut off
    # A JSON body is parsed in memory, so it has a cap of its own (GreenArrow documents 10 MB
    # for `content`); a larger file is an upload (listmonk's form), or appended in parts
    # (Mailcoach).
    max_json_bytes: int = 32 * 1024 * 1024

    def json_cap(self) -> int:
        return min(self.max_upload_bytes, self.max_json_bytes)


@dataclass
class Upload:
    """A multipart form, read: its text fields, and its file part (spooled under the home)."""

    fields: dict[str, str] = field(default_factory=dict)
    file: Optional[Path] = None
    filename: Optional[str] = None

    def named(self) -> Path:
        """The file under the client's name (a label, made safe), in a folder of its own so that
        two uploads of the same name never meet."""
        folder = Path(tempfile.mkdtemp(dir=incoming_dir(), prefix="named-"))
        path = folder / (self.filename or "upload.csv")
        self.file.rename(path)
        self.file = path
        return path

    def discard(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)
            if self.file.parent != incoming_dir():  # its own folder (named)
                shutil.rmtree(self.file.parent, ignore_errors=True)
            self.file = None


def incoming_dir() -> Path:
    """Where uploads land while they arrive; a finished one is moved into its import's folder."""
    path = home.uploads_dir() / ".incoming"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sweep_incoming(older_than: float = 24 * 3600) -> int:
    """Remove what uploads left behind when a server died mid-request (older than a day: another
    server on this home may be receiving one now). Returns how many were removed."""
    root = home.uploads_dir() / ".incoming"
    if not root.is_dir():
        return 0
    removed, cutoff = 0, time.time() - older_than
    for path in root.iterdir():
        try:
            if path.lstat().st_mtime < cutoff:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed += 1
        except OSError:
            pass
    return removed


def safe_name(filename: Optional[str]) -> Optional[str]:
    """A client's file name as a label only (it never names a path here): its last component,
    control characters dropped."""
    if not filename:
        return None
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    while len(name.encode("utf-8")) > 200:  # a file name's limit is in bytes
        name = name[:-1]
    return None if name in ("", ".", "..") else name


async def _chunks(request: Request, limits: Limits):
    """The body's chunks, each awaited at most `chunk_timeout` seconds."""
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), limits.chunk_timeout)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body stalled: no data for {limits.chunk_timeout:.0f} seconds",
                           code="request_timeout") from None
        except ClientDisconnect:
            raise ApiError(400, "the client went away before the request body ended",
                           code="client_disconnected") from None
        yield chunk


def _too_large(cap: int, what: str = "upload") -> ApiError:
    size = f"{cap // (1024 * 1024)} MB" if cap >= 1024 * 1024 else f"{cap} bytes"
    return ApiError(413, f"the {what} is larger than the server's limit of {size}", code="file_too_large")


def _check_length(request: Request, cap: int, what: str = "upload", slack: int = 0) -> None:
    """Refused at once when the declared length is over the cap (with `slack` for the form's
    other parts and boundaries)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap + slack:
        raise _too_large(cap, what)


async def read_form(request: Request, limits: Limits, file_field: str = "file") -> Upload:
    """A multipart/form-data body: text parts into `fields`, the part named `file_field` streamed
    to a file. Refused (ApiError) when it is not multipart, too large, has too many parts, or
    stalls; nothing is left behind then."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise ApiError(400, "expected a multipart/form-data body with a file part", code="bad_request")
    _check_length(request, limits.max_upload_bytes, slack=MAX_FIELD_BYTES)
    upload = Upload()
    state: dict[str, Any] = {"parts": 0, "size": 0, "header_field": b"", "headers": {},
                             "name": None, "value": bytearray(), "out": None, "error": None}

    def on_part_begin() -> None:
        state["parts"] += 1
        if state["parts"] > MAX_PARTS:
            raise ApiError(400, f"the form has more than {MAX_PARTS} parts", code="too_many_parts")
        state["headers"], state["name"], state["value"] = {}, None, bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = state["header_field"].lower()
        state["headers"][key] = state["headers"].get(key, b"") + data[start:end]

    def on_header_end() -> None:
        state["header_field"] = b""

    def on_headers_finished() -> None:
        disposition, options = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == file_field:
            if upload.file is not None:
                raise ApiError(400, f"the form has more than one {file_field!r} part", code="bad_request")
            upload.filename = safe_name(options.get(b"filename", b"").decode("utf-8", "replace"))
            fd, path = tempfile.mkstemp(dir=incoming_dir(), prefix="upload-")
            upload.file = Path(path)
            state["out"] = os.fdopen(fd, "wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        size = end - start
        if state["out"] is not None:
            state["size"] += size
            if state["size"] > limits.max_upload_bytes:
                raise _too_large(limits.max_upload_bytes)
            state["out"].write(data[start:end])
        else:
            state["value"] += data[start:end]
            if len(state["value"]) > MAX_FIELD_BYTES:
                raise ApiError(413, f"the form part {state['name']!r} is larger than 1 MB",
                               code="field_too_large")

    def on_part_end() -> None:
        if state["out"] is not None:
            state["out"].close()
            state["out"] = None
        elif state["name"]:
            upload.fields[state["name"]] = state["value"].decode("utf-8", "replace")

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished})
    try:
        async for chunk in _chunks(request, limits):
            parser.write(chunk)
        parser.finalize()
        if state["out"] is not None:  # the body ended inside the file part
            raise ApiError(400, "the multipart body ended before its closing boundary", code="bad_request")
    except ApiError:
        _abandon(state, upload)
        raise
    except Exception as exc:  # python-multipart's own errors: a malformed body
        _abandon(state, upload)
        raise ApiError(400, f"the multipart body cannot be read: {exc}", code="bad_request") from None
    return upload


def _abandon(state: dict, upload: Upload) -> None:
    if state["out"] is not None:
        state["out"].close()
    upload.discard()


async def read_json(request: Request, limits: Limits) -> Any:
    """A JSON body (any content type: clients forget the header), within the cap."""
    cap = limits.json_cap()
    _check_length(request, cap, "JSON body")
    body = bytearray()
    async for chunk in _chunks(request, limits):
        body += chunk
        if len(body) > cap:
            raise _too_large(cap, "JSON body")
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {getattr(exc, 'msg', exc)}",
                       code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "the request body nests too deep", code="invalid_json") from None


def spool_text(data: bytes) -> Path:
    """Inline CSV text as an incoming file, like an upload."""
    fd, path = tempfile.mkstemp(dir=incoming_dir(), prefix="content-")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return Path(path)

"""URL sources (spec §4, GreenArrow's `file_source.url`): http(s) only, at most 200 MB, up to
three attempts (the second 10 s after the first failure, the third 50 s after the second)."""
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from mail_pipeline.errors import MailPipelineError
from mail_pipeline.files import replacing

MAX_BYTES = 200 * 1024 * 1024
RETRY_DELAYS = (10.0, 50.0)
TIMEOUT = 60.0  # seconds without a byte before an attempt fails
_CHUNK = 1 << 20


def is_url(source: str) -> bool:
    return "://" in source and urllib.parse.urlsplit(source).scheme.lower() in ("http", "https")


def check_url(source: str) -> None:
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme not in ("http", "https"):
        raise MailPipelineError(f"invalid source {source!r}: only http and https URLs are downloaded")


class _HttpOnly(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would also follow one to ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_HttpOnly)


class _TooLarge(MailPipelineError):
    pass


def download(url: str, dest: Path, on_attempt: Optional[Callable[[int], None]] = None) -> int:
    """Fetch `url` into `dest` (whole or not at all) and return its size. A file over 200 MB is
    refused at once; any other failure is tried again per RETRY_DELAYS."""
    check_url(url)
    attempts = len(RETRY_DELAYS) + 1
    for attempt in range(1, attempts + 1):
        if on_attempt:
            on_attempt(attempt)
        try:
            return _fetch(url, dest)
        except MailPipelineError:
            raise  # too large, or a redirect elsewhere: trying again cannot help
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            if attempt == attempts:
                raise MailPipelineError(f"download failed after {attempts} attempts: {url}: {reason}") from None
            time.sleep(RETRY_DELAYS[attempt - 1])
    raise AssertionError("unreachable")


def _fetch(url: str, dest: Path) -> int:
    with _opener.open(urllib.request.Request(url, headers={"User-Agent": "mail-pipeline"}),
                      timeout=TIMEOUT) as response:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > MAX_BYTES:
            raise _TooLarge(f"download refused: {url} is {int(declared) // (1024 * 1024)} MB, over the 200 MB limit")
        size = 0
        with replacing(dest) as tmp, open(tmp, "wb") as out:
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > MAX_BYTES:
                    raise _TooLarge(f"download refused: {url} is over the 200 MB limit")
                out.write(chunk)
    return size

"""URL sources (spec §4, GreenArrow's `file_source.url`): http(s), and s3:// and sftp:// through
fsspec (`remote`); at most 200 MB, up to three attempts (the second 10 s after the first
failure, the third 50 s after the second)."""
import hashlib
import http.client
import ipaddress
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from mail_pipeline import remote
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.files import replacing

MAX_BYTES = 200 * 1024 * 1024
RETRY_DELAYS = (10.0, 50.0)
TIMEOUT = 60.0  # seconds without a byte before an attempt fails
_CHUNK = 1 << 20


def is_url(source: str) -> bool:
    return "://" in source and urllib.parse.urlsplit(source).scheme.lower() in ("http", "https",
                                                                                *remote.SCHEMES)


def check_url(source: str, public_only: bool = False) -> None:
    """http(s), s3:// and sftp:// only; with `public_only` (an import asked for over HTTP), only
    http(s) hosts whose every address is public, so a client cannot make the server fetch its
    own or its network's services (loopback, private, link-local: cloud metadata, the
    deployment's buckets)."""
    parts = urllib.parse.urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in remote.SCHEMES and not public_only:
        remote.check(source)
        return
    if scheme not in ("http", "https"):
        also = "" if public_only else ", and s3:// and sftp:// files"
        raise MailPipelineError(f"invalid source {source!r}: only http and https URLs are "
                                f"downloaded{also}")
    if public_only:
        _check_public(parts.hostname or "", source)


def _http_only(url: str) -> None:
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise MailPipelineError(f"invalid source {url!r}: only http and https URLs are downloaded")


def _check_public(host: str, source: str) -> None:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        raise MailPipelineError(f"invalid source {source!r}: its host {host!r} cannot be resolved") from None
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            raise MailPipelineError(f"invalid source {source!r}: {host} is a private or local "
                                    "address, which imports over HTTP may not fetch")


def _check_peer(sock: socket.socket, host: str) -> None:
    """The address actually connected to (a name may resolve differently at the check and at
    the connection: DNS rebinding) must be public too."""
    address = sock.getpeername()[0]
    if not ipaddress.ip_address(address.split("%")[0]).is_global:
        sock.close()
        raise MailPipelineError(f"invalid source: {host} connected to {address}, a private or local "
                                "address, which imports over HTTP may not fetch")


class _PublicHTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _check_peer(self.sock, self.host)


class _PublicHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _check_peer(self.sock, self.host)


class _PublicHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_PublicHTTPConnection, req)


class _PublicHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_PublicHTTPSConnection, req, context=self._context)


class _HttpOnly(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would also follow one to ftp), and to public
    hosts only when the first URL had to be one."""

    def __init__(self, public_only: bool = False) -> None:
        super().__init__()
        self.public_only = public_only

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if self.public_only:
            check_url(newurl, True)
        else:
            _http_only(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _TooLarge(MailPipelineError):
    pass


def download(url: str, dest: Path, on_attempt: Optional[Callable[[int], None]] = None,
             public_only: bool = False,
             on_retry: Optional[Callable[[int, str, float], None]] = None) -> int:
    """Fetch `url` into `dest` (whole or not at all) and return its size. A file over 200 MB is
    refused at once; any other failure is tried again per RETRY_DELAYS."""
    check_url(url, public_only)
    opener = _opener(public_only)
    attempts = len(RETRY_DELAYS) + 1
    for attempt in range(1, attempts + 1):
        if on_attempt:
            on_attempt(attempt)
        try:
            with _opened(opener, url) as (stream, declared):
                return _copy_capped(stream, declared, url, dest)
        except MailPipelineError:
            raise  # too large, or a redirect elsewhere: trying again cannot help
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            if attempt == attempts:
                raise MailPipelineError(f"download failed after {attempts} attempts: {url}: {reason}") from None
            if on_retry:  # (who follows the import sees the wait, not a stall)
                on_retry(attempt, str(reason), RETRY_DELAYS[attempt - 1])
            time.sleep(RETRY_DELAYS[attempt - 1])
    raise AssertionError("unreachable")


def sha256_of(url: str) -> str:
    """The checksum of what `url` holds now, read once (no retries) under the same cap: a
    scheduled pull compares it with the last one's before importing anything."""
    check_url(url)
    digest = hashlib.sha256()
    try:
        with _opened(_opener(False), url) as (stream, declared):
            for chunk in _capped(stream, declared, url):
                digest.update(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise MailPipelineError(f"{url} cannot be read: {getattr(exc, 'reason', None) or exc}") from None
    return digest.hexdigest()


def _opener(public_only: bool) -> urllib.request.OpenerDirector:
    handlers = [_HttpOnly(public_only)]
    if public_only:
        handlers += [_PublicHTTPHandler(), _PublicHTTPSHandler()]
    return urllib.request.build_opener(*handlers)


@contextmanager
def _opened(opener: urllib.request.OpenerDirector, url: str):
    """The stream of `url` and the size it declares (None when unknown): an http(s) response,
    or an object or SFTP file read through fsspec."""
    if remote.is_remote(url):
        with remote.reading(url) as (stream, size):
            yield stream, size
        return
    with opener.open(urllib.request.Request(url, headers={"User-Agent": "mail-pipeline"}),
                     timeout=TIMEOUT) as response:
        declared = response.headers.get("Content-Length")
        yield response, int(declared) if declared and declared.isdigit() else None


def _capped(stream, declared: Optional[int], url: str) -> Iterator[bytes]:
    """The stream's chunks, refused at once when it declares more than MAX_BYTES, and as soon
    as it brings more."""
    if declared is not None and declared > MAX_BYTES:
        raise _TooLarge(f"download refused: {url} is {declared // (1024 * 1024)} MB, over the 200 MB limit")
    size = 0
    while chunk := stream.read(_CHUNK):
        size += len(chunk)
        if size > MAX_BYTES:
            raise _TooLarge(f"download refused: {url} is over the 200 MB limit")
        yield chunk


def _copy_capped(stream, declared: Optional[int], url: str, dest: Path) -> int:
    """Copy `stream` to `dest` (whole or not at all); returns its size."""
    size = 0
    with replacing(dest) as tmp, open(tmp, "wb") as out:
        for chunk in _capped(stream, declared, url):
            size += len(chunk)
            out.write(chunk)
    return size

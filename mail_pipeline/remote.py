"""Files on object storage (`s3://bucket/key`) and SFTP (`sftp://user@host:port/path`), and
local folders, through fsspec: one small surface (list, stat, open, put) for the declared
sources' schedules and sensors, the download step and named exports.

Credentials and endpoints never come from a declaration: S3 takes the standard environment
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, or
whatever else botocore reads); SFTP takes the key file `MAIL_PIPELINE_SFTP_KEY` when set, else
the SSH agent and `~/.ssh/id_*` (paramiko's defaults), and checks the server's host key against
`MAIL_PIPELINE_SFTP_KNOWN_HOSTS` when that names a known_hosts file.
"""
import os
import urllib.parse
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from mail_pipeline.errors import MailPipelineError, first_line

SCHEMES = ("s3", "sftp")
_TIMEOUT = 30  # seconds to connect to an SFTP server


def is_remote(url: str) -> bool:
    return "://" in url and urllib.parse.urlsplit(url).scheme.lower() in SCHEMES


def check(url: str, key: str = "source") -> None:
    """An s3:// URL names a bucket; an sftp:// URL a host and a path. Refused in one sentence
    naming the `key` it was given as."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "s3" and not parts.netloc:
        raise MailPipelineError(f"invalid {key} {url!r}: an s3:// URL names a bucket (s3://bucket/key)")
    if scheme == "sftp":
        try:
            parts.port  # (a port that is not a number raises here)
        except ValueError:
            raise MailPipelineError(f"invalid {key} {url!r}: its port is not a number") from None
        if not parts.hostname or parts.path in ("", "/"):
            raise MailPipelineError(f"invalid {key} {url!r}: an sftp:// URL names a host and a path "
                                    "(sftp://user@host:22/path)")


@dataclass(frozen=True)
class Entry:
    """A file found under a folder or prefix: where it is, and what tells one version from another."""

    url: str
    relative: str  # below the watched folder or prefix, '/'-separated
    size: int
    version: str   # the S3 ETag, else the modification time

    @property
    def identity(self) -> str:
        return f"{self.url}:{self.size}:{self.version}"


def _filesystem(url: str):
    """The fsspec filesystem for `url` and the path within it. No instance or listing caches:
    every tick must see the store as it is now."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower() if "://" in url else "file"
    if scheme == "s3":
        import s3fs  # (only S3 sources need it)
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
        fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False,
                               endpoint_url=endpoint)
        return fs, f"{parts.netloc}{parts.path}"
    if scheme == "sftp":
        from fsspec.implementations.sftp import SFTPFileSystem
        key = os.environ.get("MAIL_PIPELINE_SFTP_KEY")
        fs = SFTPFileSystem(parts.hostname, port=parts.port or 22,
                            username=urllib.parse.unquote(parts.username or "") or None,
                            key_filename=key or None, look_for_keys=not key, timeout=_TIMEOUT,
                            host_key_policy=_host_key_policy(), skip_instance_cache=True)
        return fs, urllib.parse.unquote(parts.path)
    import fsspec
    path = urllib.parse.unquote(parts.path) if "://" in url else url
    return fsspec.filesystem("file"), str(Path(path).expanduser().resolve())


def _host_key_policy():
    """Accept the server's key when no known_hosts file is named (fsspec's default); else only
    the key that file holds for the host."""
    import paramiko
    known = os.environ.get("MAIL_PIPELINE_SFTP_KNOWN_HOSTS")
    if not known:
        return paramiko.AutoAddPolicy()
    keys = paramiko.HostKeys(known)

    class _Known(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            held = keys.lookup(hostname)
            if not held or held.get(key.get_name()) != key:
                raise paramiko.SSHException(f"the host key of {hostname} is not the one in {known}")
    return _Known()


@contextmanager
def _opened_fs(url: str):
    """The filesystem, its path, and any failure of the library as one OSError line (so the
    download's retries treat it as they treat a network error)."""
    try:
        fs, path = _filesystem(url)
    except MailPipelineError:
        raise
    except Exception as exc:
        raise OSError(f"{_host(url)} cannot be reached: {first_line(exc)}") from None
    try:
        yield fs, path
    except MailPipelineError:  # (a size cap, decided by the caller)
        raise
    except Exception as exc:
        raise OSError(first_line(exc)) from None
    finally:
        client = getattr(fs, "client", None)
        if client is not None:  # (an SFTP connection)
            client.close()


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname or parts.netloc or url


def _version(info: dict) -> str:
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return str(etag).strip('"')
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
    return mtime.isoformat() if hasattr(mtime, "isoformat") else str(mtime)


def _url_of(url: str, root: str, path: str) -> str:
    """The URL of `path` (a filesystem path under `root`, the path `url` names)."""
    relative = PurePosixPath(path).relative_to(PurePosixPath(root)).as_posix()
    return url.rstrip("/") + "/" + relative if "://" in url else str(Path(root) / relative)


def entries(url: str, depth: int = 2) -> list[Entry]:
    """The files under the folder or prefix `url`, down to `depth` levels (the folder's own
    files and those of its list folders), hidden files left out. Refused in one sentence when
    the server cannot be reached or the folder read."""
    try:
        with _opened_fs(url) as (fs, root):
            root = root.rstrip("/")
            found = fs.find(root, maxdepth=depth, detail=True) if fs.exists(root) else {}
            listed = []
            for path, info in sorted(found.items()):
                relative = PurePosixPath(path).relative_to(PurePosixPath(root)).as_posix()
                if info.get("type") != "file" or any(p.startswith(".") for p in relative.split("/")):
                    continue
                listed.append(Entry(_url_of(url, root, path), relative, int(info["size"]), _version(info)))
            return listed
    except OSError as exc:
        raise MailPipelineError(f"{url} cannot be read: {exc}") from None


def stat(url: str) -> Entry:
    """The one file `url` names: its size and version."""
    with _opened_fs(url) as (fs, path):
        info = fs.info(path)
    return Entry(url, PurePosixPath(path).name, int(info["size"]), _version(info))


@contextmanager
def reading(url: str) -> Iterator[tuple[BinaryIO, int]]:
    """The file `url` names, open for reading, with its size."""
    with _opened_fs(url) as (fs, path):
        size = int(fs.info(path)["size"])
        with fs.open(path, "rb") as stream:
            yield stream, size


def put(local: Path, url: str) -> None:
    """Copy `local` to `url` whole: under a temporary name beside it first, then the final one
    (a rename on SFTP; on S3 a server-side copy, then the temporary object is deleted), so a
    reader never sees half a file."""
    try:
        with _opened_fs(url) as (fs, path):
            parent, name = path.rsplit("/", 1)
            tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.partial"
            if urllib.parse.urlsplit(url).scheme.lower() == "sftp":
                fs.makedirs(parent, exist_ok=True)
            fs.put_file(str(local), tmp)
            try:
                fs.mv(tmp, path)  # (SFTP: posix-rename@openssh.com, which replaces in one step)
            finally:
                if fs.exists(tmp):
                    fs.rm_file(tmp)
    except OSError as exc:
        raise MailPipelineError(f"{url} cannot be written: {exc}") from None

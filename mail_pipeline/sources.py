"""Declared sources: imports that arrive by themselves (issue 17).

`imports.toml` beside `exports.toml` (or the file `$MAIL_PIPELINE_IMPORTS` names) declares named
sources, one table each: `source` (an http(s) URL, `s3://bucket/key-or-prefix/`,
`sftp://user@host:port/path`, a local file or folder), the import's options as the canonical
keys or `params = "file.json"` (any `--params` shape), and either `schedule = "<cron>"` (pull the
file and import it) or `watch = true` (import each new file under the folder or prefix, a
`<list>/` folder below it naming the list as the inbox's do):

    [nightly_partners]
    source = "https://partners.example.com/export.csv"
    lists = ["partners"]
    schedule = "0 2 * * *"

    [signups]
    source = "s3://acme-mail/signups/"
    watch = true

Credentials and endpoints never go in this file: see `remote`. A bad declaration is refused
alone, in a sentence naming the source and the key; the others still load.
"""
import hashlib
import json
import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from mail_pipeline import download, inbox, remote
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.options import ImportOptions, build
from mail_pipeline.params import read_params
from mail_pipeline.staging import CSV_SUFFIXES

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "imports.toml"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # becomes a schedule's or a sensor's name
_OWN_KEYS = ("source", "schedule", "watch", "params", "interval")
# Set by the source itself for each file it imports, so never declared.
_NOT_DECLARED = ("content", "idempotency_key", "begins_at", "public_urls_only")
DEFAULT_INTERVAL = 30  # seconds between a watching sensor's ticks
FILE_ERROR = "declared_sources"  # the name a refusal of the whole file is shown under


def declarations_file() -> Path:
    return Path(os.environ.get("MAIL_PIPELINE_IMPORTS") or DEFAULT_FILE)


@dataclass(frozen=True)
class Declared:
    """One declared source: where its files come from, how often, and the options they import with."""

    name: str
    source: str
    options: ImportOptions
    schedule: Optional[str] = None
    interval: int = DEFAULT_INTERVAL

    @property
    def watch(self) -> bool:
        return self.schedule is None

    def pull_options(self, key: str) -> ImportOptions:
        """A scheduled pull's import: the source itself, bound to `key`."""
        return self.options.model_copy(update={"source": self.source, "idempotency_key": key})

    def file_options(self, entry: remote.Entry) -> ImportOptions:
        """A watched file's import: the file, its folder's list added, its identity as the key."""
        return self.options.model_copy(update={
            "source": entry.url, "idempotency_key": file_key(self.name, entry),
            "lists": inbox.with_list(self.options.lists, entry.relative)})


def load(path: Path, valid_cron: Callable[[str], bool]) -> tuple[dict[str, Declared], dict[str, str]]:
    """The sources `path` declares, and those refused (name → the sentence saying why). A file
    that cannot be read is one refusal, under FILE_ERROR; none at all when it does not exist."""
    if not path.exists():
        return {}, {}
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {}, {FILE_ERROR: f"declared sources file {path} cannot be read: {exc}"}
    declared, refused = {}, {}
    for name, fields in tables.items():
        try:
            declared[name] = _declared(name, fields, path, valid_cron)
        except MailPipelineError as exc:
            refused[name if _NAME.match(name) else FILE_ERROR] = f"source {name!r} in {path}: {exc}"
    return declared, refused


def _declared(name: str, fields: Any, path: Path, valid_cron: Callable[[str], bool]) -> Declared:
    if not _NAME.match(name) or not isinstance(fields, dict):
        raise MailPipelineError("a name is lower-case letters, digits and '_', and holds a table of keys")
    for key in fields:
        if key in _NOT_DECLARED:
            raise MailPipelineError(f"the key {key!r} cannot be declared: the source sets it for each file")
        if key not in _OWN_KEYS and key not in ImportOptions.model_fields:
            raise MailPipelineError(f"unknown key {key!r}")
    source = _source(fields.get("source"), path.parent)
    schedule, watch = fields.get("schedule"), fields.get("watch", False)
    if not isinstance(watch, bool):
        raise MailPipelineError("invalid key 'watch': true or false")
    if (schedule is None) == (not watch):
        raise MailPipelineError("give either the key 'schedule' (a cron string) or 'watch = true'")
    if schedule is not None and (not isinstance(schedule, str) or not valid_cron(schedule)):
        raise MailPipelineError(f"invalid key 'schedule' {schedule!r}: not a cron string "
                                "(e.g. '0 2 * * *', every night at 02:00)")
    _check_kind(source, watch)
    interval = fields.get("interval", DEFAULT_INTERVAL)
    if "interval" in fields and not watch:
        raise MailPipelineError("invalid key 'interval': only a watched source has one; a schedule's cron says when")
    if not isinstance(interval, int) or isinstance(interval, bool) or not 5 <= interval <= 86400:
        raise MailPipelineError("invalid key 'interval': seconds between checks, from 5 to 86400")
    options = {key: value for key, value in fields.items() if key not in _OWN_KEYS}
    if "params" in fields:
        if not isinstance(fields["params"], str):
            raise MailPipelineError("invalid key 'params': the name of a --params JSON file")
        given = read_params(str(path.parent / Path(fields["params"]).expanduser()))
        options = {**{k: v for k, v in given.items() if k not in ("source", "content")}, **options}
    options = build({**options, "source": source})
    return Declared(name, source, options, schedule if not watch else None, interval)


def _source(value: Any, folder: Path) -> str:
    """The declared `source`: a URL as given, a local path made absolute (relative to the
    declarations file's folder)."""
    if not isinstance(value, str) or not value.strip():
        raise MailPipelineError("missing key 'source': a URL, s3://bucket/prefix/, sftp://user@host/path or a path")
    if "://" not in value:
        return str((folder / Path(value).expanduser()).resolve())
    try:
        download.check_url(value)
    except MailPipelineError as exc:
        raise MailPipelineError(f"invalid key 'source': {str(exc).removeprefix('invalid source ')}") from None
    return value


def _check_kind(source: str, watch: bool) -> None:
    """A watch needs a folder or prefix; a schedule pulls one file."""
    scheme = urllib.parse.urlsplit(source).scheme.lower() if "://" in source else "file"
    if watch and scheme in ("http", "https"):
        raise MailPipelineError("invalid key 'watch': an http(s) URL cannot be watched; watch a "
                                "folder, an s3:// prefix or an sftp:// folder, or pull it on a 'schedule'")
    if not watch and (source.endswith("/") or (scheme == "file" and Path(source).is_dir())):
        raise MailPipelineError(f"invalid key 'source' {source!r}: a schedule pulls one file; to import "
                                "every file of a folder or prefix, declare 'watch = true'")


# --- a watched folder or prefix: what is new, what has settled ------------------------------------

def importable(entry: remote.Entry) -> bool:
    """A CSV, TSV, TXT or ZIP file (sidecars, notes and the like are left alone)."""
    return entry.relative.lower().endswith((*CSV_SUFFIXES, ".zip"))


def settle(listed: list[remote.Entry], cursor: Optional[str]) -> tuple[list[remote.Entry], str]:
    """The files of `listed` to import now, and the next cursor. A file is ready once a tick sees
    it with the size and version (ETag or mtime) of the tick before: one still being written
    waits. One taken before (same identity) is skipped without a look, so a tick reads only
    what is new; a changed file is a new file."""
    state = json.loads(cursor) if cursor else {}
    seen, taken = state.get("seen", {}), state.get("taken", {})
    ready, waiting = [], {}
    for entry in filter(importable, listed):
        if taken.get(entry.relative) == entry.identity:
            continue
        if seen.get(entry.relative) == entry.identity:
            ready.append(entry)
        else:
            waiting[entry.relative] = entry.identity
    present = {entry.relative for entry in listed}
    taken = {relative: identity for relative, identity in taken.items() if relative in present}
    taken.update({entry.relative: entry.identity for entry in ready})
    return ready, json.dumps({"seen": waiting, "taken": taken}, sort_keys=True)


def file_key(name: str, entry: remote.Entry) -> str:
    """A watched file's identity (location, size, ETag or mtime), as its run key and idempotency key."""
    return f"source:{name}:{entry.identity}"


# --- a scheduled pull ---------------------------------------------------------------------------

def fingerprint(source: str) -> str:
    """The sha256 of what the source holds now (read once, capped): a pull bringing the same
    bytes as the last one imports nothing."""
    if "://" in source:
        return download.sha256_of(source)
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise MailPipelineError(f"{source} cannot be read: {exc.strerror or exc}") from None
    return digest.hexdigest()


def pull_key(name: str, digest: str, after: Optional[str] = None) -> str:
    """A pull's identity: the source, its bytes, and the import of the pull before it."""
    return f"source:{name}:sha256:{digest}" + (f":after:{after}" if after else "")


def digest_of(key: str) -> Optional[str]:
    """The sha256 a pull's key holds."""
    return key.split(":sha256:", 1)[1].split(":", 1)[0] if ":sha256:" in key else None


def same_bytes(declared: Declared, import_id: str, digest: str) -> str:
    """Why a pull imports nothing, for the schedule's tick history."""
    return (f"{declared.source} holds the same bytes as the pull that made import {import_id} "
            f"(sha256 {digest[:12]}…): nothing new to import")

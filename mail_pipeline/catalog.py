"""The catalog: list identities (integer id, uuid, name) and API keys, in a small SQLite file
beside the store (`catalog.sqlite` in the home).

It is apart from the DuckDB store because the store has one writer at a time, held for a whole
merge, while lists and keys are read on every API request and created by any import: SQLite in
WAL mode lets readers go on while a short write transaction commits. A read never writes: it
never creates the file (nothing there yet means no lists and no keys).
"""
import hashlib
import hmac
import os
import secrets
import sqlite3
import tempfile
import uuid as uuid_module
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

from mail_pipeline import home
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.clock import iso_utc

FILE_NAME = "catalog.sqlite"
PERMISSIONS = ("subscribers:import", "subscribers:export")
TOKEN_PREFIX = "mp_"

# AUTOINCREMENT: an id is never handed out again, even after its list is gone.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS lists (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL)""",
    # Only the secret's SHA-256 is kept; its unique index is the Bearer lookup.
    """CREATE TABLE IF NOT EXISTS tokens (
        name TEXT PRIMARY KEY,
        secret_sha256 TEXT NOT NULL UNIQUE,
        permissions TEXT NOT NULL,   -- space separated, in PERMISSIONS order
        created_at TEXT NOT NULL,
        last_used_at TEXT)""",
)


@dataclass(frozen=True)
class MailingList:
    id: int          # 1, 2, 3 … never reused
    uuid: str        # uuid4, stable
    name: str        # unique
    created_at: str  # ISO 8601 UTC


@dataclass(frozen=True)
class Token:
    name: str
    permissions: tuple[str, ...]
    created_at: str
    last_used_at: Optional[str]


def path() -> Path:
    """The catalog's file (not created here)."""
    return home.location() / FILE_NAME


# --- connections ------------------------------------------------------------------------------

def _created() -> Path:
    """The catalog's file, made on first write: built under a temporary name (WAL mode, its
    tables) and linked into place in one step, so processes that race never convert the same
    file's journal mode at once (SQLite refuses one of them without waiting), and a reader never
    meets a half-made file."""
    file = home.home() / FILE_NAME
    if file.exists():
        return file
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{FILE_NAME}.")  # 0600: key hashes
    os.close(fd)
    try:
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")  # kept in the file: every connection uses it
            for statement in _SCHEMA:
                con.execute(statement)
        finally:
            con.close()
        try:
            os.link(tmp, file)
        except FileExistsError:
            pass  # another process made it first
    finally:
        os.unlink(tmp)
    return file


@contextmanager
def _writing() -> Iterator[sqlite3.Connection]:
    """One short write transaction, taken at once (BEGIN IMMEDIATE) so two processes that race
    take turns instead of both reading and then both inserting."""
    file = _created()
    con = sqlite3.connect(file, timeout=30, isolation_level=None)
    try:
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise MailPipelineError(f"the catalog {file} stayed locked by another process for "
                                    "30 seconds: try again") from None
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()


@contextmanager
def _reading() -> Iterator[Optional[sqlite3.Connection]]:
    """A connection for reading, or None when there is no catalog yet (mode=rw: opening never
    creates the file)."""
    try:
        con = sqlite3.connect(f"{path().as_uri()}?mode=rw", uri=True, timeout=30)
    except sqlite3.OperationalError:
        yield None
        return
    try:
        yield con
    finally:
        con.close()


def _select(sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of a query, or none when the catalog (or its tables) does not exist yet."""
    with _reading() as con:
        if con is None:
            return []
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created, its first write not committed yet
                return []
            raise


# --- lists --------------------------------------------------------------------------------------

_LIST_COLUMNS = "id, uuid, name, created_at"


def _check_list_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise MailPipelineError("invalid list name: a list name cannot be empty")


def ensure_lists(names: Iterable[str]) -> list[MailingList]:
    """The lists of these names, each created if missing (in one transaction: two processes that
    race create each name once), in the order given (a name given twice comes once)."""
    names = list(dict.fromkeys(names))
    for name in names:
        _check_list_name(name)
    if not names:
        return []
    found = {list_.name: list_ for list_ in _lists_named(names)}
    if len(found) == len(names):
        return [found[name] for name in names]  # the usual case: a read, no write lock
    with _writing() as con:
        existing = {row[2] for row in _rows_named(con, names)}
        for name in names:
            if name not in existing:
                con.execute("INSERT INTO lists (uuid, name, created_at) VALUES (?, ?, ?)",
                            (str(uuid_module.uuid4()), name, iso_utc()))
        found = {row[2]: MailingList(*row) for row in _rows_named(con, names)}
    return [found[name] for name in names]


def _rows_named(con: sqlite3.Connection, names: list[str]) -> list[tuple]:
    marks = ", ".join("?" * len(names))
    return con.execute(f"SELECT {_LIST_COLUMNS} FROM lists WHERE name IN ({marks})", names).fetchall()


def _lists_named(names: list[str]) -> list[MailingList]:
    marks = ", ".join("?" * len(names))
    return [MailingList(*row) for row in
            _select(f"SELECT {_LIST_COLUMNS} FROM lists WHERE name IN ({marks})", tuple(names))]


def create_list(name: str) -> MailingList:
    """A new list; refused when one of that name exists."""
    _check_list_name(name)
    with _writing() as con:
        row = con.execute("SELECT id FROM lists WHERE name = ?", (name,)).fetchone()
        if row:
            raise MailPipelineError(f"list {name!r} already exists (id {row[0]})")
        con.execute("INSERT INTO lists (uuid, name, created_at) VALUES (?, ?, ?)",
                    (str(uuid_module.uuid4()), name, iso_utc()))
        created = con.execute(f"SELECT {_LIST_COLUMNS} FROM lists WHERE name = ?", (name,)).fetchone()
    return MailingList(*created)


def all_lists() -> list[MailingList]:
    """Every list, by id."""
    return [MailingList(*row) for row in _select(f"SELECT {_LIST_COLUMNS} FROM lists ORDER BY id")]


def described(counts: Optional[dict[str, dict[str, int]]]) -> list[dict]:
    """Every list as `mail-pipeline lists` shows it, with its subscriptions by status from the
    store (`store.list_counts`; None while the store is busy gives null counts). Lists of a
    store made before the catalog, not in it yet, come last with a null id and uuid."""
    def row(id_, uuid, name, created_at) -> dict:
        statuses = None if counts is None else counts.get(name, {})
        return {"id": id_, "uuid": uuid, "name": name, "created_at": created_at,
                "subscriber_count": None if statuses is None else sum(statuses.values()),
                "subscription_counts": statuses}
    known = all_lists()
    names = {list_.name for list_ in known}
    return ([row(l.id, l.uuid, l.name, l.created_at) for l in known]
            + [row(None, None, name, None) for name in sorted(counts or {}) if name not in names])


def _one_list(column: str, value) -> Optional[MailingList]:
    rows = _select(f"SELECT {_LIST_COLUMNS} FROM lists WHERE {column} = ?", (value,))
    return MailingList(*rows[0]) if rows else None


# SQLite integers are 64-bit; a larger id names no list.
_MAX_ID = 2 ** 63 - 1


def list_by_id(list_id: int) -> Optional[MailingList]:
    if not isinstance(list_id, int) or not 0 < list_id <= _MAX_ID:
        return None
    return _one_list("id", list_id)


def list_by_uuid(value: str) -> Optional[MailingList]:
    return _one_list("uuid", value.lower()) if isinstance(value, str) else None


def list_by_name(name: str) -> Optional[MailingList]:
    return _one_list("name", name) if isinstance(name, str) else None


def names_for_ids(ids: Iterable[int]) -> list[str]:
    """The names of the lists with these ids, in the same order; every unknown id is named in
    the refusal."""
    ids = list(ids)
    usable = sorted({i for i in ids if isinstance(i, int) and 0 < i <= _MAX_ID})
    names = {}
    if usable:
        marks = ", ".join("?" * len(usable))
        names = dict(_select(f"SELECT id, name FROM lists WHERE id IN ({marks})", tuple(usable)))
    unknown = list(dict.fromkeys(str(i) for i in ids if i not in names))
    if unknown:
        raise MailPipelineError(f"unknown list id{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    return [names[i] for i in ids]


# --- API keys -----------------------------------------------------------------------------------

def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def _permissions(given: Iterable[str]) -> tuple[str, ...]:
    given = list(given)
    unknown = [p for p in given if p not in PERMISSIONS]
    if unknown:
        raise MailPipelineError(f"unknown permission {unknown[0]!r}: use "
                                + " or ".join(PERMISSIONS))
    return tuple(p for p in PERMISSIONS if p in given) if given else PERMISSIONS


def create_token(name: str, permissions: Iterable[str] = ()) -> str:
    """A new API key; returns its secret, which is shown this once (only its hash is kept).
    No permissions given means all of them."""
    if not isinstance(name, str) or not name.strip():
        raise MailPipelineError("invalid key name: a key name cannot be empty")
    if ":" in name:
        raise MailPipelineError(f"invalid key name {name!r}: it cannot hold ':' (it is the user "
                                "name of Basic authentication)")
    granted = _permissions(permissions)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with _writing() as con:
        if con.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
            raise MailPipelineError(f"a key named {name!r} already exists: revoke it first, or "
                                    "choose another name")
        con.execute("INSERT INTO tokens (name, secret_sha256, permissions, created_at) "
                    "VALUES (?, ?, ?, ?)", (name, _digest(secret), " ".join(granted), iso_utc()))
    return secret


_TOKEN_COLUMNS = "name, permissions, created_at, last_used_at"


def _token(row: tuple) -> Token:
    name, permissions, created_at, last_used_at = row
    return Token(name, tuple(permissions.split()), created_at, last_used_at)


def tokens() -> list[Token]:
    """The active API keys, by name."""
    return [_token(row) for row in _select(f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY name")]


def revoke_token(name: str) -> None:
    """Delete an API key; the next request made with it is refused."""
    with _writing() as con:
        if con.execute("DELETE FROM tokens WHERE name = ?", (name,)).rowcount == 0:
            raise MailPipelineError(f"no API key named {name!r}")


def authenticate(secret: str, name: Optional[str] = None) -> Optional[Token]:
    """The key this secret belongs to, or None. Without a name (a Bearer token) the key is found
    by the secret's hash; with one (Basic NAME:secret, listmonk's `token NAME:secret`) the named
    key's hash must match. Read on every call, so a revoked key stops at once."""
    if not isinstance(secret, str) or not secret:
        return None
    digest = _digest(secret)
    if name is None:
        rows = _select(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE secret_sha256 = ?", (digest,))
        return _token(rows[0]) if rows else None
    rows = _select(f"SELECT {_TOKEN_COLUMNS}, secret_sha256 FROM tokens WHERE name = ?", (name,))
    if rows and hmac.compare_digest(rows[0][4], digest):
        return _token(rows[0][:4])
    return None

"""The subscriber store: one DuckDB file under the home folder.

DuckDB lets one process write a file at a time. Dagster runs take turns through the store's pool
(one slot, claimed by the step that writes, on whatever host it runs); a writer outside Dagster (a
dry run, a `duckdb` shell) meets DuckDB's own file lock, on which `connect` waits instead of
failing at once.
"""
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import duckdb

from mail_pipeline.errors import MailPipelineError

SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
    name VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS subscribers (
    email VARCHAR NOT NULL,          -- email-validator's normalized form, lower-cased
    name VARCHAR,
    status VARCHAR NOT NULL,         -- enabled | disabled | blocklisted
    attributes JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL, -- moves only when a value changes
    tags VARCHAR[] NOT NULL DEFAULT [],  -- sorted, distinct
    email_format VARCHAR,            -- html | text | both, or unknown
    created_by VARCHAR,              -- provenance: the import that created it,
    updated_by VARCHAR,              -- the one that last changed it,
    updated_by_at TIMESTAMPTZ,       -- and when (set only when a value changes);
    created_batch INTEGER            -- the batch of `created_by` that created it, while that
                                     -- import can be reverted (its creation's before-image)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    email VARCHAR NOT NULL,
    list VARCHAR NOT NULL,
    status VARCHAR NOT NULL,         -- unconfirmed | confirmed | unsubscribed | bounced | ...
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    subscribe_time TIMESTAMPTZ,      -- as the file says (GreenArrow's subscription fields)
    subscribe_ip VARCHAR,
    confirm_time TIMESTAMPTZ,
    remove_time TIMESTAMPTZ,
    remove_ip VARCHAR,
    created_by VARCHAR,              -- provenance, as on subscribers
    updated_by VARCHAR,
    updated_by_at TIMESTAMPTZ
);
-- One row per committed batch, written in the batch's own transaction: a batch found here
-- was applied, completely, and is never applied again. (Each row's category is in the
-- import's folder, outcomes/batch-N.parquet, written just before that commit.)
CREATE TABLE IF NOT EXISTS import_batches (
    import_id VARCHAR NOT NULL,
    batch INTEGER NOT NULL,
    first_row BIGINT NOT NULL,       -- row numbers in the file: what a resumed import skips
    last_row BIGINT NOT NULL,
    rows INTEGER NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL,
    before_images BOOLEAN            -- it kept its before-images (issue 16): it can be reverted
);
-- Steps done once per import after its batches (Mailcoach's unsubscribe_others), committed
-- with their effects like a batch.
CREATE TABLE IF NOT EXISTS import_steps (
    import_id VARCHAR NOT NULL,
    step VARCHAR NOT NULL,
    rows BIGINT NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL
);
-- Before-images (issue 16): for each subscriber an import's batch changed, the subscriber as it
-- was and, in changed_subscriptions, all its subscriptions as they were. Written in the batch's
-- own transaction; a revert puts them back (mail_pipeline/revert.py) and deletes them; retention
-- deletes them with the import's logs. `batch` is the merge's batch, or OTHERS_BATCH for
-- unsubscribe_others. A subscriber a batch created has no row here: its before-image (it did not
-- exist) is its own `created_by` and `created_batch`. (Rows with `existed` false are those that
-- earlier versions wrote for it.)
CREATE TABLE IF NOT EXISTS changes (
    import_id VARCHAR NOT NULL,
    batch INTEGER NOT NULL,
    email VARCHAR NOT NULL,
    existed BOOLEAN NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL,
    name VARCHAR,
    status VARCHAR,
    attributes JSON,
    created_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ,
    tags VARCHAR[],
    email_format VARCHAR,
    created_by VARCHAR,
    updated_by VARCHAR,
    updated_by_at TIMESTAMPTZ,
    created_batch INTEGER
);
CREATE TABLE IF NOT EXISTS changed_subscriptions (
    import_id VARCHAR NOT NULL,
    batch INTEGER NOT NULL,
    email VARCHAR NOT NULL,
    list VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    subscribe_time TIMESTAMPTZ,
    subscribe_ip VARCHAR,
    confirm_time TIMESTAMPTZ,
    remove_time TIMESTAMPTZ,
    remove_ip VARCHAR,
    created_by VARCHAR,
    updated_by VARCHAR,
    updated_by_at TIMESTAMPTZ
);
-- One row per batch a revert has put back, in that batch's transaction: exactly once, resumable.
CREATE TABLE IF NOT EXISTS revert_batches (
    import_id VARCHAR NOT NULL,
    batch INTEGER NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL
);
"""

# The stored columns, in table order: what a before-image copies and a revert puts back.
SUBSCRIBER_COLUMNS = ("email", "name", "status", "attributes", "created_at", "updated_at", "tags",
                      "email_format", "created_by", "updated_by", "updated_by_at")
# A subscriber's before-image: its stored columns and the mark of the batch that created it.
IMAGE_COLUMNS = SUBSCRIBER_COLUMNS + ("created_batch",)
SUBSCRIPTION_COLUMNS = ("email", "list", "status", "created_at", "updated_at", "subscribe_time",
                        "subscribe_ip", "confirm_time", "remove_time", "remove_ip", "created_by",
                        "updated_by", "updated_by_at")

# Stores made by an earlier version gain the newer columns (the tables above have them already).
MIGRATIONS = """
ALTER TABLE subscribers ADD COLUMN IF NOT EXISTS tags VARCHAR[] DEFAULT [];
ALTER TABLE subscribers ADD COLUMN IF NOT EXISTS email_format VARCHAR;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS subscribe_time TIMESTAMPTZ;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS subscribe_ip VARCHAR;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS confirm_time TIMESTAMPTZ;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS remove_time TIMESTAMPTZ;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS remove_ip VARCHAR;
ALTER TABLE import_batches ADD COLUMN IF NOT EXISTS before_images BOOLEAN;
ALTER TABLE subscribers ADD COLUMN IF NOT EXISTS created_by VARCHAR;
ALTER TABLE subscribers ADD COLUMN IF NOT EXISTS updated_by VARCHAR;
ALTER TABLE subscribers ADD COLUMN IF NOT EXISTS updated_by_at TIMESTAMPTZ;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS created_by VARCHAR;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS updated_by VARCHAR;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS updated_by_at TIMESTAMPTZ;
ALTER TABLE subscribers ADD COLUMN IF NOT EXISTS created_batch INTEGER;
ALTER TABLE changes ADD COLUMN IF NOT EXISTS created_batch INTEGER;
"""


# DuckDB's memory cap for the store (imports and exports): beyond it, joins and sorts spill to
# `<store>.tmp/` beside the file instead of taking the machine down. A whole import stays within
# 1.5 GB: Python, Dagster and the import's chunk of rows in Polars take about 0.35 GB, and DuckDB
# gets 1 GB (10M rows: 1.34 GB at the peak, 7% faster than under 500 MB; 1.2 GB would peak at
# 1.46 GB, too near). A machine or container with less than 4 GB gives DuckDB a quarter of its
# memory. Set MAIL_PIPELINE_MEMORY_LIMIT (a DuckDB size, e.g. "2GB") to change it.
DUCKDB_BUDGET_MB = 1000


def default_memory_limit() -> str:
    """DuckDB's share of the import's memory budget, or a quarter of this machine's memory (or of
    its container's limit) when that is less."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:  # a cgroup v2 container's own limit ("max" when there is none)
        total = min(total, int(Path("/sys/fs/cgroup/memory.max").read_text()))
    except (OSError, ValueError):
        pass
    return f"{min(DUCKDB_BUDGET_MB, total // 4 // 10**6)}MB"


def memory_limit() -> str:
    """DuckDB's memory cap for the store: MAIL_PIPELINE_MEMORY_LIMIT, else the default."""
    value = os.environ.get("MAIL_PIPELINE_MEMORY_LIMIT", "").strip() or default_memory_limit()
    if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, re.IGNORECASE):
        raise MailPipelineError(f"invalid MAIL_PIPELINE_MEMORY_LIMIT {value!r}: expected a size "
                                "such as 500MB or 2GB")
    return value


def empty() -> duckdb.DuckDBPyConnection:
    """An empty store in memory: what a dry run merges into when there is no store yet, so that
    previewing never creates one."""
    con = duckdb.connect()
    con.execute(SCHEMA)
    return con


@contextmanager
def writer(path: Path,
           on_wait: Optional[Callable[[str], None]] = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """The store open for writing, closed after the block (see `connect`)."""
    con = connect(path, on_wait=on_wait)
    try:
        yield con
    finally:
        con.close()


def connect(path: Path, wait_seconds: float = 600.0,
            on_wait: Optional[Callable[[str], None]] = None) -> duckdb.DuckDBPyConnection:
    """Open the store for writing, creating its tables; waits while another process holds it
    (DuckDB's own lock: a `duckdb` shell or a notebook with the file open), calling `on_wait`
    once with who holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    said = False
    while True:
        try:
            con = duckdb.connect(str(path), config={"memory_limit": memory_limit()})
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                # (a damaged file, a full disk: `from exc` keeps the cause for disk_full)
                raise MailPipelineError(f"the subscriber store cannot be opened: "
                                        f"{str(exc).splitlines()[0]}") from exc
            holder = _holder(str(exc))
            if time.monotonic() > deadline:
                raise MailPipelineError(f"the subscriber store is busy: {holder} has had {path} "
                                        f"open for over {wait_seconds:.0f} s") from None
            if on_wait and not said:
                on_wait(f"{holder} to close the subscriber store")
                said = True
            time.sleep(0.5)
    # No progress bar: it would write to the user's terminal from inside a run.
    con.execute("SET enable_progress_bar = false")
    con.execute(SCHEMA)
    con.execute(MIGRATIONS)
    return con


def _holder(message: str) -> str:
    """Who holds the store, from DuckDB's lock error ("… is held in /usr/bin/python3 (PID 42)")."""
    found = re.search(r"held in (.+?) \(PID (\d+)\)", message)
    return f"process {found.group(2)} ({Path(found.group(1)).name})" if found else "another process"


def held(path: Path) -> bool:
    """Whether a writing process holds the store now (asked without waiting)."""
    if not path.exists():
        return False
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.IOException as exc:
        return "lock" in str(exc).lower()
    return False


def list_counts(path: Path) -> Optional[dict[str, dict[str, int]]]:
    """Each list the store knows → its subscriptions by status, read without waiting: {} when
    there is no store yet, None while a writer holds it."""
    if not path.exists():
        return {}
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            return None
        raise MailPipelineError(f"the subscriber store cannot be opened: "
                                f"{str(exc).splitlines()[0]}") from exc
    try:
        counts: dict[str, dict[str, int]] = {name: {} for (name,) in
                                             con.sql("SELECT name FROM lists").fetchall()}
        for name, status, n in con.sql("SELECT list, status, count(*) FROM subscriptions "
                                       "GROUP BY ALL ORDER BY 1, 2").fetchall():
            counts.setdefault(name, {})[status] = n
        return counts
    finally:
        con.close()


@contextmanager
def reader(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The store open read-only, without waiting: a read never writes, so it neither creates
    the store nor migrates it (an older store may lack the newer tables: `has_table`)."""
    if not path.exists():
        con = empty()
    else:
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise MailPipelineError(f"the subscriber store is busy: {_holder(str(exc))} is "
                                        "writing to it; try again when it is done") from None
            raise MailPipelineError(f"the subscriber store cannot be opened: "
                                    f"{str(exc).splitlines()[0]}") from exc
    try:
        yield con
    finally:
        con.close()


def _used(sql: str, params: dict) -> dict:
    # DuckDB refuses a named parameter the statement does not use.
    return {k: v for k, v in params.items() if f"${k}" in sql}


def run(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> duckdb.DuckDBPyConnection:
    """Run one statement with just the named parameters it uses."""
    return con.execute(sql, _used(sql, params))


def copy(con: duckdb.DuckDBPyConnection, query: str, params: dict, path: Path, options: str) -> int:
    """DuckDB's COPY of the query's result to `path` (COPY options such as `FORMAT parquet`),
    with the named parameters the query uses; the rows written."""
    quoted = str(path).replace("'", "''")
    [(rows,)] = con.execute(f"COPY ({query}) TO '{quoted}' ({options})", _used(query, params)).fetchall()
    return rows


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    [(found,)] = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?",
                             [name]).fetchall()
    return bool(found)


# The subscribers each import created, from the mark they carry (`created_batch`), as before-image
# records: the moment is the batch's commit, when its copies of changed subscribers were taken.
CREATIONS = """
SELECT s.created_by AS import_id, s.created_batch AS batch, s.email, b.committed_at AS changed_at
FROM subscribers s JOIN import_batches b ON b.import_id = s.created_by AND b.batch = s.created_batch
WHERE s.created_batch IS NOT NULL
"""


def marks_creations(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store's subscribers carry `created_batch` (`CREATIONS`): a store no version
    that marks them has written to, read without migrating it, does not."""
    [(found,)] = con.execute("SELECT count(*) FROM duckdb_columns() WHERE database_name <> 'temp'"
                             " AND table_name = 'subscribers' AND column_name = 'created_batch'"
                             ).fetchall()
    return bool(found)


def totals(con: duckdb.DuckDBPyConnection) -> dict:
    """The store's totals: subscribers, by subscriber status, and subscriptions by list and status."""
    [(subscribers,)] = con.sql("SELECT count(*) FROM subscribers").fetchall()
    by_status = dict(con.sql("SELECT status, count(*) FROM subscribers GROUP BY ALL ORDER BY 1").fetchall())
    by_list: dict[str, dict[str, int]] = {}
    for name, status, n in con.sql("SELECT list, status, count(*) FROM subscriptions "
                                   "GROUP BY ALL ORDER BY 1, 2").fetchall():
        by_list.setdefault(name, {})[status] = n
    return {"subscribers": subscribers, "by_status": by_status, "by_list": by_list}


def integrity(con: duckdb.DuckDBPyConnection) -> dict:
    """What must always hold of the store: each email once, no subscription without its
    subscriber, and each subscriber once per list. Counts of the rows that break each rule.

    Distinct 64-bit hashes are counted first (a quarter of the time of distinct strings, 10M
    subscribers: 0.8 s against 2 s): as many distinct hashes as rows means the rows are distinct.
    Only when hashes meet are the strings themselves compared."""
    duplicate_emails = _duplicates(con, "subscribers", "email")
    [(orphans,)] = con.sql(
        "SELECT count(*) FROM subscriptions s ANTI JOIN subscribers USING (email)").fetchall()
    duplicate_subscriptions = _duplicates(con, "subscriptions", "email, list")
    return {"duplicate_emails": duplicate_emails, "orphan_subscriptions": orphans,
            "duplicate_subscriptions": duplicate_subscriptions}


def _duplicates(con: duckdb.DuckDBPyConnection, table: str, key: str) -> int:
    """Rows of `table` beyond the first of each `key`: distinct hashes first, strings only if
    hashes meet."""
    [(rows, hashes)] = con.sql(f"SELECT count(*), count(DISTINCT hash({key})) FROM {table}").fetchall()
    if hashes == rows:
        return 0
    [(extra,)] = con.sql(f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}").fetchall()
    return extra

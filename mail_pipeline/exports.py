"""Exports (spec §6): the subscriber table, filtered, written as CSV, JSON Lines or Parquet.

DuckDB's COPY streams the sorted result to the file, a slice of subscribers at a time under the
store's memory cap, so memory stays flat however many subscribers there are; the file is written under a temporary name and renamed, so a reader never
sees half an export. CSV text cells that a spreadsheet would run as a formula get a leading `'`
(`guard`), which an import strips again (`unguard`), so export → import → export is the identity.
"""
import hashlib
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import duckdb
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mail_pipeline import home, remote, store
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.files import InThread, read_json, replacing, write_json
from mail_pipeline.options import SUBSCRIPTION_STATUSES, describe_error
from mail_pipeline.values import SUBSCRIBER_STATUSES

FORMATS = ("csv", "jsonl", "parquet")
COLUMNS = ("email", "name", "status", "attributes", "tags", "lists", "email_format", "created_at",
           "updated_at")
# A cell starting with one of these is a formula to a spreadsheet; `'*` first so that a cell
# that already starts with quotes keeps its own (the import strips exactly one).
GUARDED = r"^'*[=+\-@\t\r]"
UNGUARD = r"^'+[=+\-@\t\r]"


class ExportOptions(BaseModel):
    """Which subscribers (all filters must hold) and how to write them."""

    model_config = ConfigDict(extra="forbid")

    lists: list[str] = Field([], description="Subscribed (any status) to one of these lists.")
    status: list[str] = Field([], description="Subscriber status: enabled, disabled or blocklisted.")
    subscription_status: list[str] = Field(
        [], description="A subscription (on the lists above, or any list) with one of these statuses.")
    search: Optional[str] = Field(None, description="The email or the name contains this (any case).")
    cold_only: bool = Field(False, description="Only subscribers with no engagement within cold_days.")
    cold_days: int = Field(90, description="What lately means for cold_only, in days.")
    format: str = Field("csv", description="csv, jsonl or parquet.")
    gzip: bool = Field(False, description="Gzip the file (csv and jsonl).")
    out: Optional[str] = Field(None, description="Where to write; default exports/<id>/subscribers.<format> in the home.")

    def suffix(self) -> str:
        return "." + self.format + (".gz" if self.gzip else "")


def build_export(fields: dict) -> ExportOptions:
    try:
        options = ExportOptions.model_validate(fields)
    except ValidationError as exc:
        raise MailPipelineError(describe_error(exc)) from None
    if options.format not in FORMATS:
        raise MailPipelineError(f"invalid format {options.format!r}: must be csv, jsonl or parquet")
    if options.format == "parquet" and options.gzip:
        raise MailPipelineError("invalid gzip: Parquet files are compressed already (zstd)")
    for name, values, allowed in (("status", options.status, SUBSCRIBER_STATUSES),
                                  ("subscription_status", options.subscription_status,
                                   SUBSCRIPTION_STATUSES)):
        for value in values:
            if value not in allowed:
                raise MailPipelineError(f"invalid {name} {value!r}: must be " + ", ".join(allowed))
    if not 1 <= options.cold_days <= 36500:
        raise MailPipelineError("invalid cold_days: must be between 1 and 36500")
    if options.out and remote.is_remote(options.out):
        remote.check(options.out, "out")
    return options


def _iso(column: str) -> str:
    # ISO 8601 in UTC with microseconds, so a re-import restores the very instant.
    return f"strftime({column} AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%fZ')"


def _guard(expr: str) -> str:
    return f"CASE WHEN regexp_matches({expr}, $guarded) THEN '''' || {expr} ELSE {expr} END"


# Engagement the store records: when a subscriber subscribed or confirmed on any list (the
# import's subscribe_time / confirm_time). A subscriber with none is cold.
_IN_SLICE = "($low IS NULL OR email >= $low) AND ($high IS NULL OR email < $high)"
_ENGAGED = ("max(greatest(coalesce(subscribe_time, confirm_time),"
            " coalesce(confirm_time, subscribe_time)))")
# Each subscriber's lists as a JSON object, sorted by list name (`{only}`: which subscribers).
# list_sort, not list(… ORDER BY list): an ordered aggregate cannot spill, and ran out of memory
# under the cap at 10M subscriptions. (One row per email and list: the same order.)
_GATHERED = f"""
  SELECT email, to_json(map_from_entries(list_sort(list((list, status)))))::VARCHAR AS lists,
         {_ENGAGED} AS engaged_at
  FROM subscriptions WHERE {_IN_SLICE}{{only}}
  GROUP BY email
"""
_MEMBERSHIPS = _GATHERED.format(only="")
# The same, where most subscribers are on one list: the list aggregate is two thirds of the
# grouping's time, so a subscriber on one list is written from fixed-size aggregates (the same
# bytes: to_json of the name and of the status), and only those on several are gathered into a
# list (10M subscribers on one list each: 1.7 s -> 0.6 s a slice). Where many are on several,
# their second pass costs more than it saves, so `_memberships` keeps the single grouping.
_MEMBERSHIPS_FEW_LISTS = f"""
  WITH counted AS (
    SELECT email, count(*) AS n, min(list) AS list, min(status) AS status, {_ENGAGED} AS engaged_at
    FROM subscriptions WHERE {_IN_SLICE}
    GROUP BY email)
  SELECT email, '{{' || to_json(list) || ':' || to_json(status) || '}}' AS lists, engaged_at
  FROM counted WHERE n = 1
  UNION ALL
  {_GATHERED.format(only=" AND email IN (SELECT email FROM counted WHERE n > 1)")}
"""
# At most this many subscriptions per subscriber on average (so at most a fifth of them on
# several lists) for `_MEMBERSHIPS_FEW_LISTS`: measured, it breaks even near three in ten.
FEW_LISTS = 1.2

_QUERY = """
WITH memberships AS ({memberships})
SELECT {email} AS email, {name} AS name, s.status, s.attributes::VARCHAR AS attributes,
       to_json(s.tags)::VARCHAR AS tags, coalesce(m.lists, '{{}}')::VARCHAR AS lists,
       s.email_format, {created_at} AS created_at, {updated_at} AS updated_at
FROM subscribers s LEFT JOIN memberships m ON m.email = s.email
WHERE ($low IS NULL OR s.email >= $low) AND ($high IS NULL OR s.email < $high){filters}
ORDER BY s.email
"""
# Each filter is in the query only when it is set: DuckDB plans a condition that a parameter
# turns off all the same (the subscriptions' EXISTS was a join and a grouping of every slice,
# about a sixth of a 10M export's time).
_FILTERS = {
    "status": "list_contains($statuses, s.status)",
    "subscriptions": """EXISTS (
        SELECT 1 FROM subscriptions x WHERE x.email = s.email
          AND (len($lists) = 0 OR list_contains($lists, x.list))
          AND (len($sub_statuses) = 0 OR list_contains($sub_statuses, x.status)))""",
    "search": """(contains(lower(s.email), lower($search))
       OR contains(lower(coalesce(s.name, '')), lower($search)))""",
    "cold_only": "(m.engaged_at IS NULL OR m.engaged_at < now() - to_days($cold_days::INTEGER))",
}


def _filters(options: "ExportOptions") -> str:
    wanted = {"status": bool(options.status),
              "subscriptions": bool(options.lists or options.subscription_status),
              "search": options.search is not None, "cold_only": options.cold_only}
    return "".join(f"\n  AND {_FILTERS[name]}" for name, on in wanted.items() if on)


@dataclass(frozen=True)
class Written:
    path: Path
    rows: int
    sha256: str
    size: int


def export(con: duckdb.DuckDBPyConnection, options: ExportOptions, dest: Path) -> Written:
    """Write the subscribers `options` selects to `dest`, whole or not at all."""
    csv = options.format == "csv"
    text = {"email": "s.email", "name": "s.name"}
    query = _QUERY.format(
        memberships=_memberships(con),
        email=_guard(text["email"]) if csv else text["email"],
        name=_guard(text["name"]) if csv else text["name"],
        created_at=_iso("s.created_at"), updated_at=_iso("s.updated_at"), filters=_filters(options))
    params = {"statuses": options.status, "lists": options.lists, "sub_statuses": options.subscription_status,
              "search": options.search, "cold_only": options.cold_only, "cold_days": options.cold_days}
    if csv:
        params["guarded"] = GUARDED
    if options.format == "jsonl":  # nested JSON, not JSON in strings
        query = (f"SELECT * REPLACE (attributes::JSON AS attributes, tags::JSON AS tags,"
                 f" lists::JSON AS lists) FROM ({query})")
    copy_options = {"csv": "FORMAT csv", "jsonl": "FORMAT json",
                    "parquet": "FORMAT parquet, COMPRESSION zstd"}[options.format]
    if options.gzip:
        copy_options += ", COMPRESSION gzip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    ranges = _slices(con)
    with replacing(dest) as tmp, _fixed_schema(con, options.format == "parquet"):
        if len(ranges) == 1:
            rows = _copy(con, query, {**params, "low": None, "high": None}, tmp, copy_options, csv)
            digest, size = _sha256(tmp)
        else:
            rows, (digest, size) = _copy_in_slices(con, query, params, ranges, tmp, copy_options, options)
    return Written(dest, int(rows), digest, size)


@contextmanager
def _fixed_schema(con: duckdb.DuckDBPyConnection, parquet: bool) -> Iterator[None]:
    """Parquet: every column optional, whatever the store holds. DuckDB marks a column required
    when its statistics prove it has no NULL, and those statistics follow the store's history
    (an UPDATE, an empty result), so the same subscribers could be written with another schema
    and a restored backup would not export the same file."""
    if not parquet:
        yield
        return
    [(before,)] = con.execute("SELECT current_setting('disabled_optimizers')").fetchall()
    con.execute("SET disabled_optimizers = ?", [",".join(filter(None, [before, "statistics_propagation"]))])
    try:
        yield
    finally:
        con.execute("SET disabled_optimizers = ?", [before])


def _memberships(con: duckdb.DuckDBPyConnection) -> str:
    """How to gather each subscriber's lists, from how many subscriptions there are per
    subscriber (both counts are kept by DuckDB, so asking costs nothing)."""
    [(subscribers, subscriptions)] = con.execute(
        "SELECT (SELECT count(*) FROM subscribers), (SELECT count(*) FROM subscriptions)").fetchall()
    return _MEMBERSHIPS_FEW_LISTS if subscriptions <= FEW_LISTS * subscribers else _MEMBERSHIPS


# A store is exported a slice of subscribers (a range of emails) at a time: a slice's grouping,
# join and sort fit in memory under the cap instead of spilling, and the slices, written in
# order, hold the same rows in the same order as a single statement's file. (A gzip file then
# has one member per slice, which gzip readers take as one stream; Parquet columns are optional
# either way, see `_fixed_schema`.)
SLICE_SUBSCRIBERS = 2_000_000


def _slices(con: duckdb.DuckDBPyConnection) -> list[tuple[Optional[str], Optional[str]]]:
    """Email ranges [low, high) of about SLICE_SUBSCRIBERS each, cut at a sample's quantiles."""
    [(count,)] = con.execute("SELECT count(*) FROM subscribers").fetchall()
    slices = -(-count // SLICE_SUBSCRIBERS)
    if slices <= 1:
        return [(None, None)]
    sample = [email for (email,) in con.execute(
        "SELECT email FROM subscribers USING SAMPLE reservoir(10000 ROWS) REPEATABLE (7)"
        " ORDER BY email").fetchall()]
    cuts = sorted({sample[len(sample) * i // slices] for i in range(1, slices)})
    return list(zip([None, *cuts], [*cuts, None]))


def _copy(con: duckdb.DuckDBPyConnection, query: str, params: dict, out: Path, copy_options: str,
          header: bool) -> int:
    header_option = f", HEADER {str(header).lower()}" if copy_options.startswith("FORMAT csv") else ""
    return store.copy(con, query, params, out, copy_options + header_option)


def _copy_in_slices(con: duckdb.DuckDBPyConnection, query: str, params: dict, ranges: list,
                    out: Path, copy_options: str, options: "ExportOptions") -> tuple[int, tuple[str, int]]:
    """Each slice to a part, then the parts into `out`: CSV and JSON Lines parts are joined
    byte for byte (the header only in the first; gzip allows one member after another), and
    hashed on the way, each while DuckDB writes the next; Parquet parts are read back in order
    into one file. The rows, and the file's sha256 and size."""
    rows = 0
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as work:
        parts = [Path(work) / f"part-{number:05d}" for number in range(len(ranges))]
        if options.format == "parquet":
            for (low, high), part in zip(ranges, parts):
                rows += _copy(con, query, {**params, "low": low, "high": high}, part,
                              "FORMAT parquet", header=False)
            con.execute("SET preserve_insertion_order = true")  # the parts' order is the order
            try:
                store.copy(con, "SELECT * FROM read_parquet($parts)", {"parts": [str(p) for p in parts]},
                           out, copy_options)
            finally:
                con.execute("SET preserve_insertion_order = false")
            return rows, _sha256(out)
        # Each finished part is appended and hashed while DuckDB writes the next (10M
        # subscribers, 1.6 GB of CSV: about 2.5 s no longer waited for).
        digest, size = hashlib.sha256(), 0

        def append(part: Path) -> None:
            nonlocal size
            with open(part, "rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
                    joined.write(chunk)
                    size += len(chunk)
            part.unlink()  # (its space back at once)

        with open(out, "wb") as joined, InThread(append) as appending:
            for number, ((low, high), part) in enumerate(zip(ranges, parts)):
                rows += _copy(con, query, {**params, "low": low, "high": high}, part, copy_options,
                              header=number == 0 and options.format == "csv")
                appending.put(part)
        return rows, (digest.hexdigest(), size)


_CHUNK = 4 << 20


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# --- one export, as the `export` command and the export asset run it -----------------------------

@contextmanager
def opened(database: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The store for an export: waits while an import writes; DuckDB's memory cap
    (`store.default_memory_limit`) makes the sort spill to disk instead of growing with the
    store (1.2M subscribers: 0.7 GB peak)."""
    with store.writer(database) as con:
        con.execute("SET preserve_insertion_order = false")  # ORDER BY still holds
        yield con


def destination(export_id: str, options: ExportOptions) -> Path:
    """Where the file is written on this host: `out`, else the export's folder (and there too,
    first, when `out` is on object storage or an SFTP server)."""
    if options.out and not remote.is_remote(options.out):
        return checked_out(options.out)
    return home.export_dir(export_id) / f"subscribers{options.suffix()}"


def delivered(written: Written, out: Optional[str]) -> dict:
    """What was written (path, rows, sha256, size), after sending it to an `s3://` or `sftp://`
    `out`, whole: under a temporary name there, then the final one."""
    where = str(written.path)
    if out and remote.is_remote(out):
        remote.put(written.path, out)
        where = out
    return {"path": where, "rows": written.rows, "sha256": written.sha256, "size": written.size}


def checked_out(out: str) -> Path:
    """`--out`: anywhere but the home's own files (the store, imports, the Dagster instance),
    which an export must never overwrite; under the home only `exports/` is open."""
    path = Path(out).expanduser().resolve()
    root = home.home().resolve()
    if path.is_relative_to(root) and not path.is_relative_to(home.exports_dir().resolve()):
        raise MailPipelineError(f"invalid out {out!r}: inside {root} only exports/ may be written")
    return path


def run_export(export_id: str, options: ExportOptions, database: Path) -> dict:
    """Write export `export_id` and record what was written beside its options."""
    folder = home.export_dir(export_id)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "export.json", {"options": options.model_dump()})
    with opened(database) as con:
        written = export(con, options, destination(export_id, options))
    result = delivered(written, options.out)
    write_json(folder / "result.json", result)
    return result


def export_document(export_id: str, state: str, *, created_at: Optional[str],
                    finished_at: Optional[str], run_id: Optional[str],
                    error_message: Optional[str] = None) -> dict:
    """The export document: id, state, filters, and once written its path, rows and checksum."""
    folder = home.export_dir(export_id)
    options = (read_json(folder / "export.json", {}) or {}).get("options", {})
    result = read_json(folder / "result.json", {}) or {}
    filters = {k: options[k] for k in ("lists", "status", "subscription_status", "search",
                                       "cold_only", "cold_days") if k in options}
    return {"id": export_id, "state": state, "created_at": created_at, "finished_at": finished_at,
            "error_message": error_message if state == "failed" else None, "run_id": run_id,
            "filters": filters, "format": options.get("format"), "gzip": options.get("gzip"),
            "path": result.get("path"), "rows": result.get("rows"), "sha256": result.get("sha256"),
            "size": result.get("size")}

"""Validation (spec §3 "Values" and the first categories of "Fate"): every record read becomes a
valid row, a `failed` row with its reason, or a `skipped_duplicate` row. Nothing is dropped."""
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import polars as pl


def _pandera_without_strategies() -> None:
    """Pandera's built-in checks load its data-synthesis strategies, which import Hypothesis when
    it is installed (the test extra): 0.36 s of every command's start-up, a full garbage
    collection included. Nothing here synthesises data, so where Hypothesis is not loaded yet
    Pandera is loaded as it is where Hypothesis is absent: in that process Pandera's own data
    synthesis (`schema.example()`, `strategy()`) is unavailable, which nothing of this project
    uses; a process that later imports Hypothesis itself still gets it."""
    if "hypothesis" in sys.modules:
        return
    sys.modules["hypothesis"] = None  # `import hypothesis` raises ImportError meanwhile
    try:
        import pandera.strategies.base_strategies  # noqa: F401
    finally:
        del sys.modules["hypothesis"]


_pandera_without_strategies()
import pandera.polars as pa  # noqa: E402

from mail_pipeline.emails import check_emails
from mail_pipeline.mapping import IP_FIELDS, TIME_FIELDS, Mapping
from mail_pipeline.options import EMAIL_FORMATS
from mail_pipeline.reading import Records
from mail_pipeline.times import format_hint, parse_times
from mail_pipeline.exports import UNGUARD
from mail_pipeline.values import (MAX_DEPTH, STATUS_WORDS, SUBSCRIBER_STATUSES, custom_fields_json,
                                  depth, ip_addresses, json_objects, json_tag_lists, memberships,
                                  parse_tags, split_status)


class ParsedRow(pa.DataFrameModel):
    """What a usable row must satisfy; each failed check becomes that row's reason. Checks of
    fields the file does not map are absent (optional columns)."""

    cells_ok: bool = pa.Field(eq=True)
    email_key: str = pa.Field(nullable=False)
    status: Optional[str] = pa.Field(nullable=True, isin=STATUS_WORDS)
    email_format: Optional[str] = pa.Field(nullable=True, isin=list(EMAIL_FORMATS))
    subscribe_time_ok: Optional[bool] = pa.Field(nullable=True, eq=True)
    confirm_time_ok: Optional[bool] = pa.Field(nullable=True, eq=True)
    remove_time_ok: Optional[bool] = pa.Field(nullable=True, eq=True)
    created_at_ok: Optional[bool] = pa.Field(nullable=True, eq=True)
    updated_at_ok: Optional[bool] = pa.Field(nullable=True, eq=True)
    subscribe_ip_ok: Optional[bool] = pa.Field(nullable=True, eq=True)
    remove_ip_ok: Optional[bool] = pa.Field(nullable=True, eq=True)
    attributes_ok: Optional[bool] = pa.Field(nullable=True, eq=True)
    lists_ok: Optional[bool] = pa.Field(nullable=True, eq=True)


class ValidRow(pa.DataFrameModel):
    """The validated frame handed to the merge: one row per subscriber key."""

    # Uniqueness of `email` holds by construction (deduplication); checking it again here
    # would cost a second pass over a million strings.
    row: int = pa.Field(ge=1)
    email: str = pa.Field(nullable=False)
    name: str = pa.Field(nullable=True)
    subscriber_status: str = pa.Field(nullable=True, isin=list(SUBSCRIBER_STATUSES))
    subscription_status: str = pa.Field(nullable=True)
    attributes: str = pa.Field(nullable=True)
    custom_fields: str = pa.Field(nullable=True)
    email_format: str = pa.Field(nullable=True, isin=list(EMAIL_FORMATS))
    subscribe_ip: str = pa.Field(nullable=True)
    remove_ip: str = pa.Field(nullable=True)


# The merge's columns beyond ValidRow's, with the type an unmapped one gets.
_TIME = pl.Datetime("us", "UTC")
EXTRA_COLUMNS = {"tags": pl.List(pl.String), "lists": pl.String, **{f: _TIME for f in TIME_FIELDS}}

# Checked in this order; a row's reason is its first failure.
_CHECKS = ("cells_ok", "email_key", "status", "email_format", *(f"{f}_ok" for f in TIME_FIELDS),
           *(f"{f}_ok" for f in IP_FIELDS), "attributes_ok", "lists_ok")
_PRIORITY = {check: rank for rank, check in enumerate(_CHECKS)}

# A value no field needs and later tools choke on: over 16 MiB (a spreadsheet cell holds 32k
# characters), or holding a NUL (which PostgreSQL and C strings cannot hold). Such a row fails;
# nothing is cut short.
MAX_CELL_BYTES = 16 << 20

FAILED_SCHEMA = {"row": pl.Int64, "line": pl.Int64, "cells": pl.List(pl.String), "error": pl.String}


@dataclass(frozen=True)
class Validated:
    valid: pl.DataFrame       # ValidRow + EXTRA_COLUMNS + key_hash, duplicates not yet removed
    failed: pl.DataFrame      # FAILED_SCHEMA: the record as it came and the reason
    number_of_records: int


def _cell(index: int, guarded: bool = True) -> pl.Expr:
    """A trimmed cell, with an empty one meaning no value, and without the `'` an export puts
    before a cell a spreadsheet would run as a formula (spec §6). `guarded` false says that no
    cell of the column holds a `'` at all (`_guarded`), so none needs looking at for one."""
    text = pl.col(f"c{index}").str.strip_chars()
    if guarded:
        text = pl.when(text.str.contains(UNGUARD)).then(text.str.slice(1)).otherwise(text)
    return pl.when(text != "").then(text)


def _guarded(records: Records) -> set[str]:
    """The columns (c0…) some cell of which holds a `'`. Removing an export's guard is two
    thirds of trimming a cell (a regex, then a copy of every cell), and in most files no cell of
    most columns holds a quote at all: a byte search over each column leaves those out (a chunk
    of 250k rows, four columns: parsing 0.17 s -> 0.12 s; 10M rows: 2.4-2.7 s less)."""
    names = [c for c in records.rows.columns if c != "row"]
    if not names:
        return set()
    found = records.rows.select(pl.col(c).str.contains("'", literal=True).any() for c in names).row(0)
    return {c for c, quoted in zip(names, found) if quoted}


def cell_problems(records: Records, columns: list[str]) -> pl.Series:
    """Each row's first oversized or NUL-holding cell, described; null for a clean row."""
    problems = []
    for i, column in enumerate(columns):
        cell = pl.col(f"c{i}")
        problems.append(
            pl.when(cell.str.len_bytes() > MAX_CELL_BYTES)
            .then(pl.lit(f"the value in column '{column}' is longer than {MAX_CELL_BYTES} bytes"))
            .when(cell.str.contains("\x00", literal=True))
            .then(pl.lit(f"the value in column '{column}' holds a NUL character")))
    if not problems:
        return pl.Series("raw:cells", [None] * records.rows.height, pl.String)
    return records.rows.select(pl.coalesce(problems).alias("raw:cells")).to_series()


def _name(mapping: Mapping, cell: Callable[[int], pl.Expr]) -> pl.Expr:
    if "name" in mapping.fields:
        return cell(mapping.fields["name"])
    if mapping.name_parts:  # "First" + "Last"
        joined = pl.concat_str([cell(i) for i in mapping.name_parts], separator=" ", ignore_nulls=True)
        return pl.when(joined != "").then(joined)
    return pl.lit(None, pl.String)


def parse(records: Records, mapping: Mapping, date_format: str = "mdy") -> pl.DataFrame:
    """Records → one typed column per field (trimmed, empty = null) plus the checks' inputs.
    Status, format and time fields keep their text as `raw:<field>` for the failure reason."""
    fields = mapping.fields
    guarded = _guarded(records)
    cell = lambda i: _cell(i, f"c{i}" in guarded)  # noqa: E731
    text = lambda f: (cell(fields[f]) if f in fields else pl.lit(None, pl.String)).alias(f)  # noqa: E731
    times = [f for f in TIME_FIELDS if f in fields]
    ips = [f for f in IP_FIELDS if f in fields]
    frame = records.rows.select(
        "row", text("email"), _name(mapping, cell).alias("name"), text("attributes"),
        text("status").alias("raw:status"), text("email_format").alias("raw:email_format"),
        *[text(f) for f in IP_FIELDS],
        *[text(f).alias(f"raw:{f}") for f in times],
        text("tags").alias("raw:tags"), text("lists").alias("raw:lists"),
        *[cell(i).alias(f"custom:{name}") for name, i in mapping.custom.items()],
    )
    custom = [f"custom:{name}" for name in mapping.custom]
    frame = frame.with_columns(
        *split_status(pl.col("raw:status")),
        pl.col("raw:status").str.to_lowercase().alias("status"),
        pl.col("raw:email_format").str.to_lowercase().alias("email_format"),
        custom_fields_json({c: c.removeprefix("custom:") for c in custom}),
        *[parse_times(pl.col(f"raw:{f}"), date_format).alias(f) for f in times],
    ).drop(custom)
    lists = (memberships(frame["raw:lists"]).get_columns() if "lists" in fields
             else [pl.lit(None, pl.String).alias("lists")])
    frame = frame.with_columns(
        _tags(frame["raw:tags"]), *lists,
        *[(pl.col(f"raw:{f}").is_null() | pl.col(f).is_not_null()).alias(f"{f}_ok") for f in times],
        *[ip_addresses(frame[f]).alias(f"{f}_ok") for f in ips],
        # A confirm time without a status says the subscription was confirmed.
        pl.col("subscription_status").fill_null(
            pl.when(pl.col("confirm_time").is_not_null()).then(pl.lit("confirmed")))
        if "confirm_time" in times else pl.col("subscription_status"),
    )
    # The JSON check runs in DuckDB, which releases the GIL, so it overlaps the email check,
    # whose costly part is email-validator's Python code.
    with ThreadPoolExecutor(max_workers=1) as pool:
        attributes_ok = pool.submit(json_objects, frame["attributes"])
        emails = check_emails(frame["email"])
        attributes_ok = attributes_ok.result().alias("attributes_ok").to_frame()
    return pl.concat([frame, emails, attributes_ok], how="horizontal")


def _tags(cells: pl.Series) -> pl.Series:
    """Tags as separated text, or as a JSON array (an export's `tags` column); a cell that only
    looks like one (`[beta]`) is separated text."""
    as_text = cells.to_frame("t").select(parse_tags(pl.col("t"))).to_series()
    if not cells.str.starts_with("[").any():
        return as_text.alias("tags")
    is_json = cells.str.starts_with("[") & cells.str.ends_with("]")
    as_json = json_tag_lists(cells)
    parsed = is_json & (as_json.is_not_null() | cells.str.contains(r"^\[\s*\]$"))
    return pl.select(pl.when(parsed).then(as_json).otherwise(as_text)).to_series().alias("tags")


def _quoted(text: str) -> pl.Expr:
    return pl.lit(text, pl.String)


def _message(check: str, columns: list[str], mapping: Mapping) -> pl.Expr:
    """The reason a row fails `check`, naming the column and quoting the value."""
    if check == "email_key":
        return pl.col("email_error")
    if check == "cells_ok":
        return pl.col("raw:cells")
    field = check.removesuffix("_ok")
    column = columns[mapping.fields[field]] if field in mapping.fields else field
    if check == "attributes_ok":
        too_deep = pl.col("attributes").map_elements(  # (failed rows only: a few)
            lambda text: depth(text) > MAX_DEPTH, return_dtype=pl.Boolean)
        return (pl.when(too_deep)
                .then(_quoted(f"invalid attributes in column '{column}': nested deeper than "
                              f"{MAX_DEPTH} levels"))
                .otherwise(_quoted(f"invalid attributes in column '{column}': not a JSON object")))
    if check == "lists_ok":
        return pl.concat_str([_quoted("invalid lists '"), pl.col("raw:lists"), _quoted(
            f"' in column '{column}': must be a JSON object of list name → subscription status")])
    value = pl.col(field) if field in IP_FIELDS else pl.col(f"raw:{field}")
    if check == "status":
        rule = ("must be a subscriber status (enabled, disabled, blocklisted) or a subscription "
                "status")
    elif check == "email_format":
        rule = "must be html, text or both"
    elif field in TIME_FIELDS:
        rule = f"expected {format_hint()}"
    else:
        rule = "not an IPv4 or IPv6 address"
    return pl.concat_str([_quoted(f"invalid {field} '"), value,
                          _quoted(f"' in column '{column}': {rule}")])


def reasons(parsed: pl.DataFrame, columns: list[str], mapping: Mapping) -> pl.DataFrame:
    """Run the Pandera checks and give each failing row (by position) its reason."""
    checks = [c for c in _CHECKS if c in parsed.columns]
    try:
        ParsedRow.validate(parsed.select(checks), lazy=True)
        return pl.DataFrame(schema={"index": pl.UInt32, "error": pl.String})
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.filter(pl.col("index").is_not_null())
    inputs = ["email_error", "attributes", *[c for c in parsed.columns if c.startswith("raw:")],
              *IP_FIELDS]
    cases = (
        cases.select(pl.col("index").cast(pl.UInt32), "column")
        .with_columns(pl.col("column").replace_strict(_PRIORITY, return_dtype=pl.Int8).alias("rank"))
        .sort("index", "rank").unique("index", keep="first", maintain_order=True)
        .join(parsed.with_row_index("index").select("index", *inputs), on="index")
    )
    error = pl.lit(None, pl.String)
    for check in reversed(checks):
        error = pl.when(pl.col("column") == check).then(_message(check, columns, mapping)).otherwise(error)
    return cases.select("index", error.alias("error"))


def validate(records: Records, columns: list[str], mapping: Mapping,
             date_format: str = "mdy") -> Validated:
    """Parse and check one chunk of records. Duplicates are found later, across all chunks
    (`duplicates`); `key_hash` is there for that."""
    cells = cell_problems(records, columns)
    parsed = parse(records, mapping, date_format).with_columns(
        cells, cells.is_null().alias("cells_ok"))
    failures = reasons(parsed, columns, mapping)
    # Failures are few: mark them by position rather than joining the whole frame.
    is_failed = pl.int_range(pl.len(), dtype=pl.UInt32).is_in(failures["index"].implode())
    valid = parsed.filter(~is_failed).select(
        "row", pl.col("email_key").alias("email"), "name", "subscriber_status",
        "subscription_status", "attributes", "custom_fields", "email_format", *IP_FIELDS,
        *[pl.col(c) if c in parsed.columns else pl.lit(None, dtype).alias(c)
          for c, dtype in EXTRA_COLUMNS.items()],
        pl.col("email_key").hash().alias("key_hash"))
    failed_rows = (records.rows.with_row_index("index").join(failures, on="index")
                   if failures.height else records.rows.clear().with_columns(error=pl.lit(None, pl.String)))
    failed = pl.concat([
        records.rejects.select(pl.lit(None, pl.Int64).alias("row"), "line", "cells", "error"),
        failed_rows.select(
            "row", pl.lit(None, pl.Int64).alias("line"),
            pl.concat_list(pl.col(f"c{i}").fill_null("") for i in range(len(columns))).alias("cells"),
            "error"),
    ]).cast(FAILED_SCHEMA)
    return Validated(ValidRow.validate(valid), failed, records.count)


def duplicates(parts: list[Path]) -> pl.DataFrame:
    """The rows (row, email) whose email an earlier row of the file already has: the first
    occurrence wins. Only rows whose key hash repeats are compared by email, so the whole
    file's emails are never held at once; the comparison itself is exact."""
    if not parts:
        return pl.DataFrame(schema={"row": pl.Int64, "email": pl.String})
    # Sorted, a repeated hash sits next to its twin: cheaper in memory than a hash table of
    # every key (10M rows: 0.2 GB, not 0.8 GB).
    hashes = pl.scan_parquet(parts).select("key_hash").collect()["key_hash"].sort()
    repeated = hashes.filter(hashes == hashes.shift(1)).unique()
    del hashes
    return (pl.scan_parquet(parts).select("row", "email", "key_hash")
            .filter(pl.col("key_hash").is_in(repeated.implode()))
            .sort("row").filter(~pl.col("email").is_first_distinct())
            .select("row", "email").collect())

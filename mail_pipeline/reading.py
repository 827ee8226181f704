"""Reading (spec §3 "Reading", second half): parse the staged file's records.

`read_chunks` parses with DuckDB's strict CSV reader, streamed, into Polars frames of strings;
records with the wrong number of fields come back separately, re-read whole from where they start.
Files DuckDB's reader cannot take go through Python's csv module with the same outcome.
"""
import csv
import io
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

import duckdb
import polars as pl
import pyarrow as pa

from mail_pipeline.errors import MailPipelineError
from mail_pipeline.options import ImportOptions

NOT_CSV = "invalid file: not a CSV or ZIP"
# DuckDB's reader reports a line over its 2 MiB limit, but skips one over its 32 MiB buffer
# without a word: a file with lines over the limit goes to the line reader from the start.
LONGEST_LINE = 2 << 20


def delimiter_of(options: ImportOptions) -> str:
    """The delimiter the staged file is read with: staging settles it (given or detected); options
    that never went through staging (not given) mean a comma."""
    return options.delimiter or ","


def read_header(path: Path, options: ImportOptions) -> list[str]:
    """The first record's cells, trimmed: the header's names (or, without one, the width)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return first_record(f, options)


# More columns than any subscriber export has: past this a header is an attack or an accident,
# and every stage's cost grows with the width.
MAX_COLUMNS = 10_000


def first_record(text: TextIO, options: ImportOptions) -> list[str]:
    try:
        for row in csv.reader(text, delimiter=delimiter_of(options), quotechar=options.quote):
            if len(row) > MAX_COLUMNS:
                raise MailPipelineError(f"invalid file: the first record has more than "
                                        f"{MAX_COLUMNS} fields")
            if any(cell.strip() for cell in row):
                return [cell.strip() for cell in row]
    except csv.Error:
        raise MailPipelineError(NOT_CSV) from None
    raise MailPipelineError("invalid file: the file is empty")


@dataclass(frozen=True)
class Records:
    """The records of a file: `rows` has `row` (1-based) and columns c0…cN-1 as strings;
    `rejects` has `line`, `cells` (the record split as written) and `error`."""

    rows: pl.DataFrame
    rejects: pl.DataFrame

    @property
    def count(self) -> int:
        return self.rows.height + self.rejects.height


class Reread(Exception):
    """DuckDB's reader gave up on the file after some chunks were handed out: the caller drops
    what it made of them and reads again with `line_reader=True`."""


def read_chunks(path: Path, options: ImportOptions, width: int, line_endings: str,
                rows_per_chunk: int, line_reader: bool = False) -> Iterator[Records]:
    """Parse the staged file's data records, `rows_per_chunk` at a time, so memory stays flat
    whatever the file's size. Empty cells are null; cells keep their spaces. Rows are numbered
    across chunks; records that could not be read come with the last chunk.

    DuckDB's strict reader does the work when every line ends the same way; it reports each
    record with the wrong number of fields and where it starts. Files it cannot read that way
    (mixed or CR-only line ends, stray quotes, lines over its size limit) go through Python's
    csv module, slower, with the same outcome per record; if that is found out only after
    chunks were handed out, `Reread` is raised. Empty fields after the last column (a trailing
    delimiter) are ignored, as DuckDB's reader does."""
    if line_reader or line_endings == "mixed":
        yield from _sliced(_read_with_python(path, options, width), rows_per_chunk)
        return
    columns = {f"c{i}": "VARCHAR" for i in range(width)}
    con = duckdb.connect()  # in-memory: reading never touches the store
    handed_out, pending, rows_read = 0, None, 0
    try:
        # The reader's buffers stay small: a chunk at a time is all that is needed.
        con.execute("SET enable_progress_bar = false; SET memory_limit = '256MB'")
        batches = con.sql(
            "SELECT * FROM read_csv(?, header=false, skip=?, delim=?, quote=?, escape=?, columns=?,"
            " auto_detect=false, strict_mode=true, null_padding=false, ignore_errors=true,"
            " store_rejects=true, all_varchar=true, parallel=true)",
            # skip counts records, not lines: a header with a quoted newline is one record.
            params=[str(path), 1 if options.header else 0, delimiter_of(options),
                    options.quote, options.quote, columns],
        ).to_arrow_reader(min(rows_per_chunk, 1 << 30))
        for rows in _gathered(batches, rows_per_chunk):
            # Each chunk is handed out only once the next one is read, so that the last
            # can carry the rejects.
            if pending is not None:
                handed_out += 1
                yield Records(pending, _NO_REJECTS)
            pending = _numbered(rows, rows_read, width)
            rows_read += rows.height
        rejects = con.execute(
            "SELECT line, min(line_byte_position), any_value(error_type ORDER BY column_idx)"
            " FROM reject_errors GROUP BY line ORDER BY line"
        ).fetchall()
    except (duckdb.Error, pa.ArrowException, OSError):
        # (an error while the reader streams comes through pyarrow, not as a duckdb.Error)
        rejects = [(0, 0, "READ ERROR")]
    finally:
        con.close()
    # A stray or unclosed quote makes DuckDB's reader fail everything up to where it resyncs,
    # and an over-long line is not read at all: the line-by-line reader decides those files.
    if any(kind not in _PER_RECORD for _, _, kind in rejects):
        if handed_out:
            raise Reread()
        yield from read_chunks(path, options, width, line_endings, rows_per_chunk, line_reader=True)
        return
    failed = [_reject(path, line, position, kind, options, width) for line, position, kind in rejects]
    if pending is None:
        pending = _numbered(pl.DataFrame(schema={c: pl.String for c in columns}), 0, width)
    yield Records(pending, _rejects_frame([item for item in failed if item is not None]))


def _gathered(batches: pa.RecordBatchReader, rows: int) -> Iterator[pl.DataFrame]:
    """DuckDB hands out about 100k rows at a time, whatever is asked: gather them into chunks
    of `rows`, so the per-chunk work (checks, a Parquet part) is paid once per chunk."""
    gathered, count = [], 0
    for batch in batches:
        gathered.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pl.from_arrow(pa.Table.from_batches(gathered))
            gathered, count = [], 0
    if gathered:
        yield pl.from_arrow(pa.Table.from_batches(gathered))


def _numbered(rows: pl.DataFrame, before: int, width: int) -> pl.DataFrame:
    rows = rows.with_row_index("row", offset=before + 1).with_columns(pl.col("row").cast(pl.Int64))
    return _drop_blank(rows, width)


def _sliced(records: Records, size: int) -> Iterator[Records]:
    """A whole file's records as chunks (the line reader holds them all anyway)."""
    starts = range(0, records.rows.height, size) if records.rows.height else [0]
    for start in starts:
        last = start + size >= records.rows.height
        yield Records(records.rows.slice(start, size), records.rejects if last else _NO_REJECTS)


# Rejects that DuckDB reports for one record alone.
_PER_RECORD = ("MISSING COLUMNS", "TOO MANY COLUMNS", "INVALID ENCODING", "CAST")


def _record_at(path: Path, position: int, options: ImportOptions) -> list[str]:
    """The record starting on the line DuckDB reports, re-read in full (its own copy is cut)."""
    with open(path, "rb") as raw:
        # DuckDB's position lands on, or one byte past, the line's first byte.
        raw.seek(max(position - 1, 0))
        start = position if raw.read(1) in (b"\n", b"\r") or position == 0 else position - 1
        raw.seek(start)
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        return next(csv.reader(text, delimiter=delimiter_of(options), quotechar=options.quote), [])


def _is_blank(cells: list[str]) -> bool:
    """A blank line (or a line of spaces) is not a record."""
    return len(cells) <= 1 and not "".join(cells).strip()


def _wrong_count(width: int, cells: list[str]) -> str:
    return f"wrong number of fields: expected {width}, found {len(cells)}"


def _reject(path: Path, line: int, position: int, kind: str, options: ImportOptions,
            width: int) -> tuple | None:
    cells = _record_at(path, position, options)
    if _is_blank(cells):
        return None
    if kind in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
        return line, cells, _wrong_count(width, cells)
    return line, cells, f"unreadable record: {kind.lower()}"


_REJECTS_SCHEMA = {"line": pl.Int64, "cells": pl.List(pl.String), "error": pl.String}
_NO_REJECTS = pl.DataFrame(schema=_REJECTS_SCHEMA)


def _rejects_frame(items: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(items, schema=_REJECTS_SCHEMA, orient="row")


def _drop_blank(rows: pl.DataFrame, width: int) -> pl.DataFrame:
    """A blank line is not a record; with one column a line of spaces reads as one, so drop it."""
    if width != 1:
        return rows
    return rows.filter(pl.col("c0").str.strip_chars().fill_null("") != "")


class _Lines:
    """The physical lines of a text file (ends kept), remembering those taken since the last
    record so a record the csv module refuses can be failed alone and the rest read again."""

    def __init__(self, text: TextIO) -> None:
        self.text, self.pending, self.taken = text, deque(), []

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        line = self.pending.popleft() if self.pending else next(self.text)
        self.taken.append(line)
        return line

    def take(self) -> list[str]:
        taken, self.taken = self.taken, []
        return taken


_BAD_BYTE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" leaves for a bad byte


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if "unexpected end of data" in text:
        return "unreadable record: unterminated quote"
    if "expected after" in text:
        return "unreadable record: unquoted value"
    return f"unreadable record: {text}"


def _read_with_python(path: Path, options: ImportOptions, width: int) -> Records:
    """The same records and outcomes as the DuckDB path, for the files it cannot take."""
    data: list[list] = [[] for _ in range(width)]
    rejects: list[tuple] = []
    line = 1
    skip_header = options.header  # staging removed blank lines before it

    def record(cells: list[str], taken: list[str], start: int) -> None:
        if _is_blank(cells):
            return
        if _BAD_BYTE.search("".join(taken)):
            cells = [_BAD_BYTE.sub("\ufffd", cell) for cell in cells]
            rejects.append((start, cells, "unreadable record: invalid encoding"))
            return
        while len(cells) > width and cells[-1] == "":
            cells.pop()  # empty trailing fields (a trailing delimiter) are ignored, as DuckDB does
        if len(cells) != width:
            rejects.append((start, cells, _wrong_count(width, cells)))
            return
        for i, cell in enumerate(cells):
            data[i].append(cell if cell != "" else None)

    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        lines = _Lines(f)
        while True:
            reader = csv.reader(lines, delimiter=delimiter_of(options), quotechar=options.quote,
                                strict=True)
            try:
                for cells in reader:
                    taken = lines.take()
                    start, line = line, line + len(taken)
                    if skip_header:
                        skip_header = False
                    else:
                        record(cells, taken, start)
                break
            except csv.Error as exc:
                # Fail the record's first line alone; the lines after it are read again.
                taken = lines.take()
                lines.pending.extendleft(reversed(taken[1:]))
                start, line = line, line + 1
                loose = next(csv.reader([_BAD_BYTE.sub("\ufffd", taken[0])],
                                        delimiter=delimiter_of(options), quotechar=options.quote), [])
                if skip_header:
                    skip_header = False
                else:
                    rejects.append((start, loose, _csv_problem(exc)))
    rows = pl.DataFrame({"row": list(range(1, len(data[0]) + 1)) if width else [],
                         **{f"c{i}": data[i] for i in range(width)}},
                        schema={"row": pl.Int64, **{f"c{i}": pl.String for i in range(width)}})
    return Records(rows, _rejects_frame(rejects))

"""Reading (spec §3 "Reading"): stage the source as one UTF-8 CSV, then read its records.

`stage_source` turns whatever the user gave (CSV, TSV, TXT, ZIP, any supported encoding) into
`source.csv` in the import's folder, so every later stage reads one well-known file.
`read_records` parses it with DuckDB's strict CSV reader into a Polars frame of strings; records
with the wrong number of fields come back separately, with the line as it was written.
"""
import codecs
import csv
import hashlib
import io
import os
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, TextIO

import duckdb
import polars as pl

from mail_pipeline.errors import MailPipelineError
from mail_pipeline.options import ImportOptions

NOT_CSV = "invalid file: not a CSV or ZIP"
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class StagedFile:
    path: Path
    size: int
    sha256: str
    origin: str  # the source, and for a ZIP the entry that was taken


@contextmanager
def open_source(source: Path) -> Iterator[tuple[BinaryIO, str]]:
    """Open the CSV inside `source` (the file itself, or a ZIP's first CSV by name)."""
    if not source.is_file():
        raise MailPipelineError(f"file not found: {source}")
    with open(source, "rb") as probe:
        is_zip = probe.read(2) == b"PK"
    if not is_zip:
        with open(source, "rb") as stream:
            yield stream, str(source)
        return
    if not zipfile.is_zipfile(source):
        raise MailPipelineError(NOT_CSV)
    with zipfile.ZipFile(source) as archive:
        entry = _first_csv(archive)
        with archive.open(entry) as stream:
            yield stream, f"{source}:{entry}"


def preview_columns(source: Path, options: ImportOptions) -> list[str]:
    """The first record's cells, read from the start of the source alone: enough to refuse a
    file that is not CSV, or a mapping that does not fit it, before anything is written."""
    with open_source(source) as (stream, _origin):
        sample = stream.read(_CHUNK)
    encoding = "utf-8-sig" if options.encoding == "utf-8" else "latin-1"
    if not _looks_like_text(sample, encoding):
        raise MailPipelineError(NOT_CSV)
    text = codecs.getincrementaldecoder(encoding)("replace").decode(sample)
    return _first_record(io.StringIO(text), options)


def stage_source(source: Path, dest: Path, options: ImportOptions) -> StagedFile:
    """Copy `source` (a CSV or the first CSV of a ZIP) to `dest` as UTF-8 without a BOM.
    Raises MailPipelineError, before anything is written, when the file cannot be an import."""
    with open_source(source) as (stream, origin):
        return _copy_text(stream, dest, options, origin)


def _first_csv(archive: zipfile.ZipFile) -> str:
    names = sorted(info.filename for info in archive.infolist()
                   if not info.is_dir() and info.filename.lower().endswith(CSV_SUFFIXES))
    if not names:
        raise MailPipelineError("invalid file: the ZIP holds no CSV file")
    return names[0]


def _copy_text(stream, dest: Path, options: ImportOptions, origin: str) -> StagedFile:
    """Stream `stream` to `dest`, checking it is text; UTF-8 is copied as is (less a BOM),
    ISO-8859-1 is re-encoded to UTF-8 on the way."""
    digest = hashlib.sha256()
    latin1 = options.encoding == "iso-8859-1"
    encoding = "latin-1" if latin1 else "utf-8-sig"
    tmp = dest.with_suffix(".partial")
    size = 0
    seen_text = False
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as out:
            first = True
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if first:
                    # The first chunk decides whether this is text at all; a bad byte further
                    # on fails its own row (the reader rejects it), not the whole file.
                    if not _looks_like_text(chunk, encoding):
                        raise MailPipelineError(NOT_CSV)
                    chunk = chunk.removeprefix(codecs.BOM_UTF8) if not latin1 else chunk
                    first = False
                seen_text = seen_text or bool(chunk.strip())
                out.write(chunk.decode("latin-1").encode("utf-8") if latin1 else chunk)
        if not seen_text:
            raise MailPipelineError("invalid file: the file is empty")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return StagedFile(dest, size, digest.hexdigest(), origin)


def _looks_like_text(chunk: bytes, encoding: str) -> bool:
    """No NUL bytes and (almost) every byte decodes: a stray bad byte is a bad row, not a bad file."""
    sample = chunk[:8192]
    if b"\x00" in sample:
        return False
    text = codecs.getincrementaldecoder(encoding)("replace").decode(sample)
    return text.count("\ufffd") <= max(4, len(text) // 50)


def read_header(path: Path, options: ImportOptions) -> list[str]:
    """The first record's cells, trimmed: the header's names (or, without one, the width)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return _first_record(f, options)


def _first_record(text: TextIO, options: ImportOptions) -> list[str]:
    try:
        for row in csv.reader(text, delimiter=options.delimiter, quotechar=options.quote):
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


def read_records(path: Path, options: ImportOptions, width: int) -> Records:
    """Parse every data record of the staged file. Empty cells are null; cells keep their spaces."""
    columns = {f"c{i}": "VARCHAR" for i in range(width)}
    con = duckdb.connect()  # in-memory: reading never touches the store
    try:
        rows = con.sql(
            "SELECT * FROM read_csv(?, header=false, skip=?, delim=?, quote=?, escape=?, columns=?,"
            " auto_detect=false, strict_mode=true, null_padding=false, ignore_errors=true,"
            " store_rejects=true, all_varchar=true, parallel=true)",
            params=[str(path), 1 if options.header else 0, options.delimiter, options.quote,
                    options.quote, columns],
        ).pl()
        rejects = con.execute(
            "SELECT line, any_value(csv_line ORDER BY column_idx) AS csv_line,"
            " any_value(error_type) AS error_type FROM reject_errors GROUP BY line ORDER BY line"
        ).fetchall()
    except duckdb.Error:
        # DuckDB's reader gives up on some irregular files (mixed line ends, stray quotes);
        # Python's csv module reads anything, slower, with the same outcome per record.
        return _read_with_python(path, options, width)
    finally:
        con.close()
    rows = rows.with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))
    rows = _drop_blank(rows, width)
    return Records(rows, _rejects_frame([_reject(line, text, kind, options, width)
                                         for line, text, kind in rejects if text.strip()]))


def _reject(line: int, text: str, kind: str, options: ImportOptions, width: int) -> tuple:
    cells = next(csv.reader(io.StringIO(text.strip("\r\n")), delimiter=options.delimiter,
                            quotechar=options.quote), [])
    if kind in ("MISSING COLUMNS", "TOO MANY COLUMNS"):
        error = f"wrong number of fields: expected {width}, found {len(cells)}"
    else:
        error = f"unreadable record: {kind.lower()}"
    return line, cells, error


def _rejects_frame(items: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(items, schema={"line": pl.Int64, "cells": pl.List(pl.String),
                                       "error": pl.String}, orient="row")


def _drop_blank(rows: pl.DataFrame, width: int) -> pl.DataFrame:
    """A blank line is not a record; with one column a line of spaces reads as one, so drop it."""
    if width != 1:
        return rows
    return rows.filter(pl.col("c0").str.strip_chars().fill_null("") != "")


def _read_with_python(path: Path, options: ImportOptions, width: int) -> Records:
    data: list[list] = [[] for _ in range(width)]
    numbers: list[int] = []
    rejects: list[tuple] = []
    with open(path, encoding="utf-8", newline="", errors="replace") as f:
        reader = csv.reader(f, delimiter=options.delimiter, quotechar=options.quote)
        if options.header:
            next(reader, None)
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != width:
                rejects.append((reader.line_num, record,
                                f"wrong number of fields: expected {width}, found {len(record)}"))
                continue
            numbers.append(len(numbers) + 1)
            for i, cell in enumerate(record):
                data[i].append(cell if cell != "" else None)
    rows = pl.DataFrame({"row": numbers, **{f"c{i}": data[i] for i in range(width)}},
                        schema={"row": pl.Int64, **{f"c{i}": pl.String for i in range(width)}})
    return Records(rows, _rejects_frame(rejects))

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
import re
import sys
import zipfile
import zlib
from collections import deque
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
    line_endings: str  # "lf", "crlf", or "mixed" (CR-only or several kinds)
    lines: int  # physical lines (a quoted newline makes two; the reader counts records)


class _LineEndings:
    """Counts CRLF, lone LF and lone CR across chunks (a CRLF may straddle two chunks)."""

    def __init__(self) -> None:
        self.crlf = self.lf = self.cr = 0
        self._last = b""

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        straddling = self._last == b"\r" and chunk[:1] == b"\n"
        cr = chunk.count(b"\r")
        crlf = (chunk.count(b"\r\n") if cr else 0) + straddling  # the two-byte search is slower
        self.crlf += crlf
        self.lf += chunk.count(b"\n") - crlf
        self.cr += cr - crlf + straddling
        self._last = chunk[-1:]

    def lines(self) -> int:
        unterminated = self._last not in (b"", b"\n", b"\r")
        return self.crlf + self.lf + self.cr + unterminated

    def kind(self) -> str:
        # A lone CR at the very end of the file is counted until then; that is fine here.
        if self.cr or (self.crlf and self.lf):
            return "mixed"
        return "crlf" if self.crlf else "lf"


def _leading_blank_lines(delimiter: str) -> re.Pattern:
    """Lines before the header holding only spaces and delimiters (as spreadsheets export
    empty rows): not records, nor the header."""
    blank = re.escape(delimiter.encode("utf-8"))
    return re.compile(rb"\A(?:(?:[ \t]|" + blank + rb")*(?:\r\n|\n|\r))+")


@contextmanager
def open_source(source: Path) -> Iterator[tuple[BinaryIO, str]]:
    """Open the CSV inside `source` (the file itself, or a ZIP's first CSV by name)."""
    if source.is_dir():
        raise MailPipelineError(f"not a file but a folder: {source}")
    if not source.is_file():
        raise MailPipelineError(f"file not found: {source}")
    with open(source, "rb") as probe:
        # A ZIP's local-file or empty-archive signature; a CSV may well start with "PK".
        is_zip = probe.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    if not is_zip:
        with open(source, "rb") as stream:
            yield stream, str(source)
        return
    if not zipfile.is_zipfile(source):
        raise MailPipelineError(NOT_CSV)
    # A damaged, encrypted or exotic archive fails when opened or read, wherever that happens.
    unreadable = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError)
    try:
        with zipfile.ZipFile(source) as archive:
            entry = _first_csv(archive)
            with archive.open(entry) as stream:
                yield stream, f"{source}:{entry}"
    except unreadable as exc:
        raise MailPipelineError(f"invalid file: the ZIP cannot be read ({exc})") from None


def preview_columns(source: Path, options: ImportOptions) -> list[str]:
    """The first record's cells, read from the start of the source alone: enough to refuse a
    file that is not CSV, or a mapping that does not fit it, before anything is written."""
    with open_source(source) as (stream, _origin):
        sample = stream.read(_CHUNK)
    encoding = "utf-8-sig" if options.encoding == "utf-8" else "latin-1"
    if not _looks_like_text(sample, encoding):
        raise MailPipelineError(NOT_CSV)
    text = codecs.getincrementaldecoder(encoding)("replace").decode(sample)
    return _first_record(io.StringIO(text, newline=""), options)


def stage_source(source: Path, dest: Path, options: ImportOptions) -> StagedFile:
    """Copy `source` (a CSV or the first CSV of a ZIP) to `dest` as UTF-8 without a BOM.
    Raises MailPipelineError, before anything is written, when the file cannot be an import."""
    with open_source(source) as (stream, origin):
        return _copy_text(stream, dest, options, origin)


def _first_csv(archive: zipfile.ZipFile) -> str:
    """The first `.csv` entry by name (else the first `.tsv`/`.txt`), leaving out folders and
    the hidden files archivers add (`__MACOSX/`, `._name`)."""
    names = sorted(info.filename for info in archive.infolist()
                   if not info.is_dir() and not info.filename.startswith("__MACOSX/")
                   and not info.filename.rsplit("/", 1)[-1].startswith("."))
    for suffixes in ((".csv",), CSV_SUFFIXES):
        found = [name for name in names if name.lower().endswith(suffixes)]
        if found:
            return found[0]
    raise MailPipelineError("invalid file: the ZIP holds no CSV file")


def _copy_text(stream, dest: Path, options: ImportOptions, origin: str) -> StagedFile:
    """Stream `stream` to `dest`, checking it is text; UTF-8 is copied as is (less a BOM),
    ISO-8859-1 is re-encoded to UTF-8 on the way."""
    digest = hashlib.sha256()
    latin1 = options.encoding == "iso-8859-1"
    encoding = "latin-1" if latin1 else "utf-8-sig"
    tmp = dest.with_suffix(".partial")
    size = 0
    seen_text = False
    endings = _LineEndings()
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
                    # Blank lines before the header are not records, nor the header.
                    chunk = _leading_blank_lines(options.delimiter).sub(b"", chunk)
                    first = False
                endings.feed(chunk)
                seen_text = seen_text or bool(chunk.strip())
                out.write(chunk.decode("latin-1").encode("utf-8") if latin1 else chunk)
        if not seen_text:
            raise MailPipelineError("invalid file: the file is empty")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return StagedFile(dest, size, digest.hexdigest(), origin, endings.kind(), endings.lines())


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


def read_records(path: Path, options: ImportOptions, width: int, line_endings: str) -> Records:
    """Parse every data record of the staged file. Empty cells are null; cells keep their spaces.

    DuckDB's strict reader does the work when every line ends the same way; it reports each
    record with the wrong number of fields and where it starts. Files it cannot read that way
    (mixed or CR-only line ends, stray quotes, lines over its size limit) go through Python's
    csv module, slower, with the same outcome per record. Empty fields after the last column
    (a trailing delimiter) are ignored, as DuckDB's reader does."""
    if line_endings == "mixed":
        return _read_with_python(path, options, width)
    columns = {f"c{i}": "VARCHAR" for i in range(width)}
    con = duckdb.connect()  # in-memory: reading never touches the store
    try:
        rows = con.sql(
            "SELECT * FROM read_csv(?, header=false, skip=?, delim=?, quote=?, escape=?, columns=?,"
            " auto_detect=false, strict_mode=true, null_padding=false, ignore_errors=true,"
            " store_rejects=true, all_varchar=true, parallel=true)",
            # skip counts records, not lines: a header with a quoted newline is one record.
            params=[str(path), 1 if options.header else 0, options.delimiter,
                    options.quote, options.quote, columns],
        ).pl()
        rejects = con.execute(
            "SELECT line, min(line_byte_position), any_value(error_type ORDER BY column_idx)"
            " FROM reject_errors GROUP BY line ORDER BY line"
        ).fetchall()
    except duckdb.Error:
        return _read_with_python(path, options, width)
    finally:
        con.close()
    # A stray or unclosed quote makes DuckDB's reader fail everything up to where it resyncs,
    # and an over-long line is not read at all: the line-by-line reader decides those files.
    if any(kind not in _PER_RECORD for _, _, kind in rejects):
        return _read_with_python(path, options, width)
    rows = rows.with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))
    rows = _drop_blank(rows, width)
    failed = [_reject(path, line, position, kind, options, width) for line, position, kind in rejects]
    return Records(rows, _rejects_frame([item for item in failed if item is not None]))


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
        return next(csv.reader(text, delimiter=options.delimiter, quotechar=options.quote), [])


def _reject(path: Path, line: int, position: int, kind: str, options: ImportOptions,
            width: int) -> tuple | None:
    cells = _record_at(path, position, options)
    if len(cells) <= 1 and not "".join(cells).strip():
        return None  # a line of spaces: blank, not a record
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
    csv.field_size_limit(sys.maxsize)  # a long cell is a long cell, not an error
    data: list[list] = [[] for _ in range(width)]
    rejects: list[tuple] = []
    line = 1
    skip_header = options.header  # staging removed blank lines before it

    def record(cells: list[str], taken: list[str], start: int) -> None:
        if len(cells) <= 1 and not "".join(cells).strip():
            return  # a blank line is not a record
        if _BAD_BYTE.search("".join(taken)):
            cells = [_BAD_BYTE.sub("\ufffd", cell) for cell in cells]
            rejects.append((start, cells, "unreadable record: invalid encoding"))
            return
        while len(cells) > width and cells[-1] == "":
            cells.pop()  # empty trailing fields (a trailing delimiter) are ignored, as DuckDB does
        if len(cells) != width:
            rejects.append((start, cells, f"wrong number of fields: expected {width}, found {len(cells)}"))
            return
        for i, cell in enumerate(cells):
            data[i].append(cell if cell != "" else None)

    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        lines = _Lines(f)
        while True:
            reader = csv.reader(lines, delimiter=options.delimiter, quotechar=options.quote,
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
                                        delimiter=options.delimiter, quotechar=options.quote), [])
                if skip_header:
                    skip_header = False
                else:
                    rejects.append((start, loose, _csv_problem(exc)))
    rows = pl.DataFrame({"row": list(range(1, len(data[0]) + 1)) if width else [],
                         **{f"c{i}": data[i] for i in range(width)}},
                        schema={"row": pl.Int64, **{f"c{i}": pl.String for i in range(width)}})
    return Records(rows, _rejects_frame(rejects))

"""Staging (spec §3 "Reading", first half): turn whatever the user gave (CSV, TSV, TXT, a ZIP's
first CSV; UTF-8 or ISO-8859-1) into `source.csv` in the import's folder, UTF-8 without a BOM,
so every later stage reads one well-known file. Files that cannot be an import are refused here,
from their first bytes, before anything is written.
"""
import codecs
import hashlib
import io
import re
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from mail_pipeline.errors import MailPipelineError
from mail_pipeline.files import replacing
from mail_pipeline.options import ImportOptions
from mail_pipeline.reading import NOT_CSV, first_record

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_CHUNK = 1 << 20

# ZIP bomb caps, checked on the archive's directory before a byte is inflated (zipfile never
# inflates past an entry's declared size, so the declared sizes are the ones to check). A CSV of
# subscribers compresses about 4:1, a repetitive one 20:1; deflate at most reaches 1032:1.
MAX_UNZIPPED_BYTES = 16 << 30
MAX_ZIP_RATIO = 200


@dataclass(frozen=True)
class StagedFile:
    path: Path
    size: int
    sha256: str
    origin: str  # the source, and for a ZIP the entry that was taken
    line_endings: str  # "lf", "crlf", or "mixed" (CR-only or several kinds)
    lines: int  # physical lines (a quoted newline makes two; the reader counts records)
    longest_line: int  # bytes, exact only above the staging chunk size (1 MiB)


class _LineEndings:
    """Counts CRLF, lone LF and lone CR across chunks (a CRLF may straddle two chunks), and
    measures the longest line."""

    def __init__(self) -> None:
        self.crlf = self.lf = self.cr = 0
        self._last = b""
        self.longest = self._open = 0  # the longest line; bytes since the last line end

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._measure(chunk)
        straddling = self._last == b"\r" and chunk[:1] == b"\n"
        cr = chunk.count(b"\r")
        crlf = (chunk.count(b"\r\n") if cr else 0) + straddling  # the two-byte search is slower
        self.crlf += crlf
        self.lf += chunk.count(b"\n") - crlf
        self.cr += cr - crlf  # (a straddling CRLF takes back the CR counted alone before)
        self._last = chunk[-1:]

    def _measure(self, chunk: bytes) -> None:
        """Track lines longer than a chunk, which DuckDB's reader may skip without a word: a few
        searches a chunk, since a line shorter than a chunk never matters here."""
        n, r = chunk.find(b"\n"), chunk.find(b"\r")
        if n == -1 and r == -1:
            self._open += len(chunk)
        else:
            self.longest = max(self.longest, self._open + min(i for i in (n, r) if i != -1))
            self._open = len(chunk) - 1 - max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))

    def longest_line(self) -> int:
        return max(self.longest, self._open)

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
            _refuse_bomb(archive.getinfo(entry), source.stat().st_size)
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
    record = first_record(io.StringIO(text, newline=""), options)
    if len(sample) == _CHUNK and not re.search(rb"[\r\n]", sample):
        # (the record read is cut short: a header no export writes, or not a CSV at all)
        raise MailPipelineError(f"invalid file: the first line is longer than {_CHUNK} bytes")
    return record


def stage_source(source: Path, dest: Path, options: ImportOptions) -> StagedFile:
    """Copy `source` (a CSV or the first CSV of a ZIP) to `dest` as UTF-8 without a BOM.
    Raises MailPipelineError, before anything is written, when the file cannot be an import."""
    with open_source(source) as (stream, origin):
        return _copy_text(stream, dest, options, origin)


def _first_csv(archive: zipfile.ZipFile) -> str:
    """The first `.csv` entry by name (else the first `.tsv`/`.txt`), leaving out folders and
    the hidden files archivers add (`__MACOSX/`, `._name`). An archive with a path leading out
    of it (zip-slip) is refused whole: nothing is ever extracted, but it is not a user's export."""
    for info in archive.infolist():
        parts = info.filename.replace("\\", "/").split("/")
        drive = re.match(r"[A-Za-z]:", info.filename)  # (a colon elsewhere is a plain name)
        if info.filename.startswith(("/", "\\")) or ".." in parts or drive:
            raise MailPipelineError(f"invalid file: the ZIP entry {info.filename!r} points outside "
                                    "the archive")
    names = sorted(info.filename for info in archive.infolist()
                   if not info.is_dir() and not info.filename.startswith("__MACOSX/")
                   and not info.filename.rsplit("/", 1)[-1].startswith("."))
    for suffixes in ((".csv",), CSV_SUFFIXES):
        found = [name for name in names if name.lower().endswith(suffixes)]
        if found:
            return found[0]
    raise MailPipelineError("invalid file: the ZIP holds no CSV file")


def _refuse_bomb(info: zipfile.ZipInfo, archive_size: int) -> None:
    # The compressed size is declared too: never believe more than the archive's own size.
    compressed = max(min(info.compress_size, archive_size), 1)
    if info.file_size > MAX_UNZIPPED_BYTES:
        raise MailPipelineError(f"invalid file: the ZIP entry {info.filename!r} would inflate to "
                                f"{info.file_size} bytes, over the {MAX_UNZIPPED_BYTES} allowed")
    if info.file_size > _CHUNK and info.file_size > MAX_ZIP_RATIO * compressed:
        raise MailPipelineError(f"invalid file: the ZIP entry {info.filename!r} would inflate "
                                f"{info.file_size // compressed} times its size, "
                                f"over the {MAX_ZIP_RATIO} allowed (a ZIP bomb?)")


def _copy_text(stream, dest: Path, options: ImportOptions, origin: str) -> StagedFile:
    """Stream `stream` to `dest`, checking it is text; UTF-8 is copied as is (less a BOM),
    ISO-8859-1 is re-encoded to UTF-8 on the way."""
    digest = hashlib.sha256()
    latin1 = options.encoding == "iso-8859-1"
    encoding = "latin-1" if latin1 else "utf-8-sig"
    size = 0
    seen_text = False
    endings = _LineEndings()
    with replacing(dest) as tmp:
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
    return StagedFile(dest, size, digest.hexdigest(), origin, endings.kind(), endings.lines(),
                      endings.longest_line())


def _looks_like_text(chunk: bytes, encoding: str) -> bool:
    """No NUL bytes and (almost) every byte decodes: a stray bad byte is a bad row, not a bad file."""
    sample = chunk[:8192]
    if b"\x00" in sample:
        return False
    text = codecs.getincrementaldecoder(encoding)("replace").decode(sample)
    return text.count("\ufffd") <= max(4, len(text) // 50)



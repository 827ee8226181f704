"""Staging (spec §3 "Reading", first half): turn whatever the user gave (CSV, TSV, TXT, a ZIP's
first CSV; in any encoding Python knows) into `source.csv` in the import's folder, UTF-8 without
a BOM, so every later stage reads one well-known file. Files that cannot be an import are refused
here, from their first bytes, before anything is written; a delimiter or encoding not given is
detected there too, once, from the start of the file.
"""
import codecs
import csv
import hashlib
import io
import re
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Union

from mail_pipeline.errors import MailPipelineError
from mail_pipeline.files import InThread, replacing
from mail_pipeline.options import ImportOptions, normalize_encoding
from mail_pipeline.reading import NOT_CSV, first_record

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_CHUNK = 1 << 20  # also the sample the encoding is detected on, and the first record read from

EXCEL = "Excel workbooks are not read: save the sheet as CSV"
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xlsb", ".xls")
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the container of a pre-2007 .xls (and .doc)

# The delimiters detected when none is given, and the encodings a file without a BOM is taken
# for. charset-normalizer's unrestricted best guess reads typical Western text ("Anaïs Lefèvre –
# Café") as cp1250, so it chooses among these only.
DELIMITERS = ",;\t|"
DETECTED_ENCODINGS = ["utf_8", "utf_16", "cp1252", "latin_1"]
# The Sniffer's quote patterns take time quadratic in the sample on hostile input (20 s at 64 KB,
# 0.3 s at 8 KB, measured): 8 KB is dozens of records, plenty to tell four delimiters apart.
SNIFF_CHARS = 8192
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32"),
         (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))  # (UTF-32's first: its LE BOM starts as UTF-16's)


def _unreadable_bytes(exc: UnicodeError) -> tuple[Union[str, bytes], int]:
    """Bytes the file's encoding cannot read become lone surrogates when decoded, and invalid
    UTF-8 in the copy (the byte as it was where it can be): the reader then fails that record
    alone ("invalid encoding"), as it does for a bad byte in a UTF-8 file."""
    if isinstance(exc, UnicodeDecodeError):
        return "".join(chr(0xDC00 | b) for b in exc.object[exc.start:exc.end]), exc.end
    return b"".join(bytes([ord(c) - 0xDC00]) if 0xDC80 <= ord(c) <= 0xDCFF
                    else c.encode("utf-8", "surrogatepass")
                    for c in exc.object[exc.start:exc.end]), exc.end


codecs.register_error("mail_pipeline.unreadable", _unreadable_bytes)

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


_LONE_CR = re.compile(rb"\r(?!\n)")


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
        # The CRLFs within the chunk are its CRs less the lone ones (a CR at its very end is lone
        # until the next chunk says otherwise): half the time of counting the two-byte pairs.
        crlf = (cr - len(_LONE_CR.findall(chunk)) if cr else 0) + straddling
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
    if source.suffix.lower() in EXCEL_SUFFIXES:
        raise MailPipelineError(EXCEL)
    with open(source, "rb") as probe:
        start = probe.read(1 << 16)
    # A ZIP's local-file or empty-archive signature; a CSV may well start with "PK".
    is_zip = start[:4] in (b"PK\x03\x04", b"PK\x05\x06")
    # An old .xls names its stream "Workbook" (or "Book") in its directory, near the start.
    if start.startswith(_OLE2) and any(name.encode("utf-16-le") in start
                                       for name in ("Workbook", "Book")):
        raise MailPipelineError(EXCEL)
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
            if {"xl/workbook.xml", "xl/workbook.bin"} & set(archive.namelist()):
                raise MailPipelineError(EXCEL)  # an .xlsx is a ZIP too
            entry = _first_csv(archive)
            _refuse_bomb(archive.getinfo(entry), source.stat().st_size)
            with archive.open(entry) as stream:
                yield stream, f"{source}:{entry}"
    except unreadable as exc:
        raise MailPipelineError(f"invalid file: the ZIP cannot be read ({exc})") from None


@dataclass(frozen=True)
class Preview:
    options: ImportOptions  # with the delimiter and encoding settled: as given, else detected
    record: list[str]  # the first record's cells, trimmed


def preview(source: Path, options: ImportOptions) -> Preview:
    """The start of the source, read once: the delimiter and encoding settled (detected when not
    given; a `.tsv` is tab-separated) and the first record's cells. Enough to refuse a file that
    is not CSV, or a mapping that does not fit it, before anything is written."""
    with open_source(source) as (stream, origin):
        sample = stream.read(_CHUNK)
    encoding = options.encoding or detect_encoding(sample, complete=len(sample) < _CHUNK)
    if not _looks_like_text(sample, encoding):
        raise MailPipelineError(NOT_CSV)
    text = _decoder(encoding, "replace").decode(sample).removeprefix("\ufeff")
    delimiter = options.delimiter or ("\t" if origin.lower().endswith(".tsv")
                                      else detect_delimiter(text))
    options = options.model_copy(update={"delimiter": delimiter, "encoding": encoding})
    record = first_record(io.StringIO(text, newline=""), options)
    if len(sample) == _CHUNK and not re.search("[\r\n]", text):
        # (the record read is cut short: a header no export writes, or not a CSV at all)
        raise MailPipelineError(f"invalid file: the first line is longer than {_CHUNK} bytes")
    if options.header:
        _refuse_misread_header(record, delimiter)
    return Preview(options, record)


def detect_encoding(sample: bytes, complete: bool = True) -> str:
    """The encoding of a file that starts with `sample`: its BOM's; UTF-8 when the sample is UTF-8
    (ASCII included), or holds more UTF-8 characters than stray bytes (which then fail their
    rows); else charset-normalizer's choice among UTF-8, UTF-16, Windows-1252 and ISO-8859-1,
    and when none fits, Windows-1252 (the bytes it lacks fail their rows)."""
    for bom, encoding in _BOMS:
        if sample.startswith(bom):
            return encoding
    if not complete:  # (a character cut at the end of the sample would read as a bad byte)
        sample = sample[:sample.rfind(b"\n") + 1] or sample
    # charset-normalizer gives up UTF-8 for a single stray byte, and a UTF-8 file read as
    # Windows-1252 garbles every accent ("ZoÃ«"): a few bad rows are the lesser harm.
    readable = sample.decode("utf-8", "ignore")
    valid = len(readable.encode("utf-8"))
    multibyte, stray = valid - len(readable), len(sample) - valid  # (1 to 3 a character)
    if stray == 0 or multibyte > stray:
        return "utf-8"
    from charset_normalizer import from_bytes  # (only an import without --encoding needs it)
    best = from_bytes(sample, cp_isolation=DETECTED_ENCODINGS).best()
    if best is None:  # (too odd for any: a control character, or not text at all)
        return "cp1252"
    encoding = normalize_encoding(best.encoding)
    if encoding == "iso-8859-1" and _decodes(sample, "cp1252"):
        return "cp1252"  # the same letters, and curly quotes and dashes where Latin-1 has controls
    return encoding


def _decodes(sample: bytes, encoding: str) -> bool:
    try:
        sample.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def detect_delimiter(text: str) -> str:
    """Comma, semicolon, tab or pipe, as the csv module's Sniffer reads the first records; a
    comma when it cannot tell (a file of one column, say)."""
    sample = text[:SNIFF_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > SNIFF_CHARS and "\n" in sample:
        sample = sample[:sample.rfind("\n") + 1]  # whole records only
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def _refuse_misread_header(header: list[str], delimiter: str) -> None:
    """A header of one column that another delimiter splits into several is a file read with the
    wrong delimiter: refused, naming the likely one, rather than "no email column"."""
    if len(header) != 1:
        return
    parts = {other: sum(1 for part in header[0].split(other) if part.strip())
             for other in DELIMITERS if other != delimiter}
    likely = max(parts, key=parts.get)
    if parts[likely] < 2:
        return
    shown = header[0] if len(header[0]) <= 80 else header[0][:77] + "..."
    shown = shown.replace("\t", "\\t")
    flag = "tab" if likely == "\t" else f"'{likely}'"
    raise MailPipelineError(f'the file\'s header is one column, "{shown}", but looks delimited by '
                            f"{likely!r}: pass --delimiter {flag}")


def stage_source(source: Path, dest: Path, options: ImportOptions) -> StagedFile:
    """Copy `source` (a CSV or the first CSV of a ZIP) to `dest` as UTF-8 without a BOM, with
    the options `preview` settled. Raises MailPipelineError, before anything is written, when
    the file cannot be an import."""
    assert options.delimiter and options.encoding, "settle the options first (preview)"
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
    if any(name.lower().endswith(EXCEL_SUFFIXES) for name in names):
        raise MailPipelineError(EXCEL)
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
    """Stream `stream` to `dest`, checking it is text; UTF-8 is copied as is (less a BOM), any
    other encoding is converted to UTF-8 on the way."""
    digest = hashlib.sha256()
    as_is = options.encoding == "utf-8"
    decoder = None if as_is else _decoder(options.encoding, "mail_pipeline.unreadable")
    size = 0
    seen_text = False
    endings = _LineEndings()
    with replacing(dest) as tmp:
        # (written by a thread of its own while the next chunk is read, hashed and counted)
        with open(tmp, "wb") as file, InThread(file.write) as out:
            first = True
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if first and not _looks_like_text(chunk, options.encoding):
                    # The first chunk decides whether this is text at all; a bad byte further
                    # on fails its own row (the reader rejects it), not the whole file.
                    raise MailPipelineError(NOT_CSV)
                data = chunk if as_is else _utf8(decoder.decode(chunk))
                if first:
                    data = data.removeprefix(codecs.BOM_UTF8)
                    # Blank lines before the header are not records, nor the header.
                    data = _leading_blank_lines(options.delimiter).sub(b"", data)
                    first = False
                endings.feed(data)
                seen_text = seen_text or bool(data.strip())
                out.put(data)
            if decoder is not None:  # (bytes held back at the end: a cut character)
                data = _utf8(decoder.decode(b"", final=True))
                endings.feed(data)
                out.put(data)
        if not seen_text:
            raise MailPipelineError("invalid file: the file is empty")
    return StagedFile(dest, size, digest.hexdigest(), origin, endings.kind(), endings.lines(),
                      endings.longest_line())


def _decoder(encoding: str, errors: str) -> codecs.IncrementalDecoder:
    """An incremental decoder for the file's encoding; UTF-8's skips a BOM."""
    return codecs.getincrementaldecoder("utf-8-sig" if encoding == "utf-8" else encoding)(errors)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "mail_pipeline.unreadable")


def _looks_like_text(chunk: bytes, encoding: str) -> bool:
    """No NUL characters and (almost) every byte decodes: a stray bad byte is a bad row, not a
    bad file."""
    text = _decoder(encoding, "replace").decode(chunk[:8192])
    if "\x00" in text:
        return False
    return text.count("\ufffd") <= max(4, len(text) // 50)

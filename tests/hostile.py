"""The hostile-input corpus (issue 7): files and options an attacker, a broken export or a tired
user hands to `mail-pipeline import`, each with the outcome it must have.

Every case is generated here (nothing binary is checked in): `write(folder)` writes its files
and returns the command's arguments. An outcome is either one clear error line (`error`, a part
of the message) or a finished import with exact categories (`rows`). Either way the run must not
print a traceback, hang, leave a half-written store or write a file outside its home.

    python -m tests.hostile OUT_DIR     # write the corpus to a folder, to try it by hand
"""
import io
import json
import os
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

HEADER = b"email,name\n"


@dataclass(frozen=True)
class Case:
    name: str
    what: str                                  # one line, for docs/reliability.md
    write: Callable[[Path], list[str]]         # writes its files, returns the import's arguments
    error: Optional[str] = None                # part of the one error line expected
    rows: dict = field(default_factory=dict)   # else: the finished import's non-zero categories
    failed_reason: Optional[str] = None        # part of the failed log's reason, when rows fail
    after: Optional[Callable[[Path], list[str]]] = None  # a command run next (e.g. an export)
    after_has: Optional[str] = None            # text the `after` command's output must hold


Data = bytes | Callable[[], bytes]  # the big ones are made only when their case runs


def _file(name: str, data: Data, *args: str) -> Callable[[Path], list[str]]:
    def write(folder: Path) -> list[str]:
        (folder / name).write_bytes(data() if callable(data) else data)
        return [str(folder / name), "--list", "hostile", *args]
    return write


def _csv(data: Data, *args: str) -> Callable[[Path], list[str]]:
    return _file("input.csv", data, *args)


def _raw_params(data: str) -> Callable[[Path], list[str]]:
    def write(folder: Path) -> list[str]:
        (folder / "params.json").write_text(data)
        return ["--params", str(folder / "params.json"), "--list", "x"]
    return write


def _zip(entries: list[tuple[str, bytes]]) -> Callable[[Path], list[str]]:
    return _file("input.zip", lambda: _zip_bytes(entries))


def _bomb_declared(size: int) -> bytes:
    """A 200-byte ZIP whose directory promises `size` bytes (a lying or a real bomb: either way
    the caps must refuse it from the directory alone)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.csv", HEADER + b"a@x.com,A\n")
    data = bytearray(out.getvalue())
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, min(size, 0xFFFFFFFF))
    local = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, min(size, 0xFFFFFFFF))
    return bytes(data)


def _bomb_real(megabytes: int) -> bytes:
    """A real high-ratio entry: `megabytes` of one repeated row, deflated (~1000:1)."""
    row = b"a@x.com,A\n"
    stream = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = stream.compress(HEADER)
    block = row * (1 << 16)
    for _ in range(megabytes * (1 << 20) // len(block)):
        body += stream.compress(block)
    body += stream.flush()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        info = zipfile.ZipInfo("bomb.csv")
        info.compress_type = zipfile.ZIP_DEFLATED
        # Write the deflated body as is: zipfile would otherwise compress the whole text again.
        size = len(HEADER) + len(block) * (megabytes * (1 << 20) // len(block))
        crc = zlib.crc32(HEADER)
        for _ in range(megabytes * (1 << 20) // len(block)):
            crc = zlib.crc32(block, crc)
        info.CRC, info.file_size, info.compress_size = crc, size, len(body)
        info.header_offset = archive.fp.tell()
        archive.fp.write(info.FileHeader())
        archive.fp.write(body)
        archive.filelist.append(info)
        archive.NameToInfo[info.filename] = info
        archive.start_dir = archive.fp.tell()
        archive._didModify = True
    return out.getvalue()


def _lying_compressed(data: bytes) -> bytes:
    """Declare the entry's compressed size as large as its inflated size (ratio 1:1 on paper)."""
    data = bytearray(data)
    central = data.rfind(b"PK\x01\x02")
    size = struct.unpack_from("<I", data, central + 24)[0]
    struct.pack_into("<I", data, central + 20, size)
    return bytes(data)


def _nested_zip() -> bytes:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("inner.csv", HEADER + b"a@x.com,A\n")
    return inner.getvalue()


def _params(body: dict, *args: str, csv: Optional[bytes] = HEADER + b"a@x.com,A\n"):
    def write(folder: Path) -> list[str]:
        (folder / "params.json").write_text(json.dumps(body))
        source = []
        if csv is not None:
            (folder / "input.csv").write_bytes(csv)
            source = [str(folder / "input.csv")]
        return [*source, "--params", str(folder / "params.json"), *args]
    return write


def _email_limits() -> bytes:
    local64, local65 = "l" * 64, "l" * 65
    label63, label64 = "d" * 63, "d" * 64
    # 64 + 1 + 189 = 254 characters, the most an address may have; one more is too long.
    domain189 = ".".join(["d" * 63, "d" * 63, "d" * 57]) + ".com"
    domain190 = ".".join(["d" * 63, "d" * 63, "d" * 58]) + ".com"
    emails = [f"{local64}@example.com", f"{local65}@example.com",
              f"a@{label63}.com", f"a@{label64}.com",
              f"{local64}@{domain189}", f"{local64}@{domain190}",
              "@", "a@b", "x" * 1000 + "@example.com"]
    return HEADER + "".join(f"{e},n\n" for e in emails).encode()


SQL = "Robert'); DROP TABLE subscribers;--"


def cases() -> list[Case]:
    rows = HEADER + b"a@x.com,A\nb@x.com,B\n"
    return [
        # --- not a CSV at all, or nothing in it
        Case("empty", "empty file (0 bytes)", _csv(b""), error="the file is empty"),
        Case("blank", "only spaces and blank lines", _csv(b" \n\n  \r\n\t\n"), error="the file is empty"),
        Case("header-only", "header only", _csv(HEADER), rows={}),
        Case("header-only-bom", "header only, with a UTF-8 BOM and no line end",
             _csv(b"\xef\xbb\xbfemail,name"), rows={}),
        Case("binary-png", "a PNG renamed .csv", _csv(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40),
             error="not a CSV or ZIP"),
        Case("binary-random", "random bytes renamed .csv",
             _csv(bytes((i * 7919 + 13) % 256 for i in range(50_000))), error="not a CSV or ZIP"),
        Case("utf16", "a UTF-16 file with a BOM (detected)",
             _csv("email,name\na@x.com,A\n".encode("utf-16")), rows={"added": 1}),
        Case("utf16-no-bom", "a UTF-16 file without a BOM (NUL bytes everywhere)",
             _csv("email,name\na@x.com,A\n".encode("utf-16-le")), error="not a CSV or ZIP"),
        Case("elf", "an executable renamed .csv", _csv(b"\x7fELF\x02\x01\x01" + bytes(5000)),
             error="not a CSV or ZIP"),
        Case("pk-text", "a text file that starts with 'PK'", _csv(b"PK,email\n1,a@x.com\n"),
             rows={"added": 1}),
        Case("folder", "a folder given as the source", lambda d: [str(d), "--list", "x"],
             error="not a file but a folder"),
        Case("missing", "a file that does not exist", lambda d: [str(d / "nope.csv")],
             error="file not found"),
        # --- ZIP archives
        Case("zip-truncated", "a ZIP cut in half",
             _file("input.zip", lambda: _zip_bytes([("a.csv", _many_rows(2000))])[:2000]),
             error="invalid file"),
        Case("zip-corrupt", "a ZIP whose compressed data is damaged (CRC mismatch)",
             _file("input.zip", lambda: _corrupted(_zip_bytes([("a.csv", _many_rows(2000))]))),
             error="the ZIP cannot be read"),
        Case("zip-empty", "an empty ZIP", _zip([]), error="the ZIP holds no CSV file"),
        Case("zip-no-csv", "a ZIP with no CSV", _zip([("readme.md", b"hi"), ("img.png", b"\x89PNG")]),
             error="the ZIP holds no CSV file"),
        Case("zip-nested-folders", "a ZIP whose CSV sits in nested folders",
             _zip([("a/b/c/d/list.csv", rows), ("a/notes.txt.bak", b"x")]), rows={"added": 2}),
        Case("zip-in-zip", "a ZIP holding only another ZIP", _zip([("inner.zip", _nested_zip())]),
             error="the ZIP holds no CSV file"),
        Case("zip-slip", "a ZIP entry named ../../evil.csv (zip-slip)",
             _zip([("../../evil.csv", rows)]), error="points outside the archive"),
        Case("zip-colon-name", "a ZIP whose CSV name holds a colon (a macOS time: allowed)",
             _zip([("export 2024-05-01 10:30.csv", rows)]), rows={"added": 2}),
        Case("zip-drive", "a ZIP entry with a Windows drive path", _zip([("C:/evil.csv", rows)]),
             error="points outside the archive"),
        Case("zip-ratio-lie", "a ZIP bomb whose directory also lies about its compressed size",
             _file("input.zip", lambda: _lying_compressed(_bomb_real(50))), error="ZIP bomb"),
        Case("zip-absolute", "a ZIP entry with an absolute path",
             _zip([("/tmp/evil.csv", rows)]), error="points outside the archive"),
        Case("zip-bomb-declared", "a 200-byte ZIP declaring 4 GB inside (lying directory)",
             _file("input.zip", lambda: _bomb_declared(4 << 30)), error="would inflate"),
        Case("zip-bomb-real", "a 50 KB ZIP inflating to 50 MB (1000:1)",
             _file("input.zip", lambda: _bomb_real(50)), error="ZIP bomb"),
        Case("zip-encrypted-flag", "a ZIP whose entry claims to be encrypted",
             _file("input.zip", lambda: _encrypted(_zip_bytes([("a.csv", rows)]))),
             error="the ZIP cannot be read"),
        # --- encodings and bytes
        Case("latin1-as-utf8", "ISO-8859-1 file read as UTF-8 (--encoding utf-8)",
             _csv(HEADER + "a@x.com,José\nb@x.com,B\n".encode("latin-1"), "--encoding", "utf-8"),
             rows={"added": 1, "failed": 1}, failed_reason="invalid encoding"),
        Case("utf8-as-latin1", "UTF-8 file declared ISO-8859-1: names read as Latin-1, nothing fails",
             _csv(HEADER + "a@x.com,José\n".encode(), "--encoding", "iso-8859-1"), rows={"added": 1}),
        Case("invalid-utf8", "overlong, lone continuation and surrogate byte sequences",
             _csv(HEADER + b"".join(b"u%d@x.com,ok\n" % i for i in range(300))
                  + b"a@x.com,\xc0\xaf\nb@x.com,\x80\x80\nc@x.com,\xed\xa0\x80\n",
                  "--encoding", "utf-8"),
             rows={"added": 300, "failed": 3}, failed_reason="invalid encoding"),
        Case("mostly-invalid-utf8", "a file whose first kilobytes are mostly bytes UTF-8 refuses",
             _csv(HEADER + b"a@x.com,\xc0\xaf\xc0\xaf\xc0\xaf\xff\xfe\xfd\n", "--encoding", "utf-8"),
             error="not a CSV or ZIP"),
        Case("nul-late", "a NUL byte in a row after the first 8 KB",
             _csv(HEADER + b"".join(b"u%d@x.com,ok\n" % i for i in range(1000)) + b"z@x.com,a\x00b\n"),
             rows={"added": 1000, "failed": 1}, failed_reason="NUL character"),
        Case("nul-early", "NUL bytes in the first line", _csv(b"email\x00,name\na@x.com,A\n"),
             error="not a CSV or ZIP"),
        Case("bom-twice", "two BOMs before the header",
             _csv(b"\xef\xbb\xbf\xef\xbb\xbfemail,name\na@x.com,A\n"), error="no email column"),
        # --- sizes
        Case("cell-50mb", "a 50 MB single cell",
             _csv(lambda: HEADER + b"a@x.com," + b"x" * (50 << 20) + b"\nb@x.com,B\n"),
             rows={"added": 1, "failed": 1}, failed_reason="longer than 16777216 bytes"),
        Case("cell-20mb-quoted", "a 20 MB quoted cell holding newlines",
             _csv(lambda: HEADER + b'a@x.com,"' + (b"y" * 999 + b"\n") * 20_000 + b'"\nb@x.com,B\n'),
             rows={"added": 1, "failed": 1}, failed_reason="longer than 16777216 bytes"),
        Case("columns-1m", "a 1,000,000-column header",
             _csv(lambda: b",".join(b"c%d" % i for i in range(1_000_000)) + b",email\n"),
             error="more than 10000 fields"),
        Case("header-2mb", "a 2 MB header name",
             _csv(lambda: b"email," + b"h" * (2 << 20) + b"\na@x.com,1\n"), error="longer than 1048576 bytes"),
        Case("columns-20k", "a 20,000-column header",
             _csv(lambda: b",".join(b"c%d" % i for i in range(20_000)) + b",email\na@x.com\n"),
             error="more than 10000 fields"),
        Case("columns-2k", "a 2,000-column header (wide, but allowed)",
             _csv(b"email," + b",".join(b"c%d" % i for i in range(2_000)) + b"\na@x.com" + b",v" * 2_000 + b"\n"),
             rows={"added": 1}),
        Case("attributes-deep", "attributes JSON nested 10,000 deep",
             _csv(b'email,attributes\na@x.com,"' + b'{""a"":' * 10_000 + b"1" + b"}" * 10_000
                  + b'"\nb@x.com,"{""k"": 1}"\n'),
             rows={"added": 1, "failed": 1}, failed_reason="nested deeper than 64 levels"),
        Case("attributes-escape-bomb", "attributes: 65 brackets, then an unclosed string of 1 MB "
             "of escaped quotes (quadratic for a naive scanner)",
             _csv(lambda: b'email,attributes\na@x.com,"' + b"[" * 65 + b'""' + b'\\""' * (1 << 18)
                  + b'"\nb@x.com,"{}"\n'),
             rows={"added": 1, "failed": 1}, failed_reason="invalid attributes"),
        Case("attributes-1mb", "attributes with a 1 MB value",
             _csv(lambda: b'email,attributes\na@x.com,"{""k"": ""' + b"v" * (1 << 20) + b'""}"\n'),
             rows={"added": 1}),
        Case("many-rows-one-column", "200,000 rows of one column, no trailing newline",
             _csv(lambda: b"email\n" + b"\n".join(b"r%d@x.com" % i for i in range(200_000))),
             rows={"added": 200_000}),
        # --- CSV structure
        Case("ragged", "rows with too few and too many fields",
             _csv(HEADER + b"a@x.com\nb@x.com,B,extra\nc@x.com,C\n"),
             rows={"added": 1, "failed": 2}, failed_reason="wrong number of fields"),
        Case("bare-quotes", "a bare quote inside an unquoted field",
             _csv(HEADER + b'a@x.com,O"Brien\nb@x.com,B\n'), rows={"added": 2}),
        Case("unterminated-quote", "an unterminated quote at the end of the file",
             _csv(HEADER + b'a@x.com,A\nb@x.com,"never closed\n'),
             rows={"added": 1, "failed": 1}, failed_reason="unterminated quote"),
        Case("cr-only", "CR-only line ends (classic Mac)",
             _csv(b"email,name\ra@x.com,A\rb@x.com,B\r"), rows={"added": 2}),
        Case("mixed-line-ends", "CRLF, LF and CR mixed", _csv(b"email,name\r\na@x.com,A\nb@x.com,B\rc@x.com,C\r\n"),
             rows={"added": 3}),
        Case("mixed-delimiters", "some rows separated by ';' in a ',' file",
             _csv(HEADER + b"a@x.com,A\nb@x.com;B\nc@x.com,C\n"),
             rows={"added": 2, "failed": 1}, failed_reason="wrong number of fields"),
        Case("duplicate-header", "a header naming a column twice", _csv(b"email,name,Name\na@x.com,A,B\n"),
             error="names column 'Name' twice"),
        Case("empty-header-names", "a header with empty names", _csv(b"email,,\na@x.com,x,y\n"),
             rows={"added": 1}),
        Case("no-email-column", "no email column", _csv(b"name,city\nA,Oslo\n"), error="no email column"),
        Case("blank-lines-everywhere", "blank lines before, between and after rows",
             _csv(b"\n\nemail,name\n\na@x.com,A\n\n\nb@x.com,B\n\n"), rows={"added": 2}),
        Case("tab-in-comma-file", "a tab-separated file imported with --delimiter ','",
             _csv(b"email\tname\na@x.com\tA\n", "--delimiter", ","),
             error="looks delimited by '\\t': pass --delimiter tab"),
        # --- values meant to be run somewhere
        Case("formula-cells", "spreadsheet formulas in names (=, +, -, @)",
             _csv(HEADER + b'a@x.com,"=HYPERLINK(""http://evil"",""x"")"\nb@x.com,+cmd|\' /C calc\'!A0\n'
                  b"c@x.com,-2+3\nd@x.com,@SUM(A1)\n"),
             rows={"added": 4},
             after=lambda d: ["export", "--out", str(d / "out.csv")], after_has="'=HYPERLINK"),
        Case("sql-in-names", "SQL fragments and quotes in names",
             _csv(HEADER + f'a@x.com,"{SQL}"\nb@x.com,"\'; DELETE FROM lists; --"\n'.encode()),
             rows={"added": 2}),
        Case("sql-in-list-name", "SQL fragments in a list name",
             lambda d: [*_csv(HEADER + b"a@x.com,A\n")(d)[:1], "--list", SQL], rows={"added": 1},
             after=lambda d: ["export", "--list", SQL, "--out", str(d / "out.csv")],
             after_has="a@x.com"),
        Case("sql-in-custom-field", "SQL fragments and quotes in custom field names",
             _csv(b'email,"x"""");DROP TABLE subscribers;--",\'; --\na@x.com,1,2\n'),
             rows={"added": 1}),
        Case("sql-in-tag", "SQL fragments in a tag", _csv(HEADER + b"a@x.com,A\n", "--tag", SQL),
             rows={"added": 1}),
        Case("sql-in-search", "SQL fragments in an export's search",
             _csv(HEADER + b"a@x.com,A\n"), rows={"added": 1},
             after=lambda d: ["export", "--search", "%' OR 1=1 --", "--out", str(d / "out.csv")],
             after_has='"rows": 0'),
        # --- emails and characters
        Case("email-limits", "emails at the length limits (63-character label, 254 in all) and one over; "
             "a 65-character local part (email-validator accepts it)",
             _csv(_email_limits()), rows={"added": 4, "failed": 5}),
        Case("control-chars", "control characters and ANSI escapes in names",
             _csv(HEADER + b"a@x.com,bell\x07\nb@x.com,\x1b[31mred\x1b[0m\nc@x.com,back\x08space\n"),
             rows={"added": 3}),
        Case("bidi", "bidi overrides in emails (refused) and names (kept)",
             _csv(HEADER + "a\u202e@x.com,A\nb@x.com,\u202etxt.exe\n".encode()),
             rows={"added": 1, "failed": 1}),
        Case("zero-width", "zero-width and non-breaking spaces around emails",
             _csv(HEADER + "\u200ba@x.com,A\n\u00a0b@x.com\u00a0,B\n".encode()),
             rows={"added": 1, "failed": 1}),
        # --- paths leading out of their folder
        Case("upload-dotdot", "GreenArrow upload_directory file name ../../etc/passwd",
             _params({"subscriber_import": {"column_mapping": ["email", "name"], "file_source": {
                 "type": "upload_directory", "filename": "../../etc/passwd"}}}, "--list", "x", csv=None),
             error="it must name a file inside"),
        Case("upload-absolute", "GreenArrow upload_directory file name /etc/passwd",
             _params({"subscriber_import": {"column_mapping": ["email", "name"], "file_source": {
                 "type": "upload_directory", "filename": "/etc/passwd"}}}, "--list", "x", csv=None),
             error="it must name a file inside"),
        Case("upload-link", "an upload that is a symbolic link to a file outside the uploads folder",
             _upload_link, error="it must name a file inside"),
        Case("params-not-json", "a params file that is not JSON",
             _raw_params("\x89PNG"), error="params"),
        Case("params-deep", "a params file nested 100,000 deep",
             _raw_params("[" * 100_000 + "]" * 100_000), error="params"),
    ]


def _upload_link(folder: Path) -> list[str]:
    home = folder.parent / "home"  # (see `run`)
    (home / "uploads").mkdir(parents=True, exist_ok=True)
    secret = folder / "secret.csv"
    secret.write_bytes(HEADER + b"a@x.com,A\n")
    (home / "uploads" / "link.csv").symlink_to(secret)
    (folder / "params.json").write_text(json.dumps({"subscriber_import": {"column_mapping": ["email", "name"], "file_source": {
        "type": "upload_directory", "filename": "link.csv"}}}))
    return ["--params", str(folder / "params.json"), "--list", "x"]


def _many_rows(count: int) -> bytes:
    return HEADER + b"".join(b"user%d@example.com,User %d\n" % (i, i) for i in range(count))


def _zip_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry, data in entries:
            archive.writestr(entry, data)
    return out.getvalue()


def _corrupted(data: bytes) -> bytes:
    """Flip bytes in the middle of the first entry's compressed data."""
    data = bytearray(data)
    start = 30 + struct.unpack_from("<H", data, 26)[0] + struct.unpack_from("<H", data, 28)[0]
    for i in range(start + 5, start + 15):
        data[i] ^= 0xFF
    return bytes(data)


def _encrypted(data: bytes) -> bytes:
    """Set the 'encrypted' flag on the entry (local and central headers)."""
    data = bytearray(data)
    data[6] |= 1
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 1
    return bytes(data)


def run(case: Case, workdir: Path, timeout: float = 180) -> dict:
    """Run `case` as a user would (`mail-pipeline import … --json`) on a fresh home under
    `workdir`, and check everything the issue asks of it. Returns the case's name, what
    happened, how long it took and the problems found (none when it passed)."""
    # The command runs three folders down, so a path climbing out of it (zip-slip's ../../)
    # still lands inside `workdir`, where it would be seen.
    home, inputs, cwd = workdir / "home", workdir / "in", workdir / "cwd" / "a" / "b"
    for folder in (inputs, cwd):
        folder.mkdir(parents=True, exist_ok=True)
    args = case.write(inputs)
    before = _outside_home(workdir, home)
    problems: list[str] = []
    started = time.monotonic()
    try:
        proc = _cli(["import", *args, "--json"], home, cwd, timeout)
    except subprocess.TimeoutExpired:
        return {"case": case.name, "what": case.what, "outcome": f"hung (over {timeout:.0f} s)",
                "seconds": timeout, "problems": ["hung"]}
    seconds = time.monotonic() - started
    if "Traceback" in proc.stderr + proc.stdout:
        problems.append("printed a traceback")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    document = _json(proc.stdout)
    if case.error:
        outcome = errors[0] if errors else proc.stderr.strip()[-300:]
        if proc.returncode not in (1, 2):
            problems.append(f"exit code {proc.returncode}, expected an error")
        if len(errors) != 1 or case.error not in errors[0]:
            problems.append(f"expected one error line holding {case.error!r}, got {errors or proc.stderr[-300:]!r}")
    else:
        got = {k: v for k, v in (document or {}).get("stats", {}).get("subscribers", {}).items() if v}
        outcome = "finished: " + (", ".join(f"{k} {v}" for k, v in got.items()) or "no rows")
        if proc.returncode != 0 or not document or document.get("state") != "finished":
            outcome = errors[0] if errors else proc.stderr.strip()[-300:]
            problems.append(f"expected a finished import, got exit {proc.returncode}: {outcome}")
        elif got != case.rows:
            problems.append(f"expected categories {case.rows}, got {got}")
        elif sum(got.values()) != document["stats"]["number_of_records"]:
            problems.append("categories do not add up to the records read")
        if document and case.failed_reason:
            failed = _cli(["imports", "logs", document["id"], "failed"], home, cwd, timeout).stdout
            if case.failed_reason not in failed:
                problems.append(f"failed log lacks {case.failed_reason!r}")
    problems += _store_problems(home, document if not case.error else None)
    expected_outside = set()
    if case.after:
        after_args = case.after(inputs)
        expected_outside = {Path(a) for a in after_args if a.startswith(str(inputs))}
        after = _cli([*after_args, "--json"], home, cwd, timeout)
        if after.returncode != 0 or "Traceback" in after.stderr:
            problems.append(f"`{after_args[0]}` afterwards failed: {after.stderr.strip()[-300:]}")
        shown = after.stdout + after.stderr + "".join(p.read_text(errors="replace") for p in expected_outside if p.is_file())
        if case.after_has and case.after_has not in shown:
            problems.append(f"`{after_args[0]}` afterwards lacks {case.after_has!r}")
    written = _outside_home(workdir, home) - before - expected_outside
    if written or Path("/tmp/evil.csv").exists():
        problems.append(f"wrote outside its home: {sorted(map(str, written))}")
    return {"case": case.name, "what": case.what, "outcome": outcome, "seconds": round(seconds, 2),
            "problems": problems}


def _cli(args: list[str], home: Path, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(home))
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, errors="replace", timeout=timeout)


def _json(text: str) -> Optional[dict]:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _outside_home(workdir: Path, home: Path) -> set[Path]:
    return {p for p in workdir.rglob("*") if not p.is_relative_to(home) and p.is_file()}


def _store_problems(home: Path, document: Optional[dict]) -> list[str]:
    """The store holds exactly what a finished import added, and nothing after an error (the
    home is fresh, so anything there came from this case)."""
    import duckdb
    database = home / "subscribers.duckdb"
    if not database.exists():
        return [] if not document or not document["stats"]["subscribers"]["added"] else ["no store"]
    con = duckdb.connect(str(database), read_only=True)
    try:
        subscribers = con.sql("SELECT count(*) FROM subscribers").fetchall()[0][0]
        tables = {t for (t,) in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()
    problems = []
    expected = document["stats"]["subscribers"]["added"] if document else 0
    if subscribers != expected:
        problems.append(f"the store holds {subscribers} subscribers, expected {expected}")
    if not {"subscribers", "subscriptions", "lists"} <= tables:
        problems.append(f"store tables missing: {tables}")
    return problems


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for case in cases():
        folder = out / case.name
        folder.mkdir(parents=True, exist_ok=True)
        print(case.name, " ".join(case.write(folder)))

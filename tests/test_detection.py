"""Reading what people bring (issue 18, item 1): the delimiter and encoding are detected when not
given, recorded in the staged options, the log and the document; a header read with the wrong
delimiter and an Excel workbook are refused before anything is written."""
import io
import json
import time
import zipfile

import pytest

from mail_pipeline import home, pipeline, staging
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.files import read_json
from mail_pipeline.layout import Folder
from mail_pipeline.options import build
from mail_pipeline.params import from_body
from tests.helpers import categories, cli, log_lines, query, run_import

WESTERN = ("email;name;note\nrene@example.com;René;“curly quotes” – Café\n"
           "anais@example.com;Anaïs Lefèvre;ok\n")


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _utf16_be_with_bom(text: str) -> bytes:
    return b"\xfe\xff" + text.encode("utf-16-be")


def _staged(import_id: str) -> dict:
    """The options the import ran with (import.json), as the document shows them."""
    return read_json(Folder.of(import_id).options)["options"]


def _log(import_id: str) -> list[str]:
    return [line.split(" ", 2)[2] for line in log_lines(import_id, "log")]


def test_a_windows_1252_semicolon_file_keeps_its_accents_and_curly_quotes(tmp_path):
    path = _write(tmp_path, "western.csv", WESTERN.encode("cp1252"))
    import_id, stats = run_import(path, lists=["news"])
    assert categories(stats) == {"added": 2}
    assert query("SELECT email, name, attributes FROM subscribers ORDER BY email") == [
        ("anais@example.com", "Anaïs Lefèvre", '{"note":"ok"}'),
        ("rene@example.com", "René", '{"note":"“curly quotes” – Café"}')]
    assert (_staged(import_id)["delimiter"], _staged(import_id)["encoding"]) == (";", "cp1252")
    assert {"detected delimiter ';'", "detected encoding cp1252"} <= set(_log(import_id))


@pytest.mark.parametrize("name, data, delimiter, encoding", [
    ("comma.csv", "email,name\na@example.com,Zoë\n".encode(), ",", "utf-8"),
    ("semicolon.csv", "email;name\na@example.com;Zoë\n".encode(), ";", "utf-8"),
    ("pipe.csv", "email|name\na@example.com|Zoë\n".encode(), "|", "utf-8"),
    ("tabs.txt", "email\tname\na@example.com\tZoë\n".encode(), "\t", "utf-8"),
    ("list.tsv", "email\tname\na@example.com\tZoë, the first\n".encode(), "\t", "utf-8"),
    ("bom.csv", "\ufeffemail;name\na@example.com;Zoë\n".encode(), ";", "utf-8"),
    ("utf16.csv", "email,name\r\na@example.com,Zoë\r\n".encode("utf-16"), ",", "utf-16"),
    ("utf16be.csv", _utf16_be_with_bom("email;name\na@example.com;Zoë\n"), ";", "utf-16"),
    ("latin1.csv", "email,name\na@example.com,Zoë\n".encode("latin-1"), ",", "cp1252"),
    ("quoted.csv", 'email;name\na@example.com;"Zoë, the first"\n'.encode(), ";", "utf-8"),
])
def test_files_import_without_flags(tmp_path, name, data, delimiter, encoding):
    import_id, stats = run_import(_write(tmp_path, name, data), lists=["news"])
    assert categories(stats) == {"added": 1}
    assert query("SELECT email, name FROM subscribers")[0][0] == "a@example.com"
    assert query("SELECT name FROM subscribers")[0][0].startswith("Zoë")
    assert (_staged(import_id)["delimiter"], _staged(import_id)["encoding"]) == (delimiter, encoding)
    assert f"detected delimiter {delimiter!r}" in _log(import_id)
    assert f"detected encoding {encoding}" in _log(import_id)


def test_a_tsv_inside_a_zip_means_tab(tmp_path):
    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("people.tsv", "email\tname\na@example.com\tA\n")
    import_id, stats = run_import(archive)
    assert categories(stats) == {"added": 1} and _staged(import_id)["delimiter"] == "\t"


def test_given_delimiter_and_encoding_win_and_are_not_logged_as_detected(tmp_path):
    # Read as Latin-1 on purpose, a UTF-8 name comes through as its bytes' letters.
    path = _write(tmp_path, "in.csv", "email|name\na@example.com|Zoë\n".encode())
    import_id, stats = run_import(path, delimiter="|", encoding="latin1")
    assert categories(stats) == {"added": 1}
    assert query("SELECT name FROM subscribers") == [("ZoÃ«",)]
    assert (_staged(import_id)["delimiter"], _staged(import_id)["encoding"]) == ("|", "iso-8859-1")
    assert not any(line.startswith("detected") for line in _log(import_id))


@pytest.mark.parametrize("given, stored", [
    ("latin1", "iso-8859-1"), ("ISO-8859-1", "iso-8859-1"), ("latin-1", "iso-8859-1"),
    ("cp1252", "cp1252"), ("windows-1252", "cp1252"), ("utf-16", "utf-16"), ("UTF_8", "utf-8"),
    ("utf-8-sig", "utf-8"), ("utf-16-le", "utf-16-le"), ("mac_roman", "mac-roman"),
])
def test_encoding_takes_any_codec_name_python_knows(given, stored):
    assert build({"encoding": given}).encoding == stored


@pytest.mark.parametrize("given, message", [
    ("klingon", "invalid encoding 'klingon': Python knows no codec of that name"),
    ("", "invalid encoding '': Python knows no codec of that name"),
    ("base64", "invalid encoding 'base64': not a text encoding"),
])
def test_an_unknown_encoding_is_refused_naming_it(given, message):
    with pytest.raises(MailPipelineError, match=message):
        build({"encoding": given})


def test_not_given_is_none_until_staged():
    options = build({})
    assert (options.delimiter, options.encoding) == (None, None)
    assert build({"delimiter": "tab"}).delimiter == "\t"


def test_an_explicit_encoding_other_than_utf8_is_converted(tmp_path):
    path = _write(tmp_path, "in.csv", "email,name\na@example.com,Žofia\n".encode("cp1250"))
    _, stats = run_import(path, encoding="cp1250")
    assert categories(stats) == {"added": 1}
    assert query("SELECT name FROM subscribers") == [("Žofia",)]


def test_a_header_read_with_the_wrong_delimiter_is_refused_before_any_write(tmp_path):
    path = _write(tmp_path, "in.csv", b"email;name;status\na@example.com;A;confirmed\n")
    with pytest.raises(MailPipelineError) as refused:
        run_import(path, delimiter=",")
    assert str(refused.value) == ("the file's header is one column, \"email;name;status\", but looks "
                                  "delimited by ';': pass --delimiter ';'")
    assert not home.database_path().exists()


def test_a_tab_header_read_with_commas_names_the_tab_flag(tmp_path):
    path = _write(tmp_path, "in.csv", b"email\tname\na@example.com\tA\n")
    with pytest.raises(MailPipelineError, match=r"looks delimited by '\\t': pass --delimiter tab"):
        pipeline.preflight(path, build({"delimiter": ","}))


def test_a_one_column_file_still_imports(tmp_path):
    import_id, stats = run_import(_write(tmp_path, "in.csv", b"email\na@example.com\nb@example.com\n"))
    assert categories(stats) == {"added": 2} and _staged(import_id)["delimiter"] == ","


def _workbook() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
        z.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    return buffer.getvalue()


def _zip_of(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("name, data", [
    ("people.xlsx", _workbook()),
    ("people.csv", _workbook()),  # a workbook by its content, whatever its name
    ("people.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)),
    ("people.bin", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100) + "Workbook".encode("utf-16-le")),
    ("people.zip", _zip_of("people.xlsx", _workbook())),
])
def test_excel_workbooks_are_refused(tmp_path, name, data):
    with pytest.raises(MailPipelineError, match="^Excel workbooks are not read: save the sheet as CSV$"):
        run_import(_write(tmp_path, name, data))
    assert not home.database_path().exists()


def test_a_zip_of_csv_is_still_read(tmp_path):
    path = _write(tmp_path, "in.zip", _zip_of("people.csv", b"email;name\na@example.com;A\n"))
    assert categories(run_import(path)[1]) == {"added": 1}


def test_a_bad_byte_after_the_sample_fails_its_row_alone(tmp_path):
    # The first MiB is plain UTF-8, so the file is read as UTF-8; a Latin-1 byte after it fails
    # its own row, not the import.
    rows = b"".join(b"u%d@example.com,Zo\xc3\xab\n" % i for i in range(60_000))
    path = _write(tmp_path, "in.csv", b"email,name\n" + rows + b"late@example.com,Jos\xe9\n")
    import_id, stats = run_import(path)
    assert categories(stats) == {"added": 60_000, "failed": 1}
    assert _staged(import_id)["encoding"] == "utf-8"
    assert log_lines(import_id, "failed")[1].endswith("unreadable record: invalid encoding")


def test_a_utf8_file_with_a_stray_byte_stays_utf8(tmp_path):
    # Read as Windows-1252 every name would be garbled ("ZoÃ«"): the stray byte's row fails.
    rows = b"".join(b"u%d@example.com,Zo\xc3\xab\n" % i for i in range(50))
    path = _write(tmp_path, "in.csv", b"email,name\nstray@example.com,Jos\xe9\n" + rows)
    import_id, stats = run_import(path)
    assert categories(stats) == {"added": 50, "failed": 1}
    assert _staged(import_id)["encoding"] == "utf-8"
    assert query("SELECT DISTINCT name FROM subscribers") == [("Zoë",)]


def test_a_byte_windows_1252_lacks_fails_its_row_alone(tmp_path):
    rows = b"".join(b"u%d@example.com,Ren\xe9\n" % i for i in range(60_000))
    path = _write(tmp_path, "in.csv", b"email,name\n" + rows + b"odd@example.com,A\x81B\n")
    import_id, stats = run_import(path)
    assert categories(stats) == {"added": 60_000, "failed": 1}
    assert _staged(import_id)["encoding"] == "cp1252"
    assert log_lines(import_id, "failed")[1] == "odd@example.com,A\ufffdB,unreadable record: invalid encoding"


def test_a_latin1_file_with_a_control_byte_keeps_its_other_rows(tmp_path):
    path = _write(tmp_path, "in.csv", b"email,name\na@example.com,Ren\xe9\nb@example.com,A\x81B\n")
    import_id, stats = run_import(path)
    # ISO-8859-1 reads every byte (0x81 is a control character there), Windows-1252 all but five.
    assert categories(stats) == {"added": 2} and _staged(import_id)["encoding"] == "iso-8859-1"
    assert query("SELECT name FROM subscribers ORDER BY email") == [("René",), ("A\x81B",)]


def test_broken_utf16_fails_its_row_alone(tmp_path):
    good = "email,name\na@example.com,Zoë\n".encode("utf-16")
    path = _write(tmp_path, "in.csv", good + b"\x00\xd8" + "b@example.com,B\n".encode("utf-16-le"))
    _, stats = run_import(path)
    assert categories(stats) == {"added": 1, "failed": 1}


@pytest.mark.parametrize("data, encoding", [
    ("Anaïs Lefèvre – Café, “quoted”\n".encode("cp1252"), "cp1252"),
    ("René, Zoë\n".encode("latin-1"), "cp1252"),  # the same letters: Windows-1252 is preferred
    ("René, Zoë, \xa0\n".encode("latin-1"), "cp1252"),
    ("René, Zoë, \x81\n".encode("latin-1"), "cp1252"),  # (a byte it lacks fails its row)
    ("René “quoted”\n".encode(), "utf-8"),
    (b"plain ascii\n", "utf-8"),
    ("\ufeffwith a BOM\n".encode(), "utf-8"),
    ("René\n".encode("utf-16"), "utf-16"),
    (b"\x00\x01\x02\x03\xfe\xfd" * 100, "cp1252"),  # (refused later: NUL is not text)
])
def test_detect_encoding(data, encoding):
    assert staging.detect_encoding(data) == encoding


def test_detect_encoding_ignores_a_character_cut_at_the_end_of_the_sample():
    sample = ("email,name\n" + "a@example.com,René “x”\n" * 100).encode()
    assert staging.detect_encoding(sample[:-3], complete=False) == "utf-8"


@pytest.mark.parametrize("text, delimiter", [
    ("email,name\na@x.com,A\n", ","),
    ("email;name\na@x.com;A\n", ";"),
    ("email\tname\na@x.com\tA\n", "\t"),
    ("email|name\na@x.com|A\n", "|"),
    ("email\na@x.com\n", ","),  # one column: nothing to tell
    ("email,tags\na@x.com,a;b\nb@x.com,c;d\n", ","),
    ('email;name\na@x.com;"Doe, John"\nb@x.com;"Roe, Jane"\n', ";"),
    ("email;name\ra@x.com;A\rb@x.com;B\r", ";"),
])
def test_detect_delimiter(text, delimiter):
    assert staging.detect_delimiter(text) == delimiter


def test_detecting_the_delimiter_of_a_hostile_file_stays_quick():
    started = time.monotonic()
    staging.detect_delimiter('",' * (1 << 19))  # quadratic for the Sniffer's quote patterns
    assert time.monotonic() - started < 2


def test_params_that_leave_out_the_delimiter_and_encoding_mean_detect():
    _, listmonk = from_body({"mode": "subscribe", "lists": ["news"], "delim": ";"})
    assert listmonk["delimiter"] == ";"
    _, listmonk = from_body({"mode": "subscribe", "lists": [], "overwrite": False}, "listmonk")
    assert build(listmonk).delimiter is None
    body = {"subscriber_import": {"column_mapping": ["email"],
                                  "file_source": {"type": "json", "content": "a@example.com\n"}}}
    options = build(from_body(body)[1])
    assert (options.delimiter, options.encoding) == (None, None)
    body["subscriber_import"]["file_format"] = {"csv_field_separator": "|", "character_set": "ISO-8859-1"}
    options = build(from_body(body)[1])
    assert (options.delimiter, options.encoding) == ("|", "iso-8859-1")


def test_inline_text_is_utf8_and_its_delimiter_detected(tmp_path):
    _, fields = from_body({"csv_text": "email;name\na@example.com;Zoë\n",
                           "mappings": [{"csv_column": "email", "field": {"type": "email"}},
                                        {"csv_column": "name", "field": {"type": "name"}}]})
    import_id, stats = run_import(None, **fields)
    assert categories(stats) == {"added": 1}
    assert query("SELECT name FROM subscribers") == [("Zoë",)]
    assert (_staged(import_id)["delimiter"], _staged(import_id)["encoding"]) == (";", "utf-8")
    assert "detected delimiter ';'" in _log(import_id)
    assert not any(line.startswith("detected encoding") for line in _log(import_id))


def test_the_command_line_imports_without_flags_and_shows_what_was_detected(mail_home, tmp_path):
    path = _write(tmp_path, "western.csv", WESTERN.encode("cp1252"))
    result = cli("import", str(path), "--list", "x", "--json", home=mail_home)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["state"] == "finished" and categories(document["stats"]) == {"added": 2}
    assert (document["options"]["delimiter"], document["options"]["encoding"]) == (";", "cp1252")
    log = cli("imports", "logs", str(document["id"]), home=mail_home).stdout
    assert "detected delimiter ';'" in log and "detected encoding cp1252" in log
    assert query("SELECT name FROM subscribers ORDER BY email") == [("Anaïs Lefèvre",), ("René",)]


def test_the_command_line_refuses_a_misread_header_and_an_unknown_encoding(mail_home, tmp_path):
    path = _write(tmp_path, "in.csv", b"email;name;status\na@example.com;A;confirmed\n")
    result = cli("import", str(path), "--delimiter", ",", home=mail_home)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("but looks delimited by ';': pass --delimiter ';'")
    result = cli("import", str(path), "--encoding", "klingon", home=mail_home)
    assert result.returncode != 0
    assert "invalid encoding 'klingon'" in result.stderr and len(result.stderr.strip().splitlines()) == 1

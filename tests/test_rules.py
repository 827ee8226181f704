"""Spec §3 row rules, through the core stages on small files (no Dagster)."""
import json

import polars as pl
import pytest

from mail_pipeline.errors import MailPipelineError
from mail_pipeline.mapping import resolve
from mail_pipeline.options import ImportOptions, build
from mail_pipeline.params import read_params
from mail_pipeline.pipeline import preflight
from mail_pipeline.reading import read_chunks
from tests.helpers import categories, log_lines, query, run_import


def test_mapping_matches_headers_case_insensitively_and_keeps_other_columns_as_custom_fields():
    mapping = resolve([" E-mail ", " EMAIL ", "Name", "City"], ImportOptions())
    assert mapping.fields == {"email": 1, "name": 2}
    assert mapping.custom == {"E-mail": 0, "City": 3}


def test_a_file_without_an_email_column_is_refused_naming_its_columns(write_csv):
    path = write_csv("contact,name\na@example.com,A\n")
    with pytest.raises(MailPipelineError, match="no email column; its columns are: contact, name"):
        preflight(path, build({}))


def test_reading_routes_wrong_field_counts_to_failed_and_skips_blank_lines(write_csv, tmp_path):
    path = write_csv('email,name\na@example.com,A\n\nb@example.com\nc@example.com,C,extra\n"d\n@x",D\n')
    [records] = read_chunks(path, build({}), 2, "lf", rows_per_chunk=1000)
    assert records.rows["c0"].to_list() == ["a@example.com", "d\n@x"]
    assert records.rejects["error"].to_list() == [
        "wrong number of fields: expected 2, found 1", "wrong number of fields: expected 2, found 3"]
    assert records.rejects["cells"].to_list() == [["b@example.com"], ["c@example.com", "C", "extra"]]
    assert records.count == 4


def test_every_row_gets_exactly_one_category(write_csv):
    path = write_csv("""
        email,name,status,attributes
        a@example.com,A,enabled,
        not-an-email,B,,
        A@EXAMPLE.COM ,A again,,
        c@example.com,C,sometimes,
        d@example.com,D,,[1]
        e@example.com,E,disabled,"{""k"": 1}"
        """)
    import_id, stats = run_import(path, lists=["news"])
    assert stats["number_of_records"] == 6
    assert sum(stats["subscribers"].values()) == 6
    assert categories(stats) == {"added": 2, "failed": 3, "skipped_duplicate": 1}
    assert log_lines(import_id, "added") == ["a@example.com", "e@example.com"]
    assert log_lines(import_id, "skipped_duplicate") == ["a@example.com"]
    failed = log_lines(import_id, "failed")
    assert failed[0] == "email,name,status,attributes,error"
    assert failed[1] == "not-an-email,B,,,An email address must have an @-sign."
    assert "invalid status 'sometimes' in column 'status'" in failed[2]
    assert failed[3].endswith("invalid attributes in column 'attributes': not a JSON object")


def test_new_subscribers_get_listmonk_defaults(write_csv):
    path = write_csv('email,name,attributes\na@example.com,A,"{""city"": ""Paris""}"\nb@example.com,,\n')
    run_import(path, lists=["news", "weekly"])
    assert query("SELECT email, name, status, attributes::VARCHAR FROM subscribers ORDER BY email") == [
        ("a@example.com", "A", "enabled", '{"city":"Paris"}'), ("b@example.com", None, "enabled", "{}")]
    assert query("SELECT DISTINCT status FROM subscriptions") == [("unconfirmed",)]
    assert query("SELECT count(*) FROM subscriptions") == [(4,)]
    assert query("SELECT name FROM lists ORDER BY name") == [("news",), ("weekly",)]


def test_existing_subscriber_is_skipped_without_overwrite_and_added_to_a_new_list(write_csv):
    path = write_csv("email,name\na@example.com,A\n")
    run_import(path, lists=["news"])
    assert categories(run_import(path, lists=["news"])[1]) == {"skipped_overwrite": 1}
    assert categories(run_import(path, lists=["news", "weekly"])[1]) == {"added": 1}
    assert query("SELECT list FROM subscriptions ORDER BY list") == [("news",), ("weekly",)]
    # One target list: being on it is told by the count alone (no list of lists is gathered).
    assert categories(run_import(path, lists=["offers"])[1]) == {"added": 1}
    assert categories(run_import(path, lists=["offers"])[1]) == {"skipped_overwrite": 1}
    assert query("SELECT list FROM subscriptions ORDER BY list") == [("news",), ("offers",), ("weekly",)]
    # Added (its own list is new) while already on the one target list: not subscribed twice.
    own = write_csv('email,lists\na@example.com,"{""digest"": ""confirmed""}"\n', name="own.csv")
    assert categories(run_import(own, lists=["offers"])[1]) == {"added": 1}
    assert query("SELECT list, count(*) FROM subscriptions GROUP BY list ORDER BY list") == [
        ("digest", 1), ("news", 1), ("offers", 1), ("weekly", 1)]


def test_overwrite_updates_name_and_merges_attributes_key_by_key(write_csv):
    run_import(write_csv('email,name,attributes\na@example.com,A,"{""city"": ""Paris"", ""age"": 30}"\n'),
               lists=["news"])
    path = write_csv('email,name,attributes\na@example.com,A2,"{""city"": ""Rome""}"\n', "update.csv")
    _, stats = run_import(path, lists=["news"], overwrite=True)
    assert categories(stats) == {"updated": 1}
    [(name, attributes)] = query("SELECT name, attributes::VARCHAR FROM subscribers")
    assert name == "A2" and json.loads(attributes) == {"city": "Rome", "age": 30}


def test_an_empty_cell_never_overwrites_a_stored_value(write_csv):
    run_import(write_csv("email,name\na@example.com,Ann\n"), lists=["news"])
    run_import(write_csv("email,name\na@example.com,\n", "blank.csv"), lists=["news"], overwrite=True)
    assert query("SELECT name FROM subscribers") == [("Ann",)]


def test_overwrite_skips_unsubscribed_subscribers_by_default(write_csv):
    run_import(write_csv("email\na@example.com\n"), lists=["news"], subscription_status="unsubscribed")
    _, stats = run_import(write_csv("email,name\na@example.com,A\n", "again.csv"), lists=["news"], overwrite=True)
    assert categories(stats) == {"skipped_unsubscribed": 1}
    _, stats = run_import(write_csv("email,name\na@example.com,A\n", "again.csv"), lists=["news"],
                          overwrite=True, overwrite_when_status={"unsubscribed": True})
    assert categories(stats) == {"updated": 1}


def test_blocklisted_subscribers_are_never_resubscribed(write_csv):
    path = write_csv("email\nspammer@example.com\n")
    _, stats = run_import(path, mode="blocklist")
    assert categories(stats) == {"added": 1}
    _, stats = run_import(path, lists=["news"], overwrite=True)
    assert categories(stats) == {"skipped_blocklisted": 1}
    assert query("SELECT status FROM subscribers") == [("blocklisted",)]
    assert query("SELECT count(*) FROM subscriptions") == [(0,)]


def test_blocklist_mode_unsubscribes_every_list_of_an_existing_subscriber(write_csv):
    run_import(write_csv("email\na@example.com\n"), lists=["news", "weekly"], subscription_status="confirmed")
    _, stats = run_import(write_csv("email\na@example.com\n", "block.csv"), mode="blocklist")
    assert categories(stats) == {"updated": 1}
    assert query("SELECT status FROM subscribers") == [("blocklisted",)]
    assert query("SELECT DISTINCT status FROM subscriptions") == [("unsubscribed",)]


def test_subscriber_limit_skips_new_subscribers_over_it(write_csv):
    path = write_csv("email\na@example.com\nb@example.com\nc@example.com\n")
    import_id, stats = run_import(path, lists=["news"], subscriber_limit=2)
    assert categories(stats) == {"added": 2, "skipped_over_limit": 1}
    assert log_lines(import_id, "skipped_over_limit") == ["c@example.com"]


def test_importing_the_same_file_twice_changes_nothing(write_csv):
    path = write_csv('email,name,status,attributes\na@example.com,A,enabled,"{""x"": 1, ""y"": ""z""}"\n'
                     "b@example.com,B,disabled,\n")
    run_import(path, lists=["news"], overwrite=True)
    before = query("SELECT * FROM subscribers ORDER BY email"), query("SELECT * FROM subscriptions ORDER BY email")
    _, stats = run_import(path, lists=["news"], overwrite=True)
    assert categories(stats) == {"updated": 2}
    after = query("SELECT * FROM subscribers ORDER BY email"), query("SELECT * FROM subscriptions ORDER BY email")
    assert after == before  # updated_at included


def test_batches_apply_exactly_once_when_an_import_is_merged_again(write_csv):
    from mail_pipeline import home, merge, pipeline
    path = write_csv("email\n" + "".join(f"u{i}@example.com\n" for i in range(25)))
    import_id, _ = run_import(path, lists=["news"], batch_size=10)
    pipeline.merge_import(pipeline.Folder.of(import_id), home.database_path())  # a resumed run re-enters the merge
    assert query("SELECT count(*), count(DISTINCT email) FROM subscribers") == [(25, 25)]
    assert query("SELECT count(*) FROM import_batches WHERE import_id = ?", [import_id]) == [(3,)]
    assert sorted(merge.outcomes(pipeline.Folder.of(import_id).outcomes).collect()["row"]) == list(range(1, 26))


def test_a_failed_batch_leaves_nothing_behind(write_csv, monkeypatch):
    from mail_pipeline import merge
    path = write_csv("email\n" + "".join(f"u{i}@example.com\n" for i in range(25)))
    calls = {"n": 0}
    original = merge._run

    def crash_in_second_batch(con, sql, params):
        if sql is merge._INSERT_SUBSCRIPTIONS_NEW:  # after this batch inserted its subscribers
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # a BaseException, like a Dagster cancel
        original(con, sql, params)

    monkeypatch.setattr(merge, "_run", crash_in_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_import(path, lists=["news"], batch_size=10)
    assert query("SELECT count(*) FROM subscribers") == [(10,)]
    assert query("SELECT count(*) FROM subscriptions") == [(10,)]
    monkeypatch.setattr(merge, "_run", original)
    from mail_pipeline import home, pipeline
    pipeline.merge_import(pipeline.Folder.of("1"), home.database_path())
    assert query("SELECT count(*), count(DISTINCT email) FROM subscribers") == [(25, 25)]


def test_custom_field_columns_land_in_attributes(write_csv):
    run_import(write_csv("email,City,Plan\na@example.com,Paris,\n"), lists=["news"])
    assert query("SELECT attributes::VARCHAR FROM subscribers") == [('{"City":"Paris"}',)]


def test_iso_8859_1_tab_delimited_single_quoted_file(write_csv):
    path = write_csv("email\tname\n'zoë@example.com'\t'Zoë'\n", encoding="iso-8859-1")
    _, stats = run_import(path, lists=["news"], delimiter="tab", quote="'", encoding="iso-8859-1")
    assert categories(stats) == {"added": 1}
    assert query("SELECT email, name FROM subscribers") == [("zoë@example.com", "Zoë")]


def test_no_header_file_with_positional_mapping(write_csv):
    path = write_csv("a@example.com,Ann\n")
    _, stats = run_import(path, header=False, mapping=["email", "name"])
    assert categories(stats) == {"added": 1}
    assert query("SELECT name FROM subscribers") == [("Ann",)]


def test_zip_imports_its_first_csv_by_name(tmp_path, write_csv):
    import zipfile
    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("notes.md", "not a csv")
        z.writestr("b/second.csv", "email\nb@example.com\n")
        z.writestr("a/first.csv", "email\na@example.com\n")
    import_id, _ = run_import(archive, lists=["news"])
    assert log_lines(import_id, "added") == ["a@example.com"]


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "invalid file: not a CSV or ZIP"),
    (b"", "invalid file: the file is empty"),
    (b"PK\x03\x04broken", "invalid file: not a CSV or ZIP"),
])
def test_bad_files_are_refused_before_any_write(tmp_path, content, message):
    from mail_pipeline import home
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(MailPipelineError, match=message):
        run_import(path)
    assert not home.database_path().exists()


def test_zip_without_csv_is_refused(tmp_path):
    import zipfile
    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("notes.md", "nothing")
    with pytest.raises(MailPipelineError, match="the ZIP holds no CSV file"):
        run_import(archive)


@pytest.mark.parametrize("options, message", [
    ({"delimiter": ";;"}, "invalid delimiter: must be a single character"),
    ({"mode": "delete"}, "invalid mode: must be 'subscribe' or 'blocklist'"),
    ({"subscription_status": "maybe"}, "invalid subscription_status"),
    ({"encoding": "utf-99"}, "invalid encoding 'utf-99'"),  # (any codec Python knows is taken)
    ({"header": False}, "needs a positional mapping"),
    ({"bogus": 1}, "unknown option 'bogus'"),
    ({"overwrite": "often"}, "invalid option 'overwrite'"),
])
def test_bad_options_are_refused_in_one_sentence(options, message):
    with pytest.raises(MailPipelineError, match=message):
        build(options)


def test_listmonk_params_are_taken_as_they_are(tmp_path):
    from mail_pipeline import catalog
    catalog.create_list("Default list"), catalog.create_list("Opt-in list")  # ids 1 and 2
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"mode": "subscribe", "delim": ",", "lists": [1, 2], "overwrite": True,
                                "subscription_status": "confirmed"}))
    options = build(read_params(str(path)))
    assert options.lists == ["Default list", "Opt-in list"]
    assert options.overwrite and options.overwrite_what.status
    assert options.effective_subscription_status() == "confirmed"
    assert build({"mode": "blocklist"}).effective_subscription_status() == "unsubscribed"


def test_failed_rows_keep_the_record_as_it_came(write_csv):
    import_id, _ = run_import(write_csv('email,name\n  bad@@x.com  , "Quoted, Name"\nshort\n'))
    rows = log_lines(import_id, "failed")
    # rejected records first, then value failures
    assert rows[1] == "short,\"wrong number of fields: expected 2, found 1\""
    assert rows[2] == """  bad@@x.com  ,"Quoted, Name",The part after the @-sign contains invalid characters: '@'."""
    frame = pl.read_csv(log_path_of(import_id), infer_schema=False, truncate_ragged_lines=True)
    assert frame.columns == ["email", "name", "error"]


def log_path_of(import_id):
    from mail_pipeline import home
    from mail_pipeline.logs import log_path
    return log_path(home.import_dir(import_id), "failed")


def test_a_stray_invalid_utf8_byte_fails_its_row_not_the_file(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"email,name\na@example.com,Ann\xff\xfe\nb@example.com,Bob\n")
    import_id, stats = run_import(path, lists=["news"], encoding="utf-8")  # (else: Windows-1252)
    assert categories(stats) == {"added": 1, "failed": 1}
    assert log_lines(import_id, "failed")[1].endswith("unreadable record: invalid encoding")


@pytest.mark.parametrize("content", [
    b'email,name\r\na@x.com,"yy"\nb@x.com,B\r\n',   # mixed line ends
    b"email,name\ra@x.com,A\rb@x.com,B\r",          # CR only
    b"\n\r\n  \nemail,name\na@x.com,A\nb@x.com,B\n",  # blank lines before the header
    b'"e\nmail",name\na@x.com,A\nb@x.com,B\n',       # a header spanning two lines
])
def test_line_ends_and_blank_lines_never_lose_a_row(tmp_path, content):
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    options = {"mapping": ["email", "name"]} if content.startswith(b'"e') else {}
    _, stats = run_import(path, lists=["news"], **options)
    assert stats["number_of_records"] == 2
    assert categories(stats) == {"added": 2}


def test_a_csv_that_starts_with_pk_is_a_csv(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(b"PK,email\n1,a@example.com\n")
    _, stats = run_import(path)
    assert categories(stats) == {"added": 1}


def test_zip_skips_hidden_entries_and_prefers_csv(tmp_path):
    import zipfile
    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("__MACOSX/._data.csv", b"\x00\x05\x16\x07binary")
        z.writestr("README.txt", "read me")
        z.writestr("data.csv", "email\na@example.com\n")
    import_id, _ = run_import(archive)
    assert log_lines(import_id, "added") == ["a@example.com"]


@pytest.mark.parametrize("mixed", [False, True])
def test_long_rows_are_kept_whole(tmp_path, mixed):
    end = b"\n" if mixed else b"\r\n"
    long_cell = b"y" * 3_000_000
    path = tmp_path / "long.csv"
    path.write_bytes(b"email,name\r\na@x.com," + long_cell + end + b"b@x.com," + long_cell + b",extra\r\n"
                     + b"c@x.com,C\r\n")
    import_id, stats = run_import(path)
    assert categories(stats) == {"added": 2, "failed": 1}
    [failed] = log_lines(import_id, "failed")[1:]
    assert failed == "b@x.com," + "y" * 3_000_000 + ",extra,\"wrong number of fields: expected 2, found 3\""
    assert query("SELECT length(name) FROM subscribers WHERE email = 'a@x.com'") == [(3_000_000,)]


def test_attributes_merge_top_level_keys_and_keep_nulls_across_reimports(write_csv):
    path = write_csv('email,attributes\nj@x.com,"{""n"": null, ""z"": 2, ""deep"": {""a"" :  1}}"\n')
    run_import(path, lists=["news"], overwrite=True)
    before = query("SELECT attributes::VARCHAR, updated_at FROM subscribers")
    assert json.loads(before[0][0]) == {"n": None, "z": 2, "deep": {"a": 1}}
    run_import(path, lists=["news"], overwrite=True)
    assert query("SELECT attributes::VARCHAR, updated_at FROM subscribers") == before
    update = write_csv('email,attributes\nj@x.com,"{""deep"": {""b"": 2}}"\n', "update.csv")
    run_import(update, lists=["news"], overwrite=True)
    [(attributes,)] = query("SELECT attributes::VARCHAR FROM subscribers")
    assert json.loads(attributes) == {"n": None, "z": 2, "deep": {"b": 2}}  # listmonk's ||: top level


@pytest.mark.parametrize("attributes", ['{"a":1,}', '{"a": NaN}', '{"a": Infinity}', '{"a":1,"a":2}',
                                        '{"a":[1,]}', "[1, 2]", '"text"'])
def test_attributes_must_be_a_strict_json_object(tmp_path, attributes):
    path = tmp_path / "in.csv"
    path.write_text('email,attributes\na@x.com,"' + attributes.replace('"', '""') + '"\n')
    import_id, stats = run_import(path)
    assert categories(stats) == {"failed": 1}
    assert log_lines(import_id, "failed")[1].endswith("not a JSON object")


def test_blocklist_mode_without_overwrite_changes_only_the_status(write_csv):
    run_import(write_csv('email,name,attributes\nb@x.com,Real Name,"{""vip"": true}"\n'), lists=["news"])
    block = write_csv('email,name,attributes,vip\nb@x.com,Spam Bot,"{""vip"": false}",no\n', "block.csv")
    _, stats = run_import(block, mode="blocklist")
    assert categories(stats) == {"updated": 1}
    assert query("SELECT name, status, attributes::VARCHAR FROM subscribers") == [
        ("Real Name", "blocklisted", '{"vip":true}')]


def test_overwrite_gate_also_guards_a_subscriber_added_to_a_new_list(write_csv):
    run_import(write_csv("email,name\na@x.com,Ann\n"), lists=["news"], subscription_status="unsubscribed")
    _, stats = run_import(write_csv("email,name\na@x.com,Changed\n", "b.csv"), lists=["news", "weekly"],
                          overwrite=True)
    assert categories(stats) == {"added": 1}  # newly subscribed to weekly
    assert query("SELECT name FROM subscribers") == [("Ann",)]  # but unsubscribed on news: no overwrite


def test_a_resumed_merge_with_another_batch_size_applies_each_row_once(write_csv, monkeypatch):
    from mail_pipeline import home, merge, pipeline
    path = write_csv("email\n" + "".join(f"u{i}@example.com\n" for i in range(8)))
    original = merge._apply

    def stop_after_first_batch(con, import_id, number, options, outcomes_dir, needs):
        if number == 1:
            raise KeyboardInterrupt
        original(con, import_id, number, options, outcomes_dir, needs)

    monkeypatch.setattr(merge, "_apply", stop_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        run_import(path, lists=["news"], batch_size=2)
    monkeypatch.setattr(merge, "_apply", original)
    folder = pipeline.Folder.of("1")
    options = json.loads(folder.options.read_text())
    options["options"]["batch_size"] = 4  # a re-execution with other options
    folder.options.write_text(json.dumps(options))
    pipeline.merge_import(pipeline.Folder.of("1"), home.database_path())
    stats = pipeline.write_import_logs(pipeline.Folder.of("1"))
    assert categories(stats) == {"added": 8}
    assert query("SELECT count(*), count(DISTINCT email) FROM subscribers") == [(8, 8)]


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
@pytest.mark.parametrize("body, failed_reason", [
    (b'a@x.com,"unterminated{e}b@x.com,B{e}c@x.com,C{e}', "unreadable record: unterminated quote"),
    (b'b@x.com,"x"y{e}a@x.com,A{e}c@x.com,C{e}', "unreadable record: unquoted value"),
    (b"a@x.com,bad\xffbyte{e}b@x.com,B{e}c@x.com,C{e}", "unreadable record: invalid encoding"),
    (b"a@x.com,A,{e}b@x.com,B,,{e}c@x.com,C,x{e}", "wrong number of fields: expected 2, found 3"),
])
def test_both_readers_give_each_record_the_same_fate(tmp_path, end, body, failed_reason):
    # The first line end of the file decides the reader: a lone CRLF among LFs is "mixed".
    path = tmp_path / "in.csv"
    path.write_bytes(b"email,name" + (b"\r\n" if end == b"\n" else b"\n") + body.replace(b"{e}", end))
    import_id, stats = run_import(path, encoding="utf-8")  # (a stray byte: else Windows-1252)
    assert stats["number_of_records"] == 3
    assert categories(stats) == {"added": 2, "failed": 1}
    assert log_lines(import_id, "failed")[-1].rstrip('"').endswith(failed_reason)


def test_delimiter_only_lines_before_the_header_are_blank(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b";;\r\n ; \r\nemail;name\r\na@x.com;A\r\n")
    _, stats = run_import(path, delimiter=";")
    assert stats["number_of_records"] == 1 and categories(stats) == {"added": 1}


def test_a_positional_mapping_longer_than_a_headerless_file_is_refused(tmp_path):
    path = tmp_path / "nohdr.csv"
    path.write_text("a@x.com,A\n")
    with pytest.raises(MailPipelineError, match="the mapping names 3 columns but the file has 2"):
        run_import(path, header=False, mapping=["email", "name", "x"])


@pytest.mark.parametrize("damage", ["crc", "encrypted"])
def test_a_damaged_zip_is_refused_in_one_sentence(tmp_path, damage):
    import zipfile
    archive = tmp_path / "in.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("a.csv", "email\na@example.com\n")
    data = bytearray(archive.read_bytes())
    if damage == "crc":
        data[data.index(b"a@example") + 2] ^= 0xFF
    else:
        data[6] |= 0x1  # the local header's "encrypted" flag
        central = data.index(b"PK\x01\x02")
        data[central + 8] |= 0x1
    archive.write_bytes(bytes(data))
    with pytest.raises(MailPipelineError, match="invalid file: the ZIP cannot be read"):
        run_import(archive)


@pytest.mark.parametrize("params, message", [
    ({"ops": {"raw_file": {"config": "x"}}}, "ops.raw_file.config must be a JSON object"),
    ({"overwrite_what": {"stat": True}}, "invalid params: unknown key 'overwrite_what.stat'"),
])
def test_bad_params_are_refused_in_one_sentence(tmp_path, params, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(params))
    with pytest.raises(MailPipelineError, match=message):
        build(read_params(str(path)))


def test_listing_follows_greenarrows_scopes_order_and_pages():
    from datetime import datetime, timedelta, timezone

    from mail_pipeline.document import listing
    iso = lambda days: (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    docs = [
        {"id": "1", "state": "finished", "begins_at": iso(30), "finished_at": iso(30), "lists": ["a"]},
        {"id": "2", "state": "failed", "begins_at": iso(2), "finished_at": iso(2), "lists": ["b"]},
        {"id": "3", "state": "scheduled", "begins_at": iso(-1), "finished_at": None, "lists": ["a"]},
        {"id": "4", "state": "importing", "begins_at": iso(0), "finished_at": None, "lists": ["a"]},
        {"id": "5", "state": "finished", "begins_at": iso(1), "finished_at": iso(1), "lists": ["a"]},
    ]
    ids = lambda result: [d["id"] for d in result["data"]]  # noqa: E731
    assert ids(listing(docs, "all", None, 0, 100)) == ["4", "3", "5", "2", "1"]
    assert ids(listing(docs, "recent", None, 0, 100)) == ["4", "3", "5", "2"]
    assert ids(listing(docs, "active", None, 0, 100)) == ["4", "3"]
    assert ids(listing(docs, "finished", "a", 0, 100)) == ["5", "1"]
    page = listing(docs, "all", None, 1, 2)
    assert ids(page) == ["5", "2"] and (page["num_records"], page["num_pages"]) == (5, 3)

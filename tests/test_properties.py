"""Properties of every import, on generated files (hypothesis)."""
import csv
import gzip
import io
import json
import os
import shutil
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mail_pipeline import exports, home, logs
from mail_pipeline.logs import log_path
from tests.helpers import categories, log_lines, query, run_import

EMAILS = st.one_of(
    st.sampled_from(["a@example.com", "A@Example.com ", "b@example.org", "bad@", "c@@x.com", "",
                     "josé@example.com", " d@example.net", "e@example.com"]),
    st.emails().map(str),
)
CELLS = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
STATUSES = st.sampled_from(["", "enabled", "disabled", "blocklisted", "confirmed", "active", "nope"])
ATTRIBUTES = st.sampled_from(["", '{"a": 1}', '{"a": null, "b": [1]}', "{bad", "[1]", '{"a": 2}'])
ROWS = st.lists(st.tuples(EMAILS, CELLS, STATUSES, ATTRIBUTES), max_size=25)


def as_csv(rows) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", "name", "status", "attributes"])
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


# HYPOTHESIS_EXAMPLES=500 for a longer search than CI's.
SETTINGS = settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 25)), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(rows=ROWS, overwrite=st.booleans(), mode=st.sampled_from(["subscribe", "blocklist"]))
def test_categories_add_up_and_a_second_import_changes_nothing(tmp_path, mail_home, rows, overwrite, mode):
    shutil.rmtree(mail_home, ignore_errors=True)
    path = tmp_path / "gen.csv"
    path.write_bytes(as_csv(rows))
    _, first = run_import(path, lists=["news"], overwrite=overwrite, mode=mode)
    assert first["number_of_records"] == len(rows)
    assert sum(first["subscribers"].values()) == len(rows)
    before = (query("SELECT * FROM subscribers ORDER BY email"),
              query("SELECT * FROM subscriptions ORDER BY email, list"))
    _, second = run_import(path, lists=["news"], overwrite=overwrite, mode=mode)
    assert sum(second["subscribers"].values()) == len(rows)
    assert second["subscribers"]["failed"] == first["subscribers"]["failed"]
    assert second["subscribers"]["skipped_duplicate"] == first["subscribers"]["skipped_duplicate"]
    after = (query("SELECT * FROM subscribers ORDER BY email"),
             query("SELECT * FROM subscriptions ORDER BY email, list"))
    assert after == before  # updated_at included


TAGS = st.sampled_from(["", "a", "b, a", '"x, y"|z', " ; "])
FORMATS = st.sampled_from(["", "html", "text", "both", "pdf"])
TIMES = st.sampled_from(["", "2014-05-11", "05/11/2014 2:30pm", "March 11, 1994", "31/31/2020",
                         "1994-03-11T14:30:47-06:00"])
IPS = st.sampled_from(["", "192.0.2.1", "2001:db8::1", "999.1.1.1"])
WIDE_ROWS = st.lists(st.tuples(EMAILS, STATUSES, TAGS, FORMATS, TIMES, IPS, CELLS), max_size=20)
# GreenArrow's overwrite flags, each given or left to its default.
OVERWRITE_WHAT = st.fixed_dictionaries({}, optional={
    k: st.booleans() for k in ("custom_fields", "status", "confirmed", "format")})
OVERWRITE_WHEN = st.fixed_dictionaries({}, optional={
    k: st.booleans() for k in ("active", "unsubscribed", "bounced", "deactivated", "scomp")})
OPTIONS = st.fixed_dictionaries({}, optional={
    "overwrite": st.booleans(),
    "overwrite_what": OVERWRITE_WHAT, "overwrite_when_status": OVERWRITE_WHEN,
    "subscribe_unsubscribed": st.booleans(), "replace_tags": st.booleans(),
    "unsubscribe_others": st.booleans(), "tags": st.sampled_from([[], ["imported"]]),
    "default_custom_fields": st.sampled_from([{}, {"City": "Oslo", "Cars": ["Kia"]}]),
    "date_format": st.sampled_from(["mdy", "dmy"]), "subscriber_limit": st.sampled_from([None, 3]),
    "mode": st.sampled_from(["subscribe", "blocklist"]),
})


def _store() -> tuple:
    return (query("SELECT * FROM subscribers ORDER BY email"),
            query("SELECT * FROM subscriptions ORDER BY email, list"))


@SETTINGS
@given(earlier=WIDE_ROWS, rows=WIDE_ROWS, options=OPTIONS)
def test_every_field_and_option_still_adds_up_and_a_second_import_changes_nothing(
        tmp_path, mail_home, earlier, rows, options):
    shutil.rmtree(mail_home, ignore_errors=True)
    header = ["email", "status", "tags", "email_format", "subscribe_time", "subscribe_ip", "City"]
    for name, content in (("earlier.csv", earlier), ("gen.csv", rows)):
        out = io.StringIO()
        csv.writer(out).writerows([header, *content])
        (tmp_path / name).write_text(out.getvalue(), encoding="utf-8")
    run_import(tmp_path / "earlier.csv", lists=["news", "offers"])  # a store in some state
    _, first = run_import(tmp_path / "gen.csv", lists=["news"], **options)
    assert sum(first["subscribers"].values()) == first["number_of_records"] == len(rows)
    before = _store()
    _, second = run_import(tmp_path / "gen.csv", lists=["news"], **options)
    assert sum(second["subscribers"].values()) == len(rows)
    assert second["subscribers"]["failed"] == first["subscribers"]["failed"]
    assert _store() == before  # updated_at included


# --- export → import → export is the identity ----------------------------------------------------

FORMULAS = ["=1+1", "+1", "-2", "@SUM(A1)", "\tcmd", "\rcmd", "'=already", "''+x", "'plain"]
NAMES = st.one_of(st.sampled_from(["", "Ann Lee", "José Ñúñez", '"q"', "a,b", "line\nbreak", "日本語",
                                   *FORMULAS]), CELLS)
LISTS = ["news", "offers", "Ünï list", 'q"uote, comma']
ROUND_STATUSES = st.sampled_from(["", "enabled", "disabled", "blocklisted", "unconfirmed", "confirmed",
                                  "unsubscribed", "bounced", "complained", "deactivated"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | CELLS
    | st.floats(allow_nan=False, allow_infinity=False, width=32),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(CELLS, inner, max_size=3), max_leaves=6)
ROUND_ATTRIBUTES = st.one_of(st.just(""), st.dictionaries(CELLS, JSON_VALUES, max_size=3).map(
    lambda d: json.dumps(d, ensure_ascii=False)))
TAG_CELLS = st.one_of(TAGS, st.text(alphabet=st.sampled_from('ab ,;|"[]é-='), max_size=8),
                      st.lists(CELLS, max_size=3).map(lambda t: json.dumps(t, ensure_ascii=False)))
ROUND_ROWS = st.lists(st.tuples(EMAILS, NAMES, ROUND_STATUSES, ROUND_ATTRIBUTES, TAG_CELLS,
                                st.sampled_from(["", "html", "text", "both"]), CELLS,
                                st.sampled_from(["", "2014-05-11", "1994-03-11T14:30:47-06:00"])),
                      max_size=12)
ROUND_HEADER = ["email", "name", "status", "attributes", "tags", "email_format", "Città",
                "subscribe_time"]
ROUND_OPTIONS = st.fixed_dictionaries({"lists": st.lists(st.sampled_from(LISTS), max_size=2, unique=True)},
                                      optional={
    "overwrite": st.booleans(),
    "overwrite_what": OVERWRITE_WHAT, "overwrite_when_status": OVERWRITE_WHEN,
    "subscribe_unsubscribed": st.booleans(), "replace_tags": st.booleans(),
    "tags": st.sampled_from([[], ["imported"], ["=x", "Ünï"]]),
    "subscription_status": st.sampled_from(["confirmed", "unconfirmed"]),
    "mode": st.sampled_from(["subscribe", "subscribe", "blocklist"]),
})
# Filters that only read what an export holds (cold_only reads subscription times, which an
# export does not carry, so a restored store is all cold).
EXPORT_FILTERS = st.fixed_dictionaries({}, optional={
    "lists": st.lists(st.sampled_from(LISTS), min_size=1, max_size=2, unique=True),
    "status": st.lists(st.sampled_from(["enabled", "disabled", "blocklisted"]), min_size=1, max_size=2,
                       unique=True),
    "subscription_status": st.lists(st.sampled_from(["unconfirmed", "confirmed", "unsubscribed"]),
                                    min_size=1, max_size=2, unique=True),
    "search": st.sampled_from(["EXAMPLE.COM", "é", "a"]),
})
# Every column optional, whatever the store holds (see exports._fixed_schema).
PARQUET_SCHEMA = pa.schema([(name, pa.string()) for name in exports.COLUMNS])
VARIANTS = (("csv", False), ("csv", True), ("jsonl", False), ("jsonl", True), ("parquet", False))


def _write_rows(path, header, rows) -> None:
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    path.write_bytes(out.getvalue().encode("utf-8"))


def _export_all(folder, filters: dict) -> dict:
    """The home's store exported in every format (through the export command's own connection)."""
    written = {}
    with exports.opened(home.database_path()) as con:
        for fmt, gz in VARIANTS:
            options = exports.build_export({**filters, "format": fmt, "gzip": gz})
            written[fmt, gz] = exports.export(con, options, folder / f"subscribers{options.suffix()}")
    return written


@SETTINGS
@given(imports=st.lists(st.tuples(ROUND_ROWS, ROUND_OPTIONS), min_size=1, max_size=2),
       filters=EXPORT_FILTERS, zipped=st.booleans())
def test_export_import_export_is_the_identity_in_every_format(tmp_path, mail_home, imports, filters,
                                                              zipped):
    shutil.rmtree(mail_home, ignore_errors=True)
    restored = tmp_path / "restored"
    shutil.rmtree(restored, ignore_errors=True)
    shutil.rmtree(tmp_path / "first", ignore_errors=True)
    shutil.rmtree(tmp_path / "second", ignore_errors=True)
    for number, (rows, options) in enumerate(imports):
        _write_rows(tmp_path / f"gen{number}.csv", ROUND_HEADER, rows)
        run_import(tmp_path / f"gen{number}.csv", **options)
    first = _export_all(tmp_path / "first", filters)
    assert len({w.rows for w in first.values()}) == 1
    csv_export = first["csv", False].path
    assert gzip.decompress(first["csv", True].path.read_bytes()) == csv_export.read_bytes()
    source = csv_export
    if zipped:  # a backup sent on as a ZIP imports the same
        source = tmp_path / "backup.zip"
        with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(csv_export, "subscribers.csv")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAIL_PIPELINE_HOME", str(restored))
        _, stats = run_import(source)  # into an empty store, no --list: the lists column says
        assert categories(stats) == ({"added": first["csv", False].rows} if first["csv", False].rows else {})
        second = _export_all(tmp_path / "second", filters)
        everything = _export_all(tmp_path / "everything", {})  # the restored store holds only those
    # byte for byte in every format: gzip members carry no time, and Parquet's schema no
    # longer follows the store's statistics
    for variant in VARIANTS:
        assert second[variant].rows == first[variant].rows
        assert second[variant].sha256 == first[variant].sha256, variant
        assert everything[variant].sha256 == first[variant].sha256, variant
    assert pq.read_schema(first["parquet", False].path).equals(PARQUET_SCHEMA)


# --- an import's effects are exactly those its logs list -----------------------------------------

def mostly(good: list, bad: list) -> st.SearchStrategy:
    """One of `good` nine times in ten, else one of `bad`: rows that fail change nothing, so a
    file where most rows fail would test little."""
    return st.integers(0, 9).flatmap(lambda i: st.sampled_from(bad if i == 9 else good))


# A few addresses (one in two spellings), so the file meets the store's subscribers.
ADDRESSES = ["a@example.com", "A@Example.com ", "b@example.org", "c@example.net", "d@example.com",
             "josé@example.com", "e@bücher.de", "f@example.com"]
EFFECT_EMAILS = st.integers(0, 4).flatmap(
    lambda i: st.emails().map(str) if i == 0 else mostly(ADDRESSES, ["bad@", "g@@x.com", ""]))
EFFECT_STATUSES = mostly(["", "", "enabled", "disabled", "blocklisted", "unconfirmed", "confirmed", "active",
                          "unsubscribed", "unsubscribed", "bounced", "deactivated", "complained", "scomp"],
                         ["nope"])
ROW_LISTS = mostly(["", "", "", '{"news": "confirmed"}', '{"vip": "unsubscribed", "news": "bounced"}'],
                   ['{"offers": "nope"}', "[1]"])
EFFECT_ROWS = st.lists(st.tuples(EFFECT_EMAILS, st.sampled_from(["", "Ann", "Bob", "=x"]), EFFECT_STATUSES,
                                 mostly(["", '{"a": 1}', '{"a": 2, "b": null}'], ["{bad"]),
                                 st.sampled_from(["", "a", "b; a"]), st.sampled_from(["", "html", "text"]),
                                 st.sampled_from(["", "Oslo", "Köln"]),
                                 mostly(["", "2014-05-11", "1994-03-11T14:30:47-06:00"], ["31/31/2020"]),
                                 mostly(["", "192.0.2.1", "2001:db8::1"], ["999.1.1.1"]), ROW_LISTS),
                       max_size=12)
EFFECT_HEADER = ["email", "name", "status", "attributes", "tags", "email_format", "City",
                 "subscribe_time", "subscribe_ip", "lists"]
EFFECT_OPTIONS = st.fixed_dictionaries({
    "lists": st.lists(st.sampled_from(["news", "offers"]), max_size=2, unique=True),
    "overwrite": st.booleans(), "subscribe_unsubscribed": st.booleans(),
}, optional={
    "overwrite_what": OVERWRITE_WHAT, "overwrite_when_status": OVERWRITE_WHEN,
    "replace_tags": st.booleans(),
    "unsubscribe_others": st.booleans(), "tags": st.sampled_from([[], ["imported"]]),
    "default_custom_fields": st.sampled_from([{}, {"City": "Oslo", "Cars": ["Kia"]}]),
    "subscription_status": st.sampled_from(["unconfirmed", "confirmed", "unsubscribed", "bounced"]),
    "subscriber_limit": st.sampled_from([None, 0, 2, 4]), "batch_size": st.sampled_from([1, 2, 1000]),
    "mode": st.sampled_from(["subscribe", "subscribe", "blocklist"]),
})


def _snapshot() -> dict[str, tuple]:
    """Each email's subscriber row and subscriptions, everything included (updated_at too)."""
    state: dict[str, list] = {}
    for row in query("SELECT * FROM subscribers"):
        state.setdefault(row[0], [None, []])[0] = row
    for row in query("SELECT * FROM subscriptions ORDER BY email, list"):
        state.setdefault(row[0], [None, []])[1].append(row)
    return {email: (subscriber, tuple(subscriptions)) for email, (subscriber, subscriptions) in state.items()}


UNSUBSCRIBED = ("a@example.com", "", "unsubscribed", "", "", "", "", "", "", "")


@SETTINGS
@given(earlier=st.lists(st.tuples(EFFECT_ROWS, EFFECT_OPTIONS), min_size=1, max_size=2), rows=EFFECT_ROWS,
       options=EFFECT_OPTIONS)
# Found here: re-subscribing an unsubscribed subscriber with the status 'unsubscribed' was
# counted as added, and changed nothing.
@example(earlier=[([UNSUBSCRIBED], {"lists": ["news"]})], rows=[UNSUBSCRIBED],
         options={"lists": ["news"], "subscribe_unsubscribed": True})
@example(earlier=[([UNSUBSCRIBED], {"lists": ["news"]})], rows=[UNSUBSCRIBED[:2] + ("",) * 8],
         options={"lists": ["news"], "subscribe_unsubscribed": True, "subscription_status": "unsubscribed"})
def test_an_imports_effects_are_exactly_those_its_logs_list(tmp_path, mail_home, earlier, rows, options):
    shutil.rmtree(mail_home, ignore_errors=True)
    for number, (content, earlier_options) in enumerate(earlier):  # a store in some state
        _write_rows(tmp_path / f"earlier{number}.csv", EFFECT_HEADER, content)
        run_import(tmp_path / f"earlier{number}.csv", **earlier_options)
    _write_rows(tmp_path / "gen.csv", EFFECT_HEADER, rows)
    before = _snapshot()
    import_id, stats = run_import(tmp_path / "gen.csv", **options)
    after = _snapshot()
    changed = {email for email in before.keys() | after.keys() if before.get(email) != after.get(email)}

    logged = {category: log_lines(import_id, category) for category in logs.EMAIL_CATEGORIES}
    with open(log_path(home.import_dir(import_id), "failed"), encoding="utf-8", newline="") as f:
        failed = list(csv.reader(f))[1:]
    # each log holds exactly its category's rows, and every row is in one log
    for category, lines in logged.items():
        assert len(lines) == stats["subscribers"][category], category
    assert len(failed) == stats["subscribers"]["failed"]
    assert sum(stats["subscribers"].values()) == len(rows)
    # an email is classified once; a duplicate's email is the one its first row was classified as
    classified = [email for category, lines in logged.items() if category != "skipped_duplicate"
                  for email in lines]
    assert len(classified) == len(set(classified))
    assert set(logged["skipped_duplicate"]) <= set(classified)

    others_ran = options.get("unsubscribe_others", False) and stats["subscribers"]["failed"] == 0
    assert ("unsubscribed_others" in stats) == others_ran
    others = log_lines(import_id, "unsubscribed_others") if others_ran else []
    if others_ran:
        assert len(others) == stats["unsubscribed_others"] == len(set(others))
        assert not set(others) & set(classified)  # only subscribers absent from the file
        for email in others:  # each lost an active subscription on a target list
            assert any(x[2] in ("unconfirmed", "confirmed") and x[1] in options["lists"]
                       for x in before[email][1])
            assert not any(x[2] in ("unconfirmed", "confirmed") and x[1] in options["lists"]
                           for x in after[email][1])
    # nothing changed that the logs do not list; every added row changed something
    listed = set(logged["added"]) | set(logged["updated"]) | set(others)
    assert changed <= listed, changed - listed
    assert set(logged["added"]) <= changed, set(logged["added"]) - changed
    # so every skipped email, and a failed row's (as written, lower-cased), is unchanged unless
    # another row of the file added or updated it
    failed_emails = {record[0].strip().lower() for record in failed if record}
    unchanged = (set(classified) | failed_emails) - listed
    assert all(before.get(email) == after.get(email) for email in unchanged)


FAILED_CELLS = st.lists(st.one_of(st.none(), st.text(
    alphabet=st.sampled_from([",", '"', "\r", "\n", " ", "\t", "'", "a", "é", "\u2028", "\x85", ";"]),
    max_size=6)), max_size=4)


@SETTINGS
@given(rows=st.lists(st.tuples(FAILED_CELLS, st.text(max_size=6),
                               st.booleans()), max_size=20),
       header=st.lists(st.text(max_size=5), min_size=1, max_size=3))
def test_the_failed_log_reads_back_as_the_rows_came(tmp_path_factory, rows, header):
    """The failed log is built by Polars. Read back with Python's `csv` module it gives every
    row's cells and reason, whatever they hold (commas, quotes, line breaks, none), and its bytes
    are those of Python's `csv.writer` (`\n` line ends), except that a field holding a lone
    carriage return is quoted too, which `csv.writer` leaves bare and so cannot read back."""
    folder = tmp_path_factory.mktemp("failed")
    part = folder / "part-00000.parquet"
    frame = [{"row": None if rejected else i + 1, "line": i + 2 if rejected else None,
              "cells": cells, "error": error} for i, (cells, error, rejected) in enumerate(rows)]
    pa_table = pa.Table.from_pylist(frame, schema=pa.schema([
        ("row", pa.int64()), ("line", pa.int64()), ("cells", pa.list_(pa.string())),
        ("error", pa.string())]))
    pq.write_table(pa_table, part)
    assert logs.write_failed_log(folder, [part], header) == len(rows)
    ordered = [[*(c or "" for c in r["cells"]), r["error"]]
               for r in sorted(frame, key=lambda r: (r["line"] is None, r["line"] or r["row"]))]
    written = log_path(folder, "failed").read_bytes()
    assert list(csv.reader(io.StringIO(written.decode("utf-8"), newline=""))) == [
        [*header, "error"], *ordered]
    if not any("\r" in field for row in [header, *ordered] for field in row):
        expected = io.StringIO()
        writer = csv.writer(expected, lineterminator="\n")
        writer.writerow([*header, "error"])
        writer.writerows(ordered)
        assert written == expected.getvalue().encode("utf-8")

"""Exports (spec §6): every filter, every format read back, the formula guard, the round trip,
and exports as Dagster runs and named, self-refreshing assets."""
import csv
import gzip
import hashlib
import io
import json
import shutil
import threading

import dagster as dg
import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mail_pipeline import home, named_exports
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.exports import build_export, export
from mail_pipeline.store import SCHEMA
from tests.helpers import cli, failing_files, run_import

COLUMNS = ["email", "name", "status", "attributes", "tags", "lists", "email_format", "created_at",
           "updated_at"]


@pytest.fixture
def store(write_csv):
    """ann: news confirmed, engaged lately; bob: news unsubscribed + offers confirmed, engaged
    long ago; cy: blocklisted, no list; dee: offers unconfirmed, never engaged."""
    run_import(write_csv("email,name,subscribe_time\nann@example.com,Ann Lee,2099-01-01\n"
                         "bob@example.com,Bob,2001-01-01\n", name="a.csv"),
               lists=["news"], subscription_status="confirmed")
    run_import(write_csv("email,status\nbob@example.com,unsubscribed\n", name="b.csv"),
               lists=["news"], overwrite=True, overwrite_what={"status": True},
               overwrite_when_status={"active": True})
    run_import(write_csv("email\nbob@example.com\n", name="c.csv"), lists=["offers"],
               subscription_status="confirmed")
    run_import(write_csv("email,status\ncy@example.com,blocklisted\n", name="d.csv"))
    run_import(write_csv("email,name\ndee@example.com,Dee Bobson\n", name="e.csv"), lists=["offers"])
    con = duckdb.connect(str(home.database_path()))
    yield con
    con.close()


def _emails(con, tmp_path, **filters) -> list[str]:
    written = export(con, build_export(filters), tmp_path / "out.csv")
    rows = list(csv.DictReader(open(written.path, encoding="utf-8")))
    assert written.rows == len(rows)
    return [row["email"] for row in rows]


@pytest.mark.parametrize("filters, expected", [
    ({}, ["ann@example.com", "bob@example.com", "cy@example.com", "dee@example.com"]),
    ({"lists": ["news"]}, ["ann@example.com", "bob@example.com"]),
    ({"lists": ["news", "offers"]}, ["ann@example.com", "bob@example.com", "dee@example.com"]),
    ({"status": ["blocklisted"]}, ["cy@example.com"]),
    ({"status": ["enabled"], "lists": ["offers"]}, ["bob@example.com", "dee@example.com"]),
    ({"subscription_status": ["confirmed"]}, ["ann@example.com", "bob@example.com"]),
    ({"lists": ["news"], "subscription_status": ["confirmed"]}, ["ann@example.com"]),
    ({"lists": ["news"], "subscription_status": ["unsubscribed"]}, ["bob@example.com"]),
    ({"search": "BOB"}, ["bob@example.com", "dee@example.com"]),  # email or name
    ({"search": "lee"}, ["ann@example.com"]),
    ({"cold_only": True}, ["bob@example.com", "cy@example.com", "dee@example.com"]),
    ({"cold_only": True, "cold_days": 20000}, ["cy@example.com", "dee@example.com"]),
])
def test_every_filter(store, tmp_path, filters, expected):
    assert _emails(store, tmp_path, **filters) == expected


@pytest.mark.parametrize("fmt, gz", [("csv", False), ("csv", True), ("jsonl", False), ("jsonl", True),
                                     ("parquet", False)])
def test_every_format_reads_back_with_polars(store, tmp_path, fmt, gz):
    written = export(store, build_export({"format": fmt, "gzip": gz}), tmp_path / f"out.{fmt}")
    data = gzip.decompress(written.path.read_bytes()) if gz else written.path.read_bytes()
    frame = {"csv": lambda: pl.read_csv(io.BytesIO(data), infer_schema=False),
             "jsonl": lambda: pl.read_ndjson(io.BytesIO(data)),
             "parquet": lambda: pl.read_parquet(io.BytesIO(data))}[fmt]()
    assert frame.columns == COLUMNS and frame.height == written.rows == 4
    bob = frame.filter(pl.col("email") == "bob@example.com").row(0, named=True)
    lists = bob["lists"] if fmt == "jsonl" else json.loads(bob["lists"])
    assert lists == {"news": "unsubscribed", "offers": "confirmed"}
    assert bob["created_at"].endswith("Z") and "T" in bob["created_at"]


@pytest.mark.parametrize("fmt, gz", [("csv", False), ("csv", True), ("jsonl", True), ("parquet", False)])
def test_a_store_exported_in_slices_gives_the_same_file(store, tmp_path, monkeypatch, fmt, gz):
    from mail_pipeline import exports
    options = build_export({"format": fmt, "gzip": gz, "lists": ["news", "offers"]})
    whole = export(store, options, tmp_path / f"whole.{fmt}")
    monkeypatch.setattr(exports, "SLICE_SUBSCRIBERS", 1)  # one slice per subscriber
    assert len(exports._slices(store)) == 4
    sliced = export(store, options, tmp_path / f"sliced.{fmt}")
    assert sliced.rows == whole.rows == 3
    for written in (whole, sliced):  # (the joined slices are hashed on the way)
        data = written.path.read_bytes()
        assert (written.sha256, written.size) == (hashlib.sha256(data).hexdigest(), len(data))
    if fmt == "parquet":  # (its bytes carry the writer's own metadata)
        assert pl.read_parquet(sliced.path).equals(pl.read_parquet(whole.path))
    else:
        assert gzip.decompress(sliced.path.read_bytes()) == gzip.decompress(whole.path.read_bytes()) \
            if gz else sliced.path.read_bytes() == whole.path.read_bytes()
    if fmt == "csv" and gz:  # one gzip member after another reads back as one file
        assert pl.read_csv(sliced.path).height == 3


def test_a_failed_write_while_joining_slices_fails_the_export_and_leaves_nothing(store, tmp_path,
                                                                                monkeypatch):
    """Slices are joined in a thread of its own: its error still reaches the export."""
    from mail_pipeline import exports
    monkeypatch.setattr(exports, "SLICE_SUBSCRIBERS", 1)

    copies = []
    failing_files(monkeypatch, exports, "write", OSError(28, "No space left on device"))
    real_copy = exports._copy
    monkeypatch.setattr(exports, "_copy", lambda *args, **kw: copies.append(1) or real_copy(*args, **kw))
    with pytest.raises(OSError, match="No space left"):
        export(store, build_export({}), tmp_path / "out" / "subscribers.csv")
    assert list((tmp_path / "out").iterdir()) == []
    assert len(copies) < 4  # it stopped writing slices once the first join failed


def test_a_failed_close_while_joining_slices_fails_the_export_and_never_hangs(store, tmp_path,
                                                                             monkeypatch):
    """The last bytes may only fail when the joined file is closed (a full disk, a quota)."""
    from mail_pipeline import exports
    monkeypatch.setattr(exports, "SLICE_SUBSCRIBERS", 1)
    failing_files(monkeypatch, exports, "close", OSError(122, "Disk quota exceeded"))
    failed = []
    worker = threading.Thread(target=lambda: failed.append(pytest.raises(
        OSError, export, store, build_export({}), tmp_path / "out" / "subscribers.csv")), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive() and "quota" in str(failed[0].value)
    assert list((tmp_path / "out").iterdir()) == []


def test_both_ways_of_gathering_lists_write_the_same_file(store, tmp_path, monkeypatch):
    """Mostly one list per subscriber: those on one are written from fixed-size aggregates;
    otherwise all are gathered into lists. Same bytes, list names needing JSON escapes too."""
    from mail_pipeline import exports
    store.execute("UPDATE subscriptions SET list = 'n\"ews\\ ✓\t' WHERE email = 'ann@example.com'")
    store.execute("INSERT INTO subscriptions SELECT * REPLACE ('zé \"x\"' AS list) FROM subscriptions"
                  " WHERE email = 'dee@example.com'")
    written = {}
    for name, few_lists in (("few", 10.0), ("every", 0.0)):
        monkeypatch.setattr(exports, "FEW_LISTS", few_lists)
        assert (exports._memberships(store) is exports._MEMBERSHIPS_FEW_LISTS) == (name == "few")
        written[name] = export(store, build_export({}), tmp_path / f"{name}.csv").path.read_bytes()
    assert written["few"] == written["every"]
    lists = {row["email"]: json.loads(row["lists"])
             for row in csv.DictReader(io.StringIO(written["few"].decode()))}
    assert lists["ann@example.com"] == {'n"ews\\ ✓\t': "confirmed"}
    assert lists["dee@example.com"] == {"offers": "unconfirmed", 'zé "x"': "unconfirmed"}
    assert lists["cy@example.com"] == {}


HOSTILE = ['=HYPERLINK("http://evil","x")', "+1", "-2", "@SUM(A1)", "\tcmd", "\rcmd", "'=already",
           "plain", "a=b"]


def test_the_formula_guard_on_hostile_values(tmp_path):
    con = duckdb.connect()
    con.execute(SCHEMA)
    for i, name in enumerate(HOSTILE):
        con.execute("INSERT INTO subscribers (email, name, status, attributes, created_at, updated_at)"
                    " VALUES (?, ?, 'enabled', '{}', now(), now())", [f"u{i}@example.com", name])
    written = export(con, build_export({}), tmp_path / "out.csv")
    names = [row["name"] for row in csv.DictReader(open(written.path, encoding="utf-8", newline=""))]
    assert names == ["'" + n if n[0] in "=+-@\t\r'" else n for n in HOSTILE]
    # JSON Lines and Parquet are data, not spreadsheets: no guard there.
    jsonl = export(con, build_export({"format": "jsonl"}), tmp_path / "out.jsonl")
    assert [json.loads(line)["name"] for line in jsonl.path.read_text().splitlines()] == HOSTILE


NAMES = st.one_of(st.sampled_from(HOSTILE[:4] + ["'=x", "''+y", "Ann", "", "José Ñ", '"q"', "a,b"]),
                  st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Zs", "Zl", "Zp"]),
                          max_size=6))
ROWS = st.lists(st.tuples(st.integers(0, 30), NAMES, st.sampled_from(["", "enabled", "disabled", "blocklisted"]),
                          st.sampled_from(["", "a", "b; c", '"x, y"']), st.sampled_from(["", "html", "text"]),
                          st.sampled_from(["", '{"k": 1}', '{"n": null, "s": "=1"}']),
                          st.sampled_from(["news", "offers"]),
                          st.sampled_from(["", "confirmed", "unsubscribed", "bounced"])),
                max_size=15)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS)
def test_export_import_export_is_the_identity(tmp_path, mail_home, monkeypatch, rows):
    shutil.rmtree(mail_home, ignore_errors=True)
    path = tmp_path / "gen.csv"
    for email_no, name, status, tags, fmt, attributes, listname, sub in rows:  # one import per row
        out = io.StringIO()
        csv.writer(out).writerows([["email", "name", "status", "tags", "email_format", "attributes"],
                                   [f"p{email_no}@example.com", name, sub or status, tags, fmt, attributes]])
        path.write_text(out.getvalue(), encoding="utf-8")
        run_import(path, lists=[listname], overwrite=True, overwrite_what={"status": True})
    first = tmp_path / "first.csv"
    con = duckdb.connect(str(home.database_path())) if home.database_path().exists() else duckdb.connect()
    con.execute(SCHEMA)
    export(con, build_export({}), first)
    con.close()
    monkeypatch.setenv("MAIL_PIPELINE_HOME", str(tmp_path / "restored"))
    shutil.rmtree(tmp_path / "restored", ignore_errors=True)
    _, stats = run_import(first)  # into an empty store
    assert stats["subscribers"]["failed"] == 0
    con = duckdb.connect(str(home.database_path()))
    second = tmp_path / "second.csv"
    export(con, build_export({}), second)
    con.close()
    assert second.read_bytes() == first.read_bytes()
    monkeypatch.setenv("MAIL_PIPELINE_HOME", str(mail_home))


def test_bad_export_options_are_refused_in_one_sentence():
    for fields, message in [({"format": "xml"}, "invalid format 'xml'"),
                            ({"format": "parquet", "gzip": True}, "Parquet files are compressed already"),
                            ({"status": ["gone"]}, "invalid status 'gone'"),
                            ({"cold_days": 0}, "invalid cold_days"), ({"colour": 1}, "unknown option 'colour'")]:
        with pytest.raises(MailPipelineError, match=message):
            build_export(fields)


def test_export_command_is_a_run_with_its_document(mail_home, write_csv):
    assert cli("import", str(write_csv("email\nann@example.com\n")), "--list", "news", home=mail_home).returncode == 0
    out = mail_home.parent / "x.jsonl.gz"
    result = cli("export", "--list", "news", "--format", "jsonl", "--gzip", "--out", str(out), "--json",
                 home=mail_home)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["state"] == "finished" and document["rows"] == 1 and document["path"] == str(out)
    assert document["filters"]["lists"] == ["news"] and len(document["sha256"]) == 64
    assert json.loads(gzip.decompress(out.read_bytes()))["email"] == "ann@example.com"
    refused = cli("export", "--status", "gone", home=mail_home)
    assert refused.returncode == 2 and refused.stderr.startswith("error: invalid status 'gone'")


def test_named_exports_refresh_when_the_subscriber_table_changes(tmp_path, write_csv, monkeypatch):
    declared = tmp_path / "exports.toml"
    declared.write_text('[news_only]\nlists = ["news"]\nformat = "csv"\n')
    named = named_exports.load(declared)
    assert list(named) == ["news_only"]
    from assets.exports import named_export_asset
    from assets.imports import subscribers
    from assets.resources import StoreResource
    asset = named_export_asset("news_only", named["news_only"])
    run_import(write_csv("email\nann@example.com\n"), lists=["news"])
    with dg.instance_for_test() as instance:
        defs = dg.Definitions(assets=[subscribers, asset], resources={"store": StoreResource()})
        selection = dg.AssetSelection.assets(asset)
        idle = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
        assert idle.total_requested == 0  # nothing upstream yet
        # The subscriber table is materialised (an import ran): the named export is requested.
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="subscribers"))
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                                   cursor=idle.cursor)
        assert result.get_requested_partitions(asset.key) == {None}
        materialized = dg.materialize([asset], instance=instance, resources={"store": StoreResource()},
                                      selection=[asset])
        metadata = materialized.get_asset_materialization_events()[0].materialization.metadata
        assert metadata["row_count"].value == 1 and len(metadata["sha256"].value) == 64
        assert metadata["path"].value == str(home.exports_dir() / "named" / "news_only.csv")


def test_a_bad_named_export_is_refused_naming_it(tmp_path):
    declared = tmp_path / "exports.toml"
    declared.write_text('[Bad-Name]\nformat = "csv"\n')
    with pytest.raises(MailPipelineError, match="named export 'Bad-Name'"):
        named_exports.load(declared)
    declared.write_text('[ok]\nformat = "xls"\n')
    with pytest.raises(MailPipelineError, match="named export 'ok' .*invalid format 'xls'"):
        named_exports.load(declared)


def test_review_findings_stay_fixed(mail_home, write_csv, tmp_path):
    # A lists cell with a null status fails its row, not the import.
    path = write_csv('email,lists\na@example.com,"{""x"": null}"\nb@example.com,"{""x"": ""confirmed""}"\n')
    import_id, stats = run_import(path)
    assert (stats["subscribers"]["failed"], stats["subscribers"]["added"]) == (1, 1)
    # Tags that only look like a JSON array are separated text.
    run_import(write_csv('email,tags\nt@example.com,"[vip], gold"\nu@example.com,[beta]\n', name="t.csv"))
    con = duckdb.connect(str(home.database_path()))
    assert con.execute("SELECT email, tags FROM subscribers WHERE email IN ('t@example.com', 'u@example.com')"
                       " ORDER BY email").fetchall() == [("t@example.com", ["[vip]", "gold"]),
                                                         ("u@example.com", ["[beta]"])]
    con.close()
    # An export never overwrites the home's own files.
    refused = cli("export", "--out", str(home.database_path()), home=mail_home)
    assert refused.returncode == 1 and "only exports/ may be written" in refused.stderr
    assert duckdb.connect(str(home.database_path()), read_only=True).execute(
        "SELECT count(*) FROM subscribers").fetchall() == [(3,)]
    with pytest.raises(MailPipelineError, match="cold_days"):
        build_export({"cold_only": True, "cold_days": 99999999999})
    # A bad exports.toml does not stop imports from the command line.
    bad = tmp_path / "bad.toml"
    bad.write_text('[x]\nformat = "xml"\n')
    import os
    env_before = os.environ.get("MAIL_PIPELINE_EXPORTS")
    os.environ["MAIL_PIPELINE_EXPORTS"] = str(bad)
    try:
        result = cli("import", str(write_csv("email\nz@example.com\n", name="z.csv")), home=mail_home)
    finally:
        os.environ.pop("MAIL_PIPELINE_EXPORTS")
        if env_before:
            os.environ["MAIL_PIPELINE_EXPORTS"] = env_before
    assert result.returncode == 0, result.stderr
    assert "warning: named export 'x'" in result.stderr

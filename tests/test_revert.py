"""Undoing an import (issue 16): before-images, provenance and `imports revert`."""
import shutil

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mail_pipeline import exports, home, provenance, revert, store
from mail_pipeline.errors import MailPipelineError
from tests.helpers import cli, query, run_import
from tests.test_properties import (EFFECT_HEADER, EFFECT_OPTIONS, EFFECT_ROWS, SETTINGS, UNSUBSCRIBED,
                                   _write_rows)


def export_csv(folder) -> bytes:
    """The whole store as `mail-pipeline export --format csv` writes it."""
    with exports.opened(home.database_path()) as con:
        written = exports.export(con, exports.build_export({"format": "csv"}), folder / "all.csv")
    return written.path.read_bytes()


def revert_core(import_id: str, **kwargs) -> dict:
    with store.writer(home.database_path()) as con:
        return revert.revert(con, import_id, **kwargs)


def stored() -> tuple:
    """Everything the store holds of subscribers, provenance and times included."""
    return (query("SELECT * FROM subscribers ORDER BY email"),
            query("SELECT * FROM subscriptions ORDER BY email, list"))


def without_times(data: bytes) -> list[list[str]]:
    """An export's rows less created_at and updated_at (a re-run happens at another moment)."""
    import csv
    import io
    return [row[:-2] for row in csv.reader(io.StringIO(data.decode("utf-8")))]


@SETTINGS
@given(earlier=st.lists(st.tuples(EFFECT_ROWS, EFFECT_OPTIONS), min_size=1, max_size=2),
       rows=EFFECT_ROWS, options=EFFECT_OPTIONS)
@example(earlier=[([UNSUBSCRIBED], {"lists": ["news"]})], rows=[UNSUBSCRIBED],
         options={"lists": ["news"], "subscribe_unsubscribed": True, "unsubscribe_others": True})
def test_a_revert_gives_back_the_store_byte_for_byte_and_a_rerun_the_same_result(
        tmp_path, mail_home, earlier, rows, options):
    shutil.rmtree(mail_home, ignore_errors=True)
    shutil.rmtree(tmp_path / "x", ignore_errors=True)
    for number, (content, earlier_options) in enumerate(earlier):  # a store in some state
        _write_rows(tmp_path / f"earlier{number}.csv", EFFECT_HEADER, content)
        run_import(tmp_path / f"earlier{number}.csv", **earlier_options)
    _write_rows(tmp_path / "gen.csv", EFFECT_HEADER, rows)
    before, before_rows = export_csv(tmp_path / "x" / "before"), stored()
    import_id, first = run_import(tmp_path / "gen.csv", **options)
    after_first = export_csv(tmp_path / "x" / "first")
    revert_core(import_id)
    assert export_csv(tmp_path / "x" / "reverted") == before
    assert stored() == before_rows  # provenance and updated_at included
    assert query("SELECT count(*) FROM changes WHERE import_id = ?", [import_id]) == [(0,)]
    _, again = run_import(tmp_path / "gen.csv", **options)
    assert again["subscribers"] == first["subscribers"]
    assert again.get("unsubscribed_others") == first.get("unsubscribed_others")
    assert without_times(export_csv(tmp_path / "x" / "again")) == without_times(after_first)


@SETTINGS
@given(earlier=EFFECT_ROWS, a=st.tuples(EFFECT_ROWS, EFFECT_OPTIONS), b=st.tuples(EFFECT_ROWS, EFFECT_OPTIONS))
def test_a_refused_revert_changes_nothing_and_reverting_newest_first_always_works(
        tmp_path, mail_home, earlier, a, b):
    shutil.rmtree(mail_home, ignore_errors=True)
    shutil.rmtree(tmp_path / "x", ignore_errors=True)
    _write_rows(tmp_path / "earlier.csv", EFFECT_HEADER, earlier)
    run_import(tmp_path / "earlier.csv", lists=["news", "offers"])
    before = export_csv(tmp_path / "x" / "before")
    ids = []
    for name, (rows, options) in (("a", a), ("b", b)):
        _write_rows(tmp_path / f"{name}.csv", EFFECT_HEADER, rows)
        ids.append(run_import(tmp_path / f"{name}.csv", **options)[0])
    first, second = ids
    images = query("SELECT * FROM changes ORDER BY ALL"), query("SELECT * FROM changed_subscriptions ORDER BY ALL")
    now = stored()
    try:
        revert_core(first)  # fine when the second import changed none of the same subscribers
        reverted_first = True
    except MailPipelineError as refused:
        assert f"later imports changed the same subscribers again: import {second} (" in str(refused)
        assert stored() == now
        assert (query("SELECT * FROM changes ORDER BY ALL"),
                query("SELECT * FROM changed_subscriptions ORDER BY ALL")) == images
        reverted_first = False
    revert_core(second)
    if not reverted_first:
        revert_core(first)
    assert export_csv(tmp_path / "x" / "after") == before


def test_provenance_names_the_import_that_created_and_last_changed_each_row(write_csv):
    first, _ = run_import(write_csv("email,name\na@example.com,Ann\nb@example.com,Bo\n"), lists=["news"])
    second, _ = run_import(write_csv("email,name\na@example.com,Anna\n", "b.csv"), lists=["news"],
                           overwrite=True)
    rows = query("SELECT email, created_by, updated_by, updated_by_at IS NOT NULL FROM subscribers"
                 " ORDER BY email")
    assert rows == [("a@example.com", first, second, True), ("b@example.com", first, first, True)]
    assert query("SELECT email, created_by, updated_by FROM subscriptions ORDER BY email") == [
        ("a@example.com", first, first), ("b@example.com", first, first)]


def test_only_rows_a_batch_changed_keep_before_images(write_csv):
    path = write_csv("email,name\na@example.com,Ann\nb@example.com,Bo\n")
    first, _ = run_import(path, lists=["news"])
    second, stats = run_import(write_csv("email,name\na@example.com,Anna\nb@example.com,Bo\n", "b.csv"),
                               lists=["news"], overwrite=True)
    assert stats["subscribers"]["updated"] == 2
    assert query("SELECT import_id, email, existed, name FROM changes ORDER BY import_id, email") == [
        (second, "a@example.com", True, "Ann")]
    # The subscribers the first import created carry its batch, in place of a row each.
    assert query("SELECT email, created_by, created_batch FROM subscribers ORDER BY email") == [
        ("a@example.com", first, 0), ("b@example.com", first, 0)]
    assert query("SELECT created_by, created_batch FROM changes") == [(first, 0)]  # (a's copy)
    assert query("SELECT import_id, email, list FROM changed_subscriptions") == [
        (second, "a@example.com", "news")]


def test_a_revert_refuses_when_a_later_import_changed_the_same_subscribers(tmp_path, write_csv):
    first, _ = run_import(write_csv("email,name\na@example.com,Ann\nb@example.com,Bo\n"), lists=["news"])
    second, _ = run_import(write_csv("email,name\na@example.com,Anna\n", "b.csv"), lists=["news"],
                           overwrite=True)
    before, images = stored(), query("SELECT * FROM changes ORDER BY import_id, email")
    with pytest.raises(MailPipelineError) as refused:
        revert_core(first)
    assert str(refused.value) == (
        f"import {first} cannot be reverted: later imports changed the same subscribers again: "
        f"import {second} (1 subscriber); revert those first (mail-pipeline imports revert {second})")
    assert stored() == before and query("SELECT * FROM changes ORDER BY import_id, email") == images
    revert_core(second)
    revert_core(first)
    assert stored() == ([], [])


def test_a_revert_cut_short_resumes_to_the_same_result(tmp_path, write_csv):
    run_import(write_csv("email,name\na@example.com,Ann\nb@example.com,Bo\n"), lists=["news"])
    before = export_csv(tmp_path / "before")
    rows = "".join(f"{c}@example.com,N{c}\n" for c in "abcdef")
    import_id, _ = run_import(write_csv("email,name\n" + rows, "b.csv"), lists=["news", "offers"],
                              overwrite=True, batch_size=2)

    def crash(progress: revert.Progress) -> None:
        if progress.batch == 1:
            raise KeyboardInterrupt  # as a kill would, between two batches
    with pytest.raises(KeyboardInterrupt):
        revert_core(import_id, on_progress=crash)
    assert query("SELECT count(*) FROM revert_batches WHERE import_id = ?", [import_id]) == [(1,)]
    assert revert_core(import_id)["batches_reverted"] == 3
    assert export_csv(tmp_path / "after") == before
    assert revert_core(import_id) == {"subscribers_removed": 0, "subscribers_restored": 0,
                                      "batches_reverted": 3}  # nothing applied twice


def test_forgetting_an_imports_before_images(write_csv):
    import_id, _ = run_import(write_csv("email\na@example.com\n"), lists=["news"])
    with store.writer(home.database_path()) as con:
        assert revert.forget(con, [import_id]) == 1
        assert revert.plan(con, import_id)["subscribers_removed"] == 0


def test_a_forgotten_import_stays_forgotten_when_a_later_one_is_reverted(write_csv):
    # The later import's copy of the subscriber names the batch that created it: forgetting the
    # first import clears that mark there too, so putting the copy back cannot make the first
    # import revertable again.
    first, _ = run_import(write_csv("email,name\na@example.com,Ann\n"), lists=["news"])
    second, _ = run_import(write_csv("email,name\na@example.com,Anna\n", "b.csv"), lists=["news"],
                           overwrite=True)
    assert query("SELECT import_id, created_by, created_batch FROM changes") == [(second, first, 0)]
    with store.writer(home.database_path()) as con:
        assert revert.forget(con, [first]) == 1
    assert query("SELECT created_batch FROM changes") == [(None,)]
    assert revert_core(second) == {"subscribers_removed": 0, "subscribers_restored": 1,
                                   "batches_reverted": 1}
    assert query("SELECT email, name, created_by, created_batch FROM subscribers") == [
        ("a@example.com", "Ann", first, None)]
    with store.writer(home.database_path()) as con:
        assert revert.plan(con, first)["batches"] == 0
    assert revert_core(first) == {"subscribers_removed": 0, "subscribers_restored": 0,
                                  "batches_reverted": 0}
    assert query("SELECT count(*) FROM subscribers") == [(1,)]


def test_an_import_that_noted_its_new_subscribers_as_rows_still_reverts(tmp_path, write_csv):
    # What earlier versions kept for a subscriber a batch created: a row in `changes` with
    # `existed` false, and no mark on the subscriber.
    import_id, _ = run_import(write_csv("email\na@example.com\nb@example.com\n"), lists=["news"])
    with store.writer(home.database_path()) as con:
        con.execute("INSERT INTO changes (import_id, batch, email, existed, changed_at)"
                    " SELECT created_by, created_batch, email, false, updated_by_at FROM subscribers")
        con.execute("UPDATE subscribers SET created_batch = NULL")
        plan = revert.plan(con, import_id)
    assert (plan["batches"], plan["subscribers_removed"], plan["removed"]) == (
        1, 2, ["a@example.com", "b@example.com"])
    assert revert_core(import_id)["subscribers_removed"] == 2
    assert stored() == ([], [])


def test_a_store_from_before_the_mark_is_read_without_being_migrated(write_csv):
    # `imports revert --dry-run` and `subscribers show` read the store read-only: a store an
    # earlier version wrote has no `created_batch` column, and is not given one by a read.
    import_id, _ = run_import(write_csv("email\na@example.com\n"), lists=["news"])
    with store.writer(home.database_path()) as con:
        con.execute("INSERT INTO changes (import_id, batch, email, existed, changed_at)"
                    " SELECT created_by, created_batch, email, false, updated_by_at FROM subscribers")
        con.execute("ALTER TABLE subscribers DROP COLUMN created_batch")
    with store.reader(home.database_path()) as con:
        assert revert.plan(con, import_id)["removed"] == ["a@example.com"]
        assert [h["kind"] for h in provenance.show(con, "a@example.com")["history"]] == ["added"]
        assert not store.marks_creations(con)


# --- the command line and the Dagster runs ------------------------------------------------------

def _json(result) -> dict:
    import json
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _export_cli(mail_home, tmp_path, name: str) -> bytes:
    out = tmp_path / f"{name}.csv"
    assert cli("export", "--format", "csv", "--out", str(out), "--json", home=mail_home).returncode == 0
    return out.read_bytes()


def _revert_runs(mail_home) -> list:
    import dagster as dg
    from service import jobs
    inst = jobs.instance()
    try:
        return [(r.status, r.tags) for r in inst.get_runs(dg.RunsFilter(job_name="revert_job"))]
    finally:
        inst.dispose()


def test_imports_revert_takes_an_import_back_as_a_run_of_its_own(tmp_path, mail_home, write_csv):
    a = write_csv("email,name,tags\nann@example.com,Ann,x\nbo@example.com,Bo,\n")
    b = write_csv("email,name,tags\nann@example.com,Wrong,y\ncy@example.com,Cy,\n", "b.csv")
    first = _json(cli("import", str(a), "--list", "news", "--json", home=mail_home))["id"]
    before = _export_cli(mail_home, tmp_path, "before")
    second = _json(cli("import", str(b), "--list", "news", "--overwrite", "--replace-tags",
                       "--unsubscribe-others", "--json", home=mail_home))
    assert second["stats"]["unsubscribed_others"] == 1  # bo
    wrong = _export_cli(mail_home, tmp_path, "wrong")

    shown = _json(cli("subscribers", "show", "ANN@example.com", "--json", home=mail_home))
    assert shown["subscriber"]["created_by"] == first and shown["subscriber"]["updated_by"] == second["id"]
    assert [(h["import_id"], h["kind"]) for h in shown["history"]] == [(second["id"], "updated"),
                                                                      (first, "added")]
    assert shown["history"][0]["changed"] == {"name": ["Ann", "Wrong"], "tags": [["x"], ["y"]]}
    bo = _json(cli("subscribers", "show", "bo@example.com", "--json", home=mail_home))
    assert bo["history"][0]["kind"] == "unsubscribed"
    assert bo["history"][0]["changed"] == {"lists.news": ["unconfirmed", "unsubscribed"]}

    # refused: a later import changed the same subscribers; nothing changes, no run is made
    refused = cli("imports", "revert", first, home=mail_home)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert f"later imports changed the same subscribers again: import {second['id']} (2 subscribers)" \
        in refused.stderr
    assert _export_cli(mail_home, tmp_path, "refused") == wrong and _revert_runs(mail_home) == []

    dry = _json(cli("imports", "revert", second["id"], "--dry-run", "--json", home=mail_home))
    assert (dry["subscribers_removed"], dry["subscribers_restored"], dry["removed"]) == (
        1, 2, ["cy@example.com"])
    assert _export_cli(mail_home, tmp_path, "dry") == wrong and _revert_runs(mail_home) == []

    done = _json(cli("imports", "revert", second["id"], "--json", home=mail_home))
    assert done["import"]["state"] == "reverted" and done["import"]["reverted_at"]
    assert _export_cli(mail_home, tmp_path, "after") == before
    [(status, tags)] = _revert_runs(mail_home)
    assert status.value == "SUCCESS" and tags["dagster/partition"] == second["id"]
    assert tags["mail_pipeline/import_run"] == second["run_id"]
    listed = _json(cli("imports", "--json", home=mail_home))["data"]
    assert {d["id"]: d["state"] for d in listed} == {first: "finished", second["id"]: "reverted"}

    again = cli("imports", "revert", second["id"], home=mail_home)
    assert again.returncode == 2 and "was reverted already on" in again.stderr
    assert cli("imports", "resume", second["id"], home=mail_home).returncode == 2
    assert _json(cli("imports", "revert", first, "--json", home=mail_home))["import"]["state"] == "reverted"
    assert query("SELECT count(*) FROM subscribers") == [(0,)]


def test_a_purged_import_cannot_be_reverted(tmp_path, mail_home, write_csv):
    from assets.definitions import defs
    from service import jobs
    import_id = _json(cli("import", str(write_csv("email\nann@example.com\n")), "--list", "news",
                          "--json", home=mail_home))["id"]
    inst = jobs.instance()
    try:
        purged = defs.resolve_job_def("retention_job").execute_in_process(
            instance=inst, run_config={"ops": {"purge_old_imports": {"config": {"days": 0}}}})
    finally:
        inst.dispose()
    assert purged.output_for_node("purge_old_imports") == 1
    assert query("SELECT count(*) FROM changes") == [(0,)]
    refused = cli("imports", "revert", import_id, home=mail_home)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert (f"import {import_id} was purged on " in refused.stderr
            and "its before-images are gone, so it cannot be reverted" in refused.stderr)


def test_a_running_import_cannot_be_reverted(tmp_path, mail_home, write_csv):
    import_id = _json(cli("import", str(write_csv("email\nann@example.com\n")), "--list", "news",
                          "--draft", "--json", home=mail_home))["id"]
    refused = cli("imports", "revert", import_id, home=mail_home)
    assert refused.returncode == 2
    assert f"import {import_id} is draft: only an import that has ended" in refused.stderr


def test_a_revert_killed_midway_resumes_to_the_same_result(tmp_path, mail_home, write_csv):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    base = write_csv("email,name\n" + "".join(f"s{i}@example.com,Old{i}\n" for i in range(0, 400, 2)))
    _json(cli("import", str(base), "--list", "news", "--json", home=mail_home))
    before = _export_cli(mail_home, tmp_path, "before")
    rows = write_csv("email,name\n" + "".join(f"s{i}@example.com,New{i}\n" for i in range(400)), "b.csv")
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"lists": ["news"], "overwrite": True, "batch_size": 1}))
    import_id = _json(cli("import", str(rows), "--params", str(params), "--json", home=mail_home))["id"]
    log = mail_home / "imports" / import_id / "logs" / "log.txt"
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "imports", "revert", import_id],
                            env=dict(os.environ, MAIL_PIPELINE_HOME=str(mail_home)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while "reverted batch 3/" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    [(done,)] = query("SELECT count(*) FROM revert_batches WHERE import_id = ?", [import_id])
    assert 3 <= done < 400
    assert _json(cli("imports", "show", import_id, "--json", home=mail_home))["state"] == "finished"
    resumed = _json(cli("imports", "revert", import_id, "--json", home=mail_home))
    assert resumed["import"]["state"] == "reverted"
    assert query("SELECT count(*) FROM revert_batches WHERE import_id = ?", [import_id]) == [(400,)]
    assert _export_cli(mail_home, tmp_path, "after") == before


def test_subscribers_show_and_a_dry_run_read_without_dagster(tmp_path, mail_home, write_csv):
    from tests.test_reading import _loaded
    import_id = _json(cli("import", str(write_csv("email\nann@example.com\n")), "--list", "news",
                          "--json", home=mail_home))["id"]
    for command in (["subscribers", "show", "ann@example.com"], ["imports", "revert", import_id, "--dry-run"]):
        probe = _loaded(*command, "--json", home=mail_home)
        assert probe["code"] == 0 and probe["loaded"] == ["duckdb"], command
    missing = cli("subscribers", "show", "nobody@example.com", home=mail_home)
    assert missing.returncode == 2 and missing.stderr == "error: no subscriber 'nobody@example.com' in the store\n"


def test_an_import_from_before_the_before_images_is_refused(write_csv):
    import_id, _ = run_import(write_csv("email\nann@example.com\n"), lists=["news"])
    with store.writer(home.database_path()) as con:  # as an older version left it
        con.execute("UPDATE import_batches SET before_images = NULL")
    with pytest.raises(MailPipelineError, match="kept no before-images, so it cannot be reverted"):
        revert_core(import_id)
    assert query("SELECT count(*) FROM subscribers") == [(1,)]

"""Undoing an import (issue 16): before-images, provenance and `imports revert`."""
import shutil

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mail_pipeline import exports, home, revert, store
from mail_pipeline.errors import MailPipelineError
from tests.helpers import query, run_import
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
        (first, "a@example.com", False, None), (first, "b@example.com", False, None),
        (second, "a@example.com", True, "Ann")]
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

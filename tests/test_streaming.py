"""Large files are read in chunks: the outcome must not depend on where the chunks fall."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mail_pipeline import home, pipeline, staging
from mail_pipeline.options import build
from mail_pipeline.staging import _LineEndings
from tests.helpers import categories, failing_files, log_lines, query


def import_in_chunks(path, rows_per_chunk, **options):
    """run_import, with the validated stage reading `rows_per_chunk` rows at a time."""
    folder = pipeline.Folder.of(home.new_import_id())
    pipeline.stage_raw(folder, build(options), path)
    pipeline.validate_import(folder, rows_per_chunk=rows_per_chunk)
    pipeline.merge_import(folder, home.database_path())
    return folder, pipeline.write_import_logs(folder)


def test_a_crlf_split_across_read_chunks_is_one_line_end():
    ends = _LineEndings()
    for chunk in (b"a\r\nb\r", b"\nc\r\n"):
        ends.feed(chunk)
    assert (ends.kind(), ends.lines()) == ("crlf", 3)


@given(st.binary().map(lambda b: bytes(b"ab\r\n"[x % 4] for x in b)),
       st.lists(st.integers(min_value=0, max_value=60), max_size=4))
def test_line_ends_are_counted_the_same_wherever_the_chunks_are_cut(data, cuts):
    """Counted in chunks as a whole: CRLF pairs, lone LFs, lone CRs (a CRLF may straddle a cut)."""
    cuts = sorted(min(c, len(data)) for c in cuts)
    ends = _LineEndings()
    for start, stop in zip([0, *cuts], [*cuts, len(data)]):
        ends.feed(data[start:stop])
    crlf = data.count(b"\r\n")
    assert (ends.crlf, ends.lf, ends.cr) == (crlf, data.count(b"\n") - crlf, data.count(b"\r") - crlf)


def test_a_failed_write_while_staging_fails_the_stage_and_leaves_no_file(tmp_path, monkeypatch):
    """The copy is written by a thread of its own: its error still reaches the stage."""
    source = tmp_path / "in.csv"
    source.write_bytes(b"email\n" + b"a@example.com\n" * 200_000)  # several chunks
    options = staging.preview(source, build({})).options
    # the disk fills up at the copy's second chunk
    failing_files(monkeypatch, staging, "write", OSError(28, "No space left on device"), at=2)
    dest = tmp_path / "staged" / "source.csv"
    dest.parent.mkdir()
    with pytest.raises(OSError, match="No space left"):
        staging.stage_source(source, dest, options)
    assert list(dest.parent.iterdir()) == []


def test_duplicates_and_failures_across_chunks_match_a_single_chunk(write_csv, monkeypatch):
    from mail_pipeline import reuse
    monkeypatch.setattr(reuse, "fetch", lambda *args: False)  # validate the same file each time
    rows = ["email,name"]
    for i in range(40):
        rows.append(f"u{i % 15}@example.com,N{i}" if i % 7 else f"bad {i},N{i}")
    path = write_csv("\n".join(rows) + "\n")
    outcomes = []
    for size in (1, 4, 1000):  # the chunk boundary must not matter
        folder, stats = import_in_chunks(path, size, lists=[f"list{size}"])
        assert len(pipeline.parts(folder.valid)) == (40 if size == 1 else 10 if size == 4 else 1)
        outcomes.append((categories(stats), log_lines(folder.import_id, "skipped_duplicate"),
                         log_lines(folder.import_id, "failed")))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    counts, duplicates, failed = outcomes[0]
    # Per list: the first row of each address is added; later rows of it are duplicates.
    assert counts == {"added": 15, "failed": 6, "skipped_duplicate": 19}
    assert duplicates[:2] == ["u1@example.com", "u2@example.com"]  # the 17th and 18th records
    assert failed[1].startswith("bad 0,N0,")
    assert query("SELECT count(*) FROM subscribers") == [(15,)]


def test_a_file_duckdb_gives_up_on_midway_is_read_again_line_by_line(write_csv):
    # A stray quote far down the file: DuckDB's reader has handed out chunks before it fails.
    rows = ["email,name"] + [f"u{i}@example.com,N{i}" for i in range(30)] + ['x@example.com,"a"b']
    folder, stats = import_in_chunks(write_csv("\n".join(rows) + "\n"), 5, lists=["news"])
    assert categories(stats) == {"added": 30, "failed": 1}
    assert log_lines(folder.import_id, "failed")[1].endswith("unreadable record: unquoted value")


def test_the_same_file_imported_again_reuses_its_validated_frame(write_csv):
    from tests.helpers import run_import
    path = write_csv("email,name\na@x.com,A\nbad,B\na@x.com,A2\nb@x.com,B\n")
    first, stats = run_import(path, lists=["news"])
    second, again = run_import(path, lists=["news", "weekly"])  # merge options may differ
    third, _ = run_import(path, lists=["news"], date_format="dmy")  # a reading option may not
    reused = "reusing its validated rows"
    assert not any(reused in line for line in log_lines(first, "log"))
    assert any(reused in line for line in log_lines(second, "log"))
    assert not any(reused in line for line in log_lines(third, "log"))
    assert categories(stats) == {"added": 2, "failed": 1, "skipped_duplicate": 1}
    assert categories(again) == {"added": 2, "failed": 1, "skipped_duplicate": 1}  # added to weekly
    assert log_lines(second, "failed") == log_lines(first, "failed")


def test_a_batch_cut_short_leaves_no_outcomes_behind_when_batches_are_renumbered(write_csv, monkeypatch):
    # Batch 0 is rows 1-2 (row 2 fails), batch 1 rows 3-4 (row 3 fails). A crash after batch 1
    # wrote its outcomes, before its commit: the retry numbers batches from row 1, so b@x.com
    # falls in batch 2 and batch 1's file must not be counted again.
    import pytest
    from mail_pipeline import merge
    path = write_csv("email\na@x.com\nbad\nworse\nb@x.com\n")
    folder = pipeline.Folder.of(home.new_import_id())
    options = build({"lists": ["news"], "batch_size": 2})
    pipeline.stage_raw(folder, options, path)
    pipeline.validate_import(folder)
    original, calls = merge._apply, []

    def crash_in_second_batch(*args):
        calls.append(1)
        original(*args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after the outcome file, before the commit

    monkeypatch.setattr(merge, "_apply", crash_in_second_batch)
    with pytest.raises(KeyboardInterrupt):
        pipeline.merge_import(folder, home.database_path())
    monkeypatch.setattr(merge, "_apply", original)
    pipeline.merge_import(folder, home.database_path())
    stats = pipeline.write_import_logs(folder)
    assert categories(stats) == {"added": 2, "failed": 2}
    assert log_lines(folder.import_id, "added") == ["a@x.com", "b@x.com"]


def test_outcomes_of_an_earlier_version_are_upgraded_on_resume(write_csv):
    import polars as pl
    from mail_pipeline import merge
    path = write_csv("email\na@x.com\nb@x.com\nc@x.com\n")
    folder = pipeline.Folder.of(home.new_import_id())
    pipeline.stage_raw(folder, build({"lists": ["news"], "batch_size": 2}), path)
    pipeline.validate_import(folder)
    pipeline.merge_import(folder, home.database_path())
    first = merge.outcome_path(folder.outcomes, 0)
    pl.read_parquet(first).drop("email").write_parquet(first)  # as an earlier version wrote it
    pipeline.merge_import(folder, home.database_path())
    stats = pipeline.write_import_logs(folder)
    assert categories(stats) == {"added": 3}
    assert log_lines(folder.import_id, "added") == ["a@x.com", "b@x.com", "c@x.com"]

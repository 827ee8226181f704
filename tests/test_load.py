"""Load (issue 7), the short run: imports queued at once under the real daemon (`mail-pipeline
ui`), exports running meanwhile. Several import runs are in progress at once (the store's pool
holds steps, not runs); all finish, with no lock errors, and one writer at a time: the steps that
write the store (merges, store checks, exports) never overlap in the event log, and one process
at most holds DuckDB's lock on the store file. The store ends identical to importing the same
files one by one in the merge order (the order the `subscribers` steps took the store), and each
export holds the store as it stood between two consecutive merges. Whether the merge order was
the queue order is only reported. The long run is `python -m tests.load --workdir DIR`
(tests/load.py); docs/reliability.md gives its figures."""
import json

from tests.load import queued_load

IMPORTS = 10


def test_queued_imports_finish_one_at_a_time_and_match_running_them_in_order(tmp_path):
    # Three are queued before the UI starts: the daemon's first pass then finds several queued
    # runs (it used to start them all at once), and the first commands on the new home run
    # together (they used to break its Dagster storage).
    figures = queued_load(tmp_path / "load", imports=IMPORTS, rows=300, exports=2,
                          queued_before_ui=3, replay_alongside=True, seed=11)
    print(json.dumps({k: v for k, v in figures.items() if k.startswith("seconds")}))
    print(json.dumps({"merge_order_is_queue_order": figures["merge_order_is_queue_order"],
                      "merge_order_queue_positions": figures["merge_order_queue_positions"],
                      "max_import_runs_at_once": figures["runs"]["max_import_runs_at_once"],
                      "max_concurrent_writers": figures["max_concurrent_writers"],
                      "writers": figures["writers"], "lock_sampler": figures["lock_sampler"]}))
    summary = json.dumps({k: v for k, v in figures.items() if k != "comparison"}, default=str)
    assert not figures["timed_out"], summary
    assert figures["finished"] == IMPORTS, summary
    assert figures["lock_errors"] == 0, figures["lock_error_lines"]
    # One writer at a time: no two store-writing steps overlap, across all runs, and every import's
    # merge is among them (a check that saw no merge proves nothing).
    writers = figures["writers"]
    assert writers["max_concurrent"] == 1, writers["overlapping"]
    assert not writers["import_runs_without_merge"], summary
    assert {"subscribers", "store_integrity", "subscriber_export"} <= set(writers["step_keys"]), summary
    assert figures["lock_sampler"]["max_holders"] == {"duckdb_file": 1}, summary
    # The replay followed the order the merges took the store in (not necessarily the queue's).
    assert figures["replayed_in_merge_order"], summary
    # Each export finished and holds the store exactly as it was between two imports.
    assert figures["exports_ok"] == 2, figures["export_details"]
    assert figures["serial_finished"] == IMPORTS and figures["stats_equal"] == IMPORTS, summary
    tables = figures["comparison"]["tables"]
    assert figures["identical"], json.dumps(tables)
    assert tables["subscribers"]["rows"] == figures["subscribers"] > 0
    # Every clock timestamp (created_at, updated_at, updated_by_at) was matched to the batch
    # that wrote it, so none was left out.
    assert tables["subscribers"]["timestamps_from_batches"] == 3 * tables["subscribers"]["rows"]
    assert figures["comparison"]["clock_collisions"] == 0


def test_commands_started_together_on_a_new_home_all_work(mail_home):
    # The first commands on a home create its Dagster storage; six at once used to leave it with
    # two Alembic heads, so that they, and every command after them, failed.
    import os
    import subprocess
    import sys
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(mail_home))
    env.pop("DAGSTER_HOME", None)
    mail_home.mkdir(parents=True)  # (a home with nothing in it yet: reads need one to exist)
    procs = [subprocess.Popen([sys.executable, "-m", "service.cli", "imports", "--json"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0] * 6, [err[-300:] for _, err in results]
    after = subprocess.run([sys.executable, "-m", "service.cli", "imports", "--json"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert after.returncode == 0 and json.loads(after.stdout)["num_records"] == 0, after.stderr

"""The retention schedule: imports finished more than N days ago lose their logs and working
files (and partitions), keep their document, and say so when their logs are asked for."""
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from mail_pipeline import home, retention
from mail_pipeline.options import build
from tests.helpers import cli, execute


@pytest.fixture
def instance(mail_home, monkeypatch):
    from service import jobs as runs
    inst = runs.instance()  # the home's own instance, so the command line sees the same runs
    yield inst
    inst.dispose()


def test_due_counts_from_when_the_import_finished():
    now = datetime(2026, 11, 23, tzinfo=timezone.utc)
    finished = {"1": now - timedelta(days=8), "2": now - timedelta(days=6), "3": None}
    assert retention.due(finished, 7, now) == ["1"]


def test_the_retention_job_purges_finished_imports_and_keeps_their_documents(instance, write_csv, mail_home):
    from service import jobs as runs, state
    from assets.definitions import defs
    path = write_csv("email\nann@example.com\n")
    import_id, _ = runs.create_import(instance)
    assert execute(instance, import_id, build({"source": str(path), "lists": ["news"]})).success
    job = defs.resolve_job_def("retention_job")
    kept = job.execute_in_process(instance=instance, run_config={
        "ops": {"purge_old_imports": {"config": {"days": 7}}}})
    assert kept.output_for_node("purge_old_imports") == 0
    assert (home.import_dir(import_id) / "logs" / "added.txt").exists()
    purged = job.execute_in_process(instance=instance, run_config={
        "ops": {"purge_old_imports": {"config": {"days": 0}}}})
    assert purged.output_for_node("purge_old_imports") == 1
    folder = home.import_dir(import_id)
    assert sorted(p.name for p in folder.iterdir()) == ["import.json", "purged.json", "stats.json",
                                                       "validation.json"]
    assert import_id not in instance.get_dynamic_partitions("imports")
    document = state.document(state.records(), import_id)
    assert document["state"] == "finished" and document["stats"]["subscribers"]["added"] == 1
    assert state.all_import_ids(state.records()) == [import_id]  # still listed
    result = cli("imports", "logs", import_id, "added", home=mail_home)
    assert result.returncode == 2 and "its logs were purged on" in result.stderr
    assert result.stderr.count("\n") == 1


def test_the_schedule_runs_nightly_by_default():
    from assets.definitions import defs
    schedule = defs.resolve_schedule_def("retention_job_schedule")
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING

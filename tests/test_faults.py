"""Fault injection at CI size (issue 7): an import killed at each stage, on a full disk, or
behind another process holding the store ends, once resumed, exactly as an uninterrupted one.
The harness is `tests/faults.py`; `bench/reliability.py` runs it at 1M rows."""
import subprocess
import sys

import pytest

from mail_pipeline import store
from mail_pipeline.errors import MailPipelineError
from tests import faults

ROWS = 20_000  # 50 batches of 400 rows; 10,000 subscribers in the store beforehand


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One data set, template home and reference import for the module's tests."""
    return tmp_path_factory.mktemp("faults")


def _brief(figures: dict) -> str:
    return str({k: v for k, v in figures.items() if k not in ("trials", "cases")}) + "\n" + "\n".join(
        str(t) for t in figures.get("trials", figures.get("cases", [])) if not t.get("identical"))


def test_an_import_killed_at_each_stage_resumes_to_the_uninterrupted_result(workdir):
    # Killed just after it was created (before its run started), while validating and between
    # merge batches: each resumes, and nothing is lost or doubled. (The 1M-row run of
    # bench/reliability.py kills at random times, the logs stage included.)
    stages = ["created", "validating", "merging"]
    figures = faults.kill_and_resume(workdir, rows=ROWS, kills=len(stages), seed=11, stages=stages)
    assert figures["identical"] == len(stages), _brief(figures)
    assert figures["rows_lost"] == 0
    killed = [t["killed_in"]["stage"] for t in figures["trials"]]
    assert "finished before the kill" not in killed, killed
    merging = next(t for t in figures["trials"] if t["killed_in"]["stage"] == "merging")
    assert 0 < merging["committed_batches_at_kill"] < 50


def test_a_full_disk_fails_in_one_sentence_and_resumes_once_there_is_room(workdir):
    # The disk fills up between merge batches (bench/reliability.py also fills it while staging
    # and while validating).
    figures = faults.full_disk(workdir, rows=ROWS, seed=11, stages=("merging",))
    if figures.get("skipped"):
        pytest.skip(figures["skipped"])
    for case in figures["cases"]:
        assert case["exit"] == 1 and not case["traceback"] and case["stderr_lines"] == 1, case
        assert "no space left on the disk" in case["error"] and "imports resume 3" in case["error"]
        assert case["store_at_failure"]["consistent"], case["store_at_failure"]  # no half batch
        assert case["identical"] and case["rows_lost"] == 0, case
    [case] = figures["cases"]
    assert case["failed_in"]["stage"] == "merging", case
    assert case["committed_batches_at_failure"] > 0


def test_an_import_waits_while_another_process_holds_the_store(workdir):
    figures = faults.lock_held(workdir, rows=ROWS, seed=11, hold_seconds=2, modes=("read",))
    [case] = figures["cases"]
    assert case["exit"] == 0 and not case["ended_while_held"], case
    assert case["said_waiting_after"] is not None, case  # its log says for what it waits
    assert case["stage_while_held"]["stage"] == "waiting for the store", case
    assert case["identical"] and case["rows_lost"] == 0, case


def test_a_store_held_too_long_fails_in_one_sentence(tmp_path):
    path = tmp_path / "subscribers.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", faults._HOLD, str(path), "write"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        said = []
        with pytest.raises(MailPipelineError) as caught:
            store.connect(path, wait_seconds=1, on_wait=said.append)
    finally:
        holder.kill()
        holder.wait()
    assert len(said) == 1 and said[0].startswith(f"process {holder.pid} (")
    assert said[0].endswith(") to close the subscriber store")
    assert str(caught.value).startswith(f"the subscriber store is busy: process {holder.pid} ")
    store.connect(path).close()  # once it lets go, the store opens

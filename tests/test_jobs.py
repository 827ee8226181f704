"""Imports as jobs: pause, cancel and resume through real runs, and a killed import that resumes
to exactly the store an uninterrupted one gives."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mail_pipeline import home
from tests.helpers import cli, query

# Each test runs on the embedded instance and on a Postgres-backed one (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")


def _big_csv(path, rows: int = 20000):
    lines = ["email,name"] + [f"user{i}@example.com,User {i}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _start(mail_home, *args):
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(mail_home))
    return subprocess.Popen([sys.executable, "-m", "service.cli", "import", *map(str, args), "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_batches(n: int, proc, timeout: float = 120):
    progress = home.import_dir("1") / "progress.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if progress.exists():
            try:
                if json.loads(progress.read_text())["batch"] >= n:
                    return
            except ValueError:
                pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no progress")


def _wait_for_file(path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _files(root) -> dict:
    """Every file of the home but the Dagster instance's, with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and "dagster" not in p.relative_to(root).parts}


def _store():
    return (query("SELECT email, name, status, attributes, tags FROM subscribers ORDER BY email"),
            query("SELECT email, list, status FROM subscriptions ORDER BY email, list"))


@pytest.fixture
def params(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"lists": ["news"], "batch_size": 200}))  # 100 batches
    return path


def test_a_killed_import_resumes_to_exactly_the_uninterrupted_result(mail_home, tmp_path, params, monkeypatch):
    source = _big_csv(tmp_path / "big.csv")
    proc = _start(mail_home, source, "--params", params)
    _wait_for_batches(3, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _files(mail_home)
    shown = json.loads(cli("imports", "show", "1", "--json", home=mail_home).stdout)
    assert shown["state"] == "failed"  # its process is gone, on this host
    assert shown["error_message"].startswith("its process is gone (killed?); resume with:")
    assert cli("imports", "--json", home=mail_home).returncode == 0
    # Reading decided that, and wrote nothing: no file, and the run record still says STARTED.
    assert _files(mail_home) == before
    from service import jobs as runs, state
    inst = runs.instance()
    try:
        assert state.runs_of(state.records(), "1")[0].status == "STARTED"
    finally:
        inst.dispose()
    done_before = query("SELECT count(*) FROM import_batches")[0][0]
    assert 3 <= done_before < 100
    resumed = cli("imports", "resume", "1", "--json", home=mail_home)
    assert resumed.returncode == 0, resumed.stderr
    document = json.loads(resumed.stdout)
    assert document["state"] == "finished" and document["id"] == "1"
    assert document["stats"]["subscribers"]["added"] == 20000
    assert query("SELECT count(*), count(DISTINCT batch) FROM import_batches") == [(100, 100)]
    interrupted = _store()
    monkeypatch.setenv("MAIL_PIPELINE_HOME", str(tmp_path / "other"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # the reference on an embedded instance
    other = tmp_path / "other"
    result = cli("import", str(source), "--params", str(params), "--json", home=other)
    assert result.returncode == 0, result.stderr
    assert _store() == interrupted


def test_pause_then_resume_and_cancel_is_final(mail_home, tmp_path):
    # 400 small batches: the import is still running when the pause, a separate command, lands.
    params = tmp_path / "slow.json"
    params.write_text(json.dumps({"lists": ["news"], "batch_size": 50}))
    source = _big_csv(tmp_path / "big.csv")
    proc = _start(mail_home, source, "--params", params)
    _wait_for_batches(2, proc)
    paused = cli("imports", "pause", "1", "--json", home=mail_home)
    assert paused.returncode == 0, paused.stderr
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and json.loads(out)["state"] == "paused"
    assert query("SELECT count(*) FROM import_batches")[0][0] < 400
    again = cli("imports", "pause", "1", home=mail_home)
    assert again.returncode == 2 and "is paused: it cannot be paused" in again.stderr
    resumed = cli("imports", "resume", "1", "--json", home=mail_home)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["stats"]["subscribers"]["added"] == 20000
    # A finished import can be neither paused nor cancelled; a cancelled one does not resume.
    refused = cli("imports", "cancel", "1", home=mail_home)
    assert refused.returncode == 2 and "is finished: it cannot be cancelled" in refused.stderr
    proc = _start(mail_home, _big_csv(tmp_path / "other.csv"), "--params", params, "--list", "offers")
    _wait_for_file(home.import_dir("2") / "progress.json")
    assert cli("imports", "cancel", "2", home=mail_home).returncode == 0
    out, _ = proc.communicate(timeout=120)
    assert json.loads(out)["state"] == "cancelled"
    final = cli("imports", "resume", "2", home=mail_home)
    assert final.returncode == 2 and "is cancelled: only a paused or failed import resumes" in final.stderr


def test_a_draft_takes_appended_rows_and_starts_on_request(mail_home, write_csv):
    created = cli("import", str(write_csv("email\nann@example.com\n")), "--list", "news", "--draft",
                  "--json", home=mail_home)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["state"] == "draft"
    appended = cli("imports", "append", "1", str(write_csv("email\nbob@example.com\n", name="more.csv")),
                   "--json", home=mail_home)
    assert appended.returncode == 0 and json.loads(appended.stdout)["state"] == "draft"
    assert not home.database_path().exists()  # a draft writes nothing
    started = cli("imports", "start", "1", "--json", home=mail_home)
    assert started.returncode == 0, started.stderr
    document = json.loads(started.stdout)
    assert document["state"] == "finished" and document["stats"]["subscribers"]["added"] == 2
    for args, message in ((("imports", "append", "1", str(write_csv("email\n", name="x.csv"))), "is not a draft"),
                          (("imports", "start", "1"), "is not a draft")):
        refused = cli(*args, home=mail_home)
        assert refused.returncode == 2 and message in refused.stderr


def test_a_draft_starts_once_when_two_commands_start_it_together(mail_home, write_csv):
    created = cli("import", str(write_csv("email\nann@example.com\n")), "--draft", home=mail_home)
    assert created.returncode == 0, created.stderr
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(mail_home))
    starts = [subprocess.Popen([sys.executable, "-m", "service.cli", "imports", "start", "1", "--detach"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(3)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in starts]
    assert sum(code == 0 for code, _ in results) == 1, results
    for code, err in results:
        assert code == 0 or ("started by another command" in err or "is not a draft" in err), err
    from service import jobs as runs, state
    inst = runs.instance()
    try:
        assert len(state.runs_of(state.records(), "1")) == 1
    finally:
        inst.dispose()


def test_a_scheduled_import_starts_when_its_time_comes(mail_home, write_csv):
    import dagster as dg

    from mail_pipeline import drafts
    from mail_pipeline.options import build
    created = cli("import", str(write_csv("email\nann@example.com\n")), "--at", "2099-01-01 09:30",
                  "--list", "news", "--json", home=mail_home)
    assert created.returncode == 0, created.stderr
    document = json.loads(created.stdout)
    assert (document["state"], document["begins_at"]) == ("scheduled", "2099-01-01T09:30:00Z")
    from assets.definitions import defs
    from assets.sensors import scheduled_imports
    from service import jobs as runs, state
    inst = runs.instance()
    try:
        assert scheduled_imports(dg.build_sensor_context(instance=inst)).run_requests == []
        options = build(state.pending(state.records(), "1")["options"])
        runs.hold(inst, "1", options, "scheduled", drafts.parse_when("2001-01-01"))  # its time came
        [request] = scheduled_imports(dg.build_sensor_context(instance=inst)).run_requests
        assert request.tags["mail_pipeline/lists"] == "news"
        job = defs.resolve_job_def("import_job")
        assert job.execute_in_process(run_config=request.run_config, instance=inst,
                                      partition_key=request.partition_key, tags=request.tags).success
        assert state.document(state.records(), "1")["state"] == "finished"
        assert scheduled_imports(dg.build_sensor_context(instance=inst)).run_requests == []
    finally:
        inst.dispose()


def test_ctrl_c_pauses_and_a_cancel_reaches_an_import_waiting_for_the_store(mail_home, tmp_path):
    import duckdb
    params = tmp_path / "slow.json"
    params.write_text(json.dumps({"lists": ["news"], "batch_size": 50}))
    proc = _start(mail_home, _big_csv(tmp_path / "big.csv"), "--params", params)
    _wait_for_batches(2, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and json.loads(out)["state"] == "paused", err
    # Cancelled while it waits for a process outside Dagster (a duckdb shell) holding the store:
    # it says whom it waits for, and stops before merging anything.
    holder = duckdb.connect(str(home.database_path()))
    try:
        proc = _start(mail_home, _big_csv(tmp_path / "two.csv", 100), "--list", "other")
        shown = _wait_for_state("2", "scheduled", mail_home, proc, key="waiting_for")
        assert "to close the subscriber store" in shown["waiting_for"]
        assert cli("imports", "cancel", "2", home=mail_home).returncode == 0
    finally:
        holder.close()
    out, _ = proc.communicate(timeout=120)
    assert json.loads(out)["state"] == "cancelled"
    assert query("SELECT count(*) FROM subscriptions WHERE list = 'other'") == [(0,)]


def _wait_for_state(import_id: str, state: str, mail_home, proc, timeout: float = 120,
                    key: str = "state") -> dict:
    """The import's document once its state is `state` (and it has `key`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = cli("imports", "show", import_id, "--json", home=mail_home)
        document = json.loads(shown.stdout) if shown.returncode == 0 else {}
        if document.get("state") == state and key in document:
            return document
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"import {import_id} never {state}: {shown.stdout} {shown.stderr}")


def test_an_import_waits_as_scheduled_while_another_holds_the_store(mail_home, tmp_path):
    """Two command-line imports at once: the second waits for the store's pool, saying who holds
    it, and runs when the first is done; reading its state writes nothing."""
    params = tmp_path / "slow.json"
    params.write_text(json.dumps({"lists": ["news"], "batch_size": 100}))
    first = _start(mail_home, _big_csv(tmp_path / "big.csv"), "--params", params)
    _wait_for_batches(2, first)
    second = _start(mail_home, _big_csv(tmp_path / "two.csv", 100), "--list", "other")
    shown = _wait_for_state("2", "scheduled", mail_home, second, key="waiting_for")
    assert shown["waiting_for"].startswith("import 1 (run ")
    out, err = first.communicate(timeout=300)
    assert json.loads(out)["state"] == "finished", err
    out, err = second.communicate(timeout=300)
    assert json.loads(out)["state"] == "finished", err
    assert query("SELECT count(*) FROM subscriptions WHERE list = 'other'") == [(100,)]


def test_a_scheduled_import_can_be_cancelled_before_it_starts(mail_home, write_csv):
    import dagster as dg

    from assets.sensors import scheduled_imports
    from service import jobs as runs, state
    cli("import", str(write_csv("email\nann@example.com\n")), "--at", "2099-01-02", home=mail_home)
    cancelled = cli("imports", "cancel", "1", "--json", home=mail_home)
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["state"] == "cancelled"
    inst = runs.instance()
    try:  # its time has come, and it does not start
        record = state.pending(state.records(), "1")
        runs._set_pending(inst, "1", {**record, "begins_at": "2001-01-02T00:00:00Z"})
        assert scheduled_imports(dg.build_sensor_context(instance=inst)).run_requests == []
    finally:
        inst.dispose()

"""End to end through the real webserver and daemon (`mail-pipeline ui` on loopback), followed
with Dagster's GraphQL client: a queued (`--detach`) import and a file dropped into the inbox
both run to `finished`."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from dagster_graphql import DagsterGraphQLClient

from tests.helpers import cli

pytestmark = pytest.mark.usefixtures("backend")

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "samples", "subscribers.csv")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui(mail_home):
    port = _free_port()
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(mail_home))
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "ui", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            client._execute("{ version }")
            break
        except Exception:
            assert proc.poll() is None, "the UI stopped"
            time.sleep(1)
    else:
        raise AssertionError("the UI did not come up")
    yield client
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _until_success(client, run_id: str, timeout: float = 180) -> None:
    from dagster import DagsterRunStatus
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            break
        time.sleep(1)
    assert status == DagsterRunStatus.SUCCESS, status


def test_queued_and_dropped_imports_run_under_the_daemon(ui, mail_home):
    queued = cli("import", SAMPLE, "--list", "newsletter", "--detach", "--json", home=mail_home)
    assert queued.returncode == 0, queued.stderr
    document = json.loads(queued.stdout)
    # Queued; a quick daemon may have started it by the time the document is printed.
    assert document["state"] in ("scheduled", "splitting", "importing", "finished")
    assert document["lists"] == ["newsletter"]
    _until_success(ui, document["run_id"])
    shown = json.loads(cli("imports", "show", document["id"], "--json", home=mail_home).stdout)
    assert shown["state"] == "finished" and shown["stats"]["subscribers"]["added"] == 4

    inbox = mail_home / "inbox" / "vip"
    inbox.mkdir(parents=True)
    dropped = inbox / "drop.csv"
    dropped.write_text("email\nnew@example.com\n")
    past = time.time() - 60
    os.utime(dropped, (past, past))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listing = json.loads(cli("imports", "--scope", "all", "--json", home=mail_home).stdout)
        second = [d for d in listing["data"] if d["id"] != document["id"] and d["run_id"]]
        if second:
            break
        time.sleep(2)
    assert second, "the sensor made no import"
    _until_success(ui, second[0]["run_id"])
    shown = json.loads(cli("imports", "show", second[0]["id"], "--json", home=mail_home).stdout)
    assert shown["state"] == "finished" and shown["lists"] == ["vip"]


def test_terminating_a_run_from_the_ui_cancels_the_import_and_keeps_the_store_whole(ui, mail_home, tmp_path):
    from dagster import DagsterRunStatus

    from tests.helpers import query
    big = tmp_path / "big.csv"
    big.write_text("email\n" + "".join(f"u{i}@example.com\n" for i in range(20000)))
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"lists": ["news"], "batch_size": 50}))  # 400 batches
    queued = cli("import", str(big), "--params", str(params), "--detach", "--json", home=mail_home)
    document = json.loads(queued.stdout)
    progress = mail_home / "imports" / document["id"] / "progress.json"
    deadline = time.monotonic() + 120
    while not progress.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    ui.terminate_run(document["run_id"])  # what the UI's Terminate button sends
    deadline = time.monotonic() + 60
    while ui.get_run_status(document["run_id"]) != DagsterRunStatus.CANCELED and time.monotonic() < deadline:
        time.sleep(1)
    shown = json.loads(cli("imports", "show", document["id"], "--json", home=mail_home).stdout)
    assert shown["state"] == "cancelled"
    # Whole batches only: every committed batch's 50 rows are in, nothing else.
    [(batches, subscribers)] = query("SELECT (SELECT count(*) FROM import_batches),"
                                     " (SELECT count(*) FROM subscribers)")
    assert 0 < batches < 400 and subscribers == batches * 50


def test_terminating_a_command_line_import_from_the_ui_cancels_it(ui, mail_home, tmp_path):
    """Terminate, on a run the command line executes in its own process (no launcher to stop
    it): the run stops after the batch in progress and reads `cancelled`."""
    from tests.helpers import query
    big = tmp_path / "big.csv"
    big.write_text("email\n" + "".join(f"u{i}@example.com\n" for i in range(20000)))
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"lists": ["news"], "batch_size": 50}))  # 400 batches
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(mail_home))
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "import", str(big), "--params",
                             str(params), "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    progress = mail_home / "imports" / "1" / "progress.json"
    deadline = time.monotonic() + 120
    while not progress.exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    shown = json.loads(cli("imports", "show", "1", "--json", home=mail_home).stdout)
    from dagster_graphql import DagsterGraphQLClientError
    try:
        ui.terminate_run(shown["run_id"])
    except DagsterGraphQLClientError:
        pass  # Dagster cannot stop a process it did not launch; the run is CANCELING all the same
    out, err = proc.communicate(timeout=120)
    assert json.loads(out)["state"] == "cancelled", err
    [(batches, subscribers)] = query("SELECT (SELECT count(*) FROM import_batches),"
                                     " (SELECT count(*) FROM subscribers)")
    assert 0 < batches < 400 and subscribers == batches * 50


def test_an_import_started_from_the_launchpad_gets_its_own_id(ui, mail_home):
    """`new_import` in the launchpad: options only, no import id to invent; a config with no
    source is refused before it launches."""
    from dagster_graphql import DagsterGraphQLClientError
    with pytest.raises(DagsterGraphQLClientError) as refused:
        ui.submit_job_execution("new_import", run_config={"ops": {"queue_import": {"config": {"lists": ["ui"]}}}})
    assert "source" in str(refused.value)
    run_id = ui.submit_job_execution("new_import", run_config={
        "ops": {"queue_import": {"config": {"source": os.path.abspath(SAMPLE), "lists": ["ui"]}}}})
    _until_success(ui, run_id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listing = json.loads(cli("imports", "--scope", "all", "--json", home=mail_home).stdout)
        if listing["data"] and listing["data"][0]["state"] == "finished":
            break
        time.sleep(2)
    [document] = listing["data"]
    assert document["state"] == "finished" and document["lists"] == ["ui"]
    assert document["stats"]["subscribers"]["added"] == 4

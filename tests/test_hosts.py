"""The production shape on one machine: a Postgres-backed instance, with the code server, the
daemon and its run workers on another "host" (their own PID and UTS namespaces, hostname
`worker-host`), while the command line reads and controls the imports from this one.

- A detached import runs on the other host; reads from here say `importing` while it merges.
- Its run worker killed with SIGKILL is marked failed by Dagster (never by a pid seen from here),
  and `imports resume` here brings the store to exactly what an uninterrupted import gives.
- A run the command line executes on another host is never judged dead from here by its pid;
  a reader on its own host is.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mail_pipeline import home
from tests.helpers import cli, query

def _namespaces_work() -> bool:
    """Whether this machine lets us make a host of our own (root, unshare(1), namespaces)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--uts", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_work(),
                                reason="needs root and PID/UTS namespaces (unshare) for another host")

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _other_host(command: str, hostname: str = "worker-host", pid: bool = False, **popen) -> subprocess.Popen:
    """`command` (a shell line) on another host: its own UTS namespace and hostname, and with
    `pid` its own PID namespace and /proc too."""
    flags = ["--pid", "--fork", "--mount-proc"] if pid else []
    return subprocess.Popen(["unshare", "--uts", *flags, "sh", "-c", f"echo {hostname} > /proc/sys/kernel/hostname && exec {command}"],
                            env=dict(os.environ), **popen)


@pytest.fixture
def worker_host(postgres_instance, mail_home, tmp_path, monkeypatch):
    """The code server and the daemon (which launches run workers through it) on another host;
    the command line here queues runs with the origins the deployer's workspace gives."""
    port = _free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(Path(__file__).resolve().parents[1].joinpath("deploy", "workspace.yaml").read_text()
                         .replace("host: code-server", "host: 127.0.0.1").replace("port: 4000", f"port: {port}"))
    monkeypatch.setenv("MAIL_PIPELINE_WORKSPACE", str(workspace))
    log = open(tmp_path / "worker-host.log", "w")
    proc = _other_host(
        f"sh -c '{sys.executable} -m dagster code-server start -m assets.definitions -h 127.0.0.1 "
        f"-p {port} --location-name mail_pipeline & sleep 5; exec {BIN / 'dagster-daemon'} run -w {workspace}'",
        pid=True, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    from dagster._grpc.client import DagsterGrpcClient
    client = DagsterGrpcClient(port=port, host="127.0.0.1")
    _until(lambda: _answers(client), 120, "the code server on the other host")
    yield proc
    # The namespace's first process is its init: killing it ends every process of that host.
    for child in _children(proc.pid):
        os.kill(child, signal.SIGKILL)
    proc.kill()
    proc.wait()
    log.close()


def _answers(client) -> bool:
    try:
        client.ping("ready?")
        return True
    except Exception:
        return False


def _children(pid: int) -> list[int]:
    """The process's children, whichever of its threads started them."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def _run_worker(root: int) -> int:
    """The run worker among the other host's processes: the code server's child that executes
    runs (a multiprocessing spawn, or `dagster api execute_run`)."""
    seen = []
    for pid in _descendants(root):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        seen.append(command)
        if "spawn_main" in command or "execute_run" in command:
            return pid
    raise AssertionError(f"no run worker on the other host: {seen}")


def _show(mail_home, import_id="1") -> dict:
    shown = cli("imports", "show", import_id, "--json", home=mail_home)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _batches(import_id="1") -> int:
    try:
        return json.loads((home.import_dir(import_id) / "progress.json").read_text())["batch"]
    except (OSError, ValueError):
        return 0


def _big_csv(path: Path, rows: int = 20000) -> Path:
    path.write_text("email,name\n" + "".join(f"user{i}@example.com,User {i}\n" for i in range(rows)))
    return path


def _store():
    return (query("SELECT email, name, status, attributes, tags FROM subscribers ORDER BY email"),
            query("SELECT email, list, status FROM subscriptions ORDER BY email, list"))


def test_a_worker_killed_on_another_host_is_failed_by_dagster_and_resumes(worker_host, mail_home, tmp_path, monkeypatch):
    import dagster as dg

    from service import jobs
    source = _big_csv(tmp_path / "big.csv")
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"lists": ["news"], "batch_size": 100}))  # 200 batches
    queued = cli("import", str(source), "--params", str(params), "--detach", "--json", home=mail_home)
    assert queued.returncode == 0, queued.stderr
    document = json.loads(queued.stdout)
    assert document["state"] in ("scheduled", "splitting", "importing")
    # Read from this host while the other one merges.
    _until(lambda: _show(mail_home)["state"] == "importing", 180, "importing, read from here")
    _until(lambda: _batches() >= 3, 120, "three batches")
    inst = jobs.instance()
    try:
        run = inst.get_run_by_id(document["run_id"])
        assert "mail_pipeline/pid" not in run.tags  # a worker's run: no pid to judge it by
        # Queued with the origins the code server gave (as `dagster job launch` would).
        assert type(run.remote_job_origin.repository_origin.code_location_origin).__name__ == \
            "GrpcServerCodeLocationOrigin"
        worker = _run_worker(worker_host.pid)
        os.kill(worker, signal.SIGKILL)
        status = _until(lambda: inst.get_run_by_id(run.run_id).status in (
            dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED), 180, "Dagster to fail the run")
        assert status
        assert inst.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    finally:
        inst.dispose()
    shown = _show(mail_home)
    assert shown["state"] == "failed", shown
    # What Dagster said of the worker, and how to carry on.
    assert "was terminated by signal 9 (SIGKILL)" in shown["error_message"], shown
    assert shown["error_message"].endswith("resume with: mail-pipeline imports resume 1"), shown
    committed = query("SELECT count(*) FROM import_batches")[0][0]
    assert 3 <= committed < 200
    resumed = cli("imports", "resume", "1", "--json", home=mail_home)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["stats"]["subscribers"]["added"] == 20000
    interrupted = _store()
    # The same import, uninterrupted, on a new embedded home.
    monkeypatch.delenv("DAGSTER_HOME")
    other = tmp_path / "other"
    monkeypatch.setenv("MAIL_PIPELINE_HOME", str(other))
    again = cli("import", str(source), "--params", str(params), "--json", home=other)
    assert again.returncode == 0, again.stderr
    assert _store() == interrupted


def test_a_run_on_another_host_is_never_judged_by_its_pid_from_here(postgres_instance, mail_home, tmp_path):
    source = _big_csv(tmp_path / "big.csv")
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"lists": ["news"], "batch_size": 50}))
    command = f"{sys.executable} -m service.cli import {source} --params {params} --json"
    proc = _other_host(command, hostname="other-host", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _until(lambda: _batches() >= 3, 120, "three batches")
    os.kill(proc.pid, signal.SIGKILL)  # (sh exec'd the command: this is the import's process)
    proc.wait()
    # From here its pid means nothing: the run is still importing as far as this host can tell.
    assert _show(mail_home)["state"] == "importing"
    refused = cli("imports", "resume", "1", home=mail_home)
    assert refused.returncode == 2 and "is importing: only a paused or failed import resumes" in refused.stderr
    # On its own host, a reader sees the process is gone; resume there finishes it.
    there = _other_host(f"{sys.executable} -m service.cli imports show 1 --json", hostname="other-host",
                        stdout=subprocess.PIPE, text=True)
    out, _ = there.communicate(timeout=120)
    assert json.loads(out)["state"] == "failed"
    resume = _other_host(f"{sys.executable} -m service.cli imports resume 1 --json", hostname="other-host",
                         stdout=subprocess.PIPE, text=True)
    out, _ = resume.communicate(timeout=300)
    assert resume.returncode == 0 and json.loads(out)["state"] == "finished"
    assert query("SELECT count(*) FROM subscribers") == [(20000,)]

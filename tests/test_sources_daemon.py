"""Declared sources end to end under the real daemon (`mail-pipeline ui` on loopback): one file
declares "pull this every minute into a list" and "import every CSV that lands under
s3://bucket/signups/"; the imports happen with no command typed, each file once across a
restart of the daemon, and a pull that brings the same bytes shows its skip in the schedule's
tick history."""
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from dagster_graphql import DagsterGraphQLClient

from tests.helpers import cli
from tests.servers import free_port, s3, s3_endpoint  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def _ui(env: dict):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "ui", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                client._execute("{ version }")
                break
            except Exception:
                assert proc.poll() is None and time.monotonic() < deadline, "the UI did not come up"
                time.sleep(1)
        yield client
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _finished(home: Path, count: int, timeout: float = 240) -> list[dict]:
    """Wait until `count` imports have finished; return the listing."""
    deadline = time.monotonic() + timeout
    while True:
        listing = json.loads(cli("imports", "--scope", "all", "--json", home=home).stdout or "{}")
        data = listing.get("data", [])
        if sum(d["state"] == "finished" for d in data) >= count or time.monotonic() > deadline:
            return data
        assert not any(d["state"] == "failed" for d in data), data
        time.sleep(2)


_STATES = """{ sensorOrError(sensorSelector: {repositoryLocationName: "mail_pipeline",
  repositoryName: "__repository__", sensorName: "signups"}) { ... on Sensor { sensorState { status } } }
  scheduleOrError(scheduleSelector: {repositoryLocationName: "mail_pipeline",
  repositoryName: "__repository__", scheduleName: "nightly"}) { ... on Schedule { scheduleState { status } } } }"""

_TICKS = """{ scheduleOrError(scheduleSelector: {repositoryLocationName: "mail_pipeline",
  repositoryName: "__repository__", scheduleName: "nightly"}) {
  ... on Schedule { scheduleState { ticks(limit: 10) { status skipReason } } } } }"""


def test_declared_sources_import_by_themselves_under_the_daemon(s3, mail_home, tmp_path):
    s3.put("nightly.csv", b"email\nann@example.com\nbob@example.com\n")
    s3.put("signups/news/a.csv", b"email\ncy@example.com\n")
    s3.put("signups/news/b.csv", b"email\ndee@example.com\n")
    declarations = tmp_path / "imports.toml"
    declarations.write_text(f"""
[nightly]
source = "s3://{s3.bucket}/nightly.csv"
lists = ["partners"]
schedule = "* * * * *"

[signups]
source = "s3://{s3.bucket}/signups/"
watch = true
interval = 5
""")
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(mail_home), MAIL_PIPELINE_IMPORTS=str(declarations),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with _ui(env) as client:
        shown = client._execute(_STATES)  # both in the UI under their names, running by default
        assert shown["sensorOrError"]["sensorState"]["status"] == "RUNNING"
        assert shown["scheduleOrError"]["scheduleState"]["status"] == "RUNNING"
        data = _finished(mail_home, 3)
        assert sorted(d["state"] for d in data) == ["finished"] * 3, data
        assert sorted(tuple(d["lists"]) for d in data) == [("news",), ("news",), ("partners",)]
    with _ui(env) as client:  # a restarted daemon takes no file twice
        s3.put("signups/news/c.csv", b"email\neve@example.com\n")
        data = _finished(mail_home, 4)
        assert len(data) == 4 and all(d["state"] == "finished" for d in data), data
        deadline = time.monotonic() + 150
        skipped = []
        while not skipped and time.monotonic() < deadline:
            ticks = client._execute(_TICKS)["scheduleOrError"]["scheduleState"]["ticks"]
            skipped = [t["skipReason"] for t in ticks if t["status"] == "SKIPPED"]
            time.sleep(3)
        assert skipped and "holds the same bytes as the pull that made import" in skipped[0]
        time.sleep(10)  # two more ticks of the sensor
        listing = json.loads(cli("imports", "--scope", "all", "--json", home=mail_home).stdout)
        assert listing["num_records"] == 4
    from dagster import DagsterInstance, RunsFilter
    with DagsterInstance.from_config(str(mail_home / "dagster")) as instance:
        by_source = {name: instance.get_runs_count(RunsFilter(tags={"mail_pipeline/declared_source": name}))
                     for name in ("nightly", "signups")}
    assert by_source == {"nightly": 1, "signups": 3}

"""`mail-pipeline ui` stops cleanly: SIGTERM reaches everything it started (the webserver, the
daemon, their code servers), it exits once they have, and the port is free again."""
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.api_server import alive, descendants, free_port

ROOT = Path(__file__).resolve().parents[1]


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sigterm_stops_the_ui_and_everything_it_started(mail_home, tmp_path):
    port = free_port()
    log = open(tmp_path / "ui.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "ui", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not _answers(port):
            assert proc.poll() is None, (tmp_path / "ui.log").read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the UI did not listen within 120 s"
            time.sleep(0.5)
        time.sleep(3)  # (the daemon and the code servers up too)
        idle = time.monotonic() + 20
        while time.monotonic() < idle:  # a few sensor ticks, with nothing to do
            time.sleep(1)
        said = (tmp_path / "ui.log").read_text(errors="replace")
        assert f"http://127.0.0.1:{port}" in said and str(mail_home) in said
        assert "superseded" not in said, said
        assert "Checking for new runs" not in said and "skipped" not in said, said  # a quiet idle console
        started = descendants(proc.pid)
        assert len(started) >= 3, started  # dagster dev, its webserver and its daemon at least
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0
        left = [pid for pid in started if alive(pid)]
        assert not left, f"still running after the UI exited: {left}"
        assert not _answers(port), "the port still answers"
    finally:
        for pid in [proc.pid, *descendants(proc.pid)]:
            if alive(pid):
                try:
                    import os
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        log.close()

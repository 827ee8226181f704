"""`mail-pipeline serve` as a client meets it: a real server process on a free loopback port,
over a home of its own with the lists `newsletter` (id 1) and `vip` (id 2) and two API keys
(`full`: subscribers:import and subscribers:export; `exporter`: subscribers:export only), talked
to with the real `curl` binary (and `jq` for the seeds' shell loops).

    from tests.api_server import server, wait_for  # noqa: F401  (the fixture, one per module)

`server` is module-scoped: one server (and the Dagster daemon it starts) per test module. Its
teardown sends SIGTERM and asserts the server is gone within 20 seconds and took what it started
(the Dagster daemon and its code server) with it; anything that outlived it is then ended by pid,
so that nothing leaks into later tests.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
START_SECONDS = 60
STOP_SECONDS = 20
FULL = ("subscribers:import", "subscribers:export")


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2,
             what: str = "the condition") -> Any:
    """The first truthy value of `predicate()` within `timeout` seconds; else the test fails,
    saying what it waited for and what the predicate last returned."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}; last seen: {last!r}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Reply:
    """One curl exchange: the HTTP status, the body as text, its content type."""
    status: int
    body: str
    content_type: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


def descendants(pid: int) -> list[int]:
    """The pids of the process's children, their children, … (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Server:
    """A running `mail-pipeline serve` and the means to talk to it."""

    def __init__(self, root: Path, port: int, extra_args: tuple[str, ...] = ()):
        self.root = root                      # the test's tmp dir: the home and the server's log
        self.home = root / "home"
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.extra_args = extra_args
        self.tokens: dict[str, str] = {}
        self.lists: dict[str, dict] = {}
        self.jq = shutil.which("jq") is not None
        self.curl_path = shutil.which("curl")
        self.log_path = root / "serve.log"
        self.proc: Optional[subprocess.Popen] = None
        self.started: list[int] = []          # pids the server started (its daemon …)

    # --- the environment and the command line --------------------------------------------------

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in ("DAGSTER_HOME", "MAIL_PIPELINE_WORKSPACE")}
        env["MAIL_PIPELINE_HOME"] = str(self.home)
        return env

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """`mail-pipeline ARGS` on the server's home."""
        done = subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True,
                              text=True, env=self.env(), cwd=ROOT, timeout=timeout)
        if check and done.returncode != 0:
            pytest.fail(f"mail-pipeline {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    @contextmanager
    def in_home(self) -> Iterator[None]:
        """This process's environment pointed at the server's home (for reading its Dagster
        instance in-process), restored afterwards."""
        saved = {k: os.environ.get(k) for k in ("MAIL_PIPELINE_HOME", "DAGSTER_HOME",
                                                "MAIL_PIPELINE_WORKSPACE")}
        os.environ["MAIL_PIPELINE_HOME"] = str(self.home)
        os.environ.pop("DAGSTER_HOME", None)
        os.environ.pop("MAIL_PIPELINE_WORKSPACE", None)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def run_tags(self, run_id: str) -> dict:
        """The tags of a Dagster run of the server's instance."""
        with self.in_home():
            from service import jobs
            inst = jobs.instance()
            try:
                run = inst.get_run_by_id(run_id)
                return dict(run.tags) if run else {}
            finally:
                inst.dispose()

    # --- curl ------------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + path

    def auth(self, name: str = "full") -> list[str]:
        return ["-u", f"{name}:{self.tokens[name]}"]

    def curl(self, *args: str, timeout: float = 120, cwd: Optional[Path] = None) -> Reply:
        """The real curl: `curl -s -S ARGS`, with the status and content type written after the
        body. A path argument starting with '/' is taken relative to the server."""
        args = tuple(self.url(a) if a.startswith("/") else a for a in args)
        done = subprocess.run([self.curl_path, "-s", "-S", "-w", "\n%{http_code}\n%{content_type}", *args],
                              capture_output=True, timeout=timeout, cwd=cwd)
        out = done.stdout.decode("utf-8", "replace")
        body, status, content_type = out.rsplit("\n", 2)
        if done.returncode != 0 and status == "000":
            raise AssertionError(f"curl {' '.join(args)} failed ({done.returncode}): "
                                 f"{done.stderr.decode(errors='replace')}")
        return Reply(int(status), body, content_type)

    def bash(self, script: str, cwd: Optional[Path] = None, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=cwd,
                              env=self.env(), timeout=timeout)

    # --- what the home holds ---------------------------------------------------------------------

    def incoming(self) -> list[str]:
        """Files under `<home>/uploads/.incoming/` (uploads still arriving, or left behind)."""
        folder = self.home / "uploads" / ".incoming"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def import_ids(self) -> list[int]:
        """The import folders under `<home>/imports/`, by id."""
        folder = self.home / "imports"
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def healthy(self, timeout: float = 5) -> bool:
        try:
            reply = self.curl("--max-time", str(timeout), "/api/health", timeout=timeout + 5)
        except (AssertionError, subprocess.TimeoutExpired):
            return False
        return reply.status == 200 and reply.json() == {"data": True}

    # --- life ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        for name in ("newsletter", "vip"):
            self.lists[name] = self.cli_json("lists", "create", name)
        assert [self.lists[n]["id"] for n in ("newsletter", "vip")] == [1, 2], self.lists
        for name, permissions in (("full", FULL), ("exporter", ("subscribers:export",))):
            flags = [a for p in permissions for a in ("--permission", p)]
            self.tokens[name] = self.cli_json("tokens", "create", name, *flags)["token"]

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=ROOT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mail-pipeline serve exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.healthy(timeout=2):
                break
            time.sleep(0.3)
        else:
            self.kill()
            pytest.fail(f"GET /api/health did not answer within {START_SECONDS} s:\n{self.log_tail()}")

    def stop(self) -> tuple[Optional[int], float, list[int]]:
        """SIGTERM, as a service manager stops it. Returns (exit status or None if it did not
        stop within STOP_SECONDS, seconds it took, pids it had started that are still alive)."""
        assert self.proc is not None
        self.started = descendants(self.proc.pid)
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - began
        if code is not None:  # give what it started a moment to follow it
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(alive(p) for p in self.started):
                time.sleep(0.2)
        return code, took, [p for p in self.started if alive(p)]

    def kill(self) -> None:
        """End the server and everything it started, by pid (all of them are ours)."""
        pids = ([self.proc.pid] if self.proc and self.proc.poll() is None else []) + \
            (descendants(self.proc.pid) if self.proc else []) + self.started
        for pid in pids:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


@contextmanager
def running_server(root: Path, *extra_args: str, check_stop: bool = True) -> Iterator[Server]:
    """A prepared and started server on a tmp folder; stopped with SIGTERM afterwards (asserted
    to stop within 20 s when `check_stop`)."""
    server = Server(root, free_port(), tuple(extra_args))
    server.prepare()
    server.start()
    try:
        yield server
    finally:
        code, took, leftovers = server.stop()
        described = {p: command_line(p) for p in leftovers}
        server.kill()
        if check_stop:
            assert code is not None, (f"mail-pipeline serve did not stop within {STOP_SECONDS} s of "
                                      f"SIGTERM:\n{server.log_tail()}")
            # What it started (its Dagster daemon and the daemon's code server) goes with it.
            assert not described, (f"still running after mail-pipeline serve exited ({code}, "
                                   f"{took:.1f} s after SIGTERM): {described}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """One `mail-pipeline serve` (with its Dagster daemon) for the test module."""
    if shutil.which("curl") is None:
        pytest.skip("the curl binary is not installed")
    with running_server(tmp_path_factory.mktemp("api")) as running:
        yield running

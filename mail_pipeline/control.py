"""Pause and cancel (GreenArrow), and knowing whether a run is still alive.

A request is a file in the import's folder, `control.json`, so it reaches the import however
its run was launched (command line, UI, sensor, daemon). The stages look at it between batches
and at each stage's start: the batch in progress commits or rolls back whole, then the run
stops. A paused import resumes (a new run of the same import, which skips committed batches);
a cancelled one is done for good.
"""
import os
from pathlib import Path
from typing import Optional

from mail_pipeline.errors import MailPipelineError
from mail_pipeline.files import read_json, write_json
from mail_pipeline.times import iso_utc

REQUESTS = ("pause", "cancel")


class Stopped(MailPipelineError):
    """The run stopped on a pause or cancel request."""


def request(folder: Path, what: str) -> None:
    """Ask the run working on the import now (or the next one, if none has started) to stop.
    The request names that run, so a later run (a re-execution from the UI) is not stopped by
    a request that was meant for an earlier one."""
    assert what in REQUESTS
    running = read_json(folder / "run.json") or {}
    write_json(folder / "control.json", {"request": what, "run_id": running.get("run_id"),
                                         "at": iso_utc()})


def requested(folder: Path, run_id: Optional[str] = None) -> Optional[str]:
    """The request for `run_id` (default: the run noted as working on the import now)."""
    note = read_json(folder / "control.json")
    if not note:
        return None
    if run_id is None:
        run_id = (read_json(folder / "run.json") or {}).get("run_id")
    meant_for = note.get("run_id")
    return note["request"] if meant_for is None or meant_for == run_id else None


def clear(folder: Path) -> None:
    (folder / "control.json").unlink(missing_ok=True)


def check(folder: Path) -> None:
    """Stop here if a pause or a cancel was asked for."""
    what = requested(folder)
    if what == "pause":
        raise Stopped(f"paused on request; resume with: mail-pipeline imports resume {folder.name}")
    if what == "cancel":
        raise Stopped("cancelled on request")


def register(folder: Path, run_id: str) -> None:
    """Note which process runs the import now, so a killed run can be told from a slow one."""
    write_json(folder / "run.json", {"run_id": run_id, "pid": os.getpid()})


def read_run(folder: Path) -> Optional[dict]:
    """The run noted as working on the import (run_id, pid), if any."""
    return read_json(folder / "run.json")


def is_alive(folder: Path, run_id: str) -> bool:
    """Whether the process noted for `run_id` still exists (unknown counts as alive)."""
    note = read_run(folder)
    if not note or note.get("run_id") != run_id:
        return True
    return process_alive(note["pid"])


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

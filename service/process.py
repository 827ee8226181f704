"""Which process executes a run the command line started in its own process, and whether it is
gone. Only a reader on the same host (same hostname and boot) may judge that from a pid: a run of
another host is left to Dagster (its run worker's launcher and run monitoring)."""
import os
import socket
from typing import Mapping, Optional

from assets.names import Tags


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None
    when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def tags() -> dict[str, str]:
    """This process, as run tags."""
    pid = os.getpid()
    return {Tags.HOST: socket.gethostname(), Tags.BOOT_ID: boot_id(), Tags.PID: str(pid),
            Tags.PID_START: _start_time(pid) or ""}


def gone(noted: Mapping[str, str]) -> bool:
    """Whether the process these tags name is known to be gone. Unknown (no process noted, another
    host, another boot of this one) is never gone."""
    pid = noted.get(Tags.PID)
    if not pid or noted.get(Tags.HOST) != socket.gethostname() or noted.get(Tags.BOOT_ID) != boot_id():
        return False
    started = _start_time(int(pid))
    if started is None:
        return True
    return bool(noted.get(Tags.PID_START)) and started != "" and started != noted[Tags.PID_START]

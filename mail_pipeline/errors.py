"""The exceptions a user can cause (each message a plain sentence the CLI prints as is), and how
a full disk is recognised through the layers."""

import errno
import os


class MailPipelineError(Exception):
    """A problem with the user's input or request (bad file, bad option, unknown import)."""


class DiskFull(MailPipelineError):
    """The disk under the home filled up: the import stopped where it was and resumes once
    there is space (exit code 1, like any failed import)."""

    exit_code = 1


# How a full disk shows through the layers: an OSError (errno 28), DuckDB's IO error, SQLite's
# (the Dagster instance) - whose next statement may only say "disk I/O error".
_FULL = ("no space left on device", "database or disk is full", "[errno 28]")


def disk_full(exc: BaseException, where=None) -> bool:
    """Whether `exc` (or an exception it came from) is a full disk; `where` (a path) lets a
    vaguer I/O error count when that path's filesystem has (almost) no space left."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        text = str(exc).lower()
        if any(sign in text for sign in _FULL):
            return True
        if where is not None and ("i/o error" in text or "io error" in text):
            try:
                stat = os.statvfs(where)
                if stat.f_bavail * stat.f_frsize < 1 << 20:
                    return True
            except OSError:
                pass
        exc = exc.__cause__ or exc.__context__
    return False


def first_line(exc: BaseException) -> str:
    """What an exception from a library says, in one line: its first non-empty one."""
    return next((line for line in str(exc).strip().splitlines() if line.strip()), type(exc).__name__)


def disk_full_message(home, import_id: str) -> str:
    return (f"no space left on the disk holding {home}: free some space, then resume with: "
            f"mail-pipeline imports resume {import_id}")


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is DuckDB running out of its memory cap (a non-spilling operator, or a cap
    set too low). Told by name, so that this module never imports DuckDB."""
    return type(exc).__name__ == "OutOfMemoryException" or str(exc).startswith("Out of Memory Error")


def out_of_memory_message(limit: str, import_id: str) -> str:
    return (f"DuckDB ran out of the {limit} of memory it may use: raise MAIL_PIPELINE_MEMORY_LIMIT "
            f"(e.g. 2GB), then resume with: mail-pipeline imports resume {import_id}")

"""The inbox (spec §5): files dropped into `$MAIL_PIPELINE_HOME/inbox/` (or `inbox/<list name>/`)
become imports; a sidecar `<file>.json` holds `--params`-style options for it.

A file is taken once it has settled (its size and modification time did not change for a few
seconds, so a half-copied file waits), and at most once: its identity (path, size, modification
time) is bound to the import as an idempotency key, the same mechanism `--idempotency-key` uses.
"""
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from mail_pipeline import home
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.options import ImportOptions, build
from mail_pipeline.params import from_body
from mail_pipeline.staging import CSV_SUFFIXES

SETTLE_SECONDS = 5.0


def inbox_dir() -> Path:
    return home.home() / "inbox"


@dataclass(frozen=True)
class Dropped:
    path: Path
    relative: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        """The file's identity, as an idempotency key: the same file never imports twice."""
        return f"inbox:{self.relative}:{self.size}:{self.mtime_ns}"

    @property
    def list_name(self) -> Optional[str]:
        return list_of(self.relative)


def list_of(relative: str) -> Optional[str]:
    """The list a file's folder names: `<list>/file.csv` below the watched folder (the inbox, or
    a declared source's folder or prefix); a file directly in it names none."""
    parts = Path(relative).parts
    return parts[0] if len(parts) == 2 else None


def with_list(lists: list[str], relative: str) -> list[str]:
    """`lists`, plus the one the file's folder names."""
    named = list_of(relative)
    return [*lists, named] if named and named not in lists else list(lists)


def settled_files(now: Optional[float] = None) -> Iterator[Dropped]:
    """Importable files in the inbox and its list folders (one level), oldest first, that have
    not changed for SETTLE_SECONDS. Hidden files, sidecars and partial copies are left alone."""
    root = inbox_dir()
    if not root.is_dir():
        return
    now = time.time() if now is None else now
    candidates = [*root.glob("*"), *root.glob("*/*")]
    found = []
    for path in candidates:
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if not path.name.lower().endswith((*CSV_SUFFIXES, ".zip")):
            continue
        stat = path.stat()
        if now - stat.st_mtime < SETTLE_SECONDS:
            continue  # still being written, or just finished: next tick
        found.append(Dropped(path, path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    yield from sorted(found, key=lambda d: (d.mtime_ns, d.relative))


def options_for(dropped: Dropped) -> ImportOptions:
    """The import's options: the sidecar's (any `--params` shape), the list folder's name added
    to its lists, the file as the source, its identity as the idempotency key."""
    sidecar = dropped.path.with_name(dropped.path.name + ".json")
    fields = {}
    if sidecar.exists():
        try:
            body = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise MailPipelineError(f"sidecar {sidecar.name} is not valid JSON: {exc}") from None
        fields = from_body(body)[1]
    fields.update({"lists": with_list(list(fields.get("lists") or []), dropped.relative),
                   "source": str(dropped.path), "content": None,
                   "idempotency_key": dropped.key})
    return build(fields)

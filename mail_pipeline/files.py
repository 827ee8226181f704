"""Files that are either whole or absent: everything an import writes goes through `replacing`,
so a crash, a cancel or a kill never leaves half a file where a later stage or a reader looks."""
import json
import os
import queue
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` if the block succeeds and is
    removed if it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # (a read-only folder: the error that matters is the one already raised)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, value) -> None:
    write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


class InThread:
    """Hands each item `put` to `work`, one at a time and in order, in a thread of its own: a
    file is written (staging: 834 MB, about a second) or an export's slices joined and hashed
    while the caller reads or computes the next. `work`'s error is raised at the next `put` or
    at the end; leaving early (an error, a cancel) stops the thread first. The thread always
    reads the queue to its end, so neither side can wait on the other for ever."""

    def __init__(self, work: Callable[[Any], None]) -> None:
        self._work = work
        self._items: queue.Queue = queue.Queue(maxsize=4)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="in-thread", daemon=True)

    def __enter__(self) -> "InThread":
        self._thread.start()
        return self

    def _run(self) -> None:
        while (item := self._items.get()) is not None:
            if self._error is None:
                try:
                    self._work(item)
                except BaseException as exc:  # (kept for the caller; the queue is still drained)
                    self._error = exc

    def put(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        self._items.put(item)

    def __exit__(self, *exc_info) -> None:
        self._items.put(None)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error

"""Files that are either whole or absent: everything an import writes goes through `replacing`,
so a crash, a cancel or a kill never leaves half a file where a later stage or a reader looks."""
import json
import os
import queue
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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


class BackgroundWriter:
    """Writes a file's chunks in a thread of its own, so that writing overlaps reading and
    hashing the next ones (staging 834 MB: about a second). A failed write is raised at the
    next `write` or at the end; leaving early (an error) stops the thread first."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._chunks: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="background-writer", daemon=True)

    def __enter__(self) -> "BackgroundWriter":
        self._file = open(self._path, "wb")
        self._thread.start()
        return self

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            if self._error is None:
                try:
                    self._file.write(chunk)
                except BaseException as exc:  # (kept for the caller; the queue is still drained)
                    self._error = exc

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._chunks.put(data)

    def __exit__(self, *exc_info) -> None:
        self._chunks.put(None)
        try:
            self._thread.join()
        finally:  # (a cancel landing in join() still closes the file)
            self._file.close()
        if self._error is not None and exc_info[0] is None:
            raise self._error

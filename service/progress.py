"""What the command line shows while an import runs in its process, read from what the stages
write in the import's folder (the staged file's facts, the validated parts, the merge's
progress, the log). On a terminal: rich progress bars with rows, rate and time left, and the
download's attempts and waits; otherwise (a pipe, a log file) the plain lines of before, one per
change."""
import sys
import threading
from pathlib import Path
from typing import Optional, TextIO

from mail_pipeline.files import read_json
from mail_pipeline.layout import Folder

INTERVAL = 0.5
# Rows per validated part (pipeline.ROWS_PER_CHUNK), for the reading bar: a part is written per
# chunk read. (Not imported: that would load Polars before it is needed.)
ROWS_PER_PART = 250_000


class Seen:
    """The import's progress as its folder shows it now."""

    def __init__(self, folder: Folder) -> None:
        options = read_json(folder.options) or {}
        self.lines: Optional[int] = (options.get("staged") or {}).get("lines")
        validation = read_json(folder.validation)
        self.records: Optional[int] = validation["number_of_records"] if validation else None
        progress = read_json(folder.progress)
        self.merged: Optional[int] = progress["records_imported"] if progress else None
        self.batch = (progress["batch"], progress["batches"]) if progress else None
        parts = list(folder.valid.glob("part-*.parquet")) if folder.valid.is_dir() else []
        self.read = min(len(parts) * ROWS_PER_PART, self.lines or 0) if parts else 0
        self.downloaded = _size(folder)
        self.last_log = _last_line(folder.path / "logs" / "log.txt")

    def line(self, import_id: str) -> str:
        """The plain line for this moment."""
        if self.merged is not None:
            return (f"import {import_id}: importing, batch {self.batch[0]}/{self.batch[1]}, "
                    f"{self.merged}/{self.records} records")
        if self.records is not None:
            return f"import {import_id}: read {self.records} records, merging"
        if self.lines is None and self.downloaded is not None:
            return f"import {import_id}: {self.last_log or 'downloading'}"
        return f"import {import_id}: reading"


def _size(folder: Folder) -> Optional[int]:
    for name in ("download.csv", "download.zip", "download.csv.partial", "download.zip.partial"):
        path = folder.path / name
        if path.exists():
            return path.stat().st_size
    return None


def _last_line(path: Path) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1].split(" ", 2)[-1] if lines else None  # (without its date and time)
    except OSError:
        return None


def watch(import_id: str, done: threading.Event, stream: TextIO = sys.stderr) -> None:
    """Follow the import until `done` is set."""
    if stream.isatty():
        _bars(import_id, done, stream)
    else:
        _lines(import_id, done, stream)


def _lines(import_id: str, done: threading.Event, stream: TextIO) -> None:
    folder, last = Folder.of(import_id), None
    while not done.wait(INTERVAL):
        line = Seen(folder).line(import_id)
        if line != last:
            print(line, file=stream, flush=True)
            last = line


def _bars(import_id: str, done: threading.Event, stream: TextIO) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    folder = Folder.of(import_id)
    console = Console(file=stream)
    rows = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[unit]}"), TextColumn("{task.fields[rate]}"),
                    TimeRemainingColumn(), console=console, transient=False)
    tasks: dict[str, int] = {}
    download_bar = None
    with rows:
        while not done.wait(INTERVAL):
            seen = Seen(folder)
            if seen.downloaded is not None and seen.lines is None:
                if download_bar is None:  # the bytes so far, and what the download is doing
                    download_bar = rows.add_task("downloading", total=None, rate="", unit="bytes")
                rows.update(download_bar, completed=seen.downloaded, rate=seen.last_log or "")
            if seen.lines is not None:
                if download_bar is not None:
                    rows.update(download_bar, visible=False)
                if "reading" not in tasks:
                    tasks["reading"] = rows.add_task("reading", total=seen.lines, rate="", unit="rows")
                task = tasks["reading"]
                done_rows = seen.records if seen.records is not None else seen.read
                rows.update(task, total=seen.lines, completed=done_rows, rate=_rate(rows, task))
            if seen.records is not None:
                if "merging" not in tasks:
                    tasks["merging"] = rows.add_task("merging", total=seen.records, rate="", unit="rows")
                task = tasks["merging"]
                rows.update(task, completed=seen.merged or 0, rate=_rate(rows, task))


def _rate(progress, task_id: int) -> str:
    speed = progress.tasks[task_id].speed if task_id < len(progress.tasks) else None
    return f"{speed:,.0f} rows/s" if speed else ""

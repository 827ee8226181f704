"""Imports that do not start at once: drafts (Mailcoach: create, append, start) and scheduled
ones (GreenArrow's `begins_at`, `--at`). Each is an import folder with `pending.json`; the
options it will run with are its `requested.json`."""
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import polars as pl

from mail_pipeline.errors import MailPipelineError
from mail_pipeline.files import read_json, write_json
from mail_pipeline.options import ImportOptions
from mail_pipeline.times import iso_utc, parse_times


def parse_when(text: str, date_format: str = "mdy") -> datetime:
    """`--at` / `begins_at`: "now" or any accepted time (UTC unless it says otherwise)."""
    if text.strip().lower() == "now":
        return datetime.now(timezone.utc)
    [when] = pl.select(parse_times(pl.lit(text.strip()), date_format)).to_series().to_list()
    if when is None:
        raise MailPipelineError(f"invalid time {text!r}: expected 'now' or a time such as "
                                "2026-12-01 09:00 or 2026-12-01T09:00:00+01:00")
    return when


def pending(folder: Path) -> Optional[dict]:
    return read_json(folder / "pending.json")


def schedule(folder: Path, when: datetime) -> None:
    write_json(folder / "pending.json",
               {"kind": "scheduled", "begins_at": iso_utc(when)})


def due(folder: Path, now: datetime) -> bool:
    note = pending(folder)
    return bool(note and note["kind"] == "scheduled" and note["begins_at"] <= iso_utc(now))


def refuse_zip(source: Path) -> None:
    """A draft's file is extended by appending text, which a ZIP cannot take."""
    if source.suffix.lower() == ".zip":
        raise MailPipelineError("a draft holds CSV text: give a CSV file, not a ZIP")


def draft(folder: Path, source: Path, options: ImportOptions) -> ImportOptions:
    """Keep the draft's own copy of its file, which `append` extends."""
    refuse_zip(source)
    copy = folder / "draft.csv"
    shutil.copyfile(source, copy)
    write_json(folder / "pending.json", {"kind": "draft"})
    return options.model_copy(update={"source": str(copy)})


def append(folder: Path, source: Path) -> int:
    """Mailcoach's append: more rows at the end of a draft's file (the added file's header line
    is left out when it repeats the draft's). Returns the bytes added."""
    note = pending(folder)
    if not note or note["kind"] != "draft":
        raise MailPipelineError(f"import {folder.name} is not a draft: only a draft takes more rows")
    if not source.is_file():
        raise MailPipelineError(f"file not found: {source}")
    refuse_zip(source)
    copy = folder / "draft.csv"
    data = source.read_bytes()
    with open(copy, "rb") as existing:  # its first line and its last byte, not all of it
        header = _header(existing.readline().rstrip(b"\n"))
        size = existing.seek(0, os.SEEK_END)
        if size:
            existing.seek(-1, os.SEEK_END)
        ends_in_newline = not size or existing.read(1) == b"\n"
    first, _, rest = data.partition(b"\n")
    if _header(first) == header:  # the same header again (any case, with or without a BOM)
        data = rest
    with open(copy, "ab") as out:
        if not ends_in_newline:
            out.write(b"\n")
        out.write(data)
    return len(data)


def start(folder: Path) -> None:
    note = pending(folder)
    try:
        if not note or note["kind"] != "draft":
            raise FileNotFoundError
        (folder / "pending.json").unlink()  # the one start that removes it wins
    except FileNotFoundError:
        raise MailPipelineError(f"import {folder.name} is not a draft: only a draft is started") from None


def cancel(folder: Path) -> None:
    write_json(folder / "pending.json", {"kind": "cancelled"})


def _header(line: bytes) -> bytes:
    return line.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r").strip().lower()

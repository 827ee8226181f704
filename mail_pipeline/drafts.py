"""Imports that do not start at once: drafts (Mailcoach: create, append, start) and scheduled
ones (GreenArrow's `begins_at`, `--at`). Whether an import is a draft or scheduled is recorded in
the Dagster instance by the job service; this module holds the draft's file and reads times."""
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from mail_pipeline.errors import MailPipelineError
from mail_pipeline.files import replacing
from mail_pipeline.layout import Folder
from mail_pipeline.options import ImportOptions
from mail_pipeline.times import parse_times


def parse_when(text: str, date_format: str = "mdy") -> datetime:
    """`--at` / `begins_at`: "now" or any accepted time (UTC unless it says otherwise)."""
    if text.strip().lower() == "now":
        return datetime.now(timezone.utc)
    [when] = pl.select(parse_times(pl.lit(text.strip()), date_format)).to_series().to_list()
    if when is None:
        raise MailPipelineError(f"invalid time {text!r}: expected 'now' or a time such as "
                                "2026-12-01 09:00 or 2026-12-01T09:00:00+01:00")
    return when


def refuse_zip(source: Path) -> None:
    """A draft's file is extended by appending text, which a ZIP cannot take."""
    if source.suffix.lower() == ".zip":
        raise MailPipelineError("a draft holds CSV text: give a CSV file, not a ZIP")


def draft(folder: Folder, source: Path, options: ImportOptions) -> ImportOptions:
    """Keep the draft's own copy of its file, which `append` extends."""
    refuse_zip(source)
    folder.path.mkdir(parents=True, exist_ok=True)
    with replacing(folder.draft) as tmp:  # (replaced whole: a reader never sees half of it)
        shutil.copyfile(source, tmp)
    return options.model_copy(update={"source": str(folder.draft)})


def append(folder: Folder, source: Path) -> int:
    """Mailcoach's append: more rows at the end of a draft's file (the added file's header line
    is left out when it repeats the draft's). Returns the bytes added."""
    if not source.is_file():
        raise MailPipelineError(f"file not found: {source}")
    refuse_zip(source)
    data = source.read_bytes()
    with open(folder.draft, "rb") as existing:  # its first line and its last byte, not all of it
        header = _header(existing.readline().rstrip(b"\n"))
        size = existing.seek(0, os.SEEK_END)
        if size:
            existing.seek(-1, os.SEEK_END)
        ends_in_newline = not size or existing.read(1) == b"\n"
    first, _, rest = data.partition(b"\n")
    if _header(first) == header:  # the same header again (any case, with or without a BOM)
        data = rest
    with open(folder.draft, "ab") as out:
        if not ends_in_newline:
            out.write(b"\n")
        out.write(data)
    return len(data)


def _header(line: bytes) -> bytes:
    return line.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r").strip().lower()

"""Per-import logs (spec §4): one file per category, a plain-text log, and the stats.

Every file is written under a temporary name and renamed, so a reader never sees half a log.
"""
import contextlib
import csv
import io
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from mail_pipeline.files import replacing, write_text
from mail_pipeline.layout import CATEGORIES, EMAIL_CATEGORIES, log_path

def write_category_logs(folder: Path, outcomes: list[Path], duplicates: pl.DataFrame,
                        failed: list[Path], header: list[str]) -> dict[str, int]:
    """Write every category's log (emails in file order) and return the count of each.
    `outcomes` are the merge's batches in row order (row, email, category), read one at a
    time and appended to each category's file, so memory stays flat."""
    counts = {c: 0 for c in CATEGORIES}
    with contextlib.ExitStack() as stack:
        files = {c: stack.enter_context(replacing(log_path(folder, c))) for c in EMAIL_CATEGORIES}
        out = {c: stack.enter_context(open(path, "wb")) for c, path in files.items()}
        for batch in outcomes:
            for (category,), emails in pl.read_parquet(batch).partition_by(
                    "category", as_dict=True, include_key=False).items():
                counts[category] += emails.height
                _write_emails(out[category], emails)
        counts["skipped_duplicate"] = duplicates.height
        _write_emails(out["skipped_duplicate"], duplicates.sort("row"))
    counts["failed"] = write_failed_log(folder, failed, header)
    return counts


def write_failed_log(folder: Path, failed: list[Path], header: list[str]) -> int:
    """The `failed` log from the validated stage's failed parts; returns how many rows failed."""
    failed_rows = pl.read_parquet(failed)  # a part per chunk read, so never none
    write_text(log_path(folder, "failed"), _failed_csv(failed_rows, header))
    return failed_rows.height


def _write_emails(out, emails: pl.DataFrame) -> None:
    """One normalized email per line, never quoted (GreenArrow's flat list)."""
    if emails.height:
        emails.select("email").write_csv(out, include_header=False, quote_style="never")


def write_email_log(folder: Path, name: str, emails: pl.DataFrame) -> None:
    with replacing(log_path(folder, name)) as tmp:
        with open(tmp, "wb") as out:
            _write_emails(out, emails)


def _failed_csv(failed: pl.DataFrame, header: list[str]) -> str:
    """The failed rows as they came, the reason last (GreenArrow's failed log)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*header, "error"])
    # Records the reader rejected (by line) come first, then rows that failed a value check
    # (by row): DuckDB's reader numbers the two differently, so they cannot be interleaved.
    ordered = failed.sort(pl.col("line").is_null(), pl.coalesce("line", "row"))
    for cells, error in zip(ordered["cells"].to_list(), ordered["error"].to_list()):
        writer.writerow([*cells, error])
    return out.getvalue()


def append_log(folder: Path, message: str) -> None:
    """Add a line to the import's plain-text log, listmonk style (`2026/11/23 15:57:12 …`);
    appends are whole lines."""
    path = log_path(folder, "log")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{datetime.now(timezone.utc):%Y/%m/%d %H:%M:%S} {message}\n")


def failed_preview(folder: Path, limit: int = 20, clip: int = 200) -> tuple[list[str], list[list[str]]]:
    """The failed log's header and first rows, each row padded or cut to the header's width
    (a record with the wrong number of fields keeps its reason last), and each cell cut to
    `clip` characters: the preview goes into the run's metadata, a failed row may hold 50 MB."""
    with open(log_path(folder, "failed"), encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [row for _, row in zip(range(limit), reader)]
    width = len(header) - 1
    cut = lambda cell: cell if len(cell) <= clip else cell[:clip] + "…"  # noqa: E731
    return header, [[cut(c) for c in (*(row[:-1] + [""] * width)[:width], row[-1])] for row in rows]


def summary(counts: dict[str, int], number_of_records: int) -> str:
    parts = ", ".join(f"{c} {counts[c]}" for c in CATEGORIES if counts.get(c))
    return f"imported {number_of_records} records: {parts or 'nothing to do'}"

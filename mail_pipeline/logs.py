"""Per-import logs (spec §4): one file per category, a plain-text log, and the stats.

Every file is written under a temporary name and renamed, so a reader never sees half a log.
"""
import contextlib
import csv
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from mail_pipeline.files import replacing
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
    """The `failed` log from the validated stage's failed parts (GreenArrow's failed log: the
    rows as they came, the reason last); returns how many rows failed."""
    failed_rows = pl.read_parquet(failed)  # a part per chunk read, so never none
    # Records the reader rejected (by line) come first, then rows that failed a value check
    # (by row): DuckDB's reader numbers the two differently, so they cannot be interleaved.
    ordered = failed_rows.sort(pl.col("line").is_null(), pl.coalesce("line", "row"))
    heading = pl.DataFrame({"cells": [header], "error": ["error"]},
                           schema={"cells": pl.List(pl.String), "error": pl.String})
    with replacing(log_path(folder, "failed")) as tmp:
        with open(tmp, "wb") as out:
            for part in (heading, ordered):
                _failed_lines(part).write_csv(out, include_header=False, quote_style="never")
    return failed_rows.height


def _csv_field(text: pl.Expr) -> pl.Expr:
    """A field as Python's `csv.writer` writes it (QUOTE_MINIMAL, `\n` line ends): quoted, its
    quotes doubled, when it holds a comma, a quote or a line break (a lone carriage return
    included, which `csv.writer` leaves bare, so that the log always reads back)."""
    return (pl.when(text.str.contains(r'[,"\r\n]'))
            .then(pl.lit('"') + text.str.replace_all('"', '""', literal=True) + pl.lit('"'))
            .otherwise(text))


def _failed_lines(rows: pl.DataFrame) -> pl.DataFrame:
    """Each row as its line of CSV (cells, then the reason), built by Polars: Python's `csv`
    module took 0.8 s for the 250k failed rows of a 10M import, this 0.3 s, with the same bytes
    but for the lone carriage return (tests/test_properties.py)."""
    cells = pl.col("cells").list.eval(_csv_field(pl.element().fill_null(""))).list.join(",")
    error = _csv_field(pl.col("error").fill_null(""))
    alone = pl.when(error == "").then(pl.lit('""')).otherwise(error)  # (csv.writer's one empty field)
    return rows.select(pl.when(pl.col("cells").list.len() > 0)
                       .then(pl.concat_str([cells, error], separator=","))
                       .otherwise(alone).alias("line"))


def _write_emails(out, emails: pl.DataFrame) -> None:
    """One normalized email per line, never quoted (GreenArrow's flat list)."""
    if emails.height:
        emails.select("email").write_csv(out, include_header=False, quote_style="never")


def write_email_log(folder: Path, name: str, emails: pl.DataFrame) -> None:
    with replacing(log_path(folder, name)) as tmp:
        with open(tmp, "wb") as out:
            _write_emails(out, emails)


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

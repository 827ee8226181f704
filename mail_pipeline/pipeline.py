"""The import's stages as plain functions over the import's folder: file → frame → store → logs.

Each stage reads only what the stage before it wrote in `imports/<id>/`, and writes its own
output under a temporary name first, so any stage can be re-run after a crash. The Dagster assets
in `assets/` are thin wrappers around these.
"""
import shutil
import urllib.parse
from contextlib import closing
from pathlib import Path
from typing import Callable, Optional

import polars as pl

from mail_pipeline import (catalog, control, download, logs, mapping, merge, reading, reuse, staging,
                           store, validation)
from mail_pipeline.document import stats
from mail_pipeline.layout import Folder
from mail_pipeline.files import read_json, replacing, write_json
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.options import ImportOptions, build


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    with replacing(path) as tmp:
        frame.write_parquet(tmp, compression="lz4")  # working files: speed over size


# What a stage is doing, for whoever shows the import's state: "downloading" while a URL source
# is fetched, then "staging"; "waiting" (with whom) while another process holds the store.
OnStage = Callable[[str, str], None]


def fetched(folder: Folder, url: str, on_stage: Optional[OnStage] = None,
            public_only: bool = False) -> Path:
    """A URL source, downloaded into the import's folder (state `downloading` meanwhile)."""
    download.check_url(url, public_only)
    path = urllib.parse.urlsplit(url).path.lower()
    suffix = next((s for s in (".zip", ".tsv") if path.endswith(s)), ".csv")  # (.tsv: tabs)
    dest = folder.download(suffix)
    if on_stage:
        on_stage("downloading", url)
    try:
        size = download.download(url, dest, lambda n: logs.append_log(
            folder.path, f"downloading {url} (attempt {n} of {len(download.RETRY_DELAYS) + 1})"),
            public_only, lambda n, reason, delay: logs.append_log(
                folder.path, f"attempt {n} failed ({reason}); trying again in {delay:.0f} s"))
    finally:
        if on_stage:
            on_stage("staging", "")
    logs.append_log(folder.path, f"downloaded {size} bytes")
    return dest


def content_bytes(options: ImportOptions) -> bytes:
    """Inline CSV text (GreenArrow's `file_source.content`, Mailcoach's `subscribers_csv`,
    Mailrith's `csv_text`) as the bytes of a file in the import's declared encoding (UTF-8
    when none is declared)."""
    encoding = options.encoding or "utf-8"
    try:
        return options.content.encode(encoding)
    except UnicodeEncodeError as exc:
        raise MailPipelineError(f"the inline CSV holds {exc.object[exc.start:exc.end]!r}, which "
                                f"{encoding.upper()} cannot encode") from None


def with_content_saved(options: ImportOptions, path: Path) -> ImportOptions:
    """Inline CSV text written to `path`, which becomes the source."""
    data = content_bytes(options)
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return options.model_copy(update={"source": str(path), "content": None,
                                      "encoding": options.encoding or "utf-8"})


def load_options(folder: Folder) -> ImportOptions:
    return build(read_json(folder.options)["options"])


def columns_of(first_record: list[str], options: ImportOptions) -> list[str]:
    """The file's column names: its header, or without one "column 1", "column 2", … named
    after the positional mapping where it names them (one per field of the first record)."""
    if options.header:
        return first_record
    names = options.mapping or []
    return [(names[i] if i < len(names) and names[i] else f"column {i + 1}")
            for i in range(len(first_record))]


def preflight(source: Path, options: ImportOptions) -> mapping.Mapping:
    """Everything that can be refused from the options and the file's first record, checked
    before the import writes anything."""
    return settle(source, options)[1]


def settle(source: Path, options: ImportOptions) -> tuple[ImportOptions, mapping.Mapping]:
    """The options with the file's delimiter and encoding settled (detected from its start when
    not given) and the mapping of its columns, or the reason the file cannot be imported."""
    start = staging.preview(source, options)
    columns = columns_of(start.record, start.options)
    return start.options, mapping.resolve(columns, start.options)


def stage_raw(folder: Folder, options: ImportOptions, source: Optional[Path] = None,
              on_stage: Optional[OnStage] = None) -> dict:
    """Stage 1, the raw file: copy the source into the import's folder as UTF-8 CSV.

    Once an attempt has committed rows, the import is pinned: a re-execution resumes from the
    file and options staged the first time, whatever the source or the config says now.
    Inline CSV text (`content`) is written to the folder first and staged from there."""
    if merge.outcome_files(folder.outcomes):
        logs.append_log(folder.path, "resuming: keeping the file and options of the first attempt")
        return read_json(folder.options)["staged"]
    folder.path.mkdir(parents=True, exist_ok=True)
    if options.content is not None:
        options = with_content_saved(options, folder.content)
    if source is None:
        if not options.source:
            raise MailPipelineError("no source: give a file path, or CSV text as `content`")
        source = (fetched(folder, options.source, on_stage, options.public_urls_only)
                  if "://" in options.source else Path(options.source))
    given = options
    options, _ = settle(source, options)  # the staged options hold what was detected
    staged = staging.stage_source(source, folder.source, options)
    metadata = {"path": str(staged.path), "size": staged.size, "sha256": staged.sha256,
                "origin": staged.origin, "lines": staged.lines - (1 if options.header else 0),
                "longest_line": staged.longest_line}
    write_json(folder.options, {"options": options.model_dump(), "origin": staged.origin,
                                     "line_endings": staged.line_endings, "staged": metadata})
    logs.append_log(folder.path, f"importing {staged.origin!r}: mode {options.mode}, lists "
                    f"{', '.join(options.lists) or '(none)'}, overwrite {str(options.overwrite).lower()}")
    if given.delimiter is None:
        logs.append_log(folder.path, f"detected delimiter {options.delimiter!r}")
    if given.encoding is None:
        logs.append_log(folder.path, f"detected encoding {options.encoding}")
    return metadata


# Rows read and checked at a time: memory stays flat whatever the file's size (10M rows: at 250k
# a chunk the validated stage peaks at 0.73 GB, at 500k 1.0 GB, at 1M 1.5 GB, in the same time).
ROWS_PER_CHUNK = 250_000


def parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.parquet"))


def validate_import(folder: Folder, rows_per_chunk: int = ROWS_PER_CHUNK) -> dict:
    """Stage 2, the validated frame: read, map and check the file chunk by chunk, writing each
    chunk's valid and failed rows as parts; then find the duplicates across the whole file."""
    staged = read_json(folder.options)
    options = build(staged["options"])
    columns = columns_of(reading.read_header(folder.source, options), options)
    resolved = mapping.resolve(columns, options)
    cache_key = reuse.key(staged["staged"]["sha256"], staged["line_endings"], staged["options"])
    validated = [p.name for p in (folder.valid, folder.failed, folder.duplicates, folder.validation)]
    if reuse.fetch(cache_key, folder.path, validated):
        summary = read_json(folder.validation)
        logs.append_log(folder.path, "the same file was validated before with the same options: "
                        "reusing its validated rows, failures and duplicates")
    else:
        # Lines longer than DuckDB's reader takes: the line reader decides (as it does for
        # mixed line ends, which read_chunks sees for itself).
        line_reader = staged["staged"].get("longest_line", 0) > reading.LONGEST_LINE
        summary = _validate(folder, options, columns, resolved, staged["line_endings"],
                            rows_per_chunk, line_reader)
        reuse.keep(cache_key, folder.path, validated)
    for line in summary["mapping"]:
        logs.append_log(folder.path, line)
    logs.append_log(folder.path, f"read {summary['number_of_records']} records: {summary['valid']} "
                    f"valid, {summary['failed']} failed, {summary['skipped_duplicate']} duplicates")
    if options.too_many_failed(summary["failed"], summary["number_of_records"]):
        _refuse_failed(folder, options, summary)
    return summary


def _refuse_failed(folder: Folder, options: ImportOptions, summary: dict) -> None:
    """More rows failed than `max_failed` allows: the import stops before the merge, with the
    failed log written so the person can read why."""
    logs.write_failed_log(folder.path, parts(folder.failed), summary["columns"])
    where = (f"read them with: mail-pipeline imports logs {folder.import_id} failed"
             if not folder.import_id.startswith("preview-")
             else f"read them in {logs.log_path(folder.path, 'failed')}")
    raise MailPipelineError(f"{summary['failed']} of {summary['number_of_records']} rows failed "
                            f"validation, more than --max-failed {options.max_failed} allows, so "
                            f"nothing was written; {where}")


def _validate(folder: Folder, options: ImportOptions, columns: list[str],
              resolved: mapping.Mapping, line_endings: str, rows_per_chunk: int,
              line_reader: bool) -> dict:
    def validate_chunks(line_reader: bool) -> tuple[int, int, int]:
        """Records read, rows valid (duplicates included) and rows failed."""
        for directory in (folder.valid, folder.failed):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        records = valid = failed = 0
        chunks = reading.read_chunks(folder.source, options, len(columns), line_endings,
                                     rows_per_chunk, line_reader)
        for number, chunk in enumerate(chunks):
            result = validation.validate(chunk, columns, resolved, options.date_format)
            _write_parquet(result.valid, folder.valid / f"part-{number:05d}.parquet")
            _write_parquet(result.failed, folder.failed / f"part-{number:05d}.parquet")
            records += result.number_of_records
            valid += result.valid.height
            failed += result.failed.height
        return records, valid, failed

    try:
        number_of_records, valid, failed = validate_chunks(line_reader)
    except reading.Reread:  # DuckDB's reader gave up midway: the line reader decides the file
        number_of_records, valid, failed = validate_chunks(line_reader=True)
    duplicates = validation.duplicates(parts(folder.valid))
    _write_parquet(duplicates, folder.duplicates)
    summary = {"columns": columns, "mapping": resolved.describe(columns),
               "number_of_records": number_of_records, "valid": valid - duplicates.height,
               "failed": failed, "skipped_duplicate": duplicates.height}
    write_json(folder.validation, summary)
    return summary


def merge_import(folder: Folder, database: Path,
                 on_progress: Optional[Callable[[merge.Progress], None]] = None,
                 dry_run: bool = False, requested: Optional[control.Requested] = None,
                 on_stage: Optional[OnStage] = None) -> dict:
    """Stage 3, the subscriber table: apply the valid rows in batches, each one transaction.
    A dry run applies them all in one transaction and rolls it back: the same statements give
    the same categories, and the store is left as it was."""
    options = load_options(folder)
    summary = read_json(folder.validation)
    already = summary["failed"] + summary["skipped_duplicate"]
    if not parts(folder.valid):  # (a re-execution from an older version's validated frame)
        raise MailPipelineError("the validated rows are missing: run the import's validated_frame "
                                "step again")

    def progress(p: merge.Progress) -> None:
        write_json(folder.progress, {"stage": "merging", "batch": p.batch, "batches": p.batches,
                                     "records_imported": already + p.rows_done})
        verb = "applied (dry run)" if dry_run else "committed"
        logs.append_log(folder.path, f"{verb} batch {p.batch}/{p.batches} ({p.rows_done} rows)")
        if on_progress:
            on_progress(p)
        if not dry_run and p.batch < p.batches:
            control.check(requested, folder.import_id)  # a pause or cancel stops between batches

    # Mailcoach: subscribers absent from the file are unsubscribed only if no row failed.
    others = options.unsubscribe_others and summary["failed"] == 0
    if options.unsubscribe_others and not others:
        logs.append_log(folder.path, f"not unsubscribing others: {summary['failed']} rows failed")
    if not dry_run:
        # Every import passes here, whatever launched it. The target lists get their ids (a list
        # is created on first use) here rather than when staging, so that an import refused
        # before the merge (`max_failed`) writes nothing; a dry run creates none.
        catalog.ensure_lists(options.lists)
    waited = False

    def wait(what: str) -> None:  # the import is `scheduled` until the store is its
        nonlocal waited
        waited = True
        if on_stage:
            on_stage("waiting", what)
        logs.append_log(folder.path, f"waiting for {what}")

    # A dry run with no store yet merges into an empty one in memory, so it never creates one.
    opened = (closing(store.empty()) if dry_run and not database.exists()
              else store.writer(database, on_wait=wait))
    try:
        with opened as con:
            if waited and on_stage:
                on_stage("merging", "")
            if not dry_run:
                control.check(requested, folder.import_id)  # asked to stop while it waited
            merge.merge(con, folder.import_id, parts(folder.valid), folder.duplicates, options,
                        folder.outcomes, progress, unsubscribe_others=others, dry_run=dry_run)
    finally:
        if waited and on_stage:
            on_stage("merging", "")
    if dry_run:
        logs.append_log(folder.path, "dry run: every batch rolled back, the store is unchanged")
    counts = dict(merge.outcomes(folder.outcomes).group_by("category").len().collect().iter_rows())
    if others:
        counts["unsubscribed_others"] = merge.unsubscribed_others(folder.outcomes).height
        logs.append_log(folder.path, f"unsubscribed {counts['unsubscribed_others']} subscribers "
                        "of the target lists absent from the file")
    return counts


def write_import_logs(folder: Folder) -> dict:
    """Stage 4, the logs: one file per category, the stats, and the closing log line."""
    summary = read_json(folder.validation)
    counts = logs.write_category_logs(folder.path, merge.outcome_files(folder.outcomes),
                                      pl.read_parquet(folder.duplicates), parts(folder.failed),
                                      summary["columns"])
    result = stats(summary["number_of_records"], counts, summary["number_of_records"])
    others = merge.unsubscribed_others(folder.outcomes)
    if others is not None:  # Mailcoach's unsubscribe_others ran
        logs.write_email_log(folder.path, "unsubscribed_others", others)
        result["unsubscribed_others"] = others.height
    write_json(folder.stats, result)
    logs.append_log(folder.path, logs.summary(counts, summary["number_of_records"]))
    return result

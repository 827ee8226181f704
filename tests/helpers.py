"""Run an import through the core stages, without Dagster, and read the store back."""
from pathlib import Path

import duckdb

from mail_pipeline import home, pipeline
from mail_pipeline.logs import log_path
from mail_pipeline.options import build


def run_import(source: Path, **options) -> tuple[str, dict]:
    """Import `source` with the given options; return (import id, stats)."""
    opts = build(options)
    folder = pipeline.Folder.of(home.new_import_id())
    pipeline.stage_raw(folder, opts, source)
    pipeline.validate_import(folder)
    pipeline.merge_import(folder, home.database_path())
    return folder.import_id, pipeline.write_import_logs(folder)


def categories(stats: dict) -> dict:
    """The non-zero categories of an import's stats."""
    return {k: v for k, v in stats["subscribers"].items() if v}


def log_lines(import_id: str, category: str) -> list[str]:
    return log_path(home.import_dir(import_id), category).read_text().splitlines()


def query(sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(str(home.database_path()), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()

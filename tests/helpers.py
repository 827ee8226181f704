"""Run an import through the core stages (without Dagster) or the command line, and read the
store back."""
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import duckdb

from mail_pipeline import home, pipeline
from mail_pipeline.logs import log_path
from mail_pipeline.options import build


def run_import(path: Optional[Path], **options) -> tuple[str, dict]:
    """Import `path` (or, when None, the options' own source) with the given options; return
    (import id, stats)."""
    opts = build(options)
    folder = pipeline.Folder.of(home.new_import_id())
    pipeline.stage_raw(folder, opts, path)
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


def cli(*args, stdin=None, home=None) -> subprocess.CompletedProcess:
    """`mail-pipeline ARGS` as a user runs it, on the given home."""
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(home))
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([sys.executable, "-m", "service.cli", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=300)

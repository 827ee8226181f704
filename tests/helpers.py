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


def failing_files(monkeypatch, module, method: str, error: OSError, at: int = 1) -> None:
    """Files `module` opens for writing ("wb") fail at the `at`-th call of their `method`: a
    `write` before writing (a full disk), a `close` after closing (a quota met by the last
    bytes)."""
    real_open = open

    def opened(path, mode="r", *args):
        f = real_open(path, mode, *args)
        if mode == "wb":
            real, calls = getattr(f, method), []

            def failing(*a):
                calls.append(1)
                if len(calls) != at:
                    return real(*a)
                if method == "close":
                    real()
                raise error
            setattr(f, method, failing)
        return f

    monkeypatch.setattr(module, "open", opened, raising=False)


def cli(*args, stdin=None, home=None) -> subprocess.CompletedProcess:
    """`mail-pipeline ARGS` as a user runs it, on the given home (and the test's Dagster
    instance: DAGSTER_HOME when a test sets it)."""
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "service.cli", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=300)


class Executed:
    """A run of the import job executed in this process through the job service."""

    def __init__(self, instance, run_id: str):
        import dagster as dg
        self.instance, self.run_id = instance, run_id
        self.success = instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS

    def materializations(self) -> dict:
        """Each asset's metadata, by asset key."""
        import dagster as dg
        records = self.instance.get_records_for_run(
            self.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        return {r.event_log_entry.asset_materialization.asset_key.to_user_string():
                r.event_log_entry.asset_materialization.metadata for r in records}

    def check_results(self) -> dict:
        """Each asset check's outcome (passed?), by check name."""
        import dagster as dg
        records = self.instance.get_records_for_run(
            self.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        return {r.event_log_entry.dagster_event.event_specific_data.check_name:
                r.event_log_entry.dagster_event.event_specific_data.passed for r in records}


def execute(instance, import_id: str, options) -> Executed:
    """Run an import in this process, as `mail-pipeline import` does."""
    from service import jobs
    return Executed(instance, jobs.launch_import(instance, import_id, options, detach=False).run_id)

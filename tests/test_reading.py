"""Reading commands answer at once (issue 18): they read the run records with SQL and the import's
files, and import neither Dagster, the data libraries nor the code location's definitions. Their
timings against `python -c "import dagster"` are the benchmark's (bench/benchmark.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("dagster", "polars", "duckdb", "pandera", "assets.definitions", "pydantic")
PROBE = """
import json, sys
from service.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # (--help and --version exit from argparse)
    code = exc.code
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)


def _loaded(*argv: str, home: Path) -> dict:
    import os
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["MAIL_PIPELINE_HOME"] = str(home)
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A home with a finished import, a failed one and a queued one."""
    home = tmp_path_factory.mktemp("reading") / "home"
    work = home.parent
    (work / "ok.csv").write_text("email,name\nann@example.com,Ann\nbad,Bo\n")
    (work / "all-bad.csv").write_text("email\nbad\n")
    assert cli("import", str(work / "ok.csv"), "--list", "news", home=home).returncode == 0
    assert cli("import", str(work / "all-bad.csv"), "--max-failed", "0", home=home).returncode == 1
    assert cli("import", str(work / "ok.csv"), "--detach", home=home).returncode == 0
    return home


@pytest.mark.parametrize("argv", [
    ["imports"], ["imports", "--json"], ["imports", "show", "1"], ["imports", "show", "2", "--json"],
    ["imports", "show", "3"], ["imports", "logs", "1", "failed"], ["--help"], ["--version"],
    ["imports", "show", "99"],
])
def test_a_reading_command_imports_neither_dagster_nor_the_data_libraries(imported, argv):
    said = _loaded(*argv, home=imported)
    assert said["loaded"] == [], said
    assert said["code"] == (2 if argv[-1] == "99" else 0), said


def test_lists_reads_the_counts_from_the_store_and_nothing_else(imported):
    said = _loaded("lists", home=imported)
    assert said["code"] == 0 and said["loaded"] == ["duckdb"], said  # the counts live in the store


def test_what_the_reader_says_matches_the_runs(imported):
    listing = json.loads(cli("imports", "--json", "--scope", "all", home=imported).stdout)
    states = {d["id"]: d["state"] for d in listing["data"]}
    assert states == {"1": "finished", "2": "failed", "3": "scheduled"}
    failed = json.loads(cli("imports", "show", "2", "--json", home=imported).stdout)
    assert failed["error_message"].startswith("1 of 1 rows failed validation, more than --max-failed 0")
    finished = json.loads(cli("imports", "show", "1", "--json", home=imported).stdout)
    assert finished["stats"]["subscribers"]["added"] == 1 and finished["stats"]["subscribers"]["failed"] == 1
    assert finished["finished_at"] >= finished["created_at"] and finished["run_id"]

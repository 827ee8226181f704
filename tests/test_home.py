"""The home is found, not made (spec §1): `MAIL_PIPELINE_HOME`, else the nearest `.mail_pipeline`
in the current folder or above it; only commands that write make one, in the current folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mail_pipeline import home

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "subscribers.csv"


@pytest.fixture
def nowhere(tmp_path, monkeypatch) -> Path:
    """A folder with no home in it or above it, and no MAIL_PIPELINE_HOME."""
    monkeypatch.delenv("MAIL_PIPELINE_HOME", raising=False)
    folder = tmp_path / "work"
    folder.mkdir()
    if home.nearest(folder):
        pytest.skip(f"a .mail_pipeline above the test folder ({home.nearest(folder)}) would be found")
    return folder


def run(*args: str, cwd: Path, env_home=None) -> subprocess.CompletedProcess:
    """`mail-pipeline ARGS` run in `cwd`, with MAIL_PIPELINE_HOME only when given."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAIL_PIPELINE_HOME", "DAGSTER_HOME")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if env_home is not None:
        env["MAIL_PIPELINE_HOME"] = str(env_home)
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def files_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def test_the_nearest_home_above_the_current_folder_is_found(nowhere, monkeypatch):
    (nowhere / ".mail_pipeline").mkdir()
    deeper = nowhere / "a" / "b"
    deeper.mkdir(parents=True)
    monkeypatch.chdir(deeper)
    assert home.location() == (nowhere / ".mail_pipeline").resolve()
    (deeper / ".mail_pipeline").mkdir()  # a nearer one wins, as with git
    assert home.location() == (deeper / ".mail_pipeline").resolve()


def test_without_a_home_the_default_is_the_current_folder_and_nothing_is_made(nowhere, monkeypatch):
    monkeypatch.chdir(nowhere)
    assert home.location() == (nowhere / ".mail_pipeline").resolve()
    assert files_under(nowhere) == []


def test_the_variable_wins_over_a_home_found_by_walking_up(nowhere, tmp_path, monkeypatch):
    (nowhere / ".mail_pipeline").mkdir()
    monkeypatch.chdir(nowhere)
    monkeypatch.setenv("MAIL_PIPELINE_HOME", str(tmp_path / "named"))
    assert home.location() == (tmp_path / "named").resolve()


@pytest.mark.parametrize("command", [
    ("imports",), ("imports", "--json"), ("imports", "show", "1"), ("imports", "logs", "1", "failed"),
    ("imports", "resume", "1"), ("lists",), ("lists", "--json"), ("tokens", "list"),
    ("tokens", "revoke", "ci"), ("export", "--json"),
])
def test_a_reading_command_without_a_home_says_so_and_makes_none(nowhere, command):
    result = run(*command, cwd=nowhere)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr == (f"error: no mail-pipeline home here: no .mail_pipeline in {nowhere.resolve()} "
                             "or above it, and MAIL_PIPELINE_HOME is not set; run 'mail-pipeline "
                             "import FILE' to make one\n")
    assert files_under(nowhere) == []


def test_a_home_named_by_the_variable_that_does_not_exist_is_not_made_by_a_read(nowhere):
    named = nowhere / "named"
    result = run("imports", cwd=nowhere, env_home=named)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: no mail-pipeline home at {named}: MAIL_PIPELINE_HOME "
                                    "names a folder that does not exist")
    assert result.stderr.count("\n") == 1 and not named.exists()


def test_import_makes_the_home_in_the_current_folder_and_a_subfolder_finds_it(nowhere):
    made = run("import", str(SAMPLE), "--list", "news", "--json", cwd=nowhere)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["stats"]["subscribers"]["added"] == 4
    found = nowhere / ".mail_pipeline"
    assert (found / "subscribers.duckdb").is_file() and (found / "dagster").is_dir()
    deeper = nowhere / "sub" / "folder"
    deeper.mkdir(parents=True)
    listed = run("imports", cwd=deeper)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == f"home: {found}"  # plain output names the home first
    assert "1 import, page 1 of 1" in listed.stdout
    [row] = json.loads(run("lists", "--json", cwd=deeper).stdout)["data"]
    assert (row["name"], row["subscriber_count"]) == ("news", 4)
    assert not (deeper / ".mail_pipeline").exists()


@pytest.mark.parametrize("command", [("lists", "create", "weekly"), ("tokens", "create", "ci")])
def test_commands_that_write_make_a_home_in_the_current_folder(nowhere, command):
    result = run(*command, "--json", cwd=nowhere)
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # --json: the document alone, no home line
    assert (nowhere / ".mail_pipeline").is_dir()


def test_the_variable_wins_over_the_walk_up(nowhere, tmp_path):
    (nowhere / ".mail_pipeline").mkdir()
    named = tmp_path / "named"
    assert run("lists", "create", "weekly", cwd=nowhere, env_home=named).returncode == 0
    assert [r["name"] for r in json.loads(run("lists", "--json", cwd=nowhere, env_home=named).stdout)["data"]] == ["weekly"]
    assert json.loads(run("lists", "--json", cwd=nowhere).stdout)["data"] == []  # the walked-up one
    assert run("lists", cwd=nowhere, env_home=named).stdout.splitlines()[0] == f"home: {named}"


def test_the_home_found_is_pinned_for_the_processes_the_command_starts(nowhere, monkeypatch):
    """Dagster's daemon, code servers and run workers find the home by the variable, whatever
    folder they run in."""
    from service import cli
    (nowhere / ".mail_pipeline").mkdir()
    deeper = nowhere / "deeper"
    deeper.mkdir()
    monkeypatch.chdir(deeper)
    args = cli.parser().parse_args(["lists", "--json"])
    args.json = True
    cli._use_home(args)
    assert os.environ["MAIL_PIPELINE_HOME"] == str((nowhere / ".mail_pipeline").resolve())
    monkeypatch.chdir(nowhere.parent)
    assert home.location() == (nowhere / ".mail_pipeline").resolve()

"""Messages a person can act on: what to look at next, --max-failed, an import where every row
failed, the closest choice to a mistyped one, help on every option, the listing's headers and
pages, and --json formatted alike everywhere. Through the command line, as a user runs it."""
import argparse
import json
from pathlib import Path

import pytest

from tests.helpers import cli

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "subscribers.csv"  # 4 added, 2 failed, 1 duplicate


def _lines(result) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


# --- what to look at next -----------------------------------------------------------------------

def test_after_an_import_one_line_says_what_to_look_at_next(mail_home, write_csv):
    lines = _lines(cli("import", str(SAMPLE), "--list", "news", home=mail_home))
    assert lines[0] == f"home: {mail_home}"
    assert lines[-1] == "next: 2 rows failed: read why with 'mail-pipeline imports logs 1 failed'"
    assert sum(line.startswith("next:") for line in lines) == 1
    clean = write_csv("email\nann@example.com\n")
    assert _lines(cli("import", str(clean), "--list", "news", home=mail_home))[-1] == (
        "next: 'mail-pipeline lists' shows the lists and their subscriber counts")
    again = _lines(cli("import", str(clean), "--list", "news", home=mail_home))
    assert again[-1] == ("next: 1 row was skipped_overwrite (already on the lists): import again "
                         "with --overwrite to update them")
    as_json = cli("import", str(clean), "--list", "news", "--json", home=mail_home)
    assert as_json.returncode == 0 and "next:" not in as_json.stdout + as_json.stderr
    json.loads(as_json.stdout)


# --- --max-failed -------------------------------------------------------------------------------

@pytest.mark.parametrize("limit, refused", [("1", True), ("2", False), ("20%", True), ("30%", False)])
def test_max_failed_refuses_an_import_with_more_failed_rows_before_any_write(mail_home, limit, refused):
    result = cli("import", str(SAMPLE), "--list", "news", "--max-failed", limit, home=mail_home)
    if not refused:  # 2 of 7 rows (29%) is not more than 2, nor than 30%
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1
    [line] = result.stderr.splitlines()[-1:]
    assert line == (f"error: import 1 failed: 2 of 7 rows failed validation, more than --max-failed "
                    f"{limit} allows, so nothing was written; read them with: mail-pipeline "
                    "imports logs 1 failed")
    document = json.loads(cli("imports", "show", "1", "--json", home=mail_home).stdout)
    assert document["state"] == "failed" and "2 of 7 rows failed" in document["error_message"]
    failed = cli("imports", "logs", "1", "failed", home=mail_home).stdout.splitlines()
    assert failed[0].endswith(",error") and len(failed) == 3
    # Nothing was written: no store, and not even the list the import named.
    assert not (mail_home / "subscribers.duckdb").exists()
    assert json.loads(cli("lists", "--json", home=mail_home).stdout) == {"data": []}


def test_max_failed_is_checked_before_the_import_is_made(mail_home):
    for bad in ("x", "-1", "120%", "1.5"):
        result = cli("import", str(SAMPLE), "--max-failed", bad, home=mail_home)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr == (f"error: invalid max_failed {bad!r}: give a number of rows (10) "
                                 "or a percentage of the records read (5%)\n")
    assert not (mail_home / "imports").exists()


def test_an_import_where_every_row_failed_exits_1(mail_home, write_csv):
    path = write_csv("email\nnot-an-email\nalso@@bad\n")
    result = cli("import", str(path), "--json", home=mail_home)
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["state"] == "finished" and document["stats"]["subscribers"]["failed"] == 2
    assert result.stderr.splitlines()[-1] == ("error: import 1: all 2 rows failed; read why with: "
                                              "mail-pipeline imports logs 1 failed")


# --- the closest choice -------------------------------------------------------------------------

def test_an_unknown_choice_suggests_the_closest_one(mail_home):
    mail_home.mkdir()  # (a home to read: these commands only read)
    cases = [
        (("import", str(SAMPLE), "--mode", "blocklst"),
         "error: invalid mode: must be 'subscribe' or 'blocklist'; did you mean 'blocklist'?"),
        (("import", str(SAMPLE), "--mode", "nuke"),  # nothing close: the core's sentence alone
         "error: invalid mode: must be 'subscribe' or 'blocklist'"),
        (("import", str(SAMPLE), "--subscription-status", "confrimed"),
         ("error: invalid subscription_status 'confrimed': must be 'unconfirmed', 'confirmed', "
          "'unsubscribed', 'bounced', 'deactivated' or 'complained'; did you mean 'confirmed'?")),
        (("import", str(SAMPLE), "--date-format", "dmyy"),
         "error: invalid date_format 'dmyy': must be 'mdy' or 'dmy'; did you mean 'dmy'?"),
        (("export", "--format", "jsnl"),
         "error: invalid format 'jsnl': must be csv, jsonl or parquet; did you mean 'jsonl'?"),
        (("export", "--status", "blocklistd"),
         ("error: invalid status 'blocklistd': must be enabled, disabled, blocklisted; "
          "did you mean 'blocklisted'?")),
        (("imports", "--scope", "recnt"),
         ("error: argument --scope: invalid choice: 'recnt' (choose from 'recent', 'active', "
          "'finished', 'all'); did you mean 'recent'? (see 'mail-pipeline imports --help')")),
        (("imprt", str(SAMPLE)), "error: argument COMMAND: invalid choice: 'imprt'"),
    ]
    for args, message in cases:
        result = cli(*args, home=mail_home)
        assert result.returncode == 2 and result.stdout == "", (args, result)
        [line] = result.stderr.splitlines()
        assert line.startswith(message), (args, line)
        if "nuke" in args:
            assert line == message
    ambiguous = cli("import", str(SAMPLE), "--date-format", "dym", home=mail_home)  # mdy or dmy?
    assert ambiguous.stderr == "error: invalid date_format 'dym': must be 'mdy' or 'dmy'\n"
    result = cli("imports", "logs", "1", "faild", home=mail_home)
    assert result.stderr.rstrip().endswith("did you mean 'failed'?")
    assert "did you mean 'import'?" in cli("imprt", home=mail_home).stderr


# --- help ---------------------------------------------------------------------------------------

def _parsers(parser: argparse.ArgumentParser, name: str = "mail-pipeline"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


def test_every_option_argument_and_command_has_help():
    from service.cli import parser
    missing = []
    for name, p in _parsers(parser()):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                described = {choice.dest for choice in action._choices_actions if choice.help}
                missing += [f"{name} {sub}" for sub in action.choices if sub not in described]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_help_shows_examples(mail_home):
    top = cli("--help", home=mail_home)
    assert top.returncode == 0 and "examples:\n  mail-pipeline import subscribers.csv" in top.stdout
    assert "MAIL_PIPELINE_HOME" in top.stdout
    imp = cli("import", "--help", home=mail_home)
    assert "examples:\n  mail-pipeline import subscribers.csv --list newsletter" in imp.stdout
    assert "--max-failed N|P%" in imp.stdout
    assert not mail_home.exists()  # help reads nothing, makes nothing


# --- the listing --------------------------------------------------------------------------------

def test_the_listing_has_headers_and_page_numbers_that_agree_with_json(mail_home, write_csv):
    path = write_csv("email\nann@example.com\n")
    for _ in range(2):
        assert cli("import", str(path), "--list", "news", "--json", home=mail_home).returncode == 0
    first = _lines(cli("imports", "--per-page", "1", home=mail_home))
    assert first[0] == f"home: {mail_home}"
    assert first[1] == "2 imports, page 1 of 2 (--page 0, 1 per page; scope recent)"
    assert first[2].split() == ["id", "state", "created", "added", "updated", "failed", "source"]
    assert first[3].split()[:2] == ["2", "finished"] and len(first) == 4
    second = _lines(cli("imports", "--per-page", "1", "--page", "1", home=mail_home))
    assert second[1] == "2 imports, page 2 of 2 (--page 1, 1 per page; scope recent)"
    listed = json.loads(cli("imports", "--per-page", "1", "--page", "1", "--json", home=mail_home).stdout)
    assert (listed["page"], listed["num_pages"], listed["data"][0]["id"]) == (1, 2, "1")
    beyond = _lines(cli("imports", "--per-page", "1", "--page", "5", home=mail_home))
    assert beyond[1:] == ["2 imports, page 6 of 2 (--page 5, 1 per page; scope recent)",
                          "  (no imports on this page: the last is --page 1)"]
    empty = _lines(cli("imports", "--scope", "active", home=mail_home))
    assert empty[1:] == ["0 imports (scope active)"]


# --- --json alike everywhere --------------------------------------------------------------------

def test_json_output_is_formatted_the_same_way_in_every_command(mail_home, tmp_path):
    commands = [
        ("import", str(SAMPLE), "--list", "news"), ("import", str(SAMPLE), "--dry-run"),
        ("imports",), ("imports", "show", "1"), ("imports", "logs", "1", "failed"),
        ("lists",), ("lists", "create", "weekly"), ("tokens", "create", "ci"), ("tokens", "list"),
        ("tokens", "revoke", "ci"), ("export", "--out", str(tmp_path / "out.csv")),
    ]
    for command in commands:
        result = cli(*command, "--json", home=mail_home)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout == json.dumps(json.loads(result.stdout), indent=2) + "\n", command
        assert "home:" not in result.stdout


# --- DuckDB's memory cap ------------------------------------------------------------------------

def test_a_memory_cap_too_low_fails_in_one_sentence_and_the_import_resumes(mail_home, write_csv, monkeypatch):
    rows = "email,name\n" + "".join(f"user{i}@example.com,User {i}\n" for i in range(3000))
    path = write_csv(rows)
    monkeypatch.setenv("MAIL_PIPELINE_MEMORY_LIMIT", "2MB")
    failed = cli("import", str(path), "--list", "news", home=mail_home)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        "error: import 1 failed: DuckDB ran out of the 2MB of memory it may use: raise "
        "MAIL_PIPELINE_MEMORY_LIMIT (e.g. 2GB), then resume with: mail-pipeline imports resume 1")
    assert "Traceback" not in failed.stderr
    monkeypatch.delenv("MAIL_PIPELINE_MEMORY_LIMIT")
    resumed = cli("imports", "resume", "1", "--json", home=mail_home)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["stats"]["subscribers"]["added"] == 3000

"""The command line, through a subprocess as a user runs it."""
import json
from pathlib import Path

from tests.helpers import cli

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "subscribers.csv"


def test_import_prints_the_document_and_logs_are_readable(mail_home):
    result = cli("import", str(SAMPLE), "--list", "newsletter", "--json", home=mail_home)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # nothing but the document on stdout
    assert document["state"] == "finished" and document["lists"] == ["newsletter"]
    subscribers = document["stats"]["subscribers"]
    assert (subscribers["added"], subscribers["failed"], subscribers["skipped_duplicate"]) == (4, 2, 1)
    assert sum(subscribers.values()) == document["stats"]["number_of_records"] == 7
    added = cli("imports", "logs", document["id"], "added", home=mail_home)
    assert added.stdout.splitlines() == ["john@example.com", "bob@example.com",
                                         "ada.lovelace@example.org", "josé@example.com"]
    empty = cli("imports", "logs", document["id"], "skipped_blocklisted", home=mail_home)
    assert empty.returncode == 0 and empty.stdout == ""
    log = cli("imports", "logs", document["id"], home=mail_home)
    assert "imported 7 records" in log.stdout
    shown = cli("imports", "show", document["id"], "--json", home=mail_home)
    assert json.loads(shown.stdout)["stats"] == document["stats"]
    shown = cli("imports", "--json", "show", document["id"], home=mail_home)
    assert json.loads(shown.stdout)["id"] == document["id"]
    listing = json.loads(cli("imports", "--json", home=mail_home).stdout)
    assert listing["num_records"] == 1 and listing["data"][0]["id"] == document["id"]
    assert (listing["page"], listing["per_page"], listing["num_pages"]) == (0, 100, 1)


def test_progress_goes_to_stderr_and_plain_output_to_stdout(mail_home):
    result = cli("import", "-", "--list", "a", stdin="email\nx@example.com\n", home=mail_home)
    assert result.returncode == 0, result.stderr
    assert "import 1: started" in result.stderr
    assert "import 1: finished" in result.stdout and "added                 1" in result.stdout


def test_errors_are_one_line_on_stderr_without_traceback(mail_home, tmp_path):
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\x7fELF\x00\x00\x00")
    no_email = tmp_path / "no_email.csv"
    no_email.write_text("contact,name\nx@example.com,X\n")
    mail_home.mkdir()  # (`imports show` reads: without a home it would say there is none)
    cases = [
        (("import", str(binary)), "error: invalid file: not a CSV or ZIP"),
        (("import", str(SAMPLE), "--delimiter", "::"), "error: invalid delimiter: must be a single character"),
        (("import", str(SAMPLE), "--mode", "nuke"), "error: invalid mode: must be 'subscribe' or 'blocklist'"),
        (("import", str(SAMPLE), "--subscription-status", "maybe"), "error: invalid subscription_status"),
        (("import", str(no_email)), "error: the file has no email column; its columns are: contact, name"),
        (("import", str(tmp_path / "missing.csv")), "error: file not found"),
        (("imports", "show", "42"), "error: import 42 not found"),
    ]
    for args, message in cases:
        result = cli(*args, home=mail_home)
        assert result.returncode != 0, args
        assert result.stderr.strip().startswith(message), (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert result.stdout == ""
    assert not (mail_home / "subscribers.duckdb").exists()
    assert not (mail_home / "imports").exists() or not any((mail_home / "imports").iterdir())


def test_the_same_idempotency_key_returns_the_existing_import(mail_home, tmp_path):
    first = cli("import", str(SAMPLE), "--list", "newsletter", "--idempotency-key", "k-1", "--json",
                home=mail_home)
    assert first.returncode == 0, first.stderr
    params = tmp_path / "p.json"
    params.write_text('{"lists": ["newsletter"], "Idempotency-Key": "k-1"}')
    again = cli("import", str(SAMPLE), "--params", str(params), "--json", home=mail_home)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["id"] == json.loads(first.stdout)["id"]
    listing = json.loads(cli("imports", "--scope", "all", "--json", home=mail_home).stdout)
    assert listing["num_records"] == 1
    other = cli("import", str(SAMPLE), "--list", "newsletter", "--idempotency-key", "k-2", "--json",
                home=mail_home)
    assert json.loads(other.stdout)["id"] != json.loads(first.stdout)["id"]


def test_an_idempotency_key_is_bound_once_even_under_a_race(mail_home):
    from concurrent.futures import ThreadPoolExecutor

    from mail_pipeline import home
    ids = [home.new_import_id() for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: home.claim_key("same", i), ids))
    winners = [i for i, existing in zip(ids, results) if existing is None]
    assert len(winners) == 1 and all(r in (None, winners[0]) for r in results)


def test_an_import_waits_as_scheduled_while_another_writer_holds_the_store(mail_home, write_csv):
    import os
    import subprocess
    import sys
    import time

    from mail_pipeline import home, store
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(mail_home))
    env.pop("DAGSTER_HOME", None)
    path = write_csv("email\nann@example.com\n")
    with store.writer(home.database_path()):  # another import or export is writing
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "import", str(path), "--json"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline, state = time.monotonic() + 120, None
        while time.monotonic() < deadline and state != "scheduled":
            time.sleep(0.5)
            shown = cli("imports", "show", "1", "--json", home=mail_home)
            state = json.loads(shown.stdout)["state"] if shown.returncode == 0 else None
        assert state == "scheduled"
        assert proc.poll() is None  # still waiting, not failed
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["stats"]["subscribers"]["added"] == 1


def test_flags_are_matched_exactly_and_version_is_said(mail_home, tmp_path):
    """`--overwrit` is not taken for `--overwrite` (argparse's prefixes are off), on every
    sub-command; `--version` answers without a home."""
    done = cli("import", "--overwrit", str(tmp_path / "x.csv"), home=mail_home)
    assert done.returncode == 2 and "unrecognized arguments: --overwrit" in done.stderr
    done = cli("imports", "--per", "5", home=mail_home)  # (not --per-page)
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    done = cli("--version", home=mail_home)
    assert done.stdout.startswith("mail-pipeline ") and done.returncode == 0

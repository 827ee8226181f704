"""listmonk's import API over HTTP (seed 004), with the seed's own curl commands and polling
script, changed only in host and credentials, against a real `mail-pipeline serve`."""
import json
import zipfile

import duckdb
import pytest

from tests.api_server import Reply, Server, server, wait_for  # noqa: F401 (the module's server)

SEED_HOST = "https://listmonk.mysite.com"
SEED_CREDENTIALS = "username:password"

# The seed's commands, verbatim (004_…: "Start import", then the four "Import Examples").
START_IMPORT = """curl -u 'username:password' 'https://listmonk.mysite.com/api/import/subscribers' \\
  -F 'file=@subscribers.csv' \\
  -F 'params={
    "mode": "subscribe",
    "delim": ",",
    "lists": [1, 2],
    "overwrite": true,
    "subscription_status": "confirmed"
  }'"""
SUBSCRIBE_MODE = """curl -u 'username:password' 'https://listmonk.mysite.com/api/import/subscribers' \\
  -F 'file=@new-subscribers.csv' \\
  -F 'params={
    "mode": "subscribe",
    "lists": [1, 2],
    "subscription_status": "confirmed",
    "delim": ",",
    "overwrite": false
  }'"""
BLOCKLIST_MODE = """curl -u 'username:password' 'https://listmonk.mysite.com/api/import/subscribers' \\
  -F 'file=@blocklist.csv' \\
  -F 'params={
    "mode": "blocklist",
    "lists": [],
    "delim": ","
  }'"""
UPDATE_EXISTING = """curl -u 'username:password' 'https://listmonk.mysite.com/api/import/subscribers' \\
  -F 'file=@updates.csv' \\
  -F 'params={
    "mode": "subscribe",
    "lists": [1],
    "overwrite": true,
    "delim": ","
  }'"""
FROM_ZIP = """curl -u 'username:password' 'https://listmonk.mysite.com/api/import/subscribers' \\
  -F 'file=@subscribers.zip' \\
  -F 'params={
    "mode": "subscribe",
    "lists": [1],
    "delim": ","
  }'"""
POLLING_LOOP = """#!/bin/bash

while true; do
  STATUS=$(curl -s -u 'username:password' \\
    'https://listmonk.mysite.com/api/import/subscribers' | \\
    jq -r '.data.status')
  
  echo "Import status: $STATUS"
  
  if [ "$STATUS" = "finished" ] || [ "$STATUS" = "failed" ]; then
    break
  fi
  
  sleep 2
done

echo "Import complete!"
"""

# The seed's CSVs, verbatim.
FILES = {
    "subscribers.csv": 'email,name,status,attributes\n'
                       'john@example.com,John Doe,enabled,"{""city"": ""Bangalore"", ""age"": 30}"\n'
                       'j ane@example.com,Jane Smith,enabled,"{""city"": ""New York""}"\n'
                       'bob@example.com,Bob Johnson,enabled,\n',
    "new-subscribers.csv": 'email,name,attributes\n'
                           'john@example.com,John Doe,"{""source"": ""webinar""}"\n'
                           'jane@example.com,Jane Smith,"{""source"": ""webinar""}"\n',
    "blocklist.csv": "email\nspammer@example.com\nabuse@example.com\n",
    "updates.csv": 'email,name,attributes\n'
                   'john@example.com,John Doe Updated,"{""city"": ""San Francisco""}"\n',
}
STATUS_KEYS = {"name", "total", "imported", "status"}


def as_ours(server: Server, text: str) -> str:
    """The seed's text with only the host and the credentials changed."""
    return text.replace(SEED_HOST, server.base_url).replace(SEED_CREDENTIALS, f"full:{server.tokens['full']}")


def status(server: Server) -> dict:
    reply = server.curl(*server.auth(), "/api/import/subscribers")
    assert reply.status == 200, reply
    return reply.json()["data"]


def idle(server: Server, timeout: float = 120) -> dict:
    """Wait until no import of this API is queued or running; its last status."""
    return wait_for(lambda: (s := status(server))["status"] not in ("importing", "stopping") and s,
                    timeout, 0.5, "the listmonk import to end")


def post(server: Server, path, params: dict, *, name: str = "full", filename=None) -> Reply:
    file_arg = f"file=@{path}" + (f";filename={filename}" if filename else "")
    # (--form-string: curl's -F would take a ';' in the JSON for the start of its own options)
    return server.curl(*server.auth(name), "/api/import/subscribers", "-F", file_arg,
                       "--form-string", "params=" + json.dumps(params))


def newest_import(server: Server) -> dict:
    """`mail-pipeline imports show ID --json` of the newest import (the highest id)."""
    assert server.import_ids(), "no import yet"
    return server.cli_json("imports", "show", str(max(server.import_ids())))


def num_records(server: Server) -> int:
    return server.cli_json("imports", "--scope", "all")["num_records"]


def store(server: Server, sql: str) -> list[tuple]:
    def attempt():
        try:
            con = duckdb.connect(str(server.home / "subscribers.duckdb"), read_only=True)
        except duckdb.IOException:  # (a writer holds it a moment longer)
            return None
        try:
            return con.execute(sql).fetchall() or [()]
        finally:
            con.close()
    rows = wait_for(attempt, 30, 0.5, "the store to be readable")
    return [] if rows == [()] else rows


def nonzero(document: dict) -> dict:
    return {k: v for k, v in document["stats"]["subscribers"].items() if v}


def big_csv(path, rows: int, domain: str):
    with open(path, "w") as out:
        out.write("email,name\n")
        out.writelines(f"u{i}@{domain},User {i}\n" for i in range(rows))
    return path


# --- the seed's examples, one after another ---------------------------------------------------------

SEED_RUNS = [
    # (command, its file, expected categories, total rows)
    (START_IMPORT, "subscribers.csv", {"added": 2, "failed": 1}, 3),
    # john is on lists 1 and 2 already, and this one does not overwrite: "already exists".
    (SUBSCRIBE_MODE, "new-subscribers.csv", {"added": 1, "skipped_overwrite": 1}, 2),
    (BLOCKLIST_MODE, "blocklist.csv", {"added": 2}, 2),
    (UPDATE_EXISTING, "updates.csv", {"updated": 1}, 1),
    (FROM_ZIP, "subscribers.zip", {"added": 2}, 2),
]


def test_the_seeds_examples_run_one_after_another_with_the_seeds_polling_loop(server, tmp_path):
    assert server.jq, "jq is needed for the seed's polling loop"
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    with zipfile.ZipFile(tmp_path / "subscribers.zip", "w") as archive:
        archive.writestr("a-first.csv", "email,name\nzip1@example.com,Zip One\nzip2@example.com,Zip Two\n")
        archive.writestr("b-second.csv", "email\nnever@example.com\n")
    assert status(server) == {"name": "", "total": 0, "imported": 0, "status": "none"}

    for command, file_name, expected, total in SEED_RUNS:
        posted = server.bash(as_ours(server, command), cwd=tmp_path)
        assert posted.returncode == 0, posted.stderr
        answer = json.loads(posted.stdout)
        assert set(answer) == {"data"} and set(answer["data"]) == STATUS_KEYS, answer
        assert answer["data"]["name"] == file_name
        assert answer["data"]["status"] == "importing", answer

        polled = server.bash(as_ours(server, POLLING_LOOP), cwd=tmp_path, timeout=120)
        assert polled.returncode == 0, polled.stderr
        lines = polled.stdout.splitlines()
        assert lines[-2:] == ["Import status: finished", "Import complete!"], polled.stdout
        assert set(lines[:-1]) <= {"Import status: importing", "Import status: finished"}, polled.stdout

        assert status(server) == {"name": file_name, "total": total, "imported": total,
                                  "status": "finished"}
        document = newest_import(server)
        assert document["state"] == "finished"
        assert nonzero(document) == expected, (file_name, document["stats"])
        assert document["stats"]["number_of_records"] == total

    # What the seed says each one did.
    rows = dict(((e, (s, n)) for e, s, n in store(server, "SELECT email, status, name FROM subscribers")))
    assert rows == {
        "john@example.com": ("enabled", "John Doe Updated"), "bob@example.com": ("enabled", "Bob Johnson"),
        "jane@example.com": ("enabled", "Jane Smith"),
        "spammer@example.com": ("blocklisted", None), "abuse@example.com": ("blocklisted", None),
        "zip1@example.com": ("enabled", "Zip One"), "zip2@example.com": ("enabled", "Zip Two")}
    [(attributes,)] = store(server, "SELECT attributes::VARCHAR FROM subscribers WHERE email = 'john@example.com'")
    # "New attributes are merged with existing … Attributes not in CSV are preserved"
    assert json.loads(attributes) == {"city": "San Francisco", "age": 30}
    subscriptions = store(server, "SELECT email, list, status FROM subscriptions ORDER BY ALL")
    assert subscriptions == sorted([
        ("bob@example.com", "newsletter", "confirmed"), ("bob@example.com", "vip", "confirmed"),
        ("jane@example.com", "newsletter", "confirmed"), ("jane@example.com", "vip", "confirmed"),
        ("john@example.com", "newsletter", "confirmed"), ("john@example.com", "vip", "confirmed"),
        ("zip1@example.com", "newsletter", "unconfirmed"), ("zip2@example.com", "newsletter", "unconfirmed")])
    counts = {row["name"]: row["subscriber_count"] for row in server.cli_json("lists")["data"]}
    assert counts == {"newsletter": 5, "vip": 3}


def test_logs_come_as_text_under_data(server):
    idle(server)
    reply = server.curl(*server.auth(), "/api/import/subscribers/logs")
    assert reply.status == 200 and reply.content_type.startswith("application/json")
    text = reply.json()["data"]
    assert isinstance(text, str)
    assert "importing" in text and "imported 2 records: added 2" in text, text


def finished_import(server: Server, tmp_path) -> dict:
    """The newest import, finished (the seed test's last one; else one made now)."""
    idle(server)
    document = newest_import(server) if server.import_ids() else None
    if document is None or document["state"] != "finished":
        path = tmp_path / "tagged.csv"
        path.write_text("email\ntagged@tags.example.com\n")
        assert post(server, path, {"mode": "subscribe", "lists": [1]}).status == 200
        assert idle(server)["status"] == "finished"
        document = newest_import(server)
    return document


def test_the_import_is_a_dagster_run_tagged_with_api_and_key_and_listed(server, tmp_path):
    document = finished_import(server, tmp_path)
    assert document["state"] == "finished" and document["run_id"]
    tags = server.run_tags(document["run_id"])
    assert tags["mail_pipeline/api"] == "listmonk", tags
    assert tags["mail_pipeline/api_key"] == "full", tags
    listed = server.cli("imports").stdout
    assert any(line.split()[:2] == [document["id"], "finished"] for line in listed.splitlines()), listed


def test_a_second_post_while_one_runs_is_refused(server, tmp_path):
    idle(server)
    big = big_csv(tmp_path / "big.csv", 300_000, "second.example.com")
    small = tmp_path / "small.csv"
    small.write_text("email\nsecond@never.example.com\n")
    before = server.import_ids()
    assert post(server, big, {"mode": "subscribe", "lists": [1]}).status == 200
    refused = post(server, small, {"mode": "subscribe", "lists": [1]})
    assert refused.status == 400 and refused.json() == {"message": "an import is already running"}
    assert status(server)["name"] == "big.csv"
    assert len(server.import_ids()) == len(before) + 1
    assert server.incoming() == []
    done = idle(server)
    assert done == {"name": "big.csv", "total": 300_000, "imported": 300_000, "status": "finished"}


def test_delete_clears_a_finished_import(server, tmp_path):
    finished_import(server, tmp_path)
    assert status(server)["status"] == "finished"
    cleared = server.curl(*server.auth(), "-X", "DELETE", "/api/import/subscribers")
    assert cleared.status == 200
    assert cleared.json() == {"data": {"name": "", "total": 0, "imported": 0, "status": "none"}}
    assert status(server) == {"name": "", "total": 0, "imported": 0, "status": "none"}
    # The import itself stays, finished; DELETE again changes nothing.
    assert server.cli_json("imports", "show", str(max(server.import_ids())))["state"] == "finished"
    again = server.curl(*server.auth(), "-X", "DELETE", "/api/import/subscribers")
    assert again.status == 200 and again.json()["data"]["status"] == "none"


def test_delete_stops_a_running_import(server, tmp_path):
    idle(server)
    big = big_csv(tmp_path / "huge.csv", 600_000, "stopped.example.com")
    assert post(server, big, {"mode": "subscribe", "lists": [1]}).status == 200
    import_id = max(server.import_ids())

    def started():  # (GreenArrow's show tells a queued run from a started one)
        shown = server.curl(*server.auth(), f"/ga/api/v2/subscriber_imports/{import_id}").json()
        return shown["data"]["state"] in ("splitting", "importing") and shown["data"]["state"]
    wait_for(started, 60, 0.1, f"import {import_id} to start")
    reply = server.curl(*server.auth(), "-X", "DELETE", "/api/import/subscribers")
    assert reply.status == 200
    assert reply.json()["data"]["status"] == "stopping", reply.json()
    assert reply.json()["data"]["name"] == "huge.csv"
    ended = idle(server)
    assert ended["status"] == "failed", ended  # listmonk's stopped import ends "failed"
    document = server.cli_json("imports", "show", str(import_id))
    assert document["state"] == "cancelled", document
    assert document["stats"]["records_imported"] < 600_000
    # Then DELETE clears it.
    cleared = server.curl(*server.auth(), "-X", "DELETE", "/api/import/subscribers")
    assert cleared.status == 200 and cleared.json()["data"]["status"] == "none"


def test_an_import_paused_elsewhere_does_not_block_this_api(server, tmp_path):
    """Paused through GreenArrow's pause (or the command line): listmonk sees a stopped import,
    `failed`; a DELETE clears it and the next POST is taken."""
    idle(server)
    big = big_csv(tmp_path / "paused.csv", 600_000, "paused.example.com")
    assert post(server, big, {"mode": "subscribe", "lists": [1]}).status == 200
    import_id = max(server.import_ids())
    paused = server.curl(*server.auth(), "-X", "POST", f"/ga/api/v2/subscriber_imports/{import_id}/pause")
    assert paused.status == 200, paused
    state = wait_for(lambda: (s := server.cli_json("imports", "show", str(import_id))["state"]) not in (
        "scheduled", "splitting", "importing") and s, 120, 0.5, f"import {import_id} to pause")
    assert state == "paused", server.cli_json("imports", "show", str(import_id))
    assert status(server)["status"] == "failed"
    cleared = server.curl(*server.auth(), "-X", "DELETE", "/api/import/subscribers")
    assert cleared.json()["data"]["status"] == "none"
    small = tmp_path / "after.csv"
    small.write_text("email\nafter-pause@example.com\n")
    assert post(server, small, {"mode": "subscribe", "lists": [1]}).status == 200
    assert idle(server)["status"] == "finished"


# --- keys ------------------------------------------------------------------------------------------

def test_the_token_authorization_scheme_works(server):
    reply = server.curl("-H", f"Authorization: token full:{server.tokens['full']}", "/api/import/subscribers")
    assert reply.status == 200 and set(reply.json()["data"]) == STATUS_KEYS


@pytest.mark.parametrize("args", [
    [],                                                     # no key
    ["-u", "full:mp_wrong"],                                # wrong token
    ["-u", "nobody:mp_wrong"],                              # unknown name
    ["-H", "Authorization: token full:mp_wrong"],
    ["-H", "Authorization: Basic !!!not-base64"],
    ["-H", "Authorization: Bearer mp_wrong"],               # not listmonk's scheme
], ids=["none", "wrong-token", "unknown-name", "token-scheme-wrong", "garbled-basic", "bearer"])
def test_a_wrong_or_missing_key_is_403_with_a_message(server, args):
    for method in ("GET", "POST", "DELETE"):
        reply = server.curl(*args, "-X", method, "/api/import/subscribers")
        assert reply.status == 403, (method, reply)
        assert set(reply.json()) == {"message"} and reply.json()["message"], reply


def test_another_keys_token_under_the_right_name_is_refused(server):
    reply = server.curl("-u", f"full:{server.tokens['exporter']}", "/api/import/subscribers")
    assert reply.status == 403 and "message" in reply.json()


def test_a_key_without_subscribers_import_is_403(server, tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("email\nx@perm.example.com\n")
    before = server.import_ids()
    for reply in (post(server, path, {"mode": "subscribe", "lists": [1]}, name="exporter"),
                  server.curl(*server.auth("exporter"), "/api/import/subscribers"),
                  server.curl(*server.auth("exporter"), "/api/import/subscribers/logs"),
                  server.curl(*server.auth("exporter"), "-X", "DELETE", "/api/import/subscribers")):
        assert reply.status == 403, reply
        assert reply.json() == {"message": "permission denied: subscribers:import"}
    assert server.import_ids() == before and server.incoming() == []


# --- requests refused before anything is created --------------------------------------------------

def test_an_unknown_list_id_is_refused_and_nothing_is_created(server, tmp_path):
    idle(server)
    path = tmp_path / "unknown-list.csv"
    path.write_text("email\nlost@unknown-list.example.com\n")
    before, ids = num_records(server), server.import_ids()
    reply = post(server, path, {"mode": "subscribe", "lists": [99]})
    assert reply.status == 400, reply
    assert set(reply.json()) == {"message"} and "99" in reply.json()["message"], reply
    assert num_records(server) == before
    assert server.import_ids() == ids and server.incoming() == []
    assert store(server, "SELECT email FROM subscribers WHERE email LIKE '%unknown-list%'") == []
    assert {row["name"] for row in server.cli_json("lists")["data"]} == {"newsletter", "vip"}


@pytest.mark.parametrize("params, message", [
    ({"mode": "upsert", "lists": [1]}, "invalid mode: must be 'subscribe' or 'blocklist'"),
    ({"mode": "subscribe", "lists": [1], "delim": ";;"}, "invalid delimiter: must be a single character"),
    ({"mode": "subscribe", "lists": [1], "delim": ""}, "invalid delimiter: must be a single character"),
])
def test_invalid_mode_and_delimiter_get_the_seeds_messages(server, tmp_path, params, message):
    path = tmp_path / "ok.csv"
    path.write_text("email\nrefused@params.example.com\n")
    ids = server.import_ids()
    reply = post(server, path, params)
    assert reply.status == 400 and reply.json() == {"message": message}
    assert server.import_ids() == ids and server.incoming() == []


def test_a_file_that_is_not_csv_or_zip_gets_the_seeds_message(server, tmp_path):
    idle(server)
    path = tmp_path / "photo.csv"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4)
    ids = server.import_ids()
    reply = post(server, path, {"mode": "subscribe", "lists": [1]})
    assert reply.status == 400 and reply.json() == {"message": "invalid file: not a CSV or ZIP"}
    assert server.import_ids() == ids and server.incoming() == []

"""Mailrith's async jobs (seed 000) against a live `mail-pipeline serve`, with the real curl: the
seed's two examples, polling to a final state, Idempotency-Key, download_url, errors."""
import csv
import io
import json

from tests.api_server import server, wait_for  # noqa: F401

IMPORT_EXAMPLE = """{
    "csv_text": "Email,Name\\nada@example.com,Ada Lovelace",
    "mappings": [
      {
        "csv_column": "Email",
        "field": { "type": "email" }
      },
      {
        "csv_column": "Name",
        "field": { "type": "name" }
      }
    ],
    "new_tag_name": "Website Signup"
  }"""
EXPORT_EXAMPLE = """{
    "status": "Active",
    "cold_only": false
  }"""


def _h(server, key: str, name: str = "full") -> tuple[str, ...]:
    return ("-H", f"Authorization: Bearer {server.tokens[name]}", "-H", f"Idempotency-Key: {key}",
            "-H", "Content-Type: application/json")


def _final(server, path: str, name: str = "full") -> dict:
    def final():
        job = server.curl(path, "-H", f"Authorization: Bearer {server.tokens[name]}").json()
        return job if job["status"] in ("Completed", "Failed") else None
    return wait_for(final, timeout=120, interval=1, what=f"{path} to reach a final state")


def test_import_job_as_in_the_seed(server):
    reply = server.curl("-X", "POST", "/v1/jobs/subscriber-imports", *_h(server, "import-2026-04-11"),
                        "-d", IMPORT_EXAMPLE)
    assert reply.status == 202, reply
    job = reply.json()
    assert job["status"] in ("Queued", "Processing") and job["id"].startswith("imp_")
    # a network retry: the same key and body give the same job, not a second one
    again = server.curl("-X", "POST", "/v1/jobs/subscriber-imports", *_h(server, "import-2026-04-11"),
                        "-d", IMPORT_EXAMPLE)
    assert again.status == 202 and again.json()["id"] == job["id"]  # the first answer again
    # another key's same Idempotency-Key is another client's: its own job
    other_key = server.cli_json("tokens", "create", "other-client", "--permission", "subscribers:import")["token"]
    theirs = server.curl("-X", "POST", "/v1/jobs/subscriber-imports", "-H", f"Authorization: Bearer {other_key}",
                         "-H", "Idempotency-Key: import-2026-04-11", "-H", "Content-Type: application/json",
                         "-d", IMPORT_EXAMPLE)
    assert theirs.status == 202 and theirs.json()["id"] != job["id"]
    # the same key with another body is refused
    other = server.curl("-X", "POST", "/v1/jobs/subscriber-imports", *_h(server, "import-2026-04-11"),
                        "-d", IMPORT_EXAMPLE.replace("Ada Lovelace", "Ada King"))
    assert other.status == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert set(other.json()["error"]) == {"type", "code", "message"}

    done = _final(server, f"/v1/jobs/subscriber-imports/{job['id']}")
    assert done["status"] == "Completed", done
    assert done["result"]["created"] == 1 and done["result"]["failed"] == 0
    document = server.cli_json("imports", "show", job["id"].removeprefix("imp_"))
    assert document["state"] == "finished"
    tags = server.run_tags(document["run_id"])
    assert tags["mail_pipeline/api"] == "mailrith" and tags["mail_pipeline/api_key"] == "full"


def test_failed_rows_and_a_failed_job(server):
    body = {"csv_text": "Email,Name\nbad address,X\ngood@example.com,Y",
            "mappings": [{"csv_column": "Email", "field": {"type": "email"}}]}
    job = server.curl("-X", "POST", "/v1/jobs/subscriber-imports", *_h(server, "rows-1"),
                      "-d", json.dumps(body)).json()
    done = _final(server, f"/v1/jobs/subscriber-imports/{job['id']}")
    assert done["status"] == "Completed" and done["result"]["failed"] == 1
    [row] = done["result"]["failed_rows"]
    assert row["values"]["Email"] == "bad address" and row["error"]
    # a mapping naming a column the CSV lacks: refused before anything is written
    before = server.import_ids()
    bad = {"csv_text": "Email\na@example.com", "mappings": [{"csv_column": "E-mail", "field": {"type": "email"}}]}
    reply = server.curl("-X", "POST", "/v1/jobs/subscriber-imports", *_h(server, "rows-2"), "-d", json.dumps(bad))
    assert reply.status == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    assert server.import_ids() == before


def test_export_job_and_its_download(server):
    reply = server.curl("-X", "POST", "/v1/jobs/subscriber-exports",
                        *_h(server, "export-2026-04-11", "exporter"), "-d", EXPORT_EXAMPLE)
    assert reply.status == 202, reply
    job = reply.json()
    assert job["id"].startswith("exp_") and job["download_url"] is None
    done = _final(server, f"/v1/jobs/subscriber-exports/{job['id']}", "exporter")
    assert done["status"] == "Completed", done
    assert done["download_url"] == server.url(f"/v1/jobs/subscriber-exports/{job['id']}/download")
    file = server.curl(done["download_url"], "-H", f"Authorization: Bearer {server.tokens['exporter']}")
    assert file.status == 200
    rows = list(csv.DictReader(io.StringIO(file.body)))
    assert len(rows) == done["row_count"] and all(r["status"] == "enabled" for r in rows)
    # the same key and body: the same job; the download needs a key
    again = server.curl("-X", "POST", "/v1/jobs/subscriber-exports",
                        *_h(server, "export-2026-04-11", "exporter"), "-d", EXPORT_EXAMPLE)
    assert again.json()["id"] == job["id"]
    assert server.curl(done["download_url"]).status == 401


def test_keys_and_errors(server):
    reply = server.curl("-X", "POST", "/v1/jobs/subscriber-imports", "-d", IMPORT_EXAMPLE)
    assert reply.status == 401 and reply.json()["error"]["type"] == "authentication_error"
    # an export-only key cannot import; an import is not an export
    reply = server.curl("-X", "POST", "/v1/jobs/subscriber-imports", *_h(server, "k1", "exporter"),
                        "-d", IMPORT_EXAMPLE)
    assert reply.status == 403 and reply.json()["error"]["type"] == "permission_error"
    reply = server.curl("-X", "POST", "/v1/jobs/subscriber-imports", *_h(server, "k2"), "-d", "{not json")
    assert reply.status == 400 and reply.json()["error"]["code"] == "invalid_json"
    reply = server.curl("-X", "POST", "/v1/jobs/subscriber-exports", *_h(server, "k3"),
                        "-d", '{"status": "Sleeping"}')
    assert reply.status == 400 and "Sleeping" in reply.json()["error"]["message"]
    reply = server.curl("/v1/jobs/subscriber-imports/imp_999", "-H", f"Authorization: Bearer {server.tokens['full']}")
    assert reply.status == 404 and reply.json()["error"]["type"] == "not_found_error"
    reply = server.curl("/v1/jobs/subscriber-imports/../../etc", "-H", f"Authorization: Bearer {server.tokens['full']}")
    assert reply.status == 404

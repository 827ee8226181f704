"""GreenArrow's subscriber imports API over HTTP (seed 002) with the real curl, against a real
`mail-pipeline serve`: the seed's create body verbatim, show, listings, logs, pause, unpause,
cancel, and the envelope on every error."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.api_server import Server, running_server, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The module's server; its URL imports come from a loopback test server, which a default
    server refuses (tests/test_api_hostile.py), so this one allows private addresses."""
    with running_server(tmp_path_factory.mktemp("greenarrow"), "--allow-private-urls") as running:
        yield running

SEED_BODY = Path(__file__).parent / "seeds" / "greenarrow_create.json"  # the seed's, verbatim
ENVELOPE = {"success", "data", "error_code", "error_message"}
SUBSCRIBER_STATS = {"added", "updated", "failed", "skipped_overwrite", "skipped_active",
                    "skipped_unsubscribed", "skipped_scomp", "skipped_bounced", "skipped_deactivated",
                    "skipped_duplicate", "skipped_over_limit"}
ENDED = ("finished", "failed", "cancelled")


def ga(server: Server, method: str, path: str, body=None, *, user: str = "full", raw: bytes = None):
    """A GreenArrow request as its docs show it: Basic auth, JSON in and out."""
    args = [*server.auth(user), "-X", method, "-H", "Accept: application/json"]
    if body is not None or raw is not None:
        data = raw.decode() if raw is not None else json.dumps(body)
        args += ["-H", "Content-Type: application/json", "--data-binary", data]
    return server.curl(*args, path)


def ok(reply) -> dict:
    assert reply.status == 200, reply
    envelope = reply.json()
    assert ENVELOPE <= set(envelope), envelope
    assert envelope["success"] is True and envelope["error_code"] is None and envelope["error_message"] is None
    return envelope


def refused(reply, status: int, code: str) -> dict:
    assert reply.status == status, reply
    envelope = reply.json()
    assert set(envelope) == ENVELOPE, envelope
    assert envelope["success"] is False and envelope["data"] is None, envelope
    assert envelope["error_code"] == code, envelope
    assert isinstance(envelope["error_message"], str) and envelope["error_message"], envelope
    return envelope


def show(server: Server, import_id: int) -> dict:
    return ok(ga(server, "GET", f"/ga/api/v2/subscriber_imports/{import_id}"))["data"]


def until(server: Server, import_id: int, states, timeout: float = 90) -> dict:
    states = (states,) if isinstance(states, str) else states
    return wait_for(lambda: (d := show(server, import_id))["state"] in states and d, timeout, 0.3,
                    f"import {import_id} to be {'/'.join(states)}")


def create(server: Server, list_id: int, body: dict) -> dict:
    return ok(ga(server, "POST", f"/ga/api/v2/mailing_lists/{list_id}/subscriber_imports", body))["data"]


def json_import(content: str, **extra) -> dict:
    return {"subscriber_import": {"column_mapping": ["email"],
                                  "file_source": {"type": "json", "content": content}, **extra}}


# --- the seed's create example ----------------------------------------------------------------------

def test_the_seeds_create_example_then_show_until_finished(server):
    body = json.loads(SEED_BODY.read_text())
    reply = server.curl(*server.auth(), "-H", "Accept: application/json", "-H", "Content-Type: application/json",
                        "--data-binary", f"@{SEED_BODY}", "/ga/api/v2/mailing_lists/1/subscriber_imports")
    data = ok(reply)["data"]
    assert reply.content_type.startswith("application/json")
    assert isinstance(data["id"], int)
    assert data["state"] in ("scheduled", "splitting", "importing"), data
    assert (data["mailing_list_id"], data["mailing_list_name"]) == (1, "newsletter")
    assert data["finished_at"] is None and data["created_at"] and data["begins_at"]
    assert data["stats"]["number_of_records"] is None and data["stats"]["records_imported"] == 0
    assert set(data["stats"]["subscribers"]) >= SUBSCRIBER_STATS
    assert data["file_source"] == {"type": "json", "filename": "data"}
    assert data["file_format"] == body["subscriber_import"]["file_format"]
    assert data["subscriber_defaults"] == {"status": "active"}
    assert data["overwrite"] is True
    assert data["overwrite_when_status"] == body["subscriber_import"]["overwrite_when_status"]
    assert data["column_mapping"] == ["email"]
    assert data["default_custom_fields"] == {"First Name": "Bobbie"}
    assert data["overwrite_what"] == body["subscriber_import"]["overwrite_what"]

    done = until(server, data["id"], ENDED)
    assert done["state"] == "finished", done
    assert done["finished_at"] and done["error_message"] is None
    assert done["stats"]["number_of_records"] == 2 and done["stats"]["records_imported"] == 2
    assert {k: v for k, v in done["stats"]["subscribers"].items() if v} == {"added": 2}
    # The seed's own example paths leave out `v2`; they answer the same, as does the path under its list.
    for path in (f"/ga/api/subscriber_imports/{data['id']}",
                 f"/ga/api/mailing_lists/1/subscriber_imports/{data['id']}",
                 f"/ga/api/v2/mailing_lists/1/subscriber_imports/{data['id']}"):
        assert ok(ga(server, "GET", path))["data"] == done, path
    refused(ga(server, "GET", f"/ga/api/v2/mailing_lists/2/subscriber_imports/{data['id']}"), 404, "not_found")
    # The CLI's document agrees.
    document = server.cli_json("imports", "show", str(data["id"]))
    assert document["state"] == "finished" and document["stats"]["subscribers"]["added"] == 2
    assert server.run_tags(document["run_id"])["mail_pipeline/api"] == "greenarrow"


# --- logs ------------------------------------------------------------------------------------------

def test_logs_per_category(server):
    content = "email\nlog1@ga-logs.example.com\nnot-an-email\nLOG1@ga-logs.example.com\nlog2@ga-logs.example.com\n"
    # (created on the seed's own path, without `v2`)
    data = ok(ga(server, "POST", "/ga/api/mailing_lists/2/subscriber_imports", json_import(content)))["data"]
    assert data["mailing_list_id"] == 2 and data["mailing_list_name"] == "vip"
    done = until(server, data["id"], ENDED)
    assert {k: v for k, v in done["stats"]["subscribers"].items() if v} == {
        "added": 2, "failed": 1, "skipped_duplicate": 1}, done["stats"]
    base = f"/ga/api/v2/subscriber_imports/{data['id']}/logs"

    added = ga(server, "GET", f"{base}/added")
    assert added.status == 200 and added.content_type.startswith("text/plain"), added
    assert added.body.split() == ["log1@ga-logs.example.com", "log2@ga-logs.example.com"]
    assert "\n" in added.body

    failed = ga(server, "GET", f"{base}/failed")
    assert failed.status == 200 and failed.content_type.startswith("text/csv"), failed
    lines = failed.body.splitlines()
    assert lines[0].split(",")[0] == "email" and lines[0].split(",")[-1] == "error", lines
    assert lines[1].startswith("not-an-email,") and len(lines) == 2, lines

    duplicate = ga(server, "GET", f"{base}/skipped_duplicate")
    assert duplicate.status == 200 and duplicate.body.split() == ["log1@ga-logs.example.com"]

    for empty in ("updated", "skipped_overwrite", "skipped_active", "skipped_over_limit"):
        refused(ga(server, "GET", f"{base}/{empty}"), 404, "not_found")
    refused(ga(server, "GET", f"{base}/no_such_log"), 404, "not_found")
    refused(ga(server, "GET", f"{base}/log"), 404, "not_found")  # (listmonk's text log is not GreenArrow's)
    refused(ga(server, "GET", "/ga/api/v2/subscriber_imports/987654/logs/added"), 404, "not_found")


# --- listings --------------------------------------------------------------------------------------

def test_listings_scope_and_pages(server):
    total = len(server.import_ids())
    assert total >= 2, "the tests above made imports"
    default = ok(ga(server, "GET", "/ga/api/v2/subscriber_imports"))
    assert (default["page"], default["per_page"], default["num_records"], default["num_pages"]) == (0, 100, total, 1)
    everything = ok(ga(server, "GET", "/ga/api/v2/subscriber_imports?scope=all"))
    assert everything["num_records"] == total
    ids = [d["id"] for d in everything["data"]]
    assert sorted(ids) == server.import_ids()
    for item in everything["data"]:
        assert set(item) == {"id", "mailing_list_id", "mailing_list_name", "created_at", "state",
                             "begins_at", "finished_at", "stats", "file_source"}, item
        assert set(item["stats"]) == {"number_of_records", "records_imported"}
    # Finished ones: the most recently completed first.
    finished_at = [d["finished_at"] for d in everything["data"] if d["state"] in ENDED]
    assert finished_at == sorted(finished_at, reverse=True)

    pages = [ok(ga(server, "GET", f"/ga/api/v2/subscriber_imports?scope=all&page={p}&per_page=1"))
             for p in range(total + 1)]
    for p, page in enumerate(pages):
        assert (page["page"], page["per_page"], page["num_records"], page["num_pages"]) == (p, 1, total, total)
    assert [page["data"][0]["id"] for page in pages[:total]] == ids
    assert pages[total]["data"] == []
    two = ok(ga(server, "GET", "/ga/api/v2/subscriber_imports?scope=all&page=1&per_page=2"))
    assert [d["id"] for d in two["data"]] == ids[2:4] and two["num_pages"] == (total + 1) // 2

    assert ok(ga(server, "GET", "/ga/api/v2/subscriber_imports?scope=active"))["num_records"] == 0
    assert ok(ga(server, "GET", "/ga/api/v2/subscriber_imports?scope=finished"))["num_records"] == total

    # Per list, and the seed's paths without `v2`.
    for list_id, name in ((1, "newsletter"), (2, "vip")):
        for prefix in ("/ga/api/v2", "/ga/api"):
            listed = ok(ga(server, "GET", f"{prefix}/mailing_lists/{list_id}/subscriber_imports?scope=all"))
            assert listed["data"] and {d["mailing_list_id"] for d in listed["data"]} == {list_id}
            assert {d["mailing_list_name"] for d in listed["data"]} == {name}
            assert listed["num_records"] == len(listed["data"])
    v1 = ok(ga(server, "GET", "/ga/api/subscriber_imports?scope=all"))
    assert [d["id"] for d in v1["data"]] == ids


@pytest.mark.parametrize("query", ["scope=someday", "per_page=0", "per_page=501", "page=-1"])
def test_a_bad_listing_query_is_refused_in_the_envelope(server, query):
    reply = ga(server, "GET", f"/ga/api/v2/subscriber_imports?{query}")
    assert reply.status in (400, 422), reply
    refused(reply, reply.status, "validation_failed")


# --- pause, unpause, cancel -------------------------------------------------------------------------

class SlowSource:
    """A loopback HTTP server whose CSVs trickle (a row every 0.2 s) until released, so an
    import stays `downloading` for as long as a test needs; then the rest comes at once."""

    ROWS = 2000

    def __init__(self):
        self.gates: dict[str, threading.Event] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.strip("/").removesuffix(".csv")
                gate = outer.gates.setdefault(name, threading.Event())
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.end_headers()
                try:
                    self.wfile.write(b"email\n")
                    i, deadline = 0, time.monotonic() + 90
                    while not gate.is_set() and time.monotonic() < deadline and i < self.outer_rows // 2:
                        self.wfile.write(f"{name}-{i}@slow.example.com\n".encode())
                        self.wfile.flush()
                        i += 1
                        gate.wait(0.2)
                    self.wfile.write("".join(f"{name}-{j}@slow.example.com\n"
                                             for j in range(i, self.outer_rows)).encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass

            outer_rows = SlowSource.ROWS

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        self.gates.setdefault(name, threading.Event())
        return f"{self.base}/{name}.csv"

    def release(self, name: str) -> None:
        self.gates.setdefault(name, threading.Event()).set()

    def close(self) -> None:
        for gate in self.gates.values():
            gate.set()
        self.httpd.shutdown()


@pytest.fixture
def slow():
    source = SlowSource()
    yield source
    source.close()


def url_import(url: str) -> dict:
    return {"subscriber_import": {"column_mapping": ["email"], "file_source": {"type": "url", "url": url}}}


def test_pause_then_unpause_a_running_import(server, slow):
    data = create(server, 2, url_import(slow.url("paused")))
    assert data["state"] == "scheduled" and data["file_source"] == {"type": "url", "url": slow.url("paused")}
    until(server, data["id"], "downloading", 90)
    asked = ok(ga(server, "POST", f"/ga/api/v2/subscriber_imports/{data['id']}/pause"))["data"]
    assert asked["id"] == data["id"] and asked["state"] in ("downloading", "paused"), asked
    slow.release("paused")
    paused = until(server, data["id"], ("paused",) + ENDED)
    assert paused["state"] == "paused", paused
    assert paused["stats"]["subscribers"]["added"] == 0
    # A paused import cannot be paused again; it is listed as active.
    refused(ga(server, "POST", f"/ga/api/v2/subscriber_imports/{data['id']}/pause"), 422, "validation_failed")
    active = ok(ga(server, "GET", "/ga/api/v2/subscriber_imports?scope=active"))
    assert [d["id"] for d in active["data"]] == [data["id"]]

    resumed = ok(ga(server, "POST", f"/ga/api/v2/subscriber_imports/{data['id']}/unpause"))["data"]
    assert resumed["state"] in ("scheduled", "downloading", "splitting", "importing", "finished"), resumed
    done = until(server, data["id"], ENDED)
    assert done["state"] == "finished", done
    assert done["stats"]["number_of_records"] == SlowSource.ROWS
    assert done["stats"]["subscribers"]["added"] == SlowSource.ROWS

    # A finished import cannot be cancelled, paused or unpaused: validation_failed.
    for action in ("cancel", "pause", "unpause"):
        refused(ga(server, "POST", f"/ga/api/v2/subscriber_imports/{data['id']}/{action}"), 422,
                "validation_failed")
    assert show(server, data["id"])["state"] == "finished"


def test_cancel_a_running_import(server, slow):
    data = create(server, 2, url_import(slow.url("cancelled")))
    until(server, data["id"], "downloading", 90)
    asked = ok(ga(server, "POST", f"/ga/api/v2/subscriber_imports/{data['id']}/cancel"))["data"]
    assert asked["state"] in ("downloading", "cancelled"), asked
    slow.release("cancelled")
    done = until(server, data["id"], ("paused",) + ENDED)
    assert done["state"] == "cancelled", done
    assert done["stats"]["subscribers"]["added"] == 0
    # Cancelled for good.
    for action in ("cancel", "pause", "unpause"):
        refused(ga(server, "POST", f"/ga/api/v2/subscriber_imports/{data['id']}/{action}"), 422,
                "validation_failed")
    refused(ga(server, "POST", f"/ga/api/v2/subscriber_imports/{data['id']}/restart"), 404, "not_found")


def test_an_import_scheduled_for_later_waits_and_can_be_cancelled(server):
    data = create(server, 1, json_import("email\nlater@ga.example.com\n", begins_at="2099-01-01T00:00:00Z"))
    assert data["state"] == "scheduled" and data["begins_at"].startswith("2099-01-01"), data
    assert show(server, data["id"])["state"] == "scheduled"
    active = ok(ga(server, "GET", "/ga/api/v2/subscriber_imports?scope=active"))
    assert data["id"] in [d["id"] for d in active["data"]]
    cancelled = ok(ga(server, "POST", f"/ga/api/v2/subscriber_imports/{data['id']}/cancel"))["data"]
    assert cancelled["state"] == "cancelled", cancelled
    assert show(server, data["id"])["state"] == "cancelled"
    refused(ga(server, "POST", f"/ga/api/v2/subscriber_imports/{data['id']}/unpause"), 422, "validation_failed")


def test_an_import_scheduled_soon_starts_on_time_as_the_apis_run(server):
    """begins_at a few seconds ahead: the daemon's scheduled_imports sensor starts it, and its
    run carries the API's and the key's tags like any import made over HTTP."""
    from datetime import datetime, timedelta, timezone
    soon = (datetime.now(timezone.utc) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = create(server, 1, json_import("email\nsoon@ga.example.com\n", begins_at=soon))
    assert data["state"] == "scheduled", data
    done = until(server, data["id"], ("finished", "failed"), timeout=150)
    assert done["state"] == "finished", done
    run_id = server.cli_json("imports", "show", str(data["id"]))["run_id"]
    tags = server.run_tags(run_id)
    assert tags["mail_pipeline/api"] == "greenarrow" and tags["mail_pipeline/api_key"] == "full", tags


# --- refusals, in the envelope -------------------------------------------------------------------------

def test_unknown_list_and_unknown_import_are_404(server):
    ids = server.import_ids()
    refused(ga(server, "POST", "/ga/api/v2/mailing_lists/99/subscriber_imports",
               json_import("email\nnope@ga.example.com\n")), 404, "not_found")
    refused(ga(server, "GET", "/ga/api/v2/mailing_lists/99/subscriber_imports"), 404, "not_found")
    refused(ga(server, "GET", "/ga/api/v2/subscriber_imports/987654"), 404, "not_found")
    for action in ("pause", "unpause", "cancel"):
        refused(ga(server, "POST", f"/ga/api/v2/subscriber_imports/987654/{action}"), 404, "not_found")
    assert server.import_ids() == ids and server.incoming() == []


@pytest.mark.parametrize("auth", [[], ["-u", "full:mp_wrong"], ["-u", "nobody:mp_wrong"],
                                  ["-H", "Authorization: Bearer mp_wrong"]],
                         ids=["none", "wrong-token", "unknown-name", "bearer"])
def test_a_wrong_or_missing_key_is_401_in_the_envelope(server, auth):
    for args in (["/ga/api/v2/subscriber_imports"], ["/ga/api/v2/subscriber_imports/1"],
                 ["-X", "POST", "--data-binary", "{}", "/ga/api/v2/mailing_lists/1/subscriber_imports"]):
        refused(server.curl(*auth, *args), 401, "unauthorized")


def test_a_key_without_subscribers_import_is_403_in_the_envelope(server):
    refused(ga(server, "GET", "/ga/api/v2/subscriber_imports", user="exporter"), 403, "forbidden")
    refused(ga(server, "POST", "/ga/api/v2/mailing_lists/1/subscriber_imports",
               json_import("email\nx@ga.example.com\n"), user="exporter"), 403, "forbidden")


@pytest.mark.parametrize("raw, status, code", [
    (b"this is not json", 400, "invalid_json"),
    (b'{"subscriber_import": {', 400, "invalid_json"),
    (b"[1, 2]", 422, "missing_parameter"),
    (b'{"column_mapping": ["email"]}', 422, "missing_parameter"),
    (b'{"subscriber_import": {"file_source": {"type": "json", "content": "email\\na@b.example.com\\n"}}}',
     422, "validation_failed"),                                   # no column_mapping
    (b'{"subscriber_import": {"column_mapping": ["email"], "file_source": {"type": "ftp", "url": "x"}}}',
     422, "validation_failed"),
    (b'{"subscriber_import": {"column_mapping": ["email"], "file_source": {"type": "json"}}}',
     422, "validation_failed"),                                   # json without content
], ids=["text", "truncated", "array", "no-key", "no-mapping", "bad-type", "no-content"])
def test_a_bad_body_is_refused_in_the_envelope(server, raw, status, code):
    ids = server.import_ids()
    refused(ga(server, "POST", "/ga/api/v2/mailing_lists/1/subscriber_imports", raw=raw), status, code)
    assert server.import_ids() == ids and server.incoming() == []

"""Mailcoach's subscriber imports API (seed 003) against a live `mail-pipeline serve`, with the
real curl: draft → append → start, update, delete, Laravel's 201/204/422, pagination, Bearer keys.

The seed's curl lines carry two typos (`-x POST` is curl's proxy option; `"email\\"` leaves the
JSON body unterminated): the tests send what those lines mean, as a client copying them would."""
import json

from tests.api_server import server, wait_for  # noqa: F401

BEARER = "Authorization: Bearer {token}"
JSON = ("-H", "Accept: application/json", "-H", "Content-Type: application/json")


def _h(server, name: str = "full") -> tuple[str, ...]:
    return ("-H", BEARER.format(token=server.tokens[name]), *JSON)


def _create(server, csv: str, **flags) -> dict:
    body = {"subscribers_csv": csv, "email_list_uuid": server.lists["newsletter"]["uuid"],
            "subscribe_unsubscribed": True, "unsubscribe_others": False, **flags}
    reply = server.curl("-X", "POST", "/api/subscriber-imports", *_h(server), "-d", json.dumps(body))
    assert reply.status == 201, reply
    return reply.json()["data"]


def _show(server, uuid: str) -> dict:
    reply = server.curl(f"/api/subscriber-imports/{uuid}", *_h(server))
    assert reply.status == 200, reply
    return reply.json()["data"]


def test_draft_append_start_completes(server):
    created = _create(server, "email\nann@example.com\n")
    assert created["status"] == "draft"
    assert created["subscribers_csv"] == "email\nann@example.com\n"
    assert created["email_list_uuid"] == server.lists["newsletter"]["uuid"]
    assert created["imported_subscribers_count"] is None and created["error_count"] == 0
    assert set(created) == {"id", "uuid", "subscribers_csv", "status", "email_list_uuid",
                            "subscribe_unsubscribed", "unsubscribe_others", "replace_tags",
                            "imported_subscribers_count", "error_count"}
    uuid = created["uuid"]

    # the seed's append example, with a CSV to append (its header line is left out again)
    reply = server.curl("-X", "POST", f"/api/subscriber-imports/{uuid}/append", *_h(server),
                        "-d", json.dumps({"subscribers_csv": "email\nbob@example.com\nnot an email\n"}))
    assert reply.status == 200, reply
    assert reply.json()["data"]["subscribers_csv"] == "email\nann@example.com\nbob@example.com\nnot an email\n"

    reply = server.curl("-X", "POST", f"/api/subscriber-imports/{uuid}/start", *_h(server))
    assert (reply.status, reply.body) == (204, "")
    done = wait_for(lambda: (lambda d: d if d["status"] in ("completed", "failed") else None)(
        _show(server, uuid)), timeout=120, what="the import to complete")
    assert done["status"] == "completed", done
    assert (done["imported_subscribers_count"], done["error_count"]) == (2, 1)
    assert done["subscribers_csv"] is None  # as the seed's show answer has it once imported

    # an ordinary import: listed by the command line, a Dagster run tagged with the API and key
    document = server.cli_json("imports", "show", str(done["id"]))
    assert document["state"] == "finished" and document["lists"] == ["newsletter"]
    tags = server.run_tags(document["run_id"])
    assert tags["mail_pipeline/api"] == "mailcoach" and tags["mail_pipeline/api_key"] == "full"

    # started already: neither appended to nor started again
    reply = server.curl("-X", "POST", f"/api/subscriber-imports/{uuid}/start", *_h(server))
    assert reply.status == 422 and "errors" in reply.json()


def test_index_is_paginated_as_laravel(server):
    for n in range(16):
        _create(server, f"email\npage{n}@example.com\n")
    first = server.curl("/api/subscriber-imports", *_h(server)).json()
    assert len(first["data"]) == 15
    assert first["meta"]["per_page"] == 15 and first["meta"]["current_page"] == 1
    assert first["meta"]["total"] >= 16 and first["meta"]["last_page"] >= 2
    assert first["links"]["prev"] is None and first["links"]["next"].endswith("?page=2")
    second = server.curl("/api/subscriber-imports?page=2", *_h(server)).json()
    assert second["meta"]["current_page"] == 2 and second["data"]
    assert {d["uuid"] for d in first["data"]}.isdisjoint(d["uuid"] for d in second["data"])


def test_update_and_delete_a_draft(server):
    uuid = _create(server, "email\nold@example.com\n")["uuid"]
    body = {"subscribers_csv": "email\nnew@example.com\n", "email_list_uuid": server.lists["vip"]["uuid"],
            "subscribe_unsubscribed": False, "unsubscribe_others": False, "replace_tags": True}
    reply = server.curl("-X", "PUT", f"/api/subscriber-imports/{uuid}", *_h(server), "-d", json.dumps(body))
    assert reply.status == 200, reply
    data = reply.json()["data"]
    assert data["subscribers_csv"] == "email\nnew@example.com\n"
    assert data["email_list_uuid"] == server.lists["vip"]["uuid"] and data["replace_tags"] is True

    reply = server.curl("-X", "DELETE", f"/api/subscriber-imports/{uuid}", *_h(server))
    assert (reply.status, reply.body) == (204, "")
    assert server.curl(f"/api/subscriber-imports/{uuid}", *_h(server)).status == 404
    # the command line still has it, cancelled: nothing it did is forgotten
    assert server.cli_json("imports", "show", str(data["id"]))["state"] == "cancelled"


def test_validation_answers_422_with_every_field(server):
    reply = server.curl("-X", "POST", "/api/subscriber-imports", *_h(server),
                        "-d", json.dumps({"email_list_uuid": "befd416e-a776-40c8-8d26-c3322091d697",
                                          "subscribe_unsubscribed": "yes"}))
    assert reply.status == 422
    body = reply.json()
    assert body["message"] == "The given data was invalid."
    assert body["errors"]["subscribers_csv"] == ["The subscribers csv field is required."]
    assert body["errors"]["email_list_uuid"] == ["The selected email list uuid is invalid."]
    assert body["errors"]["subscribe_unsubscribed"] == ["The subscribe unsubscribed field must be true or false."]
    assert "unsubscribe_others" in body["errors"]
    before = server.import_ids()
    # the seed's own create line, typo and all: not JSON
    reply = server.curl("-X", "POST", "/api/subscriber-imports", *_h(server),
                        "-d", '{"subscribers_csv":"email\\", "email_list_uuid": "x", '
                              '"subscribe_unsubscribed": true, "unsubscribe_others": false}')
    assert reply.status == 400 and "JSON" in reply.json()["message"]
    assert server.import_ids() == before


def test_bearer_keys(server):
    assert server.curl("/api/subscriber-imports").json() == {"message": "Unauthenticated."}
    assert server.curl("/api/subscriber-imports").status == 401
    wrong = server.curl("/api/subscriber-imports", "-H", "Authorization: Bearer mp_wrong")
    assert wrong.status == 401
    # listmonk's Basic scheme is not Mailcoach's
    assert server.curl("/api/subscriber-imports", *server.auth()).status == 401
    denied = server.curl("/api/subscriber-imports", *_h(server, "exporter"))
    assert (denied.status, denied.json()) == (403, {"message": "This action is unauthorized."})
    unknown = server.curl("/api/subscriber-imports/2ca0e737-b907-468f-819f-5d16e6bd6852", *_h(server))
    assert unknown.status == 404 and "message" in unknown.json()


def test_a_revoked_key_stops_at_once(server):
    token = server.cli_json("tokens", "create", "short-lived", "--permission", "subscribers:import")["token"]
    header = ("-H", f"Authorization: Bearer {token}")
    assert server.curl("/api/subscriber-imports", *header).status == 200
    server.cli("tokens", "revoke", "short-lived")
    reply = server.curl("/api/subscriber-imports", *header)
    assert (reply.status, reply.json()) == (401, {"message": "Unauthenticated."})

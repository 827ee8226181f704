"""The catalog (lists with ids, API keys with permissions) and its commands: `lists`,
`lists create`, `tokens create|list|revoke`; listmonk's list ids and Mailcoach's list uuids."""
import json
import multiprocessing
import re
import sqlite3
import uuid
from pathlib import Path

import pytest

from mail_pipeline import catalog, home, store
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.params import from_body
from tests.helpers import cli, run_import

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "subscribers.csv"


# --- lists ----------------------------------------------------------------------------------------

def test_ids_are_stable_and_never_reused(mail_home):
    a, b = catalog.create_list("a"), catalog.create_list("b")
    assert (a.id, b.id) == (1, 2)
    assert [l.id for l in catalog.ensure_lists(["c", "b", "a"])] == [3, 2, 1]  # the order given
    with sqlite3.connect(catalog.path()) as con:  # a list removed by hand: its id stays spent
        con.execute("DELETE FROM lists WHERE name = 'c'")
    assert catalog.create_list("d").id == 4
    assert catalog.ensure_lists(["c"])[0].id == 5
    assert [l.name for l in catalog.all_lists()] == ["a", "b", "d", "c"]


def test_a_list_keeps_its_uuid_and_is_found_by_id_uuid_and_name(mail_home):
    created = catalog.create_list("newsletter")
    assert uuid.UUID(created.uuid).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created.created_at)
    assert catalog.ensure_lists(["newsletter"]) == [created]
    assert catalog.list_by_id(created.id) == catalog.list_by_uuid(created.uuid) == created
    assert catalog.list_by_name("newsletter") == created
    assert catalog.list_by_id(99) is None and catalog.list_by_id(2 ** 70) is None
    assert catalog.list_by_uuid(str(uuid.uuid4())) is None and catalog.list_by_name("x") is None


def test_create_refuses_an_existing_or_empty_name(mail_home):
    catalog.create_list("a")
    catalog.create_list("b")
    with pytest.raises(MailPipelineError, match=r"^list 'b' already exists \(id 2\)$"):
        catalog.create_list("b")
    for name in ("", "   "):
        with pytest.raises(MailPipelineError, match="cannot be empty"):
            catalog.create_list(name)
        with pytest.raises(MailPipelineError, match="cannot be empty"):
            catalog.ensure_lists(["ok", name])
    assert catalog.list_by_name("ok") is None  # refused as a whole


def test_names_for_ids_names_every_unknown_id(mail_home):
    with pytest.raises(MailPipelineError, match="^unknown list id 1$"):
        catalog.names_for_ids([1])
    catalog.ensure_lists(["a", "b"])
    assert catalog.names_for_ids([2, 1, 2]) == ["b", "a", "b"]
    with pytest.raises(MailPipelineError, match="^unknown list ids 7, 9$"):
        catalog.names_for_ids([1, 7, 9, 7])


def _ensure(names: list[str], barrier, results) -> None:
    barrier.wait()
    results.put([(l.id, l.uuid, l.name) for l in catalog.ensure_lists(names)])


def test_two_processes_ensuring_the_same_lists_create_each_once(mail_home):
    names = [f"list-{i}" for i in range(20)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_ensure, args=(order, barrier, results))
               for order in (names, names[::-1])]
    for worker in workers:
        worker.start()
    got = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sorted(got[0]) == sorted(got[1])  # both saw the same ids and uuids
    stored = catalog.all_lists()
    assert sorted(l.name for l in stored) == sorted(names)
    assert [l.id for l in stored] == list(range(1, 21))


def test_a_read_never_creates_the_home_or_the_catalog(mail_home):
    assert catalog.all_lists() == [] and catalog.tokens() == []
    assert catalog.list_by_id(1) is None and catalog.list_by_name("a") is None
    assert catalog.list_by_uuid(str(uuid.uuid4())) is None and catalog.names_for_ids([]) == []
    assert catalog.authenticate("mp_x") is None and catalog.authenticate("mp_x", "ci") is None
    assert catalog.described({}) == []
    for args in (("lists", "--json"), ("tokens", "list", "--json"), ("lists",)):
        assert cli(*args, home=mail_home).returncode == 2  # no home: it says so
    assert not mail_home.exists()
    mail_home.mkdir()
    for args in (("lists", "--json"), ("tokens", "list", "--json"), ("lists",)):
        assert cli(*args, home=mail_home).returncode == 0
    assert catalog.all_lists() == [] and not catalog.path().exists()


# --- API keys -------------------------------------------------------------------------------------

def test_a_token_authenticates_as_bearer_and_with_its_name_until_revoked(mail_home):
    secret = catalog.create_token("ci", [])
    assert re.fullmatch(r"mp_[A-Za-z0-9_-]{43}", secret)
    key = catalog.authenticate(secret)
    assert key.name == "ci" and key.permissions == catalog.PERMISSIONS and key.last_used_at is None
    assert catalog.authenticate(secret, "ci") == key
    assert catalog.authenticate(secret, "other") is None
    assert catalog.authenticate(secret + "x") is None and catalog.authenticate(secret + "x", "ci") is None
    assert catalog.authenticate("") is None
    assert secret.encode() not in catalog.path().read_bytes()  # only its hash is kept
    catalog.revoke_token("ci")
    assert catalog.authenticate(secret) is None and catalog.authenticate(secret, "ci") is None
    with pytest.raises(MailPipelineError, match="^no API key named 'ci'$"):
        catalog.revoke_token("ci")
    assert catalog.create_token("ci", []) != secret  # the name is free again, with a new token


def test_permissions_and_refusals(mail_home):
    importer = catalog.create_token("importer", ["subscribers:import"])
    assert catalog.authenticate(importer).permissions == ("subscribers:import",)
    both = catalog.create_token("both", ["subscribers:export", "subscribers:import", "subscribers:export"])
    assert catalog.authenticate(both).permissions == catalog.PERMISSIONS
    assert [t.name for t in catalog.tokens()] == ["both", "importer"]
    for name, permissions, message in [
        ("x", ["subscribers:delete"], "unknown permission 'subscribers:delete': use "
                                      "subscribers:import or subscribers:export"),
        ("", [], "a key name cannot be empty"), (" ", [], "a key name cannot be empty"),
        ("a:b", [], "cannot hold ':'"),
        ("importer", [], "a key named 'importer' already exists"),
    ]:
        with pytest.raises(MailPipelineError, match=re.escape(message)):
            catalog.create_token(name, permissions)
    assert [t.name for t in catalog.tokens()] == ["both", "importer"]


# --- listmonk's ids, Mailcoach's uuids ------------------------------------------------------------

def test_listmonk_list_ids_are_catalog_ids(mail_home):
    catalog.ensure_lists(["Default list", "Opt-in list"])
    system, fields = from_body({"mode": "subscribe", "delim": ",", "lists": [2, 1]})
    assert system == "listmonk" and fields["lists"] == ["Opt-in list", "Default list"]
    assert from_body({"delim": ",", "lists": [1, "news"]})[1]["lists"] == ["Default list", "news"]
    assert from_body({"delim": ",", "lists": ["3"]})[1]["lists"] == ["3"]  # a string is a name
    with pytest.raises(MailPipelineError, match="^invalid listmonk params: unknown list ids 7, 9$"):
        from_body({"mode": "subscribe", "lists": [1, 7, 9]})
    with pytest.raises(MailPipelineError, match="^invalid listmonk params: unknown list id 3$"):
        from_body({"lists": [3], "delim": ","})


def test_mailcoach_list_uuid_names_a_known_list(mail_home):
    known = catalog.create_list("customers")
    body = {"subscribers_csv": "email\n", "email_list_uuid": known.uuid}
    assert from_body(body)[0] == "Mailcoach" and from_body(body)[1]["lists"] == ["customers"]
    assert from_body({**body, "email_list_uuid": known.uuid.upper()})[1]["lists"] == ["customers"]
    other = str(uuid.uuid4())
    assert from_body({**body, "email_list_uuid": other})[1]["lists"] == [other]  # taken as a name


# --- imports create their lists -------------------------------------------------------------------

def test_an_import_creates_its_lists_and_a_dry_run_none(mail_home, write_csv):
    from mail_pipeline.options import build
    from mail_pipeline.preview import preview
    path = write_csv("email\nann@example.com\n")
    preview(build({"lists": ["trial"], "source": str(path)}))
    assert catalog.all_lists() == []
    catalog.create_list("existing")
    run_import(path, lists=["new", "existing"])
    assert [(l.id, l.name) for l in catalog.all_lists()] == [(1, "existing"), (2, "new")]


# --- the command line ---------------------------------------------------------------------------

def _json(*args, home):
    result = cli(*args, "--json", home=home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_lists_commands(mail_home):
    mail_home.mkdir()  # (a read needs a home: it never makes one)
    assert _json("lists", home=mail_home) == {"data": []}
    created = _json("lists", "create", "weekly", home=mail_home)
    assert set(created) == {"id", "uuid", "name"} and (created["id"], created["name"]) == (1, "weekly")
    again = cli("lists", "create", "weekly", home=mail_home)
    assert again.returncode == 2 and again.stderr == "error: list 'weekly' already exists (id 1)\n"
    [row] = _json("lists", home=mail_home)["data"]
    assert row == {"id": 1, "uuid": created["uuid"], "name": "weekly",
                   "created_at": catalog.list_by_id(1).created_at, "subscriber_count": 0,
                   "subscription_counts": {}}
    plain = cli("lists", home=mail_home)
    assert plain.returncode == 0 and "weekly" in plain.stdout and created["uuid"] in plain.stdout
    plain = cli("lists", "create", "daily", home=mail_home)
    assert plain.stdout.startswith(f"home: {mail_home}\nlist 2 'daily' created (uuid ")


def test_tokens_commands(mail_home):
    made = _json("tokens", "create", "ci", "--permission", "subscribers:import", home=mail_home)
    assert set(made) == {"name", "token", "permissions"}
    assert (made["name"], made["permissions"]) == ("ci", ["subscribers:import"])
    assert catalog.authenticate(made["token"]).name == "ci"
    plain = cli("tokens", "create", "ops", home=mail_home)
    [token] = plain.stdout.splitlines()  # the token alone on stdout; the note on stderr
    assert catalog.authenticate(token, "ops").permissions == catalog.PERMISSIONS
    assert "shown this once" in plain.stderr
    listed = _json("tokens", "list", home=mail_home)["data"]
    assert [(t["name"], t["permissions"], t["last_used_at"]) for t in listed] == [
        ("ci", ["subscribers:import"], None), ("ops", list(catalog.PERMISSIONS), None)]
    assert all(set(t) == {"name", "permissions", "created_at", "last_used_at"} for t in listed)
    assert _json("tokens", "revoke", "ci", home=mail_home) == {"name": "ci", "revoked": True}
    assert catalog.authenticate(made["token"]) is None
    gone = cli("tokens", "revoke", "ci", home=mail_home)
    assert gone.returncode == 2 and gone.stderr == "error: no API key named 'ci'\n"
    bad = cli("tokens", "create", "x", "--permission", "everything", home=mail_home)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "subscribers:import" in bad.stderr


def test_an_import_then_lists_shows_its_list_with_id_and_counts(mail_home):
    result = cli("import", str(SAMPLE), "--list", "newsletter", "--json", home=mail_home)
    assert result.returncode == 0, result.stderr
    [row] = _json("lists", home=mail_home)["data"]
    assert (row["id"], row["name"]) == (1, "newsletter") and uuid.UUID(row["uuid"])
    assert row["subscriber_count"] == 4 and row["subscription_counts"] == {"unconfirmed": 4}


def test_lists_of_an_older_store_show_without_an_id(mail_home):
    with store.writer(home.database_path()) as con:  # a store from before the catalog
        con.execute("INSERT INTO lists VALUES ('legacy', now())")
        con.execute("INSERT INTO subscriptions (email, list, status, created_at, updated_at) "
                    "VALUES ('a@example.com', 'legacy', 'confirmed', now(), now())")
    catalog.create_list("fresh")
    rows = _json("lists", home=mail_home)["data"]
    assert [(r["id"], r["uuid"], r["name"], r["subscriber_count"]) for r in rows] == [
        (1, catalog.list_by_id(1).uuid, "fresh", 0), (None, None, "legacy", 1)]


def test_lists_while_an_import_writes_the_store_shows_counts_as_busy(mail_home):
    catalog.create_list("weekly")
    with store.writer(home.database_path()):  # the store's one writer, held
        result = cli("lists", "--json", home=mail_home)
        plain = cli("lists", home=mail_home)
    assert result.returncode == 0 and "busy" in result.stderr
    [row] = json.loads(result.stdout)["data"]
    assert row["name"] == "weekly" and row["subscriber_count"] is None
    assert row["subscription_counts"] is None
    assert plain.returncode == 0 and "busy" in plain.stdout

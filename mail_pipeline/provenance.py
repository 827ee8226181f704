"""Where a subscriber came from (issue 16): `subscribers show EMAIL`.

The store records, on every subscriber and subscription, the import that created it and the one
that last changed it (`created_by`, `updated_by`, `updated_by_at`). The history needs nothing
more: each import that changed the subscriber kept its before-image (`changes`; the one that
created it marks the subscriber instead, `created_batch`), so what it changed is the difference
between its image and the next one (or the subscriber as it is now).
Images go with the import's logs (retention) and when it is reverted; the history shows what
is still on record. Reads only: the store is opened read-only and never created.
"""
import json
from datetime import datetime
from typing import Optional

import duckdb
import email_validator

from mail_pipeline import store
from mail_pipeline.clock import iso_utc
from mail_pipeline.errors import MailPipelineError

_FIELDS = ("name", "status", "attributes", "tags", "email_format")
_SUBSCRIPTION_FIELDS = ("list", "status", "created_at", "updated_at", "subscribe_time",
                        "subscribe_ip", "confirm_time", "remove_time", "remove_ip", "created_by",
                        "updated_by", "updated_by_at")


def key(email: str) -> str:
    """The email as the store keys it (spec §3: email-validator's normalized form, lower-cased)."""
    try:
        return email_validator.validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except email_validator.EmailNotValidError:
        return email.strip().lower()


def _plain(value):
    """A stored value as JSON shows it: times in ISO UTC, JSON text parsed, lists as lists."""
    if isinstance(value, datetime):
        return iso_utc(value)
    return value


def _subscriber(con: duckdb.DuckDBPyConnection, email: str) -> Optional[dict]:
    rows = con.execute(f"SELECT {', '.join(store.SUBSCRIBER_COLUMNS)} FROM subscribers WHERE email = ?",
                       [email]).fetchall()
    if not rows:
        return None
    found = dict(zip(store.SUBSCRIBER_COLUMNS, (_plain(v) for v in rows[0])))
    found["attributes"] = json.loads(found["attributes"]) if found["attributes"] else {}
    return found


def _subscriptions(con: duckdb.DuckDBPyConnection, table: str, where: str, params: list) -> list[dict]:
    rows = con.execute(f"SELECT {', '.join(_SUBSCRIPTION_FIELDS)} FROM {table} WHERE {where}"
                       " ORDER BY list", params).fetchall()
    return [dict(zip(_SUBSCRIPTION_FIELDS, (_plain(v) for v in row))) for row in rows]


def _image(subscriber: Optional[dict], subscriptions: list[dict]) -> dict:
    """What a history entry compares: the subscriber's fields and each list's status."""
    fields = {f: (subscriber or {}).get(f) for f in _FIELDS} if subscriber else None
    return {"subscriber": fields, "lists": {s["list"]: s["status"] for s in subscriptions}}


def _difference(before: dict, after: dict) -> dict:
    """Each field and list whose value moved: [before, after]."""
    changed = {}
    if before["subscriber"] is None:
        changed.update({f: [None, v] for f, v in (after["subscriber"] or {}).items() if v not in (None, [], {})})
    else:
        for f in _FIELDS:
            if before["subscriber"][f] != (after["subscriber"] or {}).get(f):
                changed[f] = [before["subscriber"][f], (after["subscriber"] or {}).get(f)]
    for name in sorted(before["lists"].keys() | after["lists"].keys()):
        if before["lists"].get(name) != after["lists"].get(name):
            changed[f"lists.{name}"] = [before["lists"].get(name), after["lists"].get(name)]
    return changed


def _kind(existed: bool, changed: dict) -> str:
    """What the import did to the subscriber, in the categories' words."""
    if not existed or any(k.startswith("lists.") and v[0] is None for k, v in changed.items()):
        return "added"
    if changed.get("status", [None, None])[1] == "blocklisted":
        return "blocklisted"
    if changed and all(k.startswith("lists.") and v[1] == "unsubscribed" for k, v in changed.items()):
        return "unsubscribed"
    return "updated"


def _history(con: duckdb.DuckDBPyConnection, email: str, now: dict) -> list[dict]:
    """Every import on record that changed the subscriber, newest first, with what it changed."""
    if not store.has_table(con, "changes"):
        return []
    columns = ("import_id", "batch", "existed", "changed_at", *store.SUBSCRIBER_COLUMNS[1:])
    query = f"SELECT {', '.join(columns)} FROM changes WHERE email = $email"
    if store.marks_creations(con):  # the import that created it, while it can be reverted
        nothing = ", ".join(f"NULL AS {c}" for c in store.SUBSCRIBER_COLUMNS[1:])
        query += (f" UNION ALL SELECT import_id, batch, false, changed_at, {nothing}"
                  f" FROM ({store.CREATIONS}) WHERE email = $email")
    rows = con.execute(f"{query} ORDER BY changed_at", {"email": email}).fetchall()
    images = []
    for row in rows:
        entry = dict(zip(columns, (_plain(v) for v in row)))
        before = None
        if entry["existed"]:
            before = {f: entry[f] for f in _FIELDS}
            before["attributes"] = json.loads(before["attributes"]) if before["attributes"] else {}
        subscriptions = _subscriptions(con, "changed_subscriptions",
                                       "import_id = ? AND batch = ? AND email = ?",
                                       [entry["import_id"], entry["batch"], email])
        images.append((entry, _image(before, subscriptions)))
    history = []
    for number, (entry, before) in enumerate(images):
        after = images[number + 1][1] if number + 1 < len(images) else now
        changed = _difference(before, after)
        history.append({"import_id": entry["import_id"], "at": entry["changed_at"],
                        "kind": _kind(entry["existed"], changed), "changed": changed})
    return history[::-1]


def show(con: duckdb.DuckDBPyConnection, email: str) -> dict:
    """The subscriber, its subscriptions (with their provenance) and its history."""
    wanted = key(email)
    [(recorded,)] = con.execute("SELECT count(*) FROM information_schema.columns WHERE "
                                "table_name = 'subscribers' AND column_name = 'created_by'").fetchall()
    if not recorded:
        raise MailPipelineError("the store was written by an earlier version of mail-pipeline and "
                                "records no provenance yet: the next import adds it")
    subscriber = _subscriber(con, wanted)
    if subscriber is None:
        raise MailPipelineError(f"no subscriber {wanted!r} in the store")
    subscriptions = _subscriptions(con, "subscriptions", "email = ?", [wanted])
    now = _image(subscriber, subscriptions)
    return {"subscriber": subscriber, "subscriptions": subscriptions,
            "history": _history(con, wanted, now)}

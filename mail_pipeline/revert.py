"""Undo an import (issue 16, spec §3 "Undo"): put back the before-images its batches kept.

Each batch of an import copied, in its own transaction, every subscriber it changed (and all
that subscriber's subscriptions) into `changes` / `changed_subscriptions`; a subscriber it
created carries the import and the batch itself (`created_by`, `created_batch`; see merge.py).
A revert takes those batches in reverse order; each is one transaction that deletes the
subscribers' present rows, inserts the before-images (provenance and `updated_at` included),
drops the images and records the batch in `revert_batches`. A batch reverted is gone from
`changes` and its subscribers from the store, so a revert resumed after a kill carries on where
it stopped and never applies a batch twice.

The unit is the subscriber (its row and all its subscriptions), so a revert refuses, changing
nothing, when a later import changed one of the same subscribers again: putting back the
before-image would silently undo the later import too.
"""
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional

import duckdb

from mail_pipeline import control, store
from mail_pipeline.errors import MailPipelineError

_WHERE = "import_id = $import_id AND batch = $batch"
_SUBSCRIBERS = ", ".join(store.IMAGE_COLUMNS)
_SUBSCRIPTIONS = ", ".join(store.SUBSCRIPTION_COLUMNS)
# An import's before-images, one row per subscriber and batch: the copies in `changes`, and the
# subscribers it created, which are their own record (`existed` false; the moment is the batch's
# commit, when the copies were taken too). Rows of `changes` with `existed` false are what
# earlier versions kept for a subscriber they created.
_COPIES = "SELECT batch, email, existed, changed_at FROM changes WHERE import_id = $import_id"
_IMAGES = f"""
{_COPIES}
UNION ALL
SELECT batch, email, false, changed_at FROM ({store.CREATIONS}) WHERE import_id = $import_id
"""


def _images(con: duckdb.DuckDBPyConnection) -> str:
    """`_IMAGES`, or only the copies in a store read without migrating it (`marks_creations`)."""
    return _IMAGES if store.marks_creations(con) else _COPIES


# (`reverting` is dropped by the caller, which counts the batch's subscribers from it first.)
_REVERT_BATCH = (
    f"CREATE OR REPLACE TEMP TABLE reverting AS SELECT email, existed FROM ({_IMAGES})"
    " WHERE batch = $batch",
    "DELETE FROM subscriptions WHERE email IN (SELECT email FROM reverting)",
    "DELETE FROM subscribers WHERE email IN (SELECT email FROM reverting)",
    f"INSERT INTO subscribers ({_SUBSCRIBERS}) SELECT {_SUBSCRIBERS} FROM changes"
    f" WHERE {_WHERE} AND existed",
    f"INSERT INTO subscriptions ({_SUBSCRIPTIONS}) SELECT {_SUBSCRIPTIONS} FROM changed_subscriptions"
    f" WHERE {_WHERE}",
    f"DELETE FROM changed_subscriptions WHERE {_WHERE}",
    f"DELETE FROM changes WHERE {_WHERE}",
    "INSERT INTO revert_batches VALUES ($import_id, $batch, $now)",
)

# Later changes to the import's subscribers: other imports' before-images taken after this
# import's (they name every later import still on record), and the provenance the rows carry
# now (which names the last one even when its before-images were purged).
_LATER = """
WITH mine AS (SELECT email, changed_at FROM ({images})),
later AS (
  SELECT c.import_id AS other, c.email FROM changes c JOIN mine m ON c.email = m.email
  WHERE c.import_id <> $import_id AND c.changed_at > m.changed_at
  UNION SELECT s.updated_by, s.email FROM subscribers s JOIN mine m ON s.email = m.email
  WHERE s.updated_by <> $import_id AND s.updated_by_at > m.changed_at
  UNION SELECT x.updated_by, x.email FROM subscriptions x JOIN mine m ON x.email = m.email
  WHERE x.updated_by <> $import_id AND x.updated_by_at > m.changed_at
)
SELECT other, count(DISTINCT email) FROM later GROUP BY other
"""


@dataclass(frozen=True)
class Progress:
    batch: int       # batches reverted so far, in this run
    batches: int     # batches this run reverts
    subscribers: int  # subscribers put back so far


def _id_order(import_id: str) -> tuple:
    return (len(import_id), import_id)


def later_imports(con: duckdb.DuckDBPyConnection, import_id: str) -> list[tuple[str, int]]:
    """The later imports that changed some of the same subscribers again, with how many."""
    if not store.has_table(con, "changes"):
        return []
    rows = con.execute(_LATER.format(images=_images(con)), {"import_id": import_id}).fetchall()
    return sorted(((other, n) for other, n in rows if other), key=lambda r: _id_order(r[0]))


def refusal(import_id: str, later: list[tuple[str, int]]) -> str:
    """The sentence refusing a revert that would undo later imports' changes too."""
    named = ", ".join(f"import {other} ({n} subscriber{'s' if n != 1 else ''})" for other, n in later)
    first = " then ".join(f"{other}" for other, _ in reversed(later))
    return (f"import {import_id} cannot be reverted: later imports changed the same subscribers "
            f"again: {named}; revert those first (mail-pipeline imports revert {first})")


def refuse_if_changed_later(con: duckdb.DuckDBPyConnection, import_id: str) -> None:
    """Refuse a revert that would undo later imports' changes too, or that could only undo part
    of an import (batches committed by a version that kept no before-images)."""
    [(older,)] = con.execute("SELECT count(*) FROM import_batches WHERE import_id = ?"
                             " AND before_images IS NOT TRUE", [import_id]).fetchall()
    if older:
        raise MailPipelineError(f"import {import_id} was imported by a version of mail-pipeline that "
                                "kept no before-images, so it cannot be reverted")
    later = later_imports(con, import_id)
    if later:
        raise MailPipelineError(refusal(import_id, later))


def plan(con: duckdb.DuckDBPyConnection, import_id: str, sample: int = 20) -> dict:
    """What a revert would do now, without doing it: the batches left, the subscribers it would
    remove (the import created them) and restore, the subscriptions it would put back, a few
    of the emails, and the later imports that would make it refuse."""
    empty = {"import_id": import_id, "batches": 0, "subscribers_removed": 0,
             "subscribers_restored": 0, "subscriptions_restored": 0, "removed": [], "restored": [],
             "batches_reverted": 0, "changed_later": []}
    if not store.has_table(con, "changes"):
        return empty
    images, params = _images(con), {"import_id": import_id}
    [(batches, removed, restored)] = con.execute(
        "SELECT count(DISTINCT batch), count(*) FILTER (NOT existed), count(*) FILTER (existed)"
        f" FROM ({images})", params).fetchall()
    [(subscriptions,)] = con.execute("SELECT count(*) FROM changed_subscriptions WHERE import_id = ?",
                                     [import_id]).fetchall()
    [(done,)] = con.execute("SELECT count(*) FROM revert_batches WHERE import_id = ?",
                            [import_id]).fetchall()

    def emails(existed: bool) -> list[str]:
        return [e for (e,) in con.execute(
            f"SELECT email FROM ({images}) WHERE existed = $existed ORDER BY email LIMIT $sample",
            {**params, "existed": existed, "sample": sample}).fetchall()]

    return {**empty, "batches": batches, "subscribers_removed": removed,
            "subscribers_restored": restored, "subscriptions_restored": subscriptions,
            "removed": emails(False), "restored": emails(True), "batches_reverted": done,
            "changed_later": [{"import_id": other, "subscribers": n}
                              for other, n in later_imports(con, import_id)]}


def revert(con: duckdb.DuckDBPyConnection, import_id: str,
           on_progress: Optional[Callable[[Progress], None]] = None,
           requested: Optional[control.Requested] = None) -> dict:
    """Put back every batch of the import not reverted yet, newest first, one transaction each;
    refused, changing nothing, when later imports changed the same subscribers. Returns the
    subscribers removed and restored by this run, and the batches reverted in all."""
    refuse_if_changed_later(con, import_id)
    batches = [b for (b,) in con.execute(
        f"SELECT DISTINCT batch FROM ({_IMAGES}) ORDER BY batch DESC", {"import_id": import_id}).fetchall()]
    removed = restored = 0
    for number, batch in enumerate(batches, 1):
        params = {"import_id": import_id, "batch": batch, "now": datetime.now(timezone.utc)}
        con.execute("BEGIN TRANSACTION")
        try:
            for sql in _REVERT_BATCH:
                store.run(con, sql, params)
            [(gone, back)] = con.execute("SELECT count(*) FILTER (NOT existed),"
                                         " count(*) FILTER (existed) FROM reverting").fetchall()
            con.execute("DROP TABLE reverting")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        removed, restored = removed + gone, restored + back
        if on_progress:
            on_progress(Progress(number, len(batches), removed + restored))
        if number < len(batches):
            control.check(requested, import_id, again="revert")
    [(done,)] = con.execute("SELECT count(*) FROM revert_batches WHERE import_id = ?",
                            [import_id]).fetchall()
    return {"subscribers_removed": removed, "subscribers_restored": restored,
            "batches_reverted": done}


def forget(con: duckdb.DuckDBPyConnection, import_ids: list[str]) -> int:
    """Drop the before-images of these imports (retention purges them with their logs); after
    that they cannot be reverted. The subscribers they created lose their mark of it, and so do
    the copies other imports keep of them, so that reverting one of those cannot bring it back.
    Returns how many subscribers' images went."""
    if not import_ids:
        return 0
    [(n,)] = con.execute(
        "SELECT (SELECT count(*) FROM changes WHERE list_contains($ids, import_id))"
        " + (SELECT count(*) FROM subscribers WHERE list_contains($ids, created_by)"
        " AND created_batch IS NOT NULL)", {"ids": import_ids}).fetchall()
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM changed_subscriptions WHERE list_contains(?, import_id)", [import_ids])
        con.execute("DELETE FROM changes WHERE list_contains(?, import_id)", [import_ids])
        for table in ("subscribers", "changes"):
            con.execute(f"UPDATE {table} SET created_batch = NULL"
                        " WHERE list_contains(?, created_by) AND created_batch IS NOT NULL", [import_ids])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return n

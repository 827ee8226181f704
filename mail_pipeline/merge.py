"""The merge (spec §3 "Fate"): decide each valid row's category against the store and apply it.

Every row is classified against the store (a slice of the file at a time, from its key
columns), then applied in batches; each batch is
one transaction holding its effects and a marker that it was applied, and the category of each of
its rows is written to a file just before that commit. A batch whose marker exists is skipped, so
a resumed import never applies a row twice and a crash never leaves half a batch. (Rows of one
import have distinct emails, so applying one batch never changes another batch's categories.)
"""
import json
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

import duckdb
import polars as pl

from mail_pipeline import store
from mail_pipeline.files import replacing
from mail_pipeline.options import ImportOptions


# The overwrite gate looks at the subscriber's subscriptions on the target lists; the most
# restrictive one decides (a complaint outranks a bounce, which outranks an unsubscribe).
_GATE = """
CASE
  WHEN t.any_complained THEN 'scomp'
  WHEN t.any_bounced THEN 'bounced'
  WHEN t.any_deactivated THEN 'deactivated'
  WHEN t.any_unsubscribed THEN 'unsubscribed'
  ELSE 'active'
END
"""

# Every row is classified at once, but only from its key columns: joins that carry names,
# attributes and the like spill to disk under the memory cap and cost several times more. A
# batch reads its rows' other columns from the Parquet parts when it is applied (`_BATCH`).
# Subscribers are looked up once; only the rows found are then looked up among the
# subscriptions, which keeps the second join small when most rows are new. What is gathered per
# subscriber is grouped and joined back by the row's number, not its email (a row's email is
# unique in the import): 64-bit keys instead of strings, 15-25% off a slice of known rows.
# A row's own lists: list name → subscription status, from an export's `lists` column.
_ROW_LISTS = "CAST({c}.lists::JSON AS MAP(VARCHAR, VARCHAR))"

_CLASSIFY = f"""
{{into}}
WITH target AS (SELECT DISTINCT unnest($lists::VARCHAR[]) AS list),
-- The validated rows not yet applied, less the file's duplicates. Batches are ranges of file
-- rows (so a batch holds at most batch_size rows), numbered on from the last committed one.
incoming AS (
  SELECT row, email, lists, subscription_status,
         $first_batch + (row - $last_row - 1) // $size AS batch
  FROM read_parquet($valid)
  WHERE row > $slice_after AND row <= $slice_last
    AND row NOT IN (SELECT row FROM read_parquet($duplicates))
),
looked_up AS MATERIALIZED (
  SELECT b.*, s.email IS NOT NULL AS known, s.status AS current_status
  FROM incoming b LEFT JOIN subscribers s ON s.email = b.email
),
on_targets AS (
  SELECT k.row, count(*) AS on_lists, {{lists_on}} AS lists_on,
         bool_or(x.status = 'unsubscribed') AS any_unsubscribed,
         bool_or(x.status = 'bounced') AS any_bounced,
         bool_or(x.status = 'deactivated') AS any_deactivated,
         bool_or(x.status = 'complained') AS any_complained
  FROM subscriptions x JOIN (SELECT row, email FROM looked_up WHERE known) k ON x.email = k.email
  WHERE x.list IN (SELECT list FROM target)
  GROUP BY k.row
),
-- A row's own lists (an export's `lists` column) that the subscriber is not on yet.
row_lists_missing AS (
  SELECT r.row, count(*) AS missing FROM (
    SELECT row, email, unnest(map_keys({_ROW_LISTS.format(c="looked_up")})) AS list
    FROM looked_up WHERE known AND lists IS NOT NULL) r
  WHERE NOT EXISTS (SELECT 1 FROM subscriptions x WHERE x.email = r.email AND x.list = r.list)
  GROUP BY r.row
),
joined AS (
  SELECT l.*, coalesce(t.on_lists, 0) AS on_lists,
         coalesce(m.missing, 0) AS row_lists_missing, t.lists_on, {_GATE} AS gate,
         coalesce(t.any_unsubscribed, false) AS any_unsubscribed
  FROM looked_up l LEFT JOIN on_targets t ON t.row = l.row
  LEFT JOIN row_lists_missing m ON m.row = l.row
)
SELECT * EXCLUDE (email, lists, subscription_status), lists IS NOT NULL AS has_lists,
  -- whether overwrite_when_status lets an overwrite touch this subscriber
  CASE gate WHEN 'scomp' THEN $when_scomp WHEN 'bounced' THEN $when_bounced
       WHEN 'deactivated' THEN $when_deactivated WHEN 'unsubscribed' THEN $when_unsubscribed
       ELSE $when_active END AS gate_allows,
  CASE
    WHEN NOT known THEN 'added'
    WHEN $mode = 'blocklist' THEN 'updated'
    WHEN current_status = 'blocklisted' THEN 'skipped_blocklisted'
    -- (re-subscribing with the status 'unsubscribed' would change nothing)
    WHEN on_lists < $n_lists OR row_lists_missing > 0
         OR ($subscribe_unsubscribed AND any_unsubscribed
             AND coalesce(subscription_status, $subscription_status) != 'unsubscribed') THEN 'added'
    -- unsubscribed from a target list: re-subscribed only with subscribe_unsubscribed; with
    -- overwrite, the gate (most restrictive status first) decides as for any other status
    WHEN any_unsubscribed AND NOT $overwrite THEN 'skipped_unsubscribed'
    WHEN NOT $overwrite THEN 'skipped_overwrite'
    WHEN NOT gate_allows THEN 'skipped_' || gate
    ELSE 'updated'
  END AS category
FROM joined
"""
# Which target lists a known subscriber is on already (`lists_on`) is gathered only when there
# are several: with one, being on it is `on_lists = 1`, and the list aggregate, a third of a
# slice of known rows, is left out.
_LISTS_ON = {True: "list(x.list)", False: "[]::VARCHAR[]"}

# Rows are classified a slice of the file at a time: a slice's keys fit in DuckDB's memory cap,
# so the joins stream the store past them instead of spilling (10M rows under a 500 MB cap: 8 s,
# not 20). The list aggregate of a slice's subscriptions cannot spill: slices of 5M rows ran out
# of a 1 GB cap once in four 10M imports (10.8 s against 12.4 s when they fit), so they stay at 2M.
# Slices hold whole batches, so each batch's rows are together in classified_all.
CLASSIFY_ROWS = 2_000_000

# A row's attributes: GreenArrow's default_custom_fields, then the file's JSON object, then its
# custom-field columns on top. Merging is listmonk's: top-level keys replace, other keys are
# kept, a null is stored as null. Stored JSON is always re-serialised by DuckDB (json(),
# to_json()), so one object has one spelling and a re-import compares equal. The MAP form is
# only built where a merge needs it.
def _as_map(json_text: str) -> str:
    return f"({json_text})::JSON::MAP(VARCHAR, JSON)"


_FILE_ATTRIBUTES = "coalesce(c.attributes, '{}')"
_DEFAULTS = "coalesce($defaults, '{}')"
_CUSTOM_FIELDS = "coalesce(c.custom_fields, '{}')"
_NEW_ATTRIBUTES = (
    f"CASE WHEN c.custom_fields IS NULL AND $defaults IS NULL THEN json({_FILE_ATTRIBUTES})"
    f" ELSE to_json(map_concat({_as_map(_DEFAULTS)}, {_as_map(_FILE_ATTRIBUTES)},"
    f" {_as_map(_CUSTOM_FIELDS)})) END")

# Tags: the row's (or, with replace_tags, only the row's) plus the import's (--tag, Mailrith's
# new_tag_name); kept sorted and distinct so a re-import compares equal.
def _tag_set(*lists: str) -> str:
    return f"list_sort(list_distinct(list_concat({', '.join(lists)}, $tags::VARCHAR[])))"
_MERGED_ATTRIBUTES = f"to_json(map_concat({_as_map('s.attributes')}, {_as_map(_NEW_ATTRIBUTES)}))"

# One batch's rows, whole: their classification joined with their columns, read from the
# Parquet parts by row range (parts are in row order, so only the batch's row groups are read).
# With a subscriber limit, new subscribers beyond it are skipped, counted against the store as
# it stands when the batch commits (ranking sorts, so only then).
_BATCH = """
CREATE OR REPLACE TEMP TABLE batch_rows AS
SELECT v.* EXCLUDE (key_hash), (v.attributes IS NOT NULL OR v.custom_fields IS NOT NULL
         OR $defaults IS NOT NULL) AS has_attributes,
       c.* EXCLUDE (row, batch)
FROM (SELECT * FROM classified_all WHERE batch = $batch) c
JOIN (SELECT * FROM read_parquet($valid) WHERE row BETWEEN $first_row AND $last_row) v USING (row)
"""
_BATCH_WITH_LIMIT = """
CREATE OR REPLACE TEMP TABLE limited AS
SELECT * REPLACE (CASE
    WHEN NOT known AND row_number() OVER (PARTITION BY known ORDER BY row)
         + (SELECT count(*) FROM subscribers) > $limit THEN 'skipped_over_limit'
    ELSE category END AS category)
FROM batch_rows
"""
# A batch that changes nothing (every row skipped) only needs its outcomes: written straight
# from the classification and the rows' emails, without a table of the batch's rows.
_SKIPPED_OUTCOMES = """
SELECT c.row, v.email, c.category
FROM (SELECT row, category FROM classified_all WHERE batch = $batch) c
JOIN (SELECT row, email FROM read_parquet($valid) WHERE row BETWEEN $first_row AND $last_row) v
  USING (row)
ORDER BY row
"""

_INSERT_LISTS = """
INSERT INTO lists
SELECT DISTINCT name, $now FROM unnest($lists::VARCHAR[]) AS t(name)
WHERE name NOT IN (SELECT name FROM lists)
"""

_INSERT_SUBSCRIBERS = f"""
INSERT INTO subscribers (email, name, status, attributes, created_at, updated_at, tags, email_format,
                         created_by, updated_by, updated_by_at, created_batch)
SELECT email, name,
       CASE WHEN $mode = 'blocklist' THEN 'blocklisted' ELSE coalesce(subscriber_status, 'enabled') END,
       {_NEW_ATTRIBUTES}, coalesce(c.created_at, $now), coalesce(c.updated_at, c.created_at, $now),
       {_tag_set("coalesce(c.tags, [])")}, coalesce(c.email_format, $email_format),
       $import_id, $import_id, $now, $batch
FROM classified c WHERE category = 'added' AND NOT known
"""

# Existing subscribers that are updated, or added to a list while overwrite is on, take the
# file's values where overwrite_what and overwrite_when_status allow; blocklist mode always
# blocklists but changes other fields only with overwrite. updated_at moves only if a value
# changes. The rows that change are found first (`subscriber_updates`), so that their
# before-images can be kept before anything is written.
_SUBSCRIBER_UPDATES = f"""
CREATE OR REPLACE TEMP TABLE subscriber_updates AS
SELECT v.* EXCLUDE (old_name, old_status, old_attributes, old_tags, old_email_format) FROM (
  SELECT c.email, s.name AS old_name, s.status AS old_status,
    s.attributes::VARCHAR AS old_attributes, s.tags AS old_tags, s.email_format AS old_email_format,
    CASE WHEN c.fields_ok AND $custom_fields AND c.name IS NOT NULL THEN c.name
         ELSE s.name END AS name,
    CASE WHEN $mode = 'blocklist' THEN 'blocklisted'
         WHEN c.fields_ok AND $status AND c.subscriber_status IS NOT NULL THEN c.subscriber_status
         ELSE s.status END AS status,
    CASE WHEN c.fields_ok AND $custom_fields AND c.has_attributes THEN {_MERGED_ATTRIBUTES}
         ELSE s.attributes END AS attributes,
    CASE WHEN NOT (c.fields_ok AND $custom_fields AND c.tags IS NOT NULL) THEN {_tag_set("s.tags")}
         WHEN $replace_tags THEN {_tag_set("c.tags")}
         ELSE {_tag_set("s.tags", "c.tags")} END AS tags,
    CASE WHEN c.fields_ok AND $format AND c.email_format IS NOT NULL THEN c.email_format
         ELSE s.email_format END AS email_format
  FROM (SELECT *, $overwrite AND gate_allows AS fields_ok FROM classified) c
  JOIN subscribers s ON s.email = c.email
  WHERE c.known AND c.category IN ('added', 'updated')
) AS v
WHERE v.old_name IS DISTINCT FROM v.name OR v.old_status IS DISTINCT FROM v.status
   OR v.old_attributes IS DISTINCT FROM v.attributes::VARCHAR
   OR v.old_tags IS DISTINCT FROM v.tags OR v.old_email_format IS DISTINCT FROM v.email_format
"""
_UPDATE_SUBSCRIBERS = """
UPDATE subscribers AS s SET
  name = u.name, status = u.status, attributes = u.attributes, tags = u.tags,
  email_format = u.email_format, updated_at = $now, updated_by = $import_id, updated_by_at = $now
FROM subscriber_updates u WHERE s.email = u.email
"""

# New subscriptions on target lists for added rows (and, in blocklist mode, for every row).
# A new subscriber has none yet; a known one is on all of them when `on_lists` says so, else on
# those in `lists_on` (found when classifying; gathered only for several target lists).
_INSERT_SUBSCRIPTIONS = """
INSERT INTO subscriptions (email, list, status, created_at, updated_at,
                           subscribe_time, subscribe_ip, confirm_time, remove_time, remove_ip,
                           created_by, updated_by, updated_by_at)
SELECT c.email, t.list,
       CASE WHEN $mode = 'blocklist' OR c.subscriber_status = 'blocklisted' THEN 'unsubscribed'
            ELSE coalesce(c.subscription_status, $subscription_status) END,
       $now, $now, c.subscribe_time, c.subscribe_ip, c.confirm_time, c.remove_time, c.remove_ip,
       $import_id, $import_id, $now
FROM classified c CROSS JOIN (SELECT DISTINCT unnest($lists::VARCHAR[]) AS list) t
WHERE (c.category = 'added' OR ($mode = 'blocklist' AND c.category = 'updated')) AND {known}
  AND (c.lists IS NULL OR NOT list_contains(map_keys(%s), t.list))  -- the row's own status wins
""" % _ROW_LISTS.format(c="c")
_INSERT_SUBSCRIPTIONS_NEW = _INSERT_SUBSCRIPTIONS.replace("{known}", "NOT c.known")
# A row's own lists, each with its own status, where the subscriber is not on it yet.
_INSERT_ROW_SUBSCRIPTIONS = f"""
INSERT INTO subscriptions (email, list, status, created_at, updated_at,
                           subscribe_time, subscribe_ip, confirm_time, remove_time, remove_ip,
                           created_by, updated_by, updated_by_at)
SELECT email, e.key,
       CASE WHEN $mode = 'blocklist' OR subscriber_status = 'blocklisted' THEN 'unsubscribed'
            ELSE e.value END,
       $now, $now, subscribe_time, subscribe_ip, confirm_time, remove_time, remove_ip,
       $import_id, $import_id, $now
FROM (SELECT *, unnest(map_entries({_ROW_LISTS.format(c="c")})) AS e FROM classified c
      WHERE c.lists IS NOT NULL
        AND (c.category = 'added' OR ($mode = 'blocklist' AND c.category = 'updated'))) r
WHERE NOT (r.known AND EXISTS (SELECT 1 FROM subscriptions x WHERE x.email = r.email AND x.list = r.e.key))
"""
_INSERT_SUBSCRIPTIONS_KNOWN = _INSERT_SUBSCRIPTIONS.replace(
    "{known}", "c.known AND c.on_lists < $n_lists AND NOT list_contains(coalesce(c.lists_on, []), t.list)")

# Changes on existing subscriptions: blocklisting unsubscribes from every list;
# subscribe_unsubscribed re-subscribes on target lists; an allowed overwrite sets the file's status
# (overwrite_what.status), or only confirms or unconfirms (overwrite_what.confirmed), and the
# file's subscription times and IPs (overwrite_what.custom_fields).
_ON_TARGET = "list_contains($lists::VARCHAR[], x.list)"


def _subscription_field(name: str) -> str:
    return (f"CASE WHEN {_ON_TARGET} AND c.fields_ok AND $custom_fields AND c.{name} IS NOT NULL"
            f" THEN c.{name} ELSE x.{name} END AS {name}")


_SUBSCRIPTION_FIELDS = ("subscribe_time", "subscribe_ip", "confirm_time", "remove_time", "remove_ip")
# (Found before subscribers are updated: a subscriber's status is its new one where it changes.)
_SUBSCRIPTION_UPDATES = f"""
CREATE OR REPLACE TEMP TABLE subscription_updates AS
SELECT v.* EXCLUDE (old_status, {", ".join(f"old_{f}" for f in _SUBSCRIPTION_FIELDS)}) FROM (
  SELECT x.email, x.list, x.status AS old_status,
    {", ".join(f"x.{f} AS old_{f}" for f in _SUBSCRIPTION_FIELDS)},
    CASE
      WHEN $mode = 'blocklist' OR coalesce(u.status, s.status) = 'blocklisted' THEN 'unsubscribed'
      WHEN c.category = 'added' AND $subscribe_unsubscribed AND x.status = 'unsubscribed' AND {_ON_TARGET}
        THEN coalesce(c.subscription_status, $subscription_status)
      WHEN c.fields_ok AND c.subscription_status IS NOT NULL AND {_ON_TARGET}
           AND ($status OR ($confirmed AND x.status IN ('unconfirmed', 'confirmed')
                            AND c.subscription_status IN ('unconfirmed', 'confirmed')))
        THEN c.subscription_status
      ELSE x.status
    END AS status,
    {", ".join(_subscription_field(f) for f in _SUBSCRIPTION_FIELDS)}
  FROM subscriptions x
  JOIN (SELECT *, $overwrite AND gate_allows AS fields_ok FROM classified) c ON x.email = c.email
  JOIN subscribers s ON s.email = c.email
  LEFT JOIN subscriber_updates u ON u.email = c.email
  WHERE c.known AND c.category IN ('added', 'updated')
) AS v
WHERE v.old_status IS DISTINCT FROM v.status
  OR {" OR ".join(f"v.old_{f} IS DISTINCT FROM v.{f}" for f in _SUBSCRIPTION_FIELDS)}
"""
_UPDATE_SUBSCRIPTIONS = f"""
UPDATE subscriptions AS x SET status = u.status, updated_at = $now, updated_by = $import_id,
  updated_by_at = $now, {", ".join(f"{f} = u.{f}" for f in _SUBSCRIPTION_FIELDS)}
FROM subscription_updates u WHERE x.email = u.email AND x.list = u.list
"""


# Before-images (issue 16): before a batch writes, each known subscriber it is about to change
# (`touched`: from the updates found above, and the new subscriptions it adds) is copied into
# `changes` with all its subscriptions. A subscriber it creates needs no copy: it carries the
# import and the batch that created it (`created_by`, `created_batch`), which is all a revert
# needs to remove it (a row each in `changes` was a sixth of a new batch's time). After the
# batch's statements, any copy of a subscriber left as it was is dropped: a changed row carries
# this batch's provenance (updated_by and the batch's moment), so a revert and the history only
# ever see real changes, whatever `touched` over-counted.
_SUBSCRIBER_IMAGE = ", ".join(f"s.{c}" for c in store.IMAGE_COLUMNS[1:])
_SUBSCRIPTION_IMAGE = ", ".join(f"x.{c}" for c in store.SUBSCRIPTION_COLUMNS)
# Known subscribers the batch changes: those whose row or subscriptions change value, and those
# it subscribes to more lists (added; in blocklist mode, updated ones too).
_TOUCHED = """
CREATE OR REPLACE TEMP TABLE touched AS
SELECT email FROM subscriber_updates UNION SELECT email FROM subscription_updates
UNION SELECT email FROM classified
WHERE known AND (category = 'added' OR ($mode = 'blocklist' AND category = 'updated'))
"""
_KEEP_SUBSCRIBERS = f"""
INSERT INTO changes
SELECT $import_id, $batch, s.email, true, $now, {_SUBSCRIBER_IMAGE}
FROM subscribers s WHERE s.email IN ({{touched}})
"""
_KEEP_SUBSCRIPTIONS = f"""
INSERT INTO changed_subscriptions
SELECT $import_id, $batch, {_SUBSCRIPTION_IMAGE}
FROM subscriptions x WHERE x.email IN ({{touched}})
"""
_CHANGED_NOW = """
SELECT email FROM subscribers WHERE updated_by_at = $now AND updated_by = $import_id
UNION ALL SELECT email FROM subscriptions WHERE updated_by_at = $now AND updated_by = $import_id
"""
_DROP_UNCHANGED = f"""
DELETE FROM changes WHERE import_id = $import_id AND batch = $batch
  AND email NOT IN ({_CHANGED_NOW})
"""
_DROP_UNCHANGED_SUBSCRIPTIONS = """
DELETE FROM changed_subscriptions WHERE import_id = $import_id AND batch = $batch
  AND email NOT IN (SELECT email FROM changes WHERE import_id = $import_id AND batch = $batch)
"""
# unsubscribe_others keeps its before-images under this batch number, after every real batch.
OTHERS_BATCH = 2_000_000_000


def _keep_before_images(con: duckdb.DuckDBPyConnection, params: dict, touched: str) -> None:
    """Copy the subscribers `touched` selects, and their subscriptions, into the before-images."""
    _run(con, _KEEP_SUBSCRIBERS.format(touched=touched), params)
    _run(con, _KEEP_SUBSCRIPTIONS.format(touched=touched), params)


@dataclass(frozen=True)
class Progress:
    batch: int
    batches: int
    rows_done: int


def _parameters(options: ImportOptions, now: datetime) -> dict:
    what, when = options.overwrite_what, options.overwrite_when_status
    return {
        "lists": list(dict.fromkeys(options.lists)), "n_lists": len(set(options.lists)),
        "mode": options.mode, "overwrite": options.overwrite, "limit": options.subscriber_limit,
        "subscribe_unsubscribed": options.subscribe_unsubscribed,
        "subscription_status": options.effective_subscription_status(),
        "custom_fields": what.custom_fields, "status": what.status, "confirmed": what.confirmed,
        "format": what.format, "email_format": options.email_format,
        "tags": sorted(set(options.tags)), "replace_tags": options.replace_tags,
        "defaults": json.dumps(options.default_custom_fields) if options.default_custom_fields else None,
        "when_active": when.active, "when_unsubscribed": when.unsubscribed,
        "when_bounced": when.bounced, "when_deactivated": when.deactivated,
        "when_scomp": when.scomp, "now": now,
    }


def _run(con: duckdb.DuckDBPyConnection, sql: str, params: dict) -> None:
    """Run one statement of the merge (one place, where the tests break in)."""
    store.run(con, sql, params)


def merge(con: duckdb.DuckDBPyConnection, import_id: str, valid: list[Path], duplicates: Path,
          options: ImportOptions, outcomes_dir: Path,
          on_progress: Optional[Callable[[Progress], None]] = None, *,
          unsubscribe_others: bool = False, dry_run: bool = False) -> None:
    """Classify the rows not yet applied, then apply them batch by batch. `valid` are the
    validated frame's parts and `duplicates` the rows to leave out (both Parquet; DuckDB reads
    them itself, so they are never held in Python). Each batch's categories go to
    `outcomes_dir/batch-N.parquet` (row, email, category). `unsubscribe_others` then
    unsubscribes the target lists' other subscribers (Mailcoach).
    A dry run does all of it in one transaction and rolls it back."""
    files = [str(p) for p in valid]
    if dry_run:
        con.execute("BEGIN TRANSACTION")
        try:
            _merge(con, import_id, files, str(duplicates), options, outcomes_dir, on_progress,
                   unsubscribe_others, False)
        finally:
            con.execute("ROLLBACK")
    else:
        _merge(con, import_id, files, str(duplicates), options, outcomes_dir, on_progress,
               unsubscribe_others, True)


def _merge(con: duckdb.DuckDBPyConnection, import_id: str, valid: list[str], duplicates: str,
           options: ImportOptions, outcomes_dir: Path,
           on_progress: Optional[Callable[[Progress], None]], unsubscribe_others: bool,
           commit: bool) -> None:
    # Batches commit in row order, so the rows still to apply are those after the last
    # committed one, whatever batch size an earlier attempt used.
    [(last_batch, last_row)] = con.execute(
        "SELECT max(batch), max(last_row) FROM import_batches WHERE import_id = ?",
        [import_id]).fetchall()
    first_batch = 0 if last_batch is None else last_batch + 1
    last_row = last_row or 0
    [(max_row,)] = con.execute("SELECT coalesce(max(row), 0) FROM read_parquet(?)", [valid]).fetchall()
    batch_size = options.batch_rows(max_row)
    params = {**_parameters(options, datetime.now(timezone.utc)), "valid": valid,
              "duplicates": duplicates, "first_batch": first_batch, "last_row": last_row,
              "size": batch_size}
    outcomes_dir.mkdir(parents=True, exist_ok=True)
    # Outcomes of batches from here on were written by an attempt whose commit never came;
    # the batches are renumbered from the last committed row, so none may be left behind.
    for path in outcome_files(outcomes_dir):
        if int(path.stem.removeprefix("batch-")) >= first_batch:
            path.unlink()
    _upgrade_outcomes(con, outcomes_dir, valid)
    # (The validated frame has a part per chunk read, so `valid` is never empty; the first
    # slice always runs and creates the table, empty or not.)
    slice_rows = max(batch_size, CLASSIFY_ROWS // batch_size * batch_size)
    for number, after in enumerate(range(last_row, max(max_row, last_row) + 1, slice_rows)):
        into = ("CREATE OR REPLACE TEMP TABLE classified_all AS" if number == 0
                else "INSERT INTO classified_all")
        _run(con, _CLASSIFY.format(into=into, lists_on=_LISTS_ON[params["n_lists"] > 1]),
             {**params, "slice_after": after, "slice_last": after + slice_rows})
    # Which statements each batch needs: an UPDATE scans a whole table even when no row of the
    # batch asks for it, so statements with nothing to do are left out.
    batches = {number: Batch(valid, *rest) for number, *rest in con.execute(
        "SELECT batch, min(row), max(row), count(*), bool_or(category = 'added' AND NOT known),"
        " bool_or(category IN ('added', 'updated') AND known),"
        " bool_or(category IN ('added', 'updated') AND has_lists)"
        " FROM classified_all GROUP BY batch ORDER BY batch").fetchall()}
    [(done_before,)] = con.execute("SELECT coalesce(sum(rows), 0) FROM import_batches WHERE import_id = ?",
                                   [import_id]).fetchall()
    last = max(batches, default=first_batch - 1)
    done = done_before
    for number in sorted(batches):
        with _transaction(con, commit):
            _apply(con, import_id, number, options, outcomes_dir, batches[number])
        done += batches[number].rows
        if on_progress:
            on_progress(Progress(number + 1, last + 1, done))
    con.execute("DROP TABLE IF EXISTS classified_all; DROP TABLE IF EXISTS batch_rows;"
                " DROP TABLE IF EXISTS limited; DROP TABLE IF EXISTS subscriber_updates;"
                " DROP TABLE IF EXISTS subscription_updates; DROP TABLE IF EXISTS touched")
    if unsubscribe_others:
        with _transaction(con, commit):
            _unsubscribe_others(con, import_id, valid, options, outcomes_dir)


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection, own: bool) -> Iterator[None]:
    """One transaction around the block, unless the caller holds one already (a dry run)."""
    if not own:
        yield
        return
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        # BaseException: a Dagster cancel interrupts with a BaseException subclass.
        con.execute("ROLLBACK")
        raise


# Mailcoach's unsubscribe_others: active subscriptions on the target lists whose subscriber is
# not in the file. Done once, after the batches, in a transaction that records it was done.
_OTHERS = """
CREATE OR REPLACE TEMP TABLE others AS
SELECT DISTINCT x.email FROM subscriptions x
WHERE list_contains($lists::VARCHAR[], x.list) AND x.status IN ('unconfirmed', 'confirmed')
  AND x.email NOT IN (SELECT email FROM read_parquet($valid))
ORDER BY x.email
"""
_UNSUBSCRIBE_OTHERS = """
UPDATE subscriptions SET status = 'unsubscribed', updated_at = $now, updated_by = $import_id,
  updated_by_at = $now
WHERE list_contains($lists::VARCHAR[], list) AND status IN ('unconfirmed', 'confirmed')
  AND email IN (SELECT email FROM others)
"""


def _unsubscribe_others(con: duckdb.DuckDBPyConnection, import_id: str, valid: list[str],
                        options: ImportOptions, outcomes_dir: Path) -> None:
    [(done,)] = con.execute("SELECT count(*) FROM import_steps WHERE import_id = ? AND step = ?",
                            [import_id, "unsubscribe_others"]).fetchall()
    if done:
        return
    params = {**_parameters(options, datetime.now(timezone.utc)), "valid": valid,
              "import_id": import_id, "batch": OTHERS_BATCH}
    _run(con, _OTHERS, params)
    _keep_before_images(con, params, "SELECT email FROM others")
    _run(con, _UNSUBSCRIBE_OTHERS, params)
    others = con.sql("SELECT email FROM others").pl()
    with replacing(outcomes_dir / "unsubscribed_others.parquet") as tmp:  # before the commit
        others.write_parquet(tmp)
    con.execute("INSERT INTO import_steps VALUES (?, ?, ?, ?)",
                [import_id, "unsubscribe_others", others.height, params["now"]])
    con.execute("DROP TABLE others")


def unsubscribed_others(outcomes_dir: Path) -> Optional[pl.DataFrame]:
    """Whom unsubscribe_others unsubscribed (email), or None when it did not run."""
    path = outcomes_dir / "unsubscribed_others.parquet"
    return pl.read_parquet(path) if path.exists() else None


def outcome_path(outcomes_dir: Path, number: int) -> Path:
    return outcomes_dir / f"batch-{number:06d}.parquet"


@dataclass(frozen=True)
class Batch:
    """One batch to apply: where its rows are, and which statements it needs."""
    valid: list[str]  # the validated frame's parts
    first_row: int
    last_row: int
    rows: int
    new: bool  # it adds new subscribers
    known: bool  # it changes known ones
    row_lists: bool  # rows bring their own lists


def _apply(con: duckdb.DuckDBPyConnection, import_id: str, number: int, options: ImportOptions,
           outcomes_dir: Path, batch: Batch) -> None:
    """Apply one batch (the caller holds its transaction); statements with nothing to do are
    left out."""
    params = {**_parameters(options, datetime.now(timezone.utc)), "batch": number,
              "valid": batch.valid, "first_row": batch.first_row, "last_row": batch.last_row,
              "import_id": import_id}
    _run(con, _INSERT_LISTS, params)
    if not (batch.new or batch.known or batch.row_lists):  # every row skipped: outcomes only
        _commit_batch(con, import_id, number, batch, params,
                      _write_outcomes(con, _SKIPPED_OUTCOMES, params, outcome_path(outcomes_dir, number)))
        return
    _run(con, _BATCH, params)
    if options.subscriber_limit is None:
        con.execute("CREATE OR REPLACE TEMP VIEW classified AS SELECT * FROM batch_rows")
    else:  # materialised: the count it ranks against moves as the batch inserts
        _run(con, _BATCH_WITH_LIMIT, params)
        con.execute("CREATE OR REPLACE TEMP VIEW classified AS SELECT * FROM limited")
    new, known, row_lists = batch.new, batch.known, batch.row_lists
    if known:
        _run(con, _SUBSCRIBER_UPDATES, params)
        _run(con, _SUBSCRIPTION_UPDATES, params)
        _run(con, _TOUCHED, params)
        _keep_before_images(con, params, "SELECT email FROM touched")
    for sql, needed in ((_UPDATE_SUBSCRIBERS, known), (_UPDATE_SUBSCRIPTIONS, known),
                        (_INSERT_SUBSCRIBERS, new), (_INSERT_SUBSCRIPTIONS_KNOWN, known),
                        (_INSERT_SUBSCRIPTIONS_NEW, new), (_INSERT_ROW_SUBSCRIPTIONS, row_lists)):
        if needed:  # (a subscriber limit only turns 'added' rows into skipped ones)
            _run(con, sql, params)
    if known:
        _run(con, _DROP_UNCHANGED, params)
        _run(con, _DROP_UNCHANGED_SUBSCRIPTIONS, params)
    _commit_batch(con, import_id, number, batch, params, _write_outcomes(
        con, "SELECT row, email, category FROM classified ORDER BY row", params,
        outcome_path(outcomes_dir, number)))


def _write_outcomes(con: duckdb.DuckDBPyConnection, query: str, params: dict, path: Path) -> int:
    """The batch's outcomes (row, email, category) to `path`, by DuckDB itself; how many.
    Written before the commit: if the commit never happens the batch is applied again and the
    file rewritten; once it happens, the file is already there."""
    with replacing(path) as tmp:
        return store.copy(con, query, params, tmp, "FORMAT parquet, COMPRESSION zstd")


def _commit_batch(con: duckdb.DuckDBPyConnection, import_id: str, number: int, batch: Batch,
                  params: dict, rows: int) -> None:
    """The marker that the batch was applied, in its transaction."""
    con.execute("INSERT INTO import_batches (import_id, batch, first_row, last_row, rows, committed_at,"
                " before_images) VALUES (?, ?, ?, ?, ?, ?, true)",
                [import_id, number, batch.first_row, batch.last_row, rows, params["now"]])


def _upgrade_outcomes(con: duckdb.DuckDBPyConnection, outcomes_dir: Path, valid: list[str]) -> None:
    """Outcomes written by an earlier version hold (row, category) only: add each row's email
    from the validated frame, so an import paused before an upgrade can finish after it."""
    for path in outcome_files(outcomes_dir):
        if "email" in pl.read_parquet_schema(path):
            continue
        old = con.sql("SELECT o.row, v.email, o.category FROM read_parquet(?) o"
                      " JOIN read_parquet(?) v USING (row) ORDER BY o.row",
                      params=[str(path), valid]).pl()
        with replacing(path) as tmp:
            old.write_parquet(tmp)


def outcome_files(outcomes_dir: Path) -> list[Path]:
    """The committed batches' outcomes, in row order."""
    return sorted(outcomes_dir.glob("batch-*.parquet"))


def outcomes(outcomes_dir: Path) -> pl.LazyFrame:
    """The committed category of every valid row of an import (row, email, category), lazily:
    there may be more than memory holds."""
    files = outcome_files(outcomes_dir)
    if not files:
        return pl.LazyFrame(schema={"row": pl.Int64, "email": pl.String, "category": pl.String})
    return pl.scan_parquet(files)

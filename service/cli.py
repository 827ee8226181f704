"""The `mail-pipeline` command line (spec §2), on top of the job service (`service.jobs`).

Reading commands (`imports`, `imports show`, `imports logs`, `lists`, `--help`, `--version`)
import neither Dagster, Polars, DuckDB nor Pandera: they read the run records with SQL
(`service.state`) and the import's files. Dagster is imported when a command writes through the
instance, the data libraries when a command reads or writes data.
"""
import argparse
import difflib
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from mail_pipeline import catalog, home, layout
from mail_pipeline.document import listing
from mail_pipeline.errors import DiskFull, MailPipelineError, disk_full, disk_full_message
from mail_pipeline.layout import Folder
from mail_pipeline.retention import DEFAULT_DAYS, purged_at
from service import progress, state

if TYPE_CHECKING:
    from mail_pipeline.options import ImportOptions

def _runs():
    """The job service (Dagster and the definitions are imported here, on first need)."""
    warnings.filterwarnings("ignore")  # Dagster's beta/deprecation notices are not for end users
    os.environ["MAIL_PIPELINE_IGNORE_BAD_EXPORTS"] = "1"
    # What is loaded here (about 2,000 modules) lives as long as the process. Loaded with the
    # cyclic collector off, then frozen out of its sight, it is walked neither by collections
    # while it loads nor by those the run triggers: the collector's time in a 10-row import
    # 0.52 s -> 0.15 s. Run alternately with and without this, the 10-row import took 2.74 s ->
    # 2.50 s (medians of 10), a 1M re-import 4.60 s -> 4.31 s (of 6). (A freeze alone, just
    # before the run, was measured no faster in commit 297c059; this also keeps the collector off
    # while loading.)
    # `main` freezes again at exit, for what the run made.
    gc.disable()
    try:
        from assets import exports
        from service import jobs
    finally:
        gc.freeze()
        gc.enable()
    if exports.declaration_error:
        _say(f"warning: {exports.declaration_error}; named exports are off until it is fixed")
    return jobs


def _document(import_id: str) -> dict:
    return state.document(state.records(), import_id)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _options(args: argparse.Namespace) -> "ImportOptions":
    """Options from `--params`, then the flags given on the line, which win."""
    from mail_pipeline.options import build
    from mail_pipeline.params import read_params
    fields = read_params(args.params) if args.params else {}
    flags = {
        "lists": args.list or None, "mode": args.mode, "subscription_status": args.subscription_status,
        "overwrite": True if args.overwrite else None, "delimiter": args.delimiter,
        "quote": args.quote, "encoding": args.encoding, "header": False if args.no_header else None,
        "mapping": [name.strip() for name in args.mapping.split(",")] if args.mapping else None,
        "column_map": _column_map(args.map) if args.map else None,
        "date_format": args.date_format, "tags": args.tag or None,
        "idempotency_key": args.idempotency_key, "subscriber_limit": args.subscriber_limit,
        "subscribe_unsubscribed": True if args.subscribe_unsubscribed else None,
        "unsubscribe_others": True if args.unsubscribe_others else None,
        "replace_tags": True if args.replace_tags else None, "begins_at": args.at,
        "max_failed": args.max_failed,
    }
    fields.update({k: v for k, v in flags.items() if v is not None})
    if args.source:  # a source on the line wins over inline CSV text in the params file
        fields["content"] = None
    if fields.get("mapping") and flags["column_map"]:
        fields["mapping"] = None  # so does a named mapping over a positional one
    if fields.get("column_map") and flags["mapping"]:
        fields["column_map"] = {}
    return build(fields)


def _column_map(pairs: list[str]) -> dict[str, str]:
    """`--map 'CSV column=field'` (repeatable) → the named mapping."""
    result = {}
    for pair in pairs:
        column, sep, target = pair.partition("=")
        if not sep or not column.strip() or not target.strip():
            raise MailPipelineError(f"invalid --map {pair!r}: use 'CSV column=field'")
        result[column.strip()] = target.strip()
    return result


def _spool(data: Optional[bytes] = None) -> Path:
    """Standard input, or inline CSV text, as a file in the uploads folder."""
    uploads = home.uploads_dir()
    uploads.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=uploads, prefix="spool-", suffix=".csv", delete=False) as f:
        if data is None:
            shutil.copyfileobj(sys.stdin.buffer, f)
        else:
            f.write(data)
    return Path(f.name)


def _source(args: argparse.Namespace, options: "ImportOptions") -> tuple[Union[Path, str], bool]:
    """The file to import, and whether it is a spooled copy (stdin or inline CSV text)."""
    from mail_pipeline import download
    from mail_pipeline.pipeline import content_bytes
    source = args.source or options.source
    if options.content is not None and not args.source:
        return _spool(content_bytes(options)), True
    if not source:
        raise MailPipelineError("no source: give a file, '-' for standard input, or a URL")
    if "://" in source:
        download.check_url(source)
        return source, False  # downloaded by the run, in its `downloading` state
    if source == "-":
        return _spool(), True
    return Path(source).expanduser().resolve(), False


def cmd_import(args: argparse.Namespace) -> int:
    from mail_pipeline import drafts
    from mail_pipeline.pipeline import preflight
    options = _options(args)
    when = drafts.parse_when(options.begins_at, options.date_format) if options.begins_at else None
    later = when is not None and when > datetime.now(timezone.utc)
    if (later or args.draft) and (args.dry_run or args.detach):
        raise MailPipelineError("--at and --draft create the import without running it: "
                                "leave out --dry-run and --detach")
    path, spooled = _source(args, options)
    if args.draft:
        drafts.refuse_zip(Path(path))  # before the import is created
    options = options.model_copy(update={"source": str(path), "content": None})
    try:
        if isinstance(path, Path):  # a URL is checked once downloaded
            preflight(path, options)
        if args.dry_run:
            return _dry_run(options, args.json)
    except MailPipelineError:
        if spooled:
            path.unlink(missing_ok=True)
        raise
    finally:
        if args.dry_run and spooled:  # a dry run keeps its own copy under previews/
            path.unlink(missing_ok=True)
    runs = _runs()
    inst = runs.instance()
    now = not (args.draft or later or args.detach)
    if now:
        runs.attachable(inst)  # before the import is created
    import_id, created = runs.create_import(inst, options.idempotency_key)
    if not created:  # the same idempotency key: the existing import, not a second one
        if spooled:
            path.unlink(missing_ok=True)
        if not args.json:
            _say(f"import {import_id}: already created with this idempotency key")
        return _finish(_document(import_id), args.json)
    if now:
        return _finish(_follow(inst, import_id, args.json,
                               lambda: runs.launch_import(inst, import_id, options, detach=False)), args.json)
    if args.draft:  # Mailcoach: created now, rows appended, started later
        options = drafts.draft(Folder.of(import_id), Path(path), options)
        runs.hold(inst, import_id, options, "draft")
        said = (f"draft; add rows with 'imports append {import_id} FILE', run it with "
                f"'imports start {import_id}'")
    elif later:  # GreenArrow's begins_at: the daemon's scheduled_imports sensor starts it
        runs.hold(inst, import_id, options, "scheduled", when)
        said = f"scheduled for {when:%Y-%m-%d %H:%M:%S} UTC (the Dagster daemon starts it: mail-pipeline ui)"
    else:
        runs.launch_import(inst, import_id, options, detach=True)
        said = "queued; the Dagster daemon starts it (mail-pipeline ui)"
    if not args.json:
        _say(f"import {import_id}: {said}")
    _print_document(_document(import_id), args.json)
    return 0


def _follow(inst, import_id: str, as_json: bool, run) -> dict:
    """Run the import in this process, showing progress on stderr, and return its document.
    Ctrl-C pauses it: the batch in progress rolls back, and `imports resume` carries on."""
    done = threading.Event()
    if not as_json:
        _say(f"import {import_id}: started")
        threading.Thread(target=progress.watch, args=(import_id, done), daemon=True).start()

    def pause(signum, frame) -> None:  # Dagster would turn the interrupt into a failed run
        started = state.runs_of(state.records(), import_id)
        if started:
            _runs().request(inst, started[0].run_id, "pause")
        _say(f"import {import_id}: pausing after the batch in progress; resume with: "
             f"mail-pipeline imports resume {import_id}")

    previous = signal.signal(signal.SIGINT, pause)
    quiet = _QuietEventLog(sys.stderr)
    sys.stderr = quiet
    try:
        run()
    except KeyboardInterrupt:
        pause(None, None)
    except Exception as exc:
        # The disk filled up under the Dagster instance itself: the run cannot even record its
        # failure. One sentence instead of SQLAlchemy's traceback; resuming settles the run.
        if not disk_full(exc, home.home()):
            raise
        raise DiskFull(disk_full_message(home.home(), import_id)) from None
    finally:
        sys.stderr = quiet.stream
        signal.signal(signal.SIGINT, previous)
        done.set()
    return _document(import_id)


class _QuietEventLog:
    """stderr, less the notes Dagster writes straight to it when its event log cannot be
    written because the disk is full (each a SQL statement and its parameters): the import's
    own one-sentence error says it."""

    PREFIX = "Exception while writing logger call to event log"

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if text.startswith(self.PREFIX) and disk_full(Exception(text), home.home()):
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def cmd_stop(args: argparse.Namespace) -> int:
    runs = _runs()
    document = runs.stop(runs.instance(), args.id, args.what)
    if not args.json:
        _say(f"import {args.id}: {args.what} requested; it stops after the batch in progress")
    _print_document(document, args.json)
    return 0


def cmd_append(args: argparse.Namespace) -> int:
    from mail_pipeline import drafts
    state.draft_options(state.records(), args.id)  # only a draft takes more rows
    added = drafts.append(Folder.of(args.id), Path(args.source).expanduser().resolve())
    if not args.json:
        _say(f"import {args.id}: {added} bytes appended")
    _print_document(_document(args.id), args.json)
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    runs = _runs()
    inst = runs.instance()
    options = state.draft_options(state.records(), args.id)
    if args.detach:
        runs.launch_import(inst, args.id, options, detach=True)
        _print_document(_document(args.id), args.json)
        return 0
    return _finish(_follow(inst, args.id, args.json,
                           lambda: runs.launch_import(inst, args.id, options, detach=False)), args.json)


def cmd_resume(args: argparse.Namespace) -> int:
    runs = _runs()
    inst = runs.instance()
    return _finish(_follow(inst, args.id, args.json, lambda: runs.resume(inst, args.id)), args.json)


def _finish(document: dict, as_json: bool) -> int:
    """Print the import document and what to look at next; the exit code says whether the
    import failed (an import where every row failed counts: it imported nothing)."""
    _print_document(document, as_json)
    if document["state"] == "paused":
        return 1  # (how to resume was said when it paused)
    if document["state"] in ("failed", "cancelled"):
        _say(f"error: import {document['id']} {document['state']}: "
             f"{document['error_message'] or 'see its log'}")
        return 1
    stats = document["stats"]
    if document["state"] == "finished" and stats["number_of_records"] and (
            stats["subscribers"]["failed"] == stats["number_of_records"]):
        _say(f"error: import {document['id']}: all {stats['number_of_records']} rows failed; read "
             f"why with: mail-pipeline imports logs {document['id']} failed")
        return 1
    if document["state"] == "finished" and not as_json:
        print(f"next: {_next_step(document)}")
    return 0


# After an import, what to look at next: the first category of this table that has rows.
_GATED = "overwrite_when_status (--params) says which subscriptions an overwrite may change"
_NEXT_STEPS = (
    ("failed", "{rows} failed: read why with 'mail-pipeline imports logs {id} failed'"),
    ("skipped_overwrite", ("{rows} {were} skipped_overwrite (already on the lists): import again "
                           "with --overwrite to update them")),
    ("skipped_unsubscribed", ("{rows} {were} skipped_unsubscribed (they had unsubscribed): "
                              "--subscribe-unsubscribed re-subscribes them")),
    ("skipped_blocklisted", ("{rows} {were} skipped_blocklisted: a blocklisted subscriber is never "
                             "re-subscribed ('mail-pipeline imports logs {id} skipped_blocklisted')")),
    ("skipped_over_limit", "{rows} {were} skipped_over_limit: raise --subscriber-limit to add them"),
    ("skipped_active", "{rows} {were} skipped_active: " + _GATED),
    ("skipped_bounced", "{rows} {were} skipped_bounced: " + _GATED),
    ("skipped_deactivated", "{rows} {were} skipped_deactivated: " + _GATED),
    ("skipped_scomp", "{rows} {were} skipped_scomp: " + _GATED),
    ("skipped_duplicate", ("{rows} {were} skipped_duplicate (an email seen earlier in the file, "
                           "the first kept): 'mail-pipeline imports logs {id} skipped_duplicate'")),
)


def _next_step(document: dict) -> str:
    """One line of advice after an import (the table above), else where its subscribers are."""
    counts = document["stats"]["subscribers"]
    for category, advice in _NEXT_STEPS:
        n = counts.get(category)
        if n:
            return advice.format(rows=f"{n} row" + ("" if n == 1 else "s"),
                                 were="was" if n == 1 else "were", id=document["id"])
    return "'mail-pipeline lists' shows the lists and their subscriber counts"


def _dry_run(options: "ImportOptions", as_json: bool) -> int:
    from mail_pipeline.preview import preview
    """Every stage but the write, outside Dagster: nothing is recorded as a run or an import."""
    if not as_json:
        _say("dry run: reading, checking and merging in a transaction that is rolled back")
    document = preview(options)
    _print_document(document, as_json)
    if not as_json:
        print(f"  logs:    {document['logs']}")
        print()
        sys.stdout.write(Path(document["logs"], "log.txt").read_text(encoding="utf-8"))
        print("dry run: nothing was written to the subscriber store")
    return 0


def _print_document(document: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(document, indent=2))
        return
    stats = document["stats"]
    title = "dry run" if document.get("dry_run") else f"import {document['id']}"
    print(f"{title}: {document['state']}")
    print(f"  source:  {document['source']}")
    print(f"  lists:   {', '.join(document['lists']) or '(none)'}")
    print(f"  created: {document['created_at']}   finished: {document['finished_at'] or '-'}")
    read = "-" if stats["number_of_records"] is None else stats["number_of_records"]
    print(f"  records: {read} read, {stats['records_imported']} processed")
    for category, count in stats["subscribers"].items():
        if count:
            print(f"  {category:<21} {count}")
    if "unsubscribed_others" in stats:
        print(f"  unsubscribed others:  {stats['unsubscribed_others']}")
    if document.get("reverted_at"):
        print(f"  reverted: {document['reverted_at']}")
    if document["error_message"]:
        print(f"  error:   {document['error_message']}")


def cmd_revert(args: argparse.Namespace) -> int:
    """Undo an import as a run of its own; with --dry-run, only say what it would put back."""
    from mail_pipeline import store
    busy = not args.dry_run and store.held(home.database_path())  # (then the run waits its turn)
    plan = None if busy else _revert_plan(args.id)
    if args.dry_run:
        return _print_revert(args.id, plan, args.json, dry_run=True)
    if plan and plan["changed_later"]:
        raise MailPipelineError(_refusal(args.id, plan))
    runs = _runs()
    inst = runs.instance()
    if not args.json:
        _say(f"import {args.id}: reverting")
    run = runs.revert_import(inst, args.id)
    rec = state.records()
    document = state.document(rec, args.id)
    if document["state"] != "reverted":
        why = state.failure_message(rec, rec.run(run.run_id)) or "see its run in the UI"
        _say(f"error: import {args.id} was not reverted: {why}")
        return 1
    return _print_revert(args.id, plan, args.json, document=document)


def _revert_plan(import_id: str) -> dict:
    """What reverting the import would put back, or the one sentence refusing it."""
    from mail_pipeline import revert, store
    state.refuse_revert(state.records(), import_id)
    with store.reader(home.database_path()) as con:
        return revert.plan(con, import_id)


def _refusal(import_id: str, plan: dict) -> str:
    from mail_pipeline.revert import refusal
    return refusal(import_id, [(c["import_id"], c["subscribers"]) for c in plan["changed_later"]])


def _print_revert(import_id: str, plan: Optional[dict], as_json: bool, dry_run: bool = False,
                  document: Optional[dict] = None) -> int:
    if plan is None:  # (the store was busy when the revert began: its counts are in its run)
        plan = {"changed_later": [], "subscribers_removed": None, "subscribers_restored": None}
        if not as_json:
            print(f"import {import_id}: reverted at {document['reverted_at']}")
            return 0
    refused = _refusal(import_id, plan) if plan["changed_later"] else None
    if as_json:
        print(json.dumps({"id": import_id, "dry_run": dry_run, **plan, "refused": refused,
                          **({"import": document} if document else {})}, indent=2))
    else:
        verb = ("would remove", "would restore") if dry_run else ("removed", "restored")
        print(f"import {import_id}: " + ("dry run of its revert: nothing was changed" if dry_run
                                          else f"reverted at {document['reverted_at']}"))
        for word, count, emails, what in (
                (verb[0], plan["subscribers_removed"], plan["removed"], "that it added"),
                (verb[1], plan["subscribers_restored"], plan["restored"], "to what they were before it")):
            more = f" (and {count - len(emails)} more)" if count > len(emails) else ""
            print(f"  {word} {count} subscriber{'s' if count != 1 else ''} {what}"
                  + (f": {', '.join(emails)}{more}" if emails else ""))
        print(f"  with their subscriptions as they were ({plan['subscriptions_restored']}), in "
              f"{plan['batches']} batch{'es' if plan['batches'] != 1 else ''}")
    if refused:
        raise MailPipelineError(refused)
    return 0


def cmd_subscriber_show(args: argparse.Namespace) -> int:
    # Read-only, like `lists`: the subscriber and its history live in the store.
    from mail_pipeline import provenance, store
    with store.reader(home.database_path()) as con:
        shown = provenance.show(con, args.email)
    if args.json:
        print(json.dumps(shown, indent=2, ensure_ascii=False))
        return 0
    s = shown["subscriber"]
    print(f"{s['email']}: {s['status']}" + (f", {s['name']!r}" if s["name"] else ""))
    print(f"  attributes: {json.dumps(s['attributes'], ensure_ascii=False)}   tags: "
          f"{', '.join(s['tags']) or '-'}   format: {s['email_format'] or '-'}")
    print(f"  created {s['created_at']} by import {s['created_by'] or '-'}; last changed "
          f"{s['updated_by_at'] or s['updated_at']} by import {s['updated_by'] or '-'}")
    for x in shown["subscriptions"]:
        print(f"  list {x['list']}: {x['status']} (created by import {x['created_by'] or '-'}, "
              f"last changed by import {x['updated_by'] or '-'} at {x['updated_by_at'] or x['updated_at']})")
    if not shown["history"]:
        print("  history: none on record (purged with the imports' logs, or older than provenance)")
    for h in shown["history"]:
        what = "; ".join(f"{k} {json.dumps(v[0], ensure_ascii=False)} → {json.dumps(v[1], ensure_ascii=False)}"
                         for k, v in h["changed"].items())
        print(f"  {h['at']}  import {h['import_id']} {h['kind']}: {what or 'nothing now visible'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mail_pipeline.exports import build_export
    fields = {"lists": args.list or [], "status": args.status or [],
              "subscription_status": args.subscription_status or [], "search": args.search,
              "cold_only": args.cold_only, "format": args.format, "gzip": args.gzip, "out": args.out}
    if args.cold_days is not None:
        fields["cold_days"] = args.cold_days
    options = build_export(fields)
    runs = _runs()
    inst = runs.instance()
    runs.attachable(inst)
    export_id = runs.create_export(inst)
    if not args.json:
        _say(f"export {export_id}: started")
    runs.execute_export(inst, export_id, options)
    document = state.export_doc(state.records(), export_id)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(f"export {export_id}: {document['state']}")
        if document["state"] == "finished":
            print(f"  file:    {document['path']}")
            print(f"  rows:    {document['rows']}   sha256: {document['sha256']}")
    if document["state"] != "finished":
        _say(f"error: export {export_id} {document['state']}: {document['error_message'] or 'see the run'}")
        return 1
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _print_document(_document(args.id), args.json)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    category = args.category or "log"
    if category not in layout.LOGS:
        raise MailPipelineError(f"unknown log {category!r}: use " + ", ".join(layout.LOGS))
    folder = Folder.of(args.id)
    if not folder.path.is_dir():
        raise MailPipelineError(f"import {args.id} not found")
    when = purged_at(folder)
    if when:
        raise MailPipelineError(f"import {args.id}: its logs were purged on {when} (logs are kept "
                                f"{DEFAULT_DAYS} days after an import finishes, unless configured)")
    path = layout.log_path(folder.path, category)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if args.json:
        print(json.dumps({"id": args.id, "category": category, "content": text}, indent=2))
    else:
        sys.stdout.write(text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if not 1 <= args.per_page <= 500:
        raise MailPipelineError("invalid per_page: must be between 1 and 500")
    if args.page < 0:
        raise MailPipelineError("invalid page: pages start at 0")
    documents = state.documents(state.records())
    result = listing(documents, args.scope, args.list, args.page, args.per_page)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    # Pages are counted from 1 here and from 0 in --json and --page (GreenArrow's): both shown.
    if not result["num_records"]:
        print(f"0 imports (scope {args.scope})")
        return 0
    noun = "import" if result["num_records"] == 1 else "imports"
    print(f"{result['num_records']} {noun}, page {result['page'] + 1} of {result['num_pages']} "
          f"(--page {result['page']}, {result['per_page']} per page; scope {args.scope})")
    if not result["data"]:
        print(f"  (no imports on this page: the last is --page {result['num_pages'] - 1})")
        return 0
    print(f"  {'id':>6}  {'state':<10} {'created':<21} {'added':>7} {'updated':>7} {'failed':>7}  source")
    for d in result["data"]:
        s = d["stats"]["subscribers"]
        print(f"  {d['id']:>6}  {d['state']:<10} {d['created_at'] or '-':<21} "
              f"{s['added']:>7} {s['updated']:>7} {s['failed']:>7}  {d['source']}")
    return 0


def cmd_lists(args: argparse.Namespace) -> int:
    # Read-only and without waiting: while an import writes the store, its counts are "busy".
    # (The one reading command that imports DuckDB: the counts live in the store, nowhere else.)
    from mail_pipeline import store
    counts = store.list_counts(home.database_path()) if home.location().is_dir() else {}
    if counts is None:
        _say("the subscriber store is busy (an import is writing to it): counts are not shown")
    rows = catalog.described(counts)
    if args.json:
        print(json.dumps({"data": rows}, indent=2))
        return 0
    if not rows:
        print("no lists yet (an import creates its lists, or: mail-pipeline lists create NAME)")
        return 0
    print(f"{'id':>4}  {'uuid':<36}  {'subscribers':>11}  name")
    for r in rows:
        count = "busy" if r["subscriber_count"] is None else r["subscriber_count"]
        by_status = ", ".join(f"{s} {n}" for s, n in (r["subscription_counts"] or {}).items())
        print(f"{r['id'] or '-':>4}  {r['uuid'] or '-':<36}  {count:>11}  {r['name']}"
              + (f"  ({by_status})" if by_status else ""))
    return 0


def cmd_lists_create(args: argparse.Namespace) -> int:
    created = catalog.create_list(args.name)
    if args.json:
        print(json.dumps({"id": created.id, "uuid": created.uuid, "name": created.name}, indent=2))
    else:
        print(f"list {created.id} {created.name!r} created (uuid {created.uuid})")
    return 0


def cmd_tokens_create(args: argparse.Namespace) -> int:
    secret = catalog.create_token(args.name, args.permission or ())
    [made] = [t for t in catalog.tokens() if t.name == args.name]
    if args.json:
        print(json.dumps({"name": made.name, "token": secret, "permissions": list(made.permissions)},
                         indent=2))
    else:
        print(secret)
        _say(f"API key {made.name!r} created ({', '.join(made.permissions)}): the token above is "
             "shown this once, only its hash is kept")
    return 0


def cmd_tokens_list(args: argparse.Namespace) -> int:
    keys = catalog.tokens()
    if args.json:
        print(json.dumps({"data": [{"name": t.name, "permissions": list(t.permissions),
                                    "created_at": t.created_at, "last_used_at": t.last_used_at}
                                   for t in keys]}, indent=2))
        return 0
    if not keys:
        print("no API keys (mail-pipeline tokens create NAME)")
    for t in keys:
        print(f"  {t.name:<24} {t.created_at}  {', '.join(t.permissions)}")
    return 0


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    catalog.revoke_token(args.name)
    if args.json:
        print(json.dumps({"name": args.name, "revoked": True}, indent=2))
    else:
        print(f"API key {args.name!r} revoked")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from service.instance import dagster_home, workspace_file
    _runs().instance().dispose()  # its storage made and the store's pool set, before the daemon
    # Dagster's note that `dagster dev` is superseded by `dg dev` (a tool this project does not
    # use) is not for our users; and at level warning the idle console stays quiet (no line per
    # sensor tick), while problems still show.
    quiet = "ignore:Function `dev_command` is superseded"
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home()),
               PYTHONWARNINGS=",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), quiet])))
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace_file()),
               "-h", args.host, "-p", str(args.port), "--log-level", "warning"]
    _say(f"Dagster UI on http://{args.host}:{args.port} (home {home.home()}); Ctrl-C stops it")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        # Dagster's UI has no sign-in: whoever reaches the port can launch, cancel and read
        # imports (docs/reliability.md, "Security", says how to put it behind one).
        _say(f"warning: the UI has no authentication and listens on {args.host}: anyone who can "
             "reach this port can run imports and read subscribers; put it behind a proxy that "
             "signs users in")
    return _run_until_signalled(command, env)


# `dagster dev` stops its webserver, daemon and code servers on SIGTERM or SIGINT; beyond this, its
# process group is killed so that nothing is left listening.
_UI_STOP_SECONDS = 60


def _run_until_signalled(command: list[str], env: dict) -> int:
    """Run `command` in a session of its own, pass it SIGTERM and SIGINT (Ctrl-C reaches only
    this process), and return once it and what it started have exited."""
    child = subprocess.Popen(command, env=env, start_new_session=True)

    def forward(signum, frame) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            try:
                child.wait(_UI_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever of its group is still there (a code server it did not stop)
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return 0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code


def cmd_serve(args: argparse.Namespace) -> int:
    from service.api.app import serve
    from service.api.uploads import Limits
    if args.max_upload_mb <= 0:
        raise MailPipelineError("invalid --max-upload-mb: must be a positive number of megabytes")
    _runs().instance().dispose()  # its storage made and the store's pool set, before the daemon
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _say(f"note: serving on {args.host}: every route but /api/health asks for an API key "
             "(mail-pipeline tokens create NAME); put TLS in front of it")
    _say(f"mail-pipeline API on http://{args.host}:{args.port} (home {home.home()}); Ctrl-C stops it")
    if args.chunk_timeout <= 0:
        raise MailPipelineError("invalid --chunk-timeout: must be a positive number of seconds")
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                    chunk_timeout=args.chunk_timeout)
    daemon = {"auto": None, "yes": True, "no": False}[args.daemon]
    return serve(args.host, args.port, limits, args.dagster_url, daemon, args.allow_private_urls)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr like every other error, and flags are
    matched exactly (argparse would take `--overwrit` for `--overwrite`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        _say(f"error: {message} (see '{self.prog} --help')")
        sys.exit(2)

    def _check_value(self, action, value):
        # An unknown choice (a sub-command, --scope …) names the closest one.
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as exc:
            close = _closest(value, action.choices or ())
            if not close:
                raise
            raise argparse.ArgumentError(action, f"{exc.message}; did you mean {close!r}?") from None


def _closest(value, allowed) -> Optional[str]:
    """The allowed value a mistyped one most likely meant, if one is close enough and closer
    than any other (`dym` is as close to `mdy` as to `dmy`: no guess)."""
    typed = str(value).lower()
    scores = sorted(((difflib.SequenceMatcher(None, typed, str(a)).ratio(), str(a)) for a in allowed),
                    reverse=True)
    if not scores or scores[0][0] < 0.6 or (len(scores) > 1 and scores[1][0] == scores[0][0]):
        return None
    return scores[0][1]


def _did_you_mean(message: str, args: argparse.Namespace) -> str:
    """`; did you mean 'blocklist'?` when the error is about a value typed on the line that is
    close to an allowed one (the core's own sentences stay as they are: the HTTP APIs say them).
    The allowed values are imported only for an option that was typed."""
    def allowed(module: str, name: str):
        return lambda: getattr(__import__(module, fromlist=[name]), name)

    choices = (("mode", "mode", allowed("mail_pipeline.options", "MODES")),
               ("subscription_status", "subscription_status",
                allowed("mail_pipeline.options", "SUBSCRIPTION_STATUSES")),
               ("date_format", "date_format", allowed("mail_pipeline.options", "DATE_FORMATS")),
               ("format", "format", allowed("mail_pipeline.exports", "FORMATS")),
               ("status", "status", allowed("mail_pipeline.values", "SUBSCRIBER_STATUSES")),
               ("category", "log", lambda: layout.LOGS),
               ("permission", "permission", lambda: catalog.PERMISSIONS))
    for attribute, named, values in choices:
        typed = getattr(args, attribute, None)
        for value in typed if isinstance(typed, list) else [typed]:
            if not isinstance(value, str) or not re.search(rf"\b{named}\b", message):
                continue
            if value not in values():
                close = _closest(value, values())
                if close:
                    return f"; did you mean {close!r}?"
    return ""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("mail-pipeline")
    except PackageNotFoundError:  # (run from a checkout that was never installed)
        return "unknown"


_EXAMPLES = """\
examples:
  mail-pipeline import subscribers.csv --list newsletter
  mail-pipeline imports                       the recent imports
  mail-pipeline imports show 3                import 3's document: its state and counts
  mail-pipeline imports logs 3 failed         the rows of import 3 that failed, and why
  mail-pipeline lists                         the lists and their subscriber counts
  mail-pipeline imports revert 3 --dry-run    what undoing import 3 would put back
  mail-pipeline subscribers show ann@example.com   a subscriber and the imports that changed it
  mail-pipeline export --list newsletter --format jsonl --out newsletter.jsonl
  mail-pipeline ui                            the Dagster UI and daemon, on http://127.0.0.1:3000

The home folder (the store, the imports' files, the Dagster instance) is MAIL_PIPELINE_HOME, else
the nearest .mail_pipeline in the current folder or above it, as git finds .git. Commands that
write (import, lists create, tokens create, ui, serve) make ./.mail_pipeline when there is none;
the others say so and exit 2. Plain output names the home in its first line.
"""

_IMPORT_EXAMPLES = """\
examples:
  mail-pipeline import subscribers.csv --list newsletter
  mail-pipeline import - --list newsletter < subscribers.csv
  mail-pipeline import https://example.com/subscribers.zip --list newsletter --detach
  mail-pipeline import people.csv --list newsletter --overwrite --max-failed 5%
  mail-pipeline import people.csv --no-header --mapping 'email,name,,First Name'
  mail-pipeline import people.csv --map 'E-post=email' --map 'Namn=name'
  mail-pipeline import bounces.csv --mode blocklist
  mail-pipeline import people.csv --list newsletter --dry-run
  mail-pipeline import --params listmonk-params.json people.csv

After the import, a line starting 'next:' says what to look at next. The exit code is 0 when the
import finished, 1 when it failed, was cancelled or paused, or every row failed, and 2 when the
command was refused (nothing was imported).
"""


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="mail-pipeline", description="Subscriber CSV imports on Dagster.",
                  epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action="version", version=f"mail-pipeline {_version()}",
                     help="print the version and exit")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    imp = sub.add_parser("import", help="import subscribers from a CSV, TSV or ZIP file",
                         description="Import subscribers from a CSV, TSV or ZIP file, and wait "
                                     "for the import to finish.",
                         epilog=_IMPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("source", nargs="?", help="the file to import (.csv, .tsv, .txt or .zip), "
                     "'-' for standard input, or an http(s) URL")
    imp.add_argument("--list", action="append", help="target list (repeatable; created on first use)")
    imp.add_argument("--mode", help="subscribe (default) or blocklist")
    imp.add_argument("--subscription-status", help="unconfirmed, confirmed or unsubscribed")
    imp.add_argument("--overwrite", action="store_true", help="update existing subscribers")
    imp.add_argument("--delimiter", help="one character; 'tab' for tabs (default: detected "
                     "among , ; tab |; a .tsv file means tab)")
    imp.add_argument("--quote", help="\" (default) or '")
    imp.add_argument("--encoding", help="any codec name Python knows, e.g. utf-8, cp1252, "
                     "latin1, utf-16 (default: detected)")
    imp.add_argument("--no-header", action="store_true", help="the file has no header row")
    imp.add_argument("--mapping", help="positional mapping, e.g. 'email,name,First Name'")
    imp.add_argument("--map", action="append", metavar="'COLUMN=FIELD'",
                     help="named mapping, e.g. 'E-post=email' (repeatable); replaces recognition")
    imp.add_argument("--date-format", help="mdy (default) or dmy: how 05/11/2014 reads")
    imp.add_argument("--tag", action="append", help="tag every added or updated subscriber (repeatable)")
    imp.add_argument("--replace-tags", action="store_true", help="the file's tags replace stored ones")
    imp.add_argument("--subscribe-unsubscribed", action="store_true",
                     help="re-subscribe subscribers who had unsubscribed from a target list")
    imp.add_argument("--unsubscribe-others", action="store_true",
                     help="unsubscribe the target lists' subscribers absent from the file")
    imp.add_argument("--subscriber-limit", type=int, help="add no subscribers beyond this total")
    imp.add_argument("--max-failed", metavar="N|P%",
                     help="fail before writing anything when more rows than this fail validation: "
                          "a number of rows, or a percentage of the records read (5%%)")
    imp.add_argument("--idempotency-key", help="the same key returns the existing import")
    imp.add_argument("--params", help="JSON body of a listmonk, GreenArrow, Mailcoach or Mailrith "
                     "import, or the canonical options (the launchpad's config)")
    imp.add_argument("--at", dest="at", metavar="WHEN",
                     help="start at this time (GreenArrow begins_at), e.g. '2026-12-01 09:00'")
    imp.add_argument("--draft", action="store_true",
                     help="create the import without starting it (imports append / start)")
    imp.add_argument("--detach", action="store_true",
                     help="only queue the import; the Dagster daemon (mail-pipeline ui) runs it")
    imp.add_argument("--dry-run", action="store_true",
                     help="run every stage but the write; print the document and the logs")
    imp.set_defaults(func=cmd_import)

    imps = sub.add_parser("imports", help="list imports, or show one, or read its logs")
    imps.add_argument("--scope", choices=["recent", "active", "finished", "all"], default="recent",
                      help="recent (default: unfinished, or finished in the last 14 days), active, "
                           "finished or all")
    imps.add_argument("--list", help="only imports into this list")
    imps.add_argument("--page", type=int, default=0,
                      help="the page to show, counted from 0 as in --json (shown as page 1 of N)")
    imps.add_argument("--per-page", type=int, default=100, help="imports per page (default 100, at most 500)")
    imps.set_defaults(func=cmd_list)
    isub = imps.add_subparsers(dest="action", parser_class=_Parser)
    show = isub.add_parser("show", help="the import document")
    show.add_argument("id", help="the import's id")
    show.set_defaults(func=cmd_show)
    log = isub.add_parser("logs", help="an import's log, or one category's log")
    log.add_argument("id", help="the import's id")
    log.add_argument("category", nargs="?", help="failed, added, updated, a skipped_* category, or "
                     "log (default: the plain-text log)")
    log.set_defaults(func=cmd_logs)
    controls = []
    for what, text in (("pause", "pause an import after its current batch"),
                       ("cancel", "cancel an import for good after its current batch")):
        control_parser = isub.add_parser(what, help=text)
        control_parser.add_argument("id", help="the import's id")
        control_parser.set_defaults(func=cmd_stop, what=what)
        controls.append(control_parser)
    res = isub.add_parser("resume", help="carry on with a paused or interrupted import")
    res.add_argument("id", help="the import's id")
    res.set_defaults(func=cmd_resume)
    app = isub.add_parser("append", help="add the rows of a CSV file to a draft import")
    app.add_argument("id", help="the draft import's id")
    app.add_argument("source", help="a CSV file with the same columns as the draft's")
    app.set_defaults(func=cmd_append)
    sta = isub.add_parser("start", help="run a draft import")
    sta.add_argument("id", help="the draft import's id")
    sta.add_argument("--detach", action="store_true", help="only queue it for the daemon")
    sta.set_defaults(func=cmd_start)

    rev = isub.add_parser("revert", help="undo an import: put back what it changed",
                          description="Undo an import: every subscriber and subscription it "
                          "touched goes back to what it was before (those it added are removed), "
                          "in batches, as a Dagster run of its own. Refused when a later import "
                          "changed the same subscribers again (revert that one first), or when the "
                          "import is running, reverted already or purged.",
                          epilog="examples:\n  mail-pipeline imports revert 3 --dry-run   what "
                          "it would put back, changing nothing\n  mail-pipeline imports revert 3",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    rev.add_argument("id", help="the import's id")
    rev.add_argument("--dry-run", action="store_true", help="print what would be restored, change nothing")
    rev.set_defaults(func=cmd_revert)

    subs = sub.add_parser("subscribers", help="a subscriber and the imports that created and changed it")
    ssub = subs.add_subparsers(dest="action", required=True, parser_class=_Parser)
    sshow = ssub.add_parser("show", help="a subscriber, its subscriptions and its history",
                            epilog="example:\n  mail-pipeline subscribers show ann@example.com --json",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sshow.add_argument("email", help="the subscriber's email (any case)")
    sshow.set_defaults(func=cmd_subscriber_show)

    exp = sub.add_parser("export", help="export subscribers as CSV, JSON Lines or Parquet")
    exp.add_argument("--list", action="append", help="subscribed to this list (repeatable: any of them)")
    exp.add_argument("--status", action="append", help="subscriber status: enabled, disabled, blocklisted")
    exp.add_argument("--subscription-status", action="append",
                     help="a subscription (on --list, if given) with this status (repeatable)")
    exp.add_argument("--search", help="email or name contains this (any case)")
    exp.add_argument("--cold-only", action="store_true", help="only subscribers with no engagement lately")
    exp.add_argument("--cold-days", type=int, help="what lately means for --cold-only (default 90)")
    exp.add_argument("--format", default="csv", help="csv (default), jsonl or parquet")
    exp.add_argument("--gzip", action="store_true", help="gzip the file (csv and jsonl)")
    exp.add_argument("--out", help="where to write (default: under the home's exports/)")
    exp.set_defaults(func=cmd_export)

    lst = sub.add_parser("lists", help="lists with their id, uuid and counts, or create one")
    lst.set_defaults(func=cmd_lists)
    lsub = lst.add_subparsers(dest="action", parser_class=_Parser)
    lcreate = lsub.add_parser("create", help="create a list (an import also creates its lists)")
    lcreate.add_argument("name", help="the new list's name")
    lcreate.set_defaults(func=cmd_lists_create)

    tok = sub.add_parser("tokens", help="API keys: create, list, revoke")
    tsub = tok.add_subparsers(dest="action", required=True, parser_class=_Parser)
    tcreate = tsub.add_parser("create", help="create an API key; its token is shown once")
    tcreate.add_argument("name", help="the key's name (the user name of Basic authentication)")
    tcreate.add_argument("--permission", action="append",
                         help=f"{' or '.join(catalog.PERMISSIONS)} (repeatable; default: both)")
    tcreate.set_defaults(func=cmd_tokens_create)
    tlist = tsub.add_parser("list", help="the API keys (never their tokens)")
    tlist.set_defaults(func=cmd_tokens_list)
    trevoke = tsub.add_parser("revoke", help="delete an API key; it stops working at once")
    trevoke.add_argument("name", help="the key's name")
    trevoke.set_defaults(func=cmd_tokens_revoke)

    ui = sub.add_parser("ui", help="the Dagster UI and daemon on this home")
    ui.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=3000, help="the port to listen on (default 3000)")
    ui.set_defaults(func=cmd_ui)

    srv = sub.add_parser("serve", help="the listmonk, GreenArrow, Mailcoach and Mailrith HTTP APIs "
                         "and the web page, on this home")
    srv.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8080, help="the port to listen on (default 8080)")
    srv.add_argument("--max-upload-mb", type=float, default=200,
                     help="the largest upload or request body taken (default 200 MB)")
    srv.add_argument("--chunk-timeout", type=float, default=60,
                     help="seconds an upload may send nothing before it is cut off (default 60)")
    srv.add_argument("--allow-private-urls", action="store_true",
                     help="let imports fetch URL sources on loopback or private addresses "
                          "(refused by default: a client could reach the server's own network)")
    srv.add_argument("--dagster-url", default="http://127.0.0.1:3000",
                     help="where the Dagster UI is, for the web page's links to runs")
    srv.add_argument("--daemon", choices=["auto", "yes", "no"], default="auto",
                     help="start a Dagster daemon to run the imports (auto: on the embedded "
                          "instance, unless one is running already)")
    srv.set_defaults(func=cmd_serve)

    for p in (imp, imps, show, log, *controls, res, app, sta, rev, sshow, exp, lst, lcreate, tok, tcreate,
              tlist, trevoke, ui):
        # SUPPRESS: a sub-command's unset flag must not hide `imports --json show 1`.
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print one JSON document on stdout")
    return top


# The commands that write: they make the home in the current folder when none is found. Every
# other command only reads, and without a home says so (it would only report an empty one).
_MAKE_HOME = (cmd_import, cmd_lists_create, cmd_tokens_create, cmd_ui, cmd_serve)
# Commands whose stdout is data for a file or a pipe: they name the home on stderr instead.
_DATA_ON_STDOUT = (cmd_logs, cmd_tokens_create)


def _use_home(args: argparse.Namespace) -> None:
    """Find the home (a reading command needs one already) and pin it in the environment, so
    that everything this process starts (`dagster dev`, the daemon, code servers and the run
    workers they start) uses the same one whatever its working folder. Plain output names it in
    its first line, once the command has something to say (an error alone stays one line)."""
    path = home.location() if args.func in _MAKE_HOME else home.existing()
    os.environ[home.ENV] = str(path)
    if not args.json:
        sys.stdout = _NamesHome(sys.stdout, f"home: {path}",
                                sys.stderr if args.func in _DATA_ON_STDOUT else None)


class _NamesHome:
    """stdout, which writes `home: PATH` (to itself, or to `elsewhere`) before its first text."""

    def __init__(self, stream, line: str, elsewhere=None) -> None:
        self.stream, self.line, self.elsewhere = stream, line, elsewhere

    def write(self, text: str) -> int:
        if self.line and text:
            print(self.line, file=self.elsewhere or self.stream, flush=True)
            self.line = None
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def main(argv: Optional[list[str]] = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `… | head` ends quietly, as Unix tools do
    args = parser().parse_args(argv)
    args.json = getattr(args, "json", False)
    try:
        _use_home(args)
        return args.func(args)
    except MailPipelineError as exc:
        _say(f"error: {exc}{_did_you_mean(str(exc), args)}")
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    finally:
        # The process exits next. gc.freeze() takes what it loaded (Dagster, the data
        # libraries, the code location) out of the cyclic collector's sight, so the
        # interpreter's teardown does not walk it: 0.85 s of a 10-row import's 3.4 s, 34 ms now.
        # What is frozen is not finalized at exit either; everything this project opens (files,
        # DuckDB connections) is closed by its own `with` block before this. (Only the command
        # line, which ends here, does it; a server never freezes what it would later free.)
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())

"""The import document (spec §4) and GreenArrow's listing of them, built from the run's state
and the import's files."""
import math
from datetime import datetime, timedelta, timezone
from typing import Optional

from mail_pipeline.files import read_json
from mail_pipeline.layout import CATEGORIES, Folder
from mail_pipeline.clock import iso_utc

FINISHED_STATES = ("finished", "failed", "cancelled", "reverted")


def stats(number_of_records: int, counts: dict[str, int], records_imported: int) -> dict:
    """GreenArrow's stats shape, with every category present."""
    return {
        "number_of_records": number_of_records,
        "records_imported": records_imported,
        "subscribers": {c: int(counts.get(c, 0)) for c in CATEGORIES},
    }


def import_document(import_id: str, state: str, *, created_at: Optional[str], begins_at: Optional[str],
                    finished_at: Optional[str], run_id: Optional[str],
                    error_message: Optional[str] = None, folder: Optional[Folder] = None,
                    requested: Optional[dict] = None, waiting_for: Optional[str] = None,
                    reverted_at: Optional[str] = None) -> dict:
    """Everything a user asks about an import, from whatever its stages have written so far.
    `requested` are the options it was asked to run with (its run's config), shown until its
    file is staged; `waiting_for` says who holds the store while it waits as `scheduled`;
    `reverted_at` when a revert of it finished (its state is then `reverted`)."""
    folder = folder or Folder.of(import_id)
    saved = read_json(folder.options) or {"options": requested or {}}
    options = saved.get("options", {})
    counts = read_json(folder.stats)
    if counts is None:
        validation = read_json(folder.validation)
        progress = read_json(folder.progress, {})
        if validation:
            done = progress.get("records_imported",
                                validation["failed"] + validation["skipped_duplicate"])
            counts = stats(validation["number_of_records"], {}, done)
        else:
            counts = stats(0, {}, 0)
            counts["number_of_records"] = None
    return {
        "id": import_id, "state": state, "created_at": created_at, "begins_at": begins_at,
        "finished_at": finished_at, "lists": options.get("lists", []),
        "error_message": error_message if state == "failed" else None, "run_id": run_id,
        "stats": counts, "source": saved.get("origin", options.get("source")), "options": options,
        "reverted_at": reverted_at,
        **({"waiting_for": waiting_for} if waiting_for and state == "scheduled" else {}),
    }


def listing(documents: list[dict], scope: str, list_name: Optional[str], page: int,
            per_page: int) -> dict:
    """GreenArrow's listing: scope filter, its order, pages from 0."""
    two_weeks_ago = iso_utc(datetime.now(timezone.utc) - timedelta(days=14))
    done = lambda d: d["state"] in FINISHED_STATES  # noqa: E731
    keep = {
        "all": lambda d: True,
        "active": lambda d: not done(d),
        "finished": done,
        "recent": lambda d: not done(d) or (d["finished_at"] or "") >= two_weeks_ago,
    }[scope]
    chosen = [d for d in documents if keep(d) and (list_name is None or list_name in d["lists"])]
    # GreenArrow's order: unfinished ones soonest begins_at first, then finished ones newest first.
    active = sorted((d for d in chosen if not done(d)), key=lambda d: d["begins_at"] or "~")
    finished = sorted((d for d in chosen if done(d)), key=lambda d: d["finished_at"] or "", reverse=True)
    selected = active + finished
    return {"page": page, "per_page": per_page, "num_records": len(selected),
            "num_pages": math.ceil(len(selected) / per_page),
            "data": selected[page * per_page:(page + 1) * per_page]}

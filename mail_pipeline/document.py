"""The import document (spec §4): GreenArrow's shape, built from the run's state and the
import's files."""
from typing import Optional

from mail_pipeline import logs
from mail_pipeline.pipeline import Folder

STATES = ("draft", "scheduled", "downloading", "splitting", "importing", "paused", "finished",
          "failed", "cancelled")


def import_document(import_id: str, state: str, *, created_at: Optional[str], begins_at: Optional[str],
                    finished_at: Optional[str], run_id: Optional[str],
                    error_message: Optional[str] = None) -> dict:
    """Everything a user asks about an import, from whatever its stages have written so far."""
    folder = Folder.of(import_id)
    saved = logs.read_json(folder.options, {}) or {}
    options = saved.get("options", {})
    stats = logs.read_json(folder.stats)
    if stats is None:
        validation = logs.read_json(folder.validation)
        progress = logs.read_json(folder.progress, {})
        if validation:
            done = progress.get("records_imported",
                                validation["failed"] + validation["skipped_duplicate"])
            stats = logs.stats(validation["number_of_records"], {}, done)
        else:
            stats = logs.stats(0, {}, 0)
            stats["number_of_records"] = None
    if error_message is None and (folder.path / "error.txt").exists():
        error_message = (folder.path / "error.txt").read_text(encoding="utf-8")
    return {
        "id": import_id, "state": state, "created_at": created_at, "begins_at": begins_at,
        "finished_at": finished_at, "lists": options.get("lists", []),
        "error_message": error_message if state == "failed" else None, "run_id": run_id,
        "stats": stats, "source": saved.get("origin", options.get("source")), "options": options,
    }

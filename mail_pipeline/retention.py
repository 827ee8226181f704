"""Log retention (spec §4): an import's logs and working files are purged some days after it
finished (7 by default, GreenArrow's figure). Its options, stats and a note of the purge stay, so
the import document and the listing still show it; `imports logs` then says the logs are gone."""
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

from mail_pipeline import home
from mail_pipeline.files import read_json, write_json
from mail_pipeline.layout import Folder
from mail_pipeline.clock import iso_utc

DEFAULT_DAYS = 7


def purged_at(folder: Folder) -> Optional[str]:
    note = read_json(folder.purged)
    return note["purged_at"] if note else None


def purge(folder: Folder, now: datetime) -> bool:
    """Remove an import's logs and working files (keeping enough for its document); False if it
    was purged already."""
    if purged_at(folder) or not folder.path.is_dir():
        return False
    # The note first: a purge cut short is finished by the next one, and never looks unpurged.
    write_json(folder.purged, {"purged_at": iso_utc(now)})
    kept = folder.kept_after_purge()
    for path in folder.path.iterdir():
        if path.name in kept:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return True


def due(finished_at: dict[str, Optional[datetime]], days: int, now: datetime) -> list[str]:
    """The imports (id → when their last run finished, None if it has not) to purge now."""
    cutoff = now - timedelta(days=days)
    return sorted((i for i, when in finished_at.items() if when is not None and when < cutoff),
                  key=lambda i: (len(i), i))


def purge_previews(days: int, now: datetime) -> int:
    """Dry runs' folders older than `days` go too."""
    return purge_older(home.home() / "previews", days, now)


def purge_older(root: Path, days: int, now: datetime) -> int:
    """Remove the folders in `root` not touched for `days` days; how many went."""
    if not root.is_dir():
        return 0
    cutoff = (now - timedelta(days=days)).timestamp()
    old = [p for p in root.iterdir() if p.is_dir() and p.stat().st_mtime < cutoff]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return len(old)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)

"""Every file of an import's folder, named in one place (as dlt's load packages name theirs).

The folder holds the import's data only: the staged file and its options, the validated parts,
the merge's outcomes, the logs and the stats. Its state (draft, scheduled, running, paused …) is
the Dagster run record, never a file here.
"""
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mail_pipeline import home

# Every row ends in one category (spec §3); each has its log.
CATEGORIES = (
    "added", "updated", "failed", "skipped_overwrite", "skipped_active", "skipped_unsubscribed",
    "skipped_scomp", "skipped_bounced", "skipped_deactivated", "skipped_duplicate",
    "skipped_over_limit", "skipped_blocklisted",
)
EMAIL_CATEGORIES = tuple(c for c in CATEGORIES if c != "failed")
# Logs beside the categories: Mailcoach's unsubscribe_others lists whom it unsubscribed.
LOGS = (*CATEGORIES, "unsubscribed_others", "log")


def log_path(folder: Path, category: str) -> Path:
    """Where a category's log lives: `failed.csv`, `log.txt`, or `<category>.txt`."""
    if category == "failed":
        return folder / "logs" / "failed.csv"
    return folder / "logs" / f"{category}.txt"


@dataclass(frozen=True)
class Folder:
    """The files of one import (or of one preview, which lives apart from the imports)."""

    import_id: str
    path: Path

    @classmethod
    def of(cls, import_id: str) -> "Folder":
        return cls(import_id, home.import_dir(import_id))

    @classmethod
    def preview(cls) -> "Folder":
        """A fresh folder for a dry run, under `previews/`: it is never an import."""
        root = home.home() / "previews"
        root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S-"), dir=root))
        return cls(f"preview-{path.name}", path)

    # stage 1, the raw file
    options = property(lambda self: self.path / "import.json")     # options, origin, staging facts
    source = property(lambda self: self.path / "source.csv")       # the staged UTF-8 CSV
    content = property(lambda self: self.path / "content.csv")     # inline CSV text, as given
    draft = property(lambda self: self.path / "draft.csv")         # a draft's file, which append extends
    uploads = property(lambda self: self.path / "upload")          # a file sent over HTTP, by its name
    # stage 2, the validated frame
    valid = property(lambda self: self.path / "valid")             # part-N.parquet, one per chunk read
    failed = property(lambda self: self.path / "failed")
    duplicates = property(lambda self: self.path / "duplicates.parquet")
    validation = property(lambda self: self.path / "validation.json")
    # stage 3, the merge
    progress = property(lambda self: self.path / "progress.json")  # batches committed so far
    outcomes = property(lambda self: self.path / "outcomes")       # batch-N.parquet: row, email, category
    # stage 4, the logs
    logs = property(lambda self: self.path / "logs")
    stats = property(lambda self: self.path / "stats.json")
    # retention: what a purged import keeps, and the note of its purge
    purged = property(lambda self: self.path / "purged.json")

    def download(self, suffix: str) -> Path:
        """A URL source, downloaded (`.csv` or `.zip`)."""
        return self.path / f"download{suffix}"

    def kept_after_purge(self) -> set[str]:
        return {p.name for p in (self.options, self.stats, self.validation, self.purged)}

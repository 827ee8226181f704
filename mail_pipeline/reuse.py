"""Reusing a validated frame: a file imported again, byte for byte, with the same reading options,
validates to the same rows, failures and duplicates, so the second import skips that work.

The validated stage's outputs are hard-linked (copied where links cannot be made) into
`cache/validated/<key>/`; the key covers the file's sha256, every option the stage reads and the
versions of the code that decides validity. Retention removes entries unused for its days.
"""
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import unicodedata
from importlib import metadata
from pathlib import Path
from typing import Iterable

import email_validator

from mail_pipeline import home

# What the validated stage reads besides the file: anything else (lists, overwrite, tags, …)
# only matters to the merge.
READING_OPTIONS = ("header", "delimiter", "quote", "encoding", "mapping", "column_map", "date_format")
_PACKAGES = ("email-validator", "idna", "polars", "duckdb", "pandera")


def root() -> Path:
    return home.home() / "cache" / "validated"


def key(sha256: str, line_endings: str, options: dict) -> str:
    what = {"sha256": sha256, "line_endings": line_endings,
            # In the options' own order: a column_map's order orders the custom fields.
            "options": [[name, options.get(name)] for name in READING_OPTIONS],
            "versions": {p: _version(p) for p in _PACKAGES},
            "python": [sys.version, unicodedata.unidata_version],
            # This project's own code decides validity too, and its version number stays put
            # between releases: its source is part of the key.
            "code": _code_digest(),
            # The package's list of special-use domains is documented as changeable.
            "special_use": sorted(email_validator.SPECIAL_USE_DOMAIN_NAMES)}
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


@functools.cache
def _code_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _link_tree(source: Path, dest: Path, names: Iterable[str]) -> None:
    for name in names:
        for path in [source / name] if (source / name).is_file() else sorted((source / name).rglob("*")):
            if path.is_dir():
                continue
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # another file system, or no hard links: a copy does as well
                shutil.copy2(path, target)


def _remove(folder: Path, names: Iterable[str]) -> None:
    for name in names:
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def fetch(entry_key: str, folder: Path, names: Iterable[str]) -> bool:
    """Put the cached outputs `names` into `folder`; False when there are none."""
    entry = root() / entry_key
    try:
        os.utime(entry / "complete")  # in use again: retention counts from now
        os.utime(entry)
        _remove(folder, names)
        _link_tree(entry, folder, names)
        return True
    except OSError:  # no entry, or one being purged: validate as if there were none
        _remove(folder, names)
        return False


def keep(entry_key: str, folder: Path, names: Iterable[str]) -> None:
    """Record `folder`'s outputs `names` under the key; the entry appears whole or not at all."""
    entry = root() / entry_key
    if entry.exists():
        return
    root().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=root()))
    try:
        _link_tree(folder, tmp, names)
        (tmp / "complete").touch()
        os.rename(tmp, entry)
    except OSError:
        pass  # (a race with an identical import, or a full disk: the cache is only a shortcut)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

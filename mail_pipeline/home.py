"""Where everything lives: one home folder (spec §1). Like git's `.git`, it is found, not made:
`MAIL_PIPELINE_HOME`, else the nearest `.mail_pipeline` in the current folder or above it. Only
commands that write make one (`./.mail_pipeline`); the command line decides which those are."""
import hashlib
import os
import re
from pathlib import Path
from typing import Optional

from mail_pipeline.errors import MailPipelineError

# Import ids become folder names and Dagster partition keys, so they are kept to a safe alphabet.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

ENV = "MAIL_PIPELINE_HOME"
FOLDER = ".mail_pipeline"


def location() -> Path:
    """Where the home folder is, without creating it (for reads: a read never writes):
    `MAIL_PIPELINE_HOME`, else the nearest `.mail_pipeline` in the current folder or above it,
    else `./.mail_pipeline`, where a command that writes makes one."""
    named = os.environ.get(ENV)
    if named:
        return Path(named).expanduser().resolve()
    return nearest(Path.cwd()) or (Path.cwd() / FOLDER).resolve()


def nearest(start: Path) -> Optional[Path]:
    """The `.mail_pipeline` folder in `start` or the closest folder above it, if there is one."""
    for folder in (start, *start.parents):
        if (folder / FOLDER).is_dir():
            return (folder / FOLDER).resolve()
    return None


def existing() -> Path:
    """The home, which must exist already (a command that only reads): else one sentence
    saying where none was found and how to make one."""
    path = location()
    if path.is_dir():
        return path
    if os.environ.get(ENV):
        raise MailPipelineError(f"no mail-pipeline home at {path}: {ENV} names a folder that does "
                                "not exist; run 'mail-pipeline import FILE' to make it")
    raise MailPipelineError(f"no mail-pipeline home here: no {FOLDER} in {Path.cwd()} or above it, "
                            f"and {ENV} is not set; run 'mail-pipeline import FILE' to make one")


def home() -> Path:
    """The home folder, created on first use (by commands that write)."""
    path = location()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_path() -> Path:
    return home() / "subscribers.duckdb"


def imports_dir() -> Path:
    return home() / "imports"


def import_dir(import_id: str) -> Path:
    """The folder of one import's files; the id is checked so it can never point outside the home."""
    return imports_dir() / _checked_id(import_id, "import")


def exports_dir() -> Path:
    return home() / "exports"


def export_dir(export_id: str) -> Path:
    """The folder of one export's files (its document, and its file unless `--out` says where)."""
    return exports_dir() / _checked_id(export_id, "export")


def _checked_id(value: str, kind: str) -> str:
    if not _ID.match(value) or ".." in value:
        raise MailPipelineError(f"invalid {kind} id {value!r}: use letters, digits, '.', '_' or '-'.")
    return value


def uploads_dir() -> Path:
    """Where GreenArrow-style `upload_directory` files are looked up, and stdin is spooled."""
    return home() / "uploads"


def upload_path(filename: str) -> Path:
    """A file of the uploads folder by name; a name that leads outside it (`..`, an absolute
    path, a link pointing elsewhere) is refused."""
    root = uploads_dir().resolve()
    if "\x00" in filename:
        raise MailPipelineError("invalid upload file name: it cannot hold a NUL character")
    path = (root / filename).resolve()
    if not filename or Path(filename).is_absolute() or not path.is_relative_to(root) or path == root:
        raise MailPipelineError(f"invalid upload file name {filename!r}: it must name a file inside {root}")
    return path


def new_import_id() -> str:
    return _new_id(imports_dir())


def new_export_id() -> str:
    return _new_id(exports_dir())


def _new_id(root: Path) -> str:
    """Allocate the next id (1, 2, 3 …) under `root`: creating its folder is the allocation, so
    two processes never get the same id."""
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()]
    candidate = max(taken, default=0) + 1
    while True:
        try:
            (root / str(candidate)).mkdir()
            return str(candidate)
        except FileExistsError:
            candidate += 1


def _key_path(key: str) -> Path:
    # surrogateescape: a key from a file name that is not UTF-8 still has one stable digest
    return home() / "idempotency" / hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def key_owner(key: str) -> Optional[str]:
    """The import an idempotency key is bound to, if any."""
    try:
        return _key_path(key).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def release_key(key: str, import_id: str) -> None:
    """Unbind an idempotency key from `import_id` (an import that could not be made), so that a
    retry makes a new one; a key bound to another import is left alone."""
    if key_owner(key) == import_id:
        _key_path(key).unlink(missing_ok=True)


def claim_key(key: str, import_id: str) -> Optional[str]:
    """Bind an idempotency key to `import_id`. Returns None when this call bound it, else the
    import the key already names. The binding is a hard link made in one step, so two processes
    with the same key never both win."""
    path = _key_path(key)
    root = path.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{path.name}.{os.getpid()}.{import_id}"
    tmp.write_text(import_id, encoding="utf-8")
    try:
        os.link(tmp, path)
        return None
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    finally:
        tmp.unlink(missing_ok=True)

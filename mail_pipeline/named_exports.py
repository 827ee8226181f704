"""Named exports: exports declared once in a TOML file, each kept fresh as a Dagster asset.

The file is `exports.toml` beside `pyproject.toml` (or `$MAIL_PIPELINE_EXPORTS`); each table is
one export, its keys the export options (spec §6 filters, `format`, `gzip`, `out`); `out` may be
an `s3://` or `sftp://` location, where the file is delivered whole (`remote.put`):

    [newsletter_confirmed]
    lists = ["newsletter"]
    subscription_status = ["confirmed"]
    format = "csv"
"""
import os
import re
import tomllib
from pathlib import Path

from mail_pipeline import home, remote
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.exports import ExportOptions, build_export, checked_out, delivered, export, opened

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "exports.toml"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # becomes part of an asset key


def declarations_file() -> Path:
    return Path(os.environ.get("MAIL_PIPELINE_EXPORTS") or DEFAULT_FILE)


def load(path: Path) -> dict[str, ExportOptions]:
    """The named exports of `path` (none when it does not exist); a bad one is refused, named."""
    if not path.exists():
        return {}
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MailPipelineError(f"named exports file {path} cannot be read: {exc}") from None
    named = {}
    for name, fields in tables.items():
        if not _NAME.match(name) or not isinstance(fields, dict):
            raise MailPipelineError(f"named export {name!r} in {path}: a name is lower-case letters, "
                                    "digits and '_', and holds a table of options")
        try:
            named[name] = build_export(fields)
        except MailPipelineError as exc:
            raise MailPipelineError(f"named export {name!r} in {path}: {exc}") from None
    return named


def destination(name: str, options: ExportOptions) -> Path:
    """Where the file is written on this host: `out`, else `exports/named/` in the home (and
    there too, first, when `out` is an object store or SFTP server)."""
    if options.out and not remote.is_remote(options.out):
        return checked_out(options.out)
    return home.exports_dir() / "named" / f"{name}{options.suffix()}"


def materialize(name: str, options: ExportOptions, database: Path) -> dict:
    """Write the named export, deliver it to a remote `out` (whole: a temporary name, then the
    final one), and return what was written: path (or URL), rows, sha256, size."""
    with opened(database) as con:
        written = export(con, options, destination(name, options))
    return delivered(written, options.out)

"""The dry run (`import --dry-run`): every stage but the write, giving the import document and
the logs the import would produce. It runs outside Dagster, so it is neither a run nor an import;
its files go to `previews/` under the home, and the merge is rolled back."""

from mail_pipeline import home, pipeline
from mail_pipeline.document import import_document
from mail_pipeline.options import ImportOptions
from mail_pipeline.clock import iso_utc


def preview(options: ImportOptions) -> dict:
    """The import document `options` would give now, with `dry_run` set and `logs` the folder
    of the logs it would write."""
    folder = pipeline.Folder.preview()
    started = _now()
    pipeline.stage_raw(folder, options)
    pipeline.validate_import(folder)
    pipeline.merge_import(folder, home.database_path(), dry_run=True)
    pipeline.write_import_logs(folder)
    document = import_document(None, "finished", created_at=started, begins_at=started,
                               finished_at=_now(), run_id=None, folder=folder)
    return {**document, "dry_run": True, "logs": str(folder.path / "logs")}


def _now() -> str:
    return iso_utc()

"""Every name the Dagster layer and the job service share: jobs, the store's pool, run tags and
the shape of a run's config. Spelled once, here."""
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (the readers of run records import this module, and need no Pydantic)
    from mail_pipeline.options import ImportOptions

IMPORT_JOB = "import_job"
EXPORT_JOB = "export_job"
NEW_IMPORT_JOB = "new_import"
REVERT_JOB = "revert_job"  # undo an import: one partition of the imports, like the import's runs
# Every asset that writes the DuckDB store is in this pool, limited to one step at a time on the
# instance, so one import or export writes at once whichever host runs it (spec §4).
POOL = "mail_pipeline_store"
IMPORTS_PARTITIONS = "imports"
EXPORTS_PARTITIONS = "exports"


class Tags:
    """Run tags. Dagster's own first, then ours (`mail_pipeline/…`), all readable in the runs list."""

    PARTITION = "dagster/partition"
    PARENT_RUN = "dagster/parent_run_id"
    ROOT_RUN = "dagster/root_run_id"
    KIND = "mail_pipeline/kind"                # import | export | revert
    IMPORT_RUN = "mail_pipeline/import_run"    # a revert's link to the last run of its import
    SOURCE = "mail_pipeline/source"            # the source file's name, or its URL
    LISTS = "mail_pipeline/lists"              # the target lists, comma-separated
    INBOX = "mail_pipeline/inbox"              # the dropped file that made it
    DECLARED = "mail_pipeline/declared_source" # the declared source (imports.toml) that made it
    BEGINS_AT = "mail_pipeline/begins_at"      # a scheduled import's time (ISO UTC), for people
    REQUEST = "mail_pipeline/request"          # pause | cancel, asked for while it runs
    STAGE = "mail_pipeline/stage"              # downloading | waiting, while that lasts
    WAITING_FOR = "mail_pipeline/waiting_for"  # whom a waiting run waits for
    # The process that executes a run started by the command line in its own process, so that a
    # reader on the same host (same hostname and boot) can tell a killed run from a slow one.
    HOST = "mail_pipeline/host"
    BOOT_ID = "mail_pipeline/boot_id"
    PID = "mail_pipeline/pid"
    PID_START = "mail_pipeline/pid_start"      # the process's start time, so a reused pid is not it
    # An import made over HTTP (`mail-pipeline serve`): which system's API, and the key's name.
    API = "mail_pipeline/api"                  # listmonk | greenarrow | mailcoach | mailrith | page
    API_KEY = "mail_pipeline/api_key"
    CLEARED = "mail_pipeline/cleared"          # listmonk's DELETE on a finished import: status none
    BODY_SHA256 = "mail_pipeline/body_sha256"  # the request body an idempotency key was first used with


def import_run_config(options: "ImportOptions") -> dict:
    """The launchpad's config for an import: the canonical options on the raw_file step."""
    return {"ops": {"raw_file": {"config": options.model_dump()}}}


def options_of(run_config: dict) -> dict:
    """The canonical options of an import run's config (as given, not checked)."""
    return ((run_config or {}).get("ops", {}).get("raw_file", {}).get("config")) or {}


def readable_tags(options: "ImportOptions") -> dict[str, str]:
    """Tags a person reads in the runs list: the source file's name and the lists."""
    source = options.source or ("(inline CSV)" if options.content is not None else "")
    name = source if "://" in source else re.split(r"[\\/]", source)[-1]
    return {Tags.SOURCE: name[:200], Tags.LISTS: ",".join(options.lists)[:200]}


def source_tags(name: str, options: "ImportOptions") -> dict[str, str]:
    """An import made by a declared source's schedule or sensor, tagged with the source's name."""
    return {Tags.KIND: "import", Tags.DECLARED: name, **readable_tags(options)}


def pending_key(import_id: str) -> str:
    """The instance's key-value entry of an import that has no run yet (a draft, or one scheduled
    for later): JSON {state, created_at, begins_at, options}. A run cannot stand for it: run
    monitoring fails runs that stay unstarted."""
    return f"mail_pipeline/pending/{import_id}"

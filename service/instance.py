"""The Dagster instance the service works on: the deployer's (`DAGSTER_HOME`, used as it is) or
the embedded one under the home folder, whose dagster.yaml the project writes."""
import fcntl
import json
import os
import sys
from pathlib import Path

import dagster as dg

from assets.names import POOL
from mail_pipeline import home
from mail_pipeline.errors import MailPipelineError, first_line

EMBEDDED_YAML = """\
# Written by mail-pipeline for its embedded instance (a deployer's own instance, named by
# DAGSTER_HOME, is used as it is: docs/deploy.md gives the production shape).
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    # The daemon looks at the queue every second (Dagster's default is 5), so queued imports
    # follow one another without waiting for the next look.
    dequeue_interval_seconds: 1
concurrency:
  pools:
    # Every step that writes the DuckDB store is in the pool `{pool}`, one step at a time. Per op
    # (not per run), so that an import the command line runs in its own process takes its turn
    # with the runs the daemon starts.
    granularity: op
    default_limit: 1
  runs:
    # The daemon starts one import at a time (a command-line import counts too), so queued
    # imports reach the store in the order they were queued.
    tag_concurrency_limits:
      - key: mail_pipeline/kind
        value: import
        limit: 1
# A run whose worker never started, or a finished run still holding the store's slot, is settled
# by the daemon (`mail-pipeline ui`).
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 10
  free_slots_after_run_end_seconds: 10
telemetry:
  enabled: false
# Dagster's SQLite event log (in its usual folder), whose pool-slot claim is one statement, so two
# steps never share the store's slot (service/storage.py says why).
event_log_storage:
  module: service.storage
  class: PoolSafeSqliteEventLogStorage
  config:
    base_dir: {events}
# A step's raw stdout/stderr is not captured: the assets write everything through the run's event
# log and the import's own log, and capture starts two processes per step (0.4 s a run).
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""
_MARK = "# Written by mail-pipeline"  # (this version's and earlier ones': brought up to date)


def deployed() -> bool:
    """Whether a deployer's instance is in use: DAGSTER_HOME names one."""
    return bool(os.environ.get("DAGSTER_HOME"))


def dagster_home() -> Path:
    """The instance folder: the deployer's, else `$MAIL_PIPELINE_HOME/dagster` with the dagster.yaml
    above (an earlier version's is brought up to date; a file someone else wrote is left alone)."""
    if deployed():
        return Path(os.environ["DAGSTER_HOME"]).resolve()
    path = (home.home() / "dagster").resolve()
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    wanted = EMBEDDED_YAML.format(pool=POOL, events=json.dumps(str(path / "history" / "runs")))
    current = config.read_text() if config.exists() else None
    if current is None or (current != wanted and current.startswith(_MARK)):
        config.write_text(wanted)
    return path


def instance() -> dg.DagsterInstance:
    """The Dagster instance. Opening its storage costs about a second: callers open it once and
    pass it on. The store's pool is registered with its limit of 1 when the instance has none.
    A broken instance (a bad dagster.yaml, a database out of reach) is said in one sentence."""
    try:
        return _open()
    except Exception as exc:
        raise MailPipelineError(f"the Dagster instance in {dagster_home()} cannot be opened: "
                                f"{first_line(exc)}") from None


def _open() -> dg.DagsterInstance:
    path = dagster_home()
    if deployed():
        inst = dg.DagsterInstance.get()
        _register_pool(inst)
        return inst
    ready = path / "storage.ready"
    if ready.exists():
        return dg.DagsterInstance.from_config(str(path))
    # Dagster creates its SQLite storage on first open with nothing to stop two processes doing
    # it at once: two commands started together on a new home left two Alembic heads, and every
    # command after failed. The first open holds a lock, and registers the pool.
    with open(path / "storage.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        inst = dg.DagsterInstance.from_config(str(path))
        if not ready.exists():
            _register_pool(inst)
            ready.touch()
        return inst


def _register_pool(inst: dg.DagsterInstance) -> None:
    # The daemon reads which pools have limits before registering the pools of the runs it finds
    # queued: on an instance without this one it started every queued import at once.
    storage = inst.event_log_storage
    if storage.supports_global_concurrency_limits and POOL not in storage.get_concurrency_keys():
        storage.set_concurrency_slots(POOL, 1)


def pools_per_op(inst: dg.DagsterInstance) -> bool:
    """Whether the instance holds a step back for its pool wherever the run executes (granularity
    op); per run, only the run queue does, and a command-line run would not wait its turn."""
    from dagster._core.instance.config import PoolGranularity
    return inst.event_log_storage.get_pool_config().pool_granularity == PoolGranularity.OP


def location_name() -> str:
    """The code location's name in the deployer's workspace (the daemon finds queued runs' code
    by it): `MAIL_PIPELINE_LOCATION`, default `mail_pipeline` as in workspace.yaml."""
    return os.environ.get("MAIL_PIPELINE_LOCATION", "mail_pipeline")


def workspace_file() -> Path:
    """A workspace.yaml for `mail-pipeline ui`, naming the location as the service does."""
    path = home.home() / "workspace.yaml"
    text = ("# Written by mail-pipeline for `mail-pipeline ui`.\nload_from:\n  - python_module:\n"
            f"      module_name: assets.definitions\n      location_name: {location_name()}\n"
            f"      executable_path: {sys.executable}\n")
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path

"""Dagster's run records read with SQL alone, so that reading an import's state does not import
Dagster (about a second) nor open an instance (about another).

Only what the documents need is read: runs and their tags, the key-value entries of imports
without a run, the imports partitions, a run's step events and the store's pool. The tables are
Dagster's own (SQLite: `history/runs.db`, `history/runs/index.db` and a file per run; PostgreSQL:
one database), opened read-only: a read never writes. The instance is the one `service.instance`
names: the embedded one under the home, or the deployer's (`$DAGSTER_HOME/dagster.yaml`, SQLite or
PostgreSQL storage, the two Dagster ships for an instance of this shape).
"""
import json
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional
from urllib.parse import quote, urlencode

from mail_pipeline import home
from mail_pipeline.errors import MailPipelineError, first_line

FINISHED = ("SUCCESS", "FAILURE", "CANCELED")
# Dagster stores a run's failure under its older name.
EVENT_NAMES = {"RUN_FAILURE": "PIPELINE_FAILURE", "RUN_STARTING": "PIPELINE_STARTING"}


@dataclass(frozen=True)
class Run:
    """What a reader needs of a run (its record's columns and body)."""

    run_id: str
    job_name: str
    status: str  # Dagster's DagsterRunStatus name: QUEUED, STARTED, SUCCESS, …
    tags: dict
    run_config: dict
    create_timestamp: float
    start_time: Optional[float]
    end_time: Optional[float]
    parent_run_id: Optional[str] = None
    root_run_id: Optional[str] = None

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class Event:
    """One event of a run's log: its type, step and the event's own data (a plain dict)."""

    type: str
    step_key: Optional[str]
    message: str
    timestamp: float
    data: dict = field(default_factory=dict)

    def metadata(self) -> dict[str, str]:
        """A step failure's metadata (`Failure(metadata=…)`), as text."""
        entries = ((self.data.get("user_failure_data") or {}).get("metadata_entries")) or []
        found = {}
        for entry in entries:
            value = entry.get("entry_data") or {}
            found[entry.get("label")] = next((v for k, v in value.items() if k != "__class__"), None)
        return found


class Records:
    """Read-only SQL over the instance's storage. Connections are opened on first use, one per
    thread (the HTTP server reads from a pool of threads)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._dsn, self._history = _storage()

    # --- connections ------------------------------------------------------------------------------

    def _sql(self, query: str, params: tuple = (), shard: str = "runs") -> list[tuple]:
        """Rows of a query written with `?` placeholders, on the run storage (`runs`), the event
        index (`index`) or, on SQLite, a run's own event file (its run id)."""
        if self._dsn is not None:
            connection = self._postgres()
            with connection.cursor() as cursor:
                cursor.execute(query.replace("?", "%s"), params)
                rows = cursor.fetchall()
            connection.rollback()  # (read-only: ends the transaction the query opened)
            return rows
        path = {"runs": self._history / "runs.db", "index": self._history / "runs" / "index.db"}.get(
            shard, self._history / "runs" / f"{shard}.db")
        if not path.exists():
            return []
        try:
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                return connection.execute(query, params).fetchall()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise MailPipelineError(f"the Dagster instance's records in {path} cannot be read: "
                                    f"{first_line(exc)}") from None

    def _postgres(self):
        connection = getattr(self._local, "connection", None)
        if connection is None or connection.closed:
            import psycopg2
            try:
                connection = psycopg2.connect(self._dsn, connect_timeout=10)
            except psycopg2.Error as exc:
                raise MailPipelineError(f"the Dagster instance in {os.environ.get('DAGSTER_HOME')} "
                                        f"cannot be opened: {first_line(exc)}") from None
            connection.set_session(readonly=True)
            self._local.connection = connection
        return connection

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    # --- runs -------------------------------------------------------------------------------------

    _RUN = "SELECT r.run_id, r.pipeline_name, r.status, r.run_body, r.create_timestamp, r.start_time, r.end_time FROM runs r"

    def runs(self, job_name: str, partition: Optional[str] = None, tags: Optional[dict] = None,
             statuses: Iterable[str] = (), limit: Optional[int] = None) -> list[Run]:
        """Runs of the job, newest first: of one partition, with these tags, in these statuses."""
        where, params = ["r.pipeline_name = ?"], [job_name]
        if partition is not None:
            where.append("r.partition = ?")
            params.append(partition)
        for key, value in (tags or {}).items():
            where.append("EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = r.run_id AND t.key = ? AND t.value = ?)")
            params += [key, value]
        statuses = list(statuses)
        if statuses:
            where.append(f"r.status IN ({', '.join('?' for _ in statuses)})")
            params += statuses
        query = f"{self._RUN} WHERE {' AND '.join(where)} ORDER BY r.id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        return [_run(row) for row in self._sql(query, tuple(params))]

    def run(self, run_id: str) -> Optional[Run]:
        rows = self._sql(f"{self._RUN} WHERE r.run_id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    def partitions_with_runs(self, job_name: str) -> set[str]:
        return {row[0] for row in self._sql(
            "SELECT DISTINCT partition FROM runs WHERE pipeline_name = ? AND partition IS NOT NULL",
            (job_name,))}

    # --- key-value entries and partitions ---------------------------------------------------------

    def values(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(keys)
        found = {}
        for start in range(0, len(keys), 500):  # (SQLite's limit on placeholders)
            chunk = keys[start:start + 500]
            found.update(self._sql(f"SELECT key, value FROM kvs WHERE key IN ({', '.join('?' for _ in chunk)})",
                                   tuple(chunk)))
        return found

    def partitions(self, name: str) -> list[str]:
        return [row[0] for row in self._sql(
            "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = ? ORDER BY id",
            (name,), shard="index")]

    def has_partition(self, name: str, partition: str) -> bool:
        return bool(self._sql("SELECT 1 FROM dynamic_partitions WHERE partitions_def_name = ? AND partition = ?",
                              (name, partition), shard="index"))

    # --- a run's events ---------------------------------------------------------------------------

    def events(self, run_id: str, event_type: str) -> list[Event]:
        """The run's events of one type (Dagster's name, e.g. STEP_FAILURE), oldest first."""
        stored = EVENT_NAMES.get(event_type, event_type)
        rows = self._sql("SELECT step_key, event FROM event_logs WHERE run_id = ? AND dagster_event_type = ? "
                         "ORDER BY id", (run_id, stored), shard=run_id)
        found = []
        for step_key, text in rows:
            entry = json.loads(text)
            event = entry.get("dagster_event") or {}
            found.append(Event(event_type, step_key, event.get("message") or "", entry.get("timestamp"),
                               event.get("event_specific_data") or {}))
        return found

    def last_step_started(self, run_id: str) -> Optional[str]:
        rows = self._sql("SELECT step_key FROM event_logs WHERE run_id = ? AND dagster_event_type = 'STEP_START' "
                         "ORDER BY id DESC LIMIT 1", (run_id,), shard=run_id)
        return rows[0][0] if rows else None

    # --- the store's pool -------------------------------------------------------------------------

    def pool(self, key: str) -> tuple[list[str], list[str]]:
        """(runs holding a slot of the pool, runs waiting for one). A step keeps its row in
        `pending_steps` while it holds the slot; Dagster stamps `assigned_timestamp` when the slot
        is handed to it, a moment before its claim shows in `concurrency_slots`."""
        held = [row[0] for row in self._sql(
            "SELECT run_id FROM concurrency_slots WHERE concurrency_key = ? AND run_id IS NOT NULL "
            "AND deleted = ?", (key, False), shard="index")]
        waiting = [row[0] for row in self._sql(
            "SELECT run_id FROM pending_steps WHERE concurrency_key = ? AND assigned_timestamp IS NULL",
            (key,), shard="index")]
        return held, waiting


def _run(row: tuple) -> Run:
    run_id, job_name, status, body, created, start, end = row
    body = json.loads(body)
    if isinstance(created, str):
        created = datetime.fromisoformat(created)
    created = created.replace(tzinfo=timezone.utc).timestamp() if created else None
    return Run(run_id=run_id, job_name=job_name, status=status, tags=body.get("tags") or {},
               run_config=body.get("run_config") or {}, create_timestamp=created,
               start_time=start, end_time=end, parent_run_id=body.get("parent_run_id"),
               root_run_id=body.get("root_run_id"))


# --- where the storage is --------------------------------------------------------------------------

def _storage() -> tuple[Optional[str], Optional[Path]]:
    """(a PostgreSQL DSN, or None and SQLite's history folder) from the instance's dagster.yaml."""
    deployed = os.environ.get("DAGSTER_HOME")
    if not deployed:
        return None, home.home() / "dagster" / "history"
    base = Path(deployed)
    config_file = base / "dagster.yaml"
    config = {}
    if config_file.exists():
        import yaml
        try:
            config = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise MailPipelineError(f"the Dagster instance in {base} cannot be opened: {first_line(exc)}") from None
    storage = config.get("storage") or {}
    legacy = (config.get("run_storage") or {}).get("config") or {}
    postgres = storage.get("postgres") or (legacy if ("postgres_db" in legacy or "postgres_url" in legacy) else None)
    if postgres:
        return _postgres_url(postgres), None
    if "sqlite" in storage:
        return None, Path(_value(storage["sqlite"]["base_dir"])) / "history"
    if storage or config.get("run_storage"):
        raise MailPipelineError(f"the storage in {config_file} is neither SQLite nor PostgreSQL, "
                                "the two mail-pipeline reads")
    artifacts = ((config.get("local_artifact_storage") or {}).get("config") or {}).get("base_dir")
    return None, Path(_value(artifacts) if artifacts else base) / "history"


def _postgres_url(config: dict) -> str:
    """The URL dagster-postgres builds from the same configuration."""
    if config.get("postgres_url"):
        return _value(config["postgres_url"])
    db = {k: _value(v) for k, v in config["postgres_db"].items() if k != "params"}
    user = quote(str(db.get("username", "")))
    if db.get("password"):
        user += ":" + quote(str(db["password"]))
    params = config["postgres_db"].get("params") or {}
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{user}@{db.get('hostname', '')}:{db.get('port', 5432)}/{db.get('db_name', '')}{query}"


def _value(value):
    """A dagster.yaml value: itself, or `{env: NAME}`'s variable."""
    if isinstance(value, dict) and "env" in value:
        name = value["env"]
        if name not in os.environ:
            raise MailPipelineError(f"the Dagster instance's configuration needs the environment "
                                    f"variable {name}, which is not set")
        return os.environ[name]
    return value

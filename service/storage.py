"""Dagster's event log storages, with the store's pool claimed in one statement.

Dagster claims a pool slot by reading a free slot's id, then updating that row by id (on
PostgreSQL too: its `FOR UPDATE SKIP LOCKED` lock ends with the read, each statement committing on
its own). Two run workers that both read before either updates take the same slot, and two steps
that write the store run at once: seen once in about thirty runs of tests/test_load.py (an
export's step and an import's merge started 8 ms apart), and every few hundred claims when
workers race for it (tests/test_pool_claim.py). Here the claim is one conditional UPDATE
(`… WHERE id = (a free slot) AND step_key IS NULL`): SQLite runs it under its write lock, and
PostgreSQL re-checks `step_key IS NULL` on a row another transaction just updated. The second
worker updates no row, is told BLOCKED, and waits for the slot like any other step.

The embedded dagster.yaml (service/instance.py) names `PoolSafeSqliteEventLogStorage` as its
`event_log_storage`, in the folder Dagster's default uses, so the records stay where
service/records.py reads them; deploy/dagster.yaml names `PoolSafePostgresEventLogStorage`
(service/storage_postgres.py, apart so that the embedded instance does not import psycopg2).
"""
import sqlalchemy as db
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._utils.concurrency import ConcurrencySlotStatus


class OneStatementClaim:
    """A pool-slot claim that cannot hand one slot to two steps (mixed into a SqlEventLogStorage)."""

    def _claim_concurrency_slot(self, concurrency_key: str, run_id: str, step_key: str) -> ConcurrencySlotStatus:
        slots = ConcurrencySlotsTable.c
        free = (db.select(slots.id)
                .where(slots.concurrency_key == concurrency_key, slots.step_key.is_(None),
                       slots.deleted.is_(False))
                .limit(1)
                .scalar_subquery())
        with self.index_connection() as conn:
            taken = conn.execute(ConcurrencySlotsTable.update()
                                 .values(run_id=run_id, step_key=step_key)
                                 .where(slots.id == free, slots.step_key.is_(None))).rowcount
        return ConcurrencySlotStatus.CLAIMED if taken else ConcurrencySlotStatus.BLOCKED


class PoolSafeSqliteEventLogStorage(OneStatementClaim, SqliteEventLogStorage):
    """Dagster's SQLite event log storage with the one-statement claim."""

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # (Dagster's builds its own class)
        return cls(inst_data=inst_data, **config_value)

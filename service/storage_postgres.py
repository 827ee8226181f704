"""Dagster's PostgreSQL event log storage with the store's pool claimed in one statement
(service/storage.py says why). deploy/dagster.yaml names it as its `event_log_storage`."""
from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from service.storage import OneStatementClaim


class PoolSafePostgresEventLogStorage(OneStatementClaim, PostgresEventLogStorage):
    """Dagster's PostgreSQL event log storage with the one-statement claim."""

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # (Dagster's builds its own class)
        return cls(inst_data=inst_data, postgres_url=pg_url_from_config(config_value),
                   should_autocreate_tables=config_value.get("should_autocreate_tables", True),
                   token_provider=get_token_provider_from_config(config_value))

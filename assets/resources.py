"""Resources: where the store lives. Defaults follow `MAIL_PIPELINE_HOME` at run time."""
from pathlib import Path
from typing import Optional

import dagster as dg

from mail_pipeline import home


class StoreResource(dg.ConfigurableResource):
    """The DuckDB subscriber store; `database` overrides `$MAIL_PIPELINE_HOME/subscribers.duckdb`."""

    database: Optional[str] = None

    def path(self) -> Path:
        return Path(self.database) if self.database else home.database_path()

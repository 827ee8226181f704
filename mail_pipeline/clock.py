"""Moments as the documents write them. Apart from `times` (which parses values with Polars), so
that reading a document imports no data library."""
from datetime import datetime, timezone


def iso_utc(when: "datetime | None" = None) -> str:
    """A moment (default: now) as the documents write it: ISO 8601, UTC, to the second."""
    return (when or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

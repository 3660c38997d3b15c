"""Counts for checks and reconciliation on DuckDB, through the shared SQL."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import duckdb
from dagster import ConfigurableResource
from dagster._core.storage.db_io_manager import TableSlice

from clevertap_assets.destinations.duckdb.client import (
    CONNECTION_CONFIG,
    existing_columns,
    target_name,
)
from clevertap_assets.destinations.duckdb.lock import LOCK_TIMEOUT_SECONDS, connect_when_unlocked
from clevertap_assets.destinations.stats import SqlEventTableStats


class DuckDBEventStats(ConfigurableResource, SqlEventTableStats):
    """Read through a short-lived read-only connection: the checks of a run, which Dagster
    runs in parallel processes, share the file, and wait (bounded) while a load holds it."""

    database: str
    lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS

    @contextmanager
    def open_session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory database stands in for a file nothing has been loaded into yet (a
        read-only open of a missing file fails), so a check before the first load finds no
        table rather than an error."""
        database = self.database if Path(self.database).exists() else ":memory:"
        connection = connect_when_unlocked(
            database,
            read_only=database != ":memory:",
            config=CONNECTION_CONFIG,
            timeout_seconds=self.lock_timeout_seconds,
        )
        with connection:
            yield connection

    def table_reference(
        self, session: duckdb.DuckDBPyConnection, schema: str, table: str
    ) -> str | None:
        table_slice = TableSlice(table=table, schema=schema)
        return target_name(table_slice) if existing_columns(session, table_slice) else None

    def day_parameter(self, name: str) -> str:
        return f"${name}"

    def fetch(
        self, session: duckdb.DuckDBPyConnection, sql: str, days: Mapping[str, date]
    ) -> list[tuple]:
        return session.execute(sql, dict(days)).fetchall()

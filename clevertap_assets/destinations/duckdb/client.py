"""DuckDB connections: one config for every opener of the file, a transaction per load."""

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
from dagster import InputContext
from dagster._core.storage.db_io_manager import TableSlice
from dagster_duckdb.io_manager import DuckDbClient

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import DUCKDB_MEMORY_MB, duckdb_memory_mb
from clevertap_assets.destinations.common import qualified_name, window_where
from clevertap_assets.destinations.duckdb.lock import connect_when_unlocked
from clevertap_assets.destinations.window import HandlerReplacesWindow
from clevertap_assets.naming import quote_identifier

DUCKDB_TYPES = {
    Kind.BOOLEAN: "BOOLEAN",
    Kind.BIGINT: "BIGINT",
    Kind.DOUBLE: "DOUBLE",
    Kind.TIMESTAMP: "TIMESTAMP",
    Kind.TIMESTAMPTZ: "TIMESTAMP WITH TIME ZONE",
    Kind.TEXT: "VARCHAR",
    Kind.JSON: "JSON",
}
_KINDS_BY_TYPE = {sql: kind for kind, sql in DUCKDB_TYPES.items()}

CONNECTION_CONFIG = {"memory_limit": f"{DUCKDB_MEMORY_MB}MB", "preserve_insertion_order": False}
"""Every connection this process opens on the warehouse file: a load streams the batch file
into the table and a check aggregates a whole table, within the project's DuckDB cap (the
duplicate check took 500 MB uncapped at 3M rows). One config for all, because DuckDB
refuses a second connection to an open file with a different one."""


class TransactionalDuckDbClient(HandlerReplacesWindow, DuckDbClient):
    """A load's schema change, the window's delete and the insert commit together or not at
    all, so a failed or killed load leaves the previous rows of those days in place."""

    @staticmethod
    @contextmanager
    def connect(context, table_slice) -> Iterator[duckdb.DuckDBPyConnection]:
        """Loads wait for the file's lock; downstream reads open it read-only, so they share
        it with the checks and other readers."""
        reading = isinstance(context, InputContext)
        connection = connect_when_unlocked(
            context.resource_config["database"],
            read_only=reading,
            config=context.resource_config["connection_config"],
            timeout_seconds=context.resource_config["lock_timeout_seconds"],
        )
        with connection:
            if reading:
                yield connection
                return
            connection.begin()
            try:
                yield connection
            except BaseException:
                connection.rollback()
                _restore_memory_limit(connection)
                connection.close()
                raise
            connection.commit()
            # Within the load's raised cap: a connection that replays the WAL holds its
            # largest value whole, and a later one has the project's cap.
            connection.execute("CHECKPOINT")
            _restore_memory_limit(connection)

    @staticmethod
    def ensure_schema_exists(context, table_slice: TableSlice, connection) -> None:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(table_slice.schema)}")

    @staticmethod
    def get_select_statement(table_slice: TableSlice) -> str:
        return select_statement(table_slice)


def target_name(table_slice: TableSlice) -> str:
    """Schema-qualified: the file's catalog is the connection's."""
    return qualified_name(table_slice._replace(database=None))


def select_statement(table_slice: TableSlice) -> str:
    """Dagster's own SELECT leaves names unquoted, which fails for a table such as
    `2024_charged` (a digit-led TABLE_PREFIX is allowed) or a column with a space."""
    columns = ", ".join(map(quote_identifier, table_slice.columns or [])) or "*"
    return f"SELECT {columns} FROM {target_name(table_slice)}{window_where(table_slice)}"


def existing_columns(
    connection: duckdb.DuckDBPyConnection, table_slice: TableSlice
) -> dict[str, Kind]:
    """The table's columns, found whatever the case of its name: DuckDB matches identifiers
    without regard to case, quoted ones too, so `HO_charged` (TABLE_PREFIX=HO) is the table
    that TABLE_PREFIX=ho created, and loads go on into it.
    (https://duckdb.org/docs/stable/sql/dialect/keywords_and_identifiers.html)"""
    rows = connection.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE "
        "lower(table_schema) = lower(?) AND lower(table_name) = lower(?) ORDER BY ordinal_position",
        [table_slice.schema, table_slice.table],
    ).fetchall()
    return {name: _KINDS_BY_TYPE.get(data_type, Kind.TEXT) for name, data_type in rows}


def _restore_memory_limit(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(f"SET memory_limit = '{DUCKDB_MEMORY_MB}MB'")


def fit_memory_to_batch(
    connection: duckdb.DuckDBPyConnection, columns: int, largest_row_bytes: int
) -> None:
    """An insert keeps its buffers until the commit, so the cap is raised for the load of a
    wide table or of large values and `TransactionalDuckDbClient` restores it after the
    commit."""
    (threads,) = connection.execute("SELECT current_setting('threads')").fetchone()
    needed_mb = duckdb_memory_mb(columns, threads, largest_row_bytes)
    if needed_mb > DUCKDB_MEMORY_MB:
        connection.execute(f"SET memory_limit = '{needed_mb}MB'")

"""DuckDB, the embedded default: Dagster's DuckDB IO manager, made transactional and prefixed.

DuckDB reads the batch's Parquet file itself (`INSERT ... BY NAME SELECT ... FROM
read_parquet`), so a load is columnar and never passes rows through Python.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
from dagster import ConfigurableResource, InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler
from pydantic import Field

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import (
    DUCKDB_MEMORY_MB,
    EventBatch,
    batch_file_path,
    duckdb_memory_mb,
)
from clevertap_assets.days import days_between
from clevertap_assets.destinations.common import (
    NamedTableDbIOManager,
    SchemaChange,
    load_metadata,
    plan_schema_change,
    qualified_name,
    window_where,
)
from clevertap_assets.destinations.duckdb.lock import LOCK_TIMEOUT_SECONDS, connect_when_unlocked
from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.keys import WAREHOUSE_IO_MANAGER, WAREHOUSE_STATS
from clevertap_assets.naming import quote_identifier
from clevertap_assets.settings import PipelineSettings

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


class TransactionalDuckDbClient(DuckDbClient):
    """Delete of the window and insert of the batch commit together or not at all, so a
    failed or killed load leaves the previous rows of those days in place."""

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
            _restore_memory_limit(connection)

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        # Checked, not caught: inside a transaction a failed statement aborts the transaction.
        if not existing_columns(connection, table_slice):
            return
        target = qualified_name(table_slice._replace(database=None))
        connection.execute(f"DELETE FROM {target}{window_where(table_slice)}")

    @staticmethod
    def ensure_schema_exists(context: OutputContext, table_slice: TableSlice, connection) -> None:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(table_slice.schema)}")

    @staticmethod
    def get_select_statement(table_slice: TableSlice) -> str:
        return select_statement(table_slice)


def select_statement(table_slice: TableSlice) -> str:
    """Dagster's own SELECT leaves names unquoted, which fails for a table such as
    `2024_charged` (a digit-led TABLE_PREFIX is allowed) or a column with a space."""
    columns = ", ".join(map(quote_identifier, table_slice.columns or [])) or "*"
    target = qualified_name(table_slice._replace(database=None))
    return f"SELECT {columns} FROM {target}{window_where(table_slice)}"


def existing_columns(
    connection: duckdb.DuckDBPyConnection, table_slice: TableSlice
) -> dict[str, Kind]:
    rows = connection.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [table_slice.schema, table_slice.table],
    ).fetchall()
    return {name: _KINDS_BY_TYPE.get(data_type, Kind.TEXT) for name, data_type in rows}


class EventBatchDuckDBTypeHandler(DbTypeHandler[EventBatch]):
    """Creates or evolves the event table, then inserts the batch's file by column name."""

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: EventBatch, connection
    ) -> dict:
        try:
            incoming = obj.columns()
            if not incoming:
                return load_metadata(obj, table_slice, SchemaChange({}, {}))
            target = qualified_name(table_slice._replace(database=None))
            existing = existing_columns(connection, table_slice)
            change = plan_schema_change(existing, incoming)
            if existing:
                _evolve(connection, target, change)
            else:
                definition = ", ".join(
                    f"{quote_identifier(n)} {DUCKDB_TYPES[k]}" for n, k in incoming.items()
                )
                connection.execute(f"CREATE TABLE {target} ({definition})")
            casts = ", ".join(
                f"{quote_identifier(n)}::{DUCKDB_TYPES[k]} AS {quote_identifier(n)}"
                for n, k in incoming.items()
            )
            _fit_memory_to_width(connection, len(existing.keys() | incoming.keys()))
            connection.execute(
                f"INSERT INTO {target} BY NAME SELECT {casts} FROM read_parquet(?)",
                [str(obj.path)],
            )
            (table_rows,) = connection.execute(f"SELECT count(*) FROM {target}").fetchone()
            # The whole table after the load: the catalog's row count (a standard key).
            return {**load_metadata(obj, table_slice, change), "dagster/row_count": table_rows}
        finally:
            obj.discard()

    def load_input(self, context: InputContext, table_slice: TableSlice, connection) -> EventBatch:
        """A downstream asset can take the rows as a batch file too, read in chunks."""
        kinds = existing_columns(connection, table_slice)
        with batch_file_path() as path:
            connection.execute(
                f"COPY ({select_statement(table_slice)}) TO '{path}' (FORMAT parquet)"
            )
            (rows,) = connection.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()
        json_columns = frozenset(name for name, kind in kinds.items() if kind == Kind.JSON)
        return EventBatch(table_slice.table, path, rows, json_columns)

    @property
    def supported_types(self) -> Sequence[type]:
        return [EventBatch]


def _restore_memory_limit(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(f"SET memory_limit = '{DUCKDB_MEMORY_MB}MB'")


def _fit_memory_to_width(connection: duckdb.DuckDBPyConnection, columns: int) -> None:
    """An insert keeps its buffers until the commit, so a wide table's cap is raised for the
    load and `TransactionalDuckDbClient` restores it after the commit."""
    (threads,) = connection.execute("SELECT current_setting('threads')").fetchone()
    needed_mb = duckdb_memory_mb(columns, threads)
    if needed_mb > DUCKDB_MEMORY_MB:
        connection.execute(f"SET memory_limit = '{needed_mb}MB'")


def _evolve(connection: duckdb.DuckDBPyConnection, target: str, change: SchemaChange) -> None:
    for name, kind in change.add.items():
        connection.execute(
            f"ALTER TABLE {target} ADD COLUMN {quote_identifier(name)} {DUCKDB_TYPES[kind]}"
        )
    for name, kind in change.widen.items():
        connection.execute(
            f"ALTER TABLE {target} ALTER COLUMN {quote_identifier(name)} TYPE {DUCKDB_TYPES[kind]}"
        )


class EventFrameDuckDBTypeHandler(DuckDBPolarsTypeHandler):
    """Dagster's polars handler, reading through the quoted SELECT."""

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection
    ) -> pl.DataFrame:
        if table_slice.partition_dimensions and not context.asset_partition_keys:
            return pl.DataFrame()
        return connection.sql(select_statement(table_slice)).pl()


class DuckDBEventIOManager(DuckDBPolarsIOManager):
    """Dagster's DuckDB + polars IO manager, with CleverTap batches, transactions and naming.

    Downstream assets can still load any event table as a polars DataFrame.
    """

    lock_timeout_seconds: float = Field(
        LOCK_TIMEOUT_SECONDS, description="How long a load waits for the file's lock."
    )

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [EventBatchDuckDBTypeHandler(), EventFrameDuckDBTypeHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pl.DataFrame

    def create_io_manager(self, context) -> DbIOManager:
        return NamedTableDbIOManager(
            db_client=TransactionalDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="DuckDBEventIOManager",
        )


class DuckDBEventStats(ConfigurableResource, EventTableStats):
    """Counts for checks and reconciliation, read through a short-lived read-only connection:
    the checks of a run, which Dagster runs in parallel processes, share the file, and wait
    (bounded) while a load holds it."""

    database: str
    lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS

    def daily_row_counts(
        self, schema: str, table: str, first_day: date, last_day: date
    ) -> dict[date, int]:
        table_slice = TableSlice(table=table, schema=schema)
        with self._connection() as connection:
            if not existing_columns(connection, table_slice):
                return dict.fromkeys(days_between(first_day, last_day), 0)
            rows = connection.execute(
                f"SELECT CAST(event_time AS DATE), count(*) FROM {qualified_name(table_slice)} "
                "WHERE event_time >= ? AND event_time < ? GROUP BY 1",
                [first_day, last_day + timedelta(days=1)],
            ).fetchall()
        return {**dict.fromkeys(days_between(first_day, last_day), 0), **dict(rows)}

    def duplicate_record_ids(self, schema: str, table: str) -> int:
        table_slice = TableSlice(table=table, schema=schema)
        with self._connection() as connection:
            if not existing_columns(connection, table_slice):
                return 0
            (duplicates,) = connection.execute(
                "SELECT coalesce(sum(copies - 1), 0) FROM (SELECT count(*) AS copies FROM "
                f"{qualified_name(table_slice)} GROUP BY _record_id HAVING count(*) > 1)"
            ).fetchone()
        return duplicates

    @contextmanager
    def _connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
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


def build_duckdb_resources(settings: PipelineSettings) -> dict[str, object]:
    return {
        WAREHOUSE_IO_MANAGER: DuckDBEventIOManager(
            database=settings.duckdb_path, connection_config=CONNECTION_CONFIG
        ),
        WAREHOUSE_STATS: DuckDBEventStats(database=settings.duckdb_path),
    }


def check_duckdb_destination(settings: PipelineSettings) -> str:
    """The file opens for writing (not locked by another process) and the schema exists."""
    connection = connect_when_unlocked(
        settings.duckdb_path, read_only=False, config=CONNECTION_CONFIG
    )
    with connection:
        schema = quote_identifier(settings.warehouse_schema)
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    return f"DuckDB OK: {settings.duckdb_path}, schema {settings.warehouse_schema!r} ready"

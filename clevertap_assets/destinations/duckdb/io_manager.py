"""DuckDB, the embedded default: Dagster's DuckDB IO manager, made transactional and prefixed.

Event batches and polars DataFrames are written alike, through `destinations.window`.
"""

from collections.abc import Sequence

import polars as pl
from dagster import InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb_polars import DuckDBPolarsIOManager, DuckDBPolarsTypeHandler
from pydantic import Field

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import EventBatch, batch_file_path
from clevertap_assets.destinations.common import NamedTableDbIOManager
from clevertap_assets.destinations.duckdb.client import (
    TransactionalDuckDbClient,
    existing_columns,
    select_statement,
)
from clevertap_assets.destinations.duckdb.load import DuckDBWindowLoad
from clevertap_assets.destinations.duckdb.lock import LOCK_TIMEOUT_SECONDS
from clevertap_assets.destinations.window import replace_window, replace_window_with_frame


class EventBatchDuckDBTypeHandler(DbTypeHandler[EventBatch]):
    """Replaces the window with the batch; reads a slice back as a batch file."""

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: EventBatch, connection
    ) -> dict:
        return replace_window(DuckDBWindowLoad(connection), table_slice, obj)

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


class EventFrameDuckDBTypeHandler(DuckDBPolarsTypeHandler):
    """Dagster's polars handler, reading through the quoted SELECT and writing as batches."""

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: pl.DataFrame, connection
    ) -> dict:
        return replace_window_with_frame(DuckDBWindowLoad(connection), table_slice, obj.to_arrow())

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

"""Snowflake: Dagster's Snowflake IO manager, with CleverTap batches loaded in one transaction.

Event batches and pandas DataFrames are written alike, through `destinations.window` (see
`load` for the steps on Snowflake); DataFrames are read back by Dagster's pandas handler.
"""

from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
from dagster import InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_snowflake_pandas import SnowflakePandasIOManager, SnowflakePandasTypeHandler

from clevertap_assets.batch.spool import EventBatch
from clevertap_assets.destinations.snowflake.client import (
    SnowflakeEventDbClient,
    UpperCaseNamedTableDbIOManager,
)
from clevertap_assets.destinations.snowflake.load import SnowflakeWindowLoad
from clevertap_assets.destinations.window import replace_window, replace_window_with_frame


def _load(connection, table_slice: TableSlice, batch: EventBatch | pa.Table) -> dict:
    """A batch, or a DataFrame's rows, on a cursor of the load's connection."""
    with connection.cursor() as cursor:
        load = SnowflakeWindowLoad(connection, cursor)
        if isinstance(batch, pa.Table):
            return replace_window_with_frame(load, table_slice, batch)
        return replace_window(load, table_slice, batch)


class EventBatchSnowflakeTypeHandler(DbTypeHandler[EventBatch]):
    """Replaces the window with the batch."""

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: EventBatch, connection
    ) -> dict:
        return _load(connection, table_slice, obj)

    def load_input(self, context: InputContext, table_slice: TableSlice, connection) -> EventBatch:
        raise TypeError(
            f"{table_slice.table}: on Snowflake, load event tables as pandas DataFrames "
            "(annotate the input as pd.DataFrame), not as EventBatch"
        )

    @property
    def supported_types(self) -> Sequence[type]:
        return [EventBatch]


class EventFrameSnowflakeTypeHandler(SnowflakePandasTypeHandler):
    """Dagster's pandas handler for reads; a DataFrame output replaces its window as a batch."""

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection
    ) -> dict:
        return _load(connection, table_slice, pa.Table.from_pandas(obj, preserve_index=False))


class SnowflakeEventIOManager(SnowflakePandasIOManager):
    """Dagster's Snowflake + pandas IO manager (its connection settings, key-pair auth and
    DataFrame inputs), with CleverTap batches, one transaction per window and the prefixed table names."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [EventBatchSnowflakeTypeHandler(), EventFrameSnowflakeTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return UpperCaseNamedTableDbIOManager(
            db_client=SnowflakeEventDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="SnowflakeEventIOManager",
        )

"""BigQuery: Dagster's BigQuery IO manager (polars flavour), with batches that replace their
days in one statement.

Event batches and polars DataFrames are written alike, through `destinations.window` (see
`load` for the steps on BigQuery); DataFrames are read back by dagster-polars' handler.
"""

from collections.abc import Sequence

import polars as pl
from dagster import InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_gcp.bigquery.io_manager import BigQueryClient
from dagster_polars import PolarsBigQueryIOManager
from dagster_polars.io_managers.bigquery import PolarsBigQueryTypeHandler
from google.cloud import bigquery

from clevertap_assets.batch.spool import LOAD_CHUNK_ROWS, EventBatch
from clevertap_assets.destinations.bigquery.client import BigQueryEventClient
from clevertap_assets.destinations.bigquery.load import BigQueryWindowLoad
from clevertap_assets.destinations.common import NamedTableDbIOManager, batch_of_chunks
from clevertap_assets.destinations.window import replace_window, replace_window_with_frame


class EventBatchBigQueryTypeHandler(DbTypeHandler[EventBatch]):
    """Replaces the window with the batch; reads a slice back as a batch file."""

    def handle_output(
        self,
        context: OutputContext,
        table_slice: TableSlice,
        obj: EventBatch,
        connection: bigquery.Client,
    ) -> dict:
        return replace_window(BigQueryWindowLoad(connection), table_slice, obj)

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection: bigquery.Client
    ) -> EventBatch:
        """A downstream asset can take the rows as a batch file too, read page by page."""
        rows = connection.query(BigQueryClient.get_select_statement(table_slice)).result(
            page_size=LOAD_CHUNK_ROWS
        )
        json_columns = frozenset(f.name for f in rows.schema if f.field_type == "JSON")
        return batch_of_chunks(table_slice.table, rows.to_arrow_iterable(), json_columns)

    @property
    def supported_types(self) -> Sequence[type]:
        return [EventBatch]


class EventFramePolarsTypeHandler(PolarsBigQueryTypeHandler):
    """dagster-polars' handler for reads; a DataFrame output replaces its window as a batch."""

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: pl.DataFrame, connection
    ) -> dict:
        return replace_window_with_frame(
            BigQueryWindowLoad(connection), table_slice, obj.to_arrow()
        )


class BigQueryEventIOManager(PolarsBigQueryIOManager):
    """dagster-polars' BigQuery IO manager with CleverTap batches, atomic windows and naming.

    Downstream assets can still load any event table as a polars DataFrame.
    """

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [EventBatchBigQueryTypeHandler(), EventFramePolarsTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return NamedTableDbIOManager(
            db_client=BigQueryEventClient(
                write_mode=self.write_mode, gcp_credentials=self.gcp_credentials
            ),
            database=self.project,
            schema=self.dataset,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="BigQueryEventIOManager",
        )

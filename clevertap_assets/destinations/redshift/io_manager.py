"""Amazon Redshift's IO manager: ours over psycopg 3, since Dagster ships none.

Event batches and polars DataFrames are written alike, through `destinations.window`, and
read back in streamed chunks. A load that met a concurrent one is retried from the start
(see `client`).
"""

import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from itertools import islice

import polars as pl
import psycopg
import pyarrow as pa
from dagster import ConfigurableIOManagerFactory, InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from pydantic import Field

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import LOAD_CHUNK_ROWS, EventBatch
from clevertap_assets.destinations.common import (
    LOAD_ATTEMPTS,
    NamedTableDbIOManager,
    batch_of_chunks,
    retry_pause,
)
from clevertap_assets.destinations.redshift.client import (
    RedshiftConnection,
    RedshiftDbClient,
    is_concurrency_conflict,
    lower_case,
    select,
)
from clevertap_assets.destinations.redshift.dialect import (
    ARROW_TYPES,
    MAX_VARCHAR_BYTES,
    FitCounts,
    RedshiftDialect,
    existing_kinds,
    json_limit_text,
)
from clevertap_assets.destinations.redshift.load import RedshiftWindowLoad
from clevertap_assets.destinations.redshift.staging import RedshiftS3Staging, copy_limit_text
from clevertap_assets.destinations.window import frame_batch, replace_window
from clevertap_assets.naming import REDSHIFT_COLUMNS, quote_identifier


def iter_slice_arrow(
    connection: psycopg.Connection,
    dialect: RedshiftDialect,
    table_slice: TableSlice,
    chunk_rows: int = LOAD_CHUNK_ROWS,
) -> Iterator[pa.Table]:
    """A table slice in typed chunks, streamed (libpq's chunked rows), so reads stay bounded
    too; JSON comes back as JSON text, as every other destination gives it. At least one
    chunk, empty if the slice is. No named cursor: psycopg declares it over the extended
    protocol, which Redshift has refused for DECLARE, and Redshift materialises every cursor's
    result on its leader node."""
    kinds = existing_kinds(connection, dialect, table_slice)
    names = list(table_slice.columns or kinds)
    schema = pa.schema([(name, ARROW_TYPES[kinds[name]]) for name in names])
    expressions = ", ".join(
        f"{dialect.as_text(quote_identifier(n), Kind.JSON)} AS {quote_identifier(n)}"
        if kinds[n] == Kind.JSON
        else quote_identifier(n)
        for n in names
    )
    yielded = False
    with connection.cursor() as cursor:
        rows = cursor.stream(select(expressions, table_slice), size=chunk_rows)
        while chunk := list(islice(rows, chunk_rows)):
            yielded = True
            yield pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in chunk], schema)
    if not yielded:
        yield schema.empty_table()


def _load(
    context: OutputContext,
    connection: psycopg.Connection,
    dialect: RedshiftDialect,
    table_slice: TableSlice,
    batch: EventBatch,
    staging: RedshiftS3Staging | None,
) -> dict:
    load = RedshiftWindowLoad(connection, dialect, staging)
    try:
        metadata = replace_window(load, table_slice, batch)
    finally:
        load.discard()
    _warn_fitted(context, load.fitted, load.json_bytes)
    return metadata


def _warn_fitted(context: OutputContext, counts: FitCounts, json_bytes: int) -> None:
    if counts.text_values_truncated:
        context.log.warning(
            f"{counts.text_values_truncated} text values were longer than Redshift's "
            f"{MAX_VARCHAR_BYTES:,}-byte VARCHAR and were truncated"
        )
    if counts.json_values_nulled:
        context.log.warning(
            f"{counts.json_values_nulled} JSON values were too long and stored as NULL: "
            f"{json_limit_text(json_bytes)}"
        )
    if counts.json_values_nulled_for_copy:
        context.log.warning(
            f"{counts.json_values_nulled_for_copy} JSON values were stored as NULL: "
            f"{copy_limit_text()}"
        )


class EventBatchRedshiftTypeHandler(DbTypeHandler[EventBatch]):
    """Replaces the window with the batch; reads a slice back as a batch file."""

    def __init__(self, dialect: RedshiftDialect, staging: RedshiftS3Staging | None = None) -> None:
        self._dialect = dialect
        self._staging = staging

    def handle_output(
        self,
        context: OutputContext,
        table_slice: TableSlice,
        obj: EventBatch,
        connection: psycopg.Connection,
    ) -> dict:
        return _load(context, connection, self._dialect, table_slice, obj, self._staging)

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection: psycopg.Connection
    ) -> EventBatch:
        """A downstream asset can take the rows as a batch file too, written in chunks."""
        kinds = existing_kinds(connection, self._dialect, table_slice)
        json_columns = frozenset(name for name, kind in kinds.items() if kind == Kind.JSON)
        chunks = iter_slice_arrow(connection, self._dialect, table_slice)
        return batch_of_chunks(table_slice.table, chunks, json_columns)

    @property
    def supported_types(self) -> Sequence[type]:
        return [EventBatch]


class PolarsRedshiftTypeHandler(DbTypeHandler[pl.DataFrame]):
    """Downstream assets read event tables as polars DataFrames (and may write them)."""

    def __init__(self, dialect: RedshiftDialect, staging: RedshiftS3Staging | None = None) -> None:
        self._dialect = dialect
        self._staging = staging

    def handle_output(
        self,
        context: OutputContext,
        table_slice: TableSlice,
        obj: pl.DataFrame,
        connection: psycopg.Connection,
    ) -> dict:
        batch = frame_batch(table_slice.table, obj.to_arrow())
        try:
            return _load(context, connection, self._dialect, table_slice, batch, self._staging)
        finally:
            batch.discard()

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection: psycopg.Connection
    ) -> pl.DataFrame:
        chunks = list(iter_slice_arrow(connection, self._dialect, table_slice))
        return pl.from_arrow(pa.concat_tables(chunks)) if chunks else pl.DataFrame()

    @property
    def supported_types(self) -> Sequence[type]:
        return [pl.DataFrame]


class RedshiftEventDbIOManager(NamedTableDbIOManager):
    """Names in lower case, and a load that met a concurrent one retried from the start."""

    def _get_table_slice(
        self, context: OutputContext | InputContext, output_context: OutputContext
    ) -> TableSlice:
        return lower_case(super()._get_table_slice(context, output_context))

    def store(self, context: OutputContext, obj: object) -> None:
        for attempt in range(1, LOAD_ATTEMPTS + 1):
            try:
                return super().store(context, obj)
            except psycopg.Error as error:
                if attempt == LOAD_ATTEMPTS or not is_concurrency_conflict(error):
                    raise
                pause = retry_pause(attempt)
                context.log.warning(
                    f"load met a concurrent one ({str(error).strip()}); retrying in "
                    f"{pause:.1f}s (attempt {attempt + 1} of {LOAD_ATTEMPTS})"
                )
                time.sleep(pause)


class RedshiftEventIOManager(ConfigurableIOManagerFactory):
    """Loads CleverTap event batches into Redshift; downstream assets read polars DataFrames."""

    connection: RedshiftConnection
    schema_: str | None = Field(default=None, alias="schema")
    max_identifier_bytes: int = Field(
        REDSHIFT_COLUMNS.max_bytes,
        description="Redshift's limit; PostgreSQL-based stand-ins keep only 63 bytes.",
    )
    s3_staging: RedshiftS3Staging | None = Field(
        None, description="Load through S3 and COPY; without it, through multi-row INSERTs."
    )

    def create_io_manager(self, context) -> DbIOManager:
        rules = replace(REDSHIFT_COLUMNS, max_bytes=self.max_identifier_bytes)
        dialect = RedshiftDialect(columns=rules)
        return RedshiftEventDbIOManager(
            db_client=RedshiftDbClient(self.connection),
            database=self.connection.database,
            schema=self.schema_,
            type_handlers=[
                EventBatchRedshiftTypeHandler(dialect, self.s3_staging),
                PolarsRedshiftTypeHandler(dialect, self.s3_staging),
            ],
            default_load_type=pl.DataFrame,
            io_manager_name="RedshiftEventIOManager",
        )

"""What every destination shares on top of Dagster's `DbIOManager`.

What Dagster's database IO managers lack for CleverTap is the prefixed table name, a table whose
columns follow the data and a window replacement that stays atomic on every warehouse. The
first two are here, once; the replacement is `destinations.window`, the counts the checks
read are `destinations.stats`.
"""

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, TableSlice
from dagster_duckdb.io_manager import _partition_where_clause

from clevertap_assets.batch.kinds import Kind, widen
from clevertap_assets.batch.spool import (
    BATCH_COMPRESSION,
    EventBatch,
    batch_file_path,
    remove_spool_folder,
)
from clevertap_assets.naming import quote_identifier

LOAD_ATTEMPTS = 5
"""How often a load that met a concurrent one is run, in all, before its error stands."""
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0


def retry_pause(attempt: int) -> float:
    """Exponential, capped, with full jitter, so two loads that met do not meet again."""
    return random.uniform(0, min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2**attempt))


class DestinationError(ConnectionError):
    """A destination could not be reached, refused the login, or cannot hold the pipeline's
    schema: the one error every destination's check and connection raise. The message names
    the endpoint and the reason, never a secret."""


class NamedTableDbIOManager(DbIOManager):
    """`DbIOManager` that takes the table name from the asset's `table` metadata.

    Dagster names a table after the last part of the asset key; the pipeline's tables are
    `<TABLE_PREFIX>_<event>`. The asset factory puts the pipeline's facts' table name in the
    asset's definition metadata (as it does `schema`), so the IO manager writes the table the
    checks and sensors read, and the asset key stays `[pipeline, event]`.
    """

    def _get_table_slice(
        self, context: OutputContext | InputContext, output_context: OutputContext
    ) -> TableSlice:
        table_slice = super()._get_table_slice(context, output_context)
        table = (output_context.definition_metadata or {}).get("table")
        return table_slice._replace(table=table) if table else table_slice

    def handle_output(self, context: OutputContext, obj: object) -> None:
        """The batch's folder goes whatever happens, also when the load fails before it
        reaches the type handler (the connection refused, say, by a DuckDB file lock). An
        event CleverTap refused to export has no batch (`None`): its days are recorded as
        refused, and its table, with any rows loaded before the refusal, stays as it is."""
        if obj is None:
            return
        try:
            self.store(context, obj)
        finally:
            if isinstance(obj, EventBatch):
                obj.discard()

    def store(self, context: OutputContext, obj: object) -> None:
        """One load of the output; a destination may run it again (Redshift retries a load
        that met a concurrent one), the batch's files staying until `handle_output` ends."""
        super().handle_output(context, obj)


@dataclass(frozen=True)
class SchemaChange:
    """Columns to add and columns to widen before a batch can be inserted."""

    add: dict[str, Kind]
    widen: dict[str, Kind]


def plan_schema_change(existing: Mapping[str, Kind], incoming: Mapping[str, Kind]) -> SchemaChange:
    """New properties become new columns; drifting ones are widened, never dropped.

    Names are compared case-insensitively because Snowflake folds them; the existing
    spelling wins.
    """
    existing_by_lower = {name.lower(): (name, kind) for name, kind in existing.items()}
    add: dict[str, Kind] = {}
    widened: dict[str, Kind] = {}
    for name, kind in incoming.items():
        if name.lower() not in existing_by_lower:
            add[name] = kind
            continue
        current_name, current = existing_by_lower[name.lower()]
        target = widen(current, kind)
        if target != current:
            widened[current_name] = target
    return SchemaChange(add=add, widen=widened)


def rebuild_column(
    execute: Callable[[str], object],
    target: str,
    column: str,
    rebuilt: str,
    column_type: str,
    converted: str,
) -> None:
    """Change a (quoted) column's type by rebuilding it: add the new column, copy the
    converted values, drop the old one, give the new one its name. Snowflake and Redshift
    cannot change NUMBER to text in place; the rebuilt column moves to the end."""
    execute(f"ALTER TABLE {target} ADD COLUMN {rebuilt} {column_type}")
    execute(f"UPDATE {target} SET {rebuilt} = {converted}")
    execute(f"ALTER TABLE {target} DROP COLUMN {column}")
    execute(f"ALTER TABLE {target} RENAME COLUMN {rebuilt} TO {column}")


def qualified_name(table_slice: TableSlice) -> str:
    parts = [table_slice.database, table_slice.schema, table_slice.table]
    return ".".join(quote_identifier(part) for part in parts if part)


def window_condition(table_slice: TableSlice, alias: str | None = None) -> str:
    """The slice's partitions as a condition on naive local timestamps, as every destination
    stores `event_time` (optionally on a table alias); `TRUE` for an unpartitioned slice."""
    dimensions = table_slice.partition_dimensions
    if not dimensions:
        return "TRUE"
    if alias:
        dimensions = [d._replace(partition_expr=f"{alias}.{d.partition_expr}") for d in dimensions]
    return _partition_where_clause(dimensions)


def window_where(table_slice: TableSlice) -> str:
    """` WHERE <the slice's partitions>`; empty for an unpartitioned slice."""
    if not table_slice.partition_dimensions:
        return ""
    return " WHERE " + window_condition(table_slice)


def load_metadata(batch: EventBatch, table_slice: TableSlice, change: SchemaChange) -> dict:
    """What the load itself adds to the materialization (the asset reports the read)."""
    return {
        "rows_written": batch.rows,
        "columns_added": sorted(change.add),
        "columns_widened": sorted(change.widen),
        "destination_table": f"{table_slice.schema}.{table_slice.table}",
    }


def batch_of_chunks(
    name: str, chunks: Iterable[pa.Table | pa.RecordBatch], json_columns: frozenset[str]
) -> EventBatch:
    """Rows as a batch file written chunk by chunk, so memory stays bounded: a slice read back
    for a downstream asset, or a DataFrame output; no chunk at all is an empty batch."""
    with batch_file_path() as path:
        rows, writer = 0, None
        for chunk in chunks:
            writer = writer or pq.ParquetWriter(path, chunk.schema, compression=BATCH_COMPRESSION)
            writer.write(chunk)
            rows += chunk.num_rows
        if writer is None:
            remove_spool_folder(path.parent)
            return EventBatch(name, None, 0)
        writer.close()
    return EventBatch(name, path, rows, json_columns)

"""What every destination shares on top of Dagster's `DbIOManager`.

Dagster's database IO managers already replace a partition's rows (delete the window, insert
the output) inside one connection; what they lack for CleverTap is Hevo's table naming and a
table whose columns follow the data. Both are added here once, by subclassing, so each
destination module only maps kinds to its own SQL types.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from dagster import InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, TableSlice
from dagster_duckdb.io_manager import _partition_where_clause

from clevertap_assets.batch.kinds import Kind, widen
from clevertap_assets.batch.spool import EventBatch
from clevertap_assets.naming import quote_identifier


class NamedTableDbIOManager(DbIOManager):
    """`DbIOManager` that takes the table name from the asset's `table` metadata.

    Dagster names a table after the last part of the asset key; Hevo names it
    `<TABLE_PREFIX>_<event>`. The asset factory computes that name once and puts it in the
    asset's metadata (as it does `schema`), so the IO manager, the asset checks and the
    sensors all read the same table, and the asset key stays `[pipeline, event]`.
    """

    def _get_table_slice(
        self, context: OutputContext | InputContext, output_context: OutputContext
    ) -> TableSlice:
        table_slice = super()._get_table_slice(context, output_context)
        table = (output_context.definition_metadata or {}).get("table")
        return table_slice._replace(table=table) if table else table_slice

    def handle_output(self, context: OutputContext, obj: object) -> None:
        """The batch's folder goes whatever happens, also when the load fails before it
        reaches the type handler (the connection refused, say, by a DuckDB file lock)."""
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


def qualified_name(table_slice: TableSlice) -> str:
    parts = [table_slice.database, table_slice.schema, table_slice.table]
    return ".".join(quote_identifier(part) for part in parts if part)


def window_where(table_slice: TableSlice) -> str:
    """` WHERE <the slice's partitions>` with naive local timestamps, as DuckDB and
    PostgreSQL/Redshift compare them; empty for an unpartitioned slice."""
    if not table_slice.partition_dimensions:
        return ""
    return " WHERE " + _partition_where_clause(table_slice.partition_dimensions)


def load_metadata(batch: EventBatch, table_slice: TableSlice, change: SchemaChange) -> dict:
    """What the load itself adds to the materialization (the asset reports the read)."""
    return {
        "rows_written": batch.rows,
        "columns_added": sorted(change.add),
        "columns_widened": sorted(change.widen),
        "destination_table": f"{table_slice.schema}.{table_slice.table}",
    }


class EventTableStats(ABC):
    """What the asset checks and the reconciliation sensor ask of any destination."""

    @abstractmethod
    def daily_row_counts(
        self, schema: str, table: str, first_day: date, last_day: date
    ) -> dict[date, int]:
        """Rows per local day (by `event_time`) between two days, inclusive; absent days are 0."""

    @abstractmethod
    def duplicate_record_ids(self, schema: str, table: str) -> int:
        """Rows beyond the first for each `_record_id`; 0 when the table is exactly-once."""

"""The one place a partition window's rows are replaced, for every destination.

Dagster's `DbIOManager` deletes the window in its client, then hands the output to a type
handler on the same connection, which creates or evolves the table and inserts. That is one
transaction only where DDL is transactional (DuckDB, Redshift). On Snowflake every DDL
statement, and the temporary stage `write_pandas` makes, commits the open transaction; on
BigQuery every statement is a job of its own. There the delete would commit alone, before the
handler's DDL, and a load that then failed would leave its days empty. That order cannot be
fixed inside `DbIOManager`, so it is not used: every client's `delete_table_slice` does
nothing (`HandlerReplacesWindow`), and every type handler, for event batches and DataFrames
alike, calls `replace_window`, which runs one destination's `WindowLoad` steps in this order:

0. `claim_columns`: the columns the batch's keys were given claimed in the schema's stored
   map (`destinations.column_map`), serialised so the first load to commit a column owns it,
   and the batch moved to the stored names (`agreed_columns`). Then `begin`: work on the
   batch that needs no hold on the table (Redshift's S3 upload), so a load that locks its
   table in `existing` holds the lock only for the statements below.
1. `existing`, then `prepare`: create or evolve the table. Additive only (new columns, wider
   types), so the previous rows stay readable if the run stops here, on warehouses where DDL
   commits alone.
2. `stage`: put the rows where one statement can read them (a temporary table on Snowflake,
   an expiring table on BigQuery, on Redshift a temporary table COPYed from S3 when a staging
   bucket is set; DuckDB and Redshift's INSERTs otherwise read the batch file as they go).
3. `replace`: delete the window's rows and insert the staged ones as one atomic unit: one
   transaction (DuckDB, Redshift, Snowflake) or one `MERGE` (BigQuery).
4. `row_count`: the table's rows as the load leaves it, Dagster's `dagster/row_count`.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

import pyarrow as pa
from dagster._core.storage.db_io_manager import TableSlice

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import EventBatch
from clevertap_assets.destinations.column_map import CLAIM_ROUNDS, COLUMN_MAP_TABLE
from clevertap_assets.destinations.common import (
    DestinationError,
    SchemaChange,
    batch_of_chunks,
    load_metadata,
    plan_schema_change,
)
from clevertap_assets.keys import ROW_COUNT
from clevertap_assets.naming import agreed_names

Staged = TypeVar("Staged")


class WindowLoad(ABC, Generic[Staged]):
    """One destination's steps of a window replacement, on one connection (see the module
    docstring); made afresh for each load."""

    def named(self, batch: EventBatch) -> EventBatch:
        """The batch with its columns named as the destination stores them."""
        return batch

    def incoming(self, batch: EventBatch) -> dict[str, Kind]:
        """The batch's columns as the table will name them."""
        return batch.columns()

    @abstractmethod
    def claim_columns(
        self, table_slice: TableSlice, claims: Mapping[str, Sequence[str]]
    ) -> dict[str, list[str]]:
        """Claim the columns (column to key path) in the schema's stored map and return the
        table's map afterwards (`column_map.claim_columns`), serialised with every other
        load's claim; the state table made if missing."""

    def begin(
        self, table_slice: TableSlice, batch: EventBatch, incoming: Mapping[str, Kind]
    ) -> None:
        """Work on the batch that needs no hold on the table, done before `existing`, which
        may lock it (Redshift uploads the rows to S3 here)."""

    @abstractmethod
    def existing(self, table_slice: TableSlice) -> dict[str, Kind]:
        """The table's columns; empty when it does not exist yet."""

    @abstractmethod
    def prepare(
        self, table_slice: TableSlice, existing: Mapping[str, Kind], change: SchemaChange
    ) -> Mapping[str, Kind]:
        """Create the table (`existing` empty) or apply the change to it; the table's
        columns afterwards (`evolved(existing, change)`, unless a concurrent load made the
        table first)."""

    @abstractmethod
    def stage(
        self, table_slice: TableSlice, batch: EventBatch, targets: Mapping[str, Kind]
    ) -> Staged:
        """Put the batch where `replace` reads it; `targets` are the table's column kinds."""

    @abstractmethod
    def replace(self, table_slice: TableSlice, staged: Staged | None) -> None:
        """Delete the window's rows and insert the staged ones, atomically; `None` only
        empties the window (a window without events now), if the table exists."""

    @abstractmethod
    def row_count(self, table_slice: TableSlice) -> int:
        """Rows in the whole table after the load; 0 if it still does not exist."""

    def metadata(self) -> dict:
        """What this destination adds to the load's metadata (values it had to fit, say)."""
        return {}


def replace_window(load: WindowLoad, table_slice: TableSlice, batch: EventBatch) -> dict:
    """Replace the window's rows with the batch's; the materialization's load metadata. The
    batch's files stay: a destination may run the load again (Redshift retries one that met
    a concurrent load), and `NamedTableDbIOManager` removes them once the output is handled."""
    batch = load.named(agreed_columns(load, table_slice, batch))
    incoming = load.incoming(batch)
    load.begin(table_slice, batch, incoming)
    existing = load.existing(table_slice)
    _check_partition_columns(table_slice, existing)
    change = plan_schema_change(existing, incoming)
    if incoming:
        targets = load.prepare(table_slice, existing, change)
        staged = load.stage(table_slice, batch, batch_targets(targets, incoming))
        load.replace(table_slice, staged)
    else:
        load.replace(table_slice, None)
    return {
        **load_metadata(batch, table_slice, change),
        **load.metadata(),
        ROW_COUNT: load.row_count(table_slice),
    }


def agreed_columns(load: WindowLoad, table_slice: TableSlice, batch: EventBatch) -> EventBatch:
    """The batch renamed to the columns stored for its keys (`naming.agreed_names`), once
    they are claimed: a key another load gave a column keeps it, and a name another key took
    meanwhile is given up for the hashed one, claimed in a further round."""
    keys = batch.column_keys
    if not keys:
        return batch
    claims = {column: list(path) for column, path in keys.items()}
    for _ in range(CLAIM_ROUNDS):
        stored = load.claim_columns(table_slice, claims)
        names = agreed_names(stored, keys)
        claims = {
            names[column]: list(path)
            for column, path in keys.items()
            if stored.get(names[column]) != list(path)
        }
        if not claims:
            return batch.renamed(names)
    raise DestinationError(
        f"table {table_slice.schema}.{table_slice.table}: the columns {sorted(claims)} are "
        f"held in {COLUMN_MAP_TABLE} by other key paths"
    )


def batch_targets(table: Mapping[str, Kind], incoming: Mapping[str, Kind]) -> dict[str, Kind]:
    """The kinds of the table's columns (`table`, evolved for the batch) that the batch's
    columns (`incoming`) go into, by the batch's names; matched case-insensitively."""
    by_lower = {name.lower(): kind for name, kind in table.items()}
    return {name: by_lower[name.lower()] for name in incoming}


def _check_partition_columns(table_slice: TableSlice, existing: Mapping[str, Kind]) -> None:
    """A table of the target's name without the partition column was not made by this
    pipeline: refused before anything in it changes."""
    names = {name.lower() for name in existing}
    for dimension in table_slice.partition_dimensions or ():
        if existing and dimension.partition_expr.lower() not in names:
            raise DestinationError(
                f"table {table_slice.schema}.{table_slice.table} exists without the partition "
                f"column {dimension.partition_expr!r}, so this pipeline did not make it; "
                "rename it, or set another TABLE_PREFIX or schema"
            )


def evolved(existing: Mapping[str, Kind], change: SchemaChange) -> dict[str, Kind]:
    """A table's columns once a schema change is applied."""
    return {**existing, **change.add, **change.widen}


def frame_batch(name: str, frame: pa.Table) -> EventBatch:
    """A DataFrame output as a batch file, so it replaces its window as events do."""
    return batch_of_chunks(name, [frame], frozenset())


def replace_window_with_frame(load: WindowLoad, table_slice: TableSlice, frame: pa.Table) -> dict:
    """`replace_window` for a DataFrame output (as Arrow), through a batch file of its own."""
    batch = frame_batch(table_slice.table, frame)
    try:
        return replace_window(load, table_slice, batch)
    finally:
        batch.discard()


class HandlerReplacesWindow:
    """Mixed into every destination's `DbClient`: the type handler replaces the window
    through `replace_window`, so Dagster's delete ahead of it is not run."""

    @staticmethod
    def delete_table_slice(context, table_slice: TableSlice, connection) -> None:
        return None

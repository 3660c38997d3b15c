"""A window replacement on DuckDB (`destinations.window`), in the load's one transaction.

DuckDB reads the batch's Parquet file itself (`INSERT ... BY NAME SELECT ... FROM
read_parquet`), so a load is columnar and never passes rows through Python.
"""

from collections.abc import Mapping, Sequence

import duckdb
from dagster._core.storage.db_io_manager import TableSlice

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import EventBatch
from clevertap_assets.destinations.column_map import (
    COLUMN_MAP_TABLE,
    CREATE_COLUMN_MAP,
    claim_columns,
)
from clevertap_assets.destinations.common import SchemaChange, window_where
from clevertap_assets.destinations.duckdb.client import (
    DUCKDB_TYPES,
    existing_columns,
    fit_memory_to_batch,
    target_name,
)
from clevertap_assets.destinations.window import WindowLoad, evolved
from clevertap_assets.naming import quote_identifier


class DuckDBWindowLoad(WindowLoad[EventBatch]):
    """DDL is transactional in DuckDB: everything runs in `TransactionalDuckDbClient`'s."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self._connection = connection
        self._exists = False
        self._width = 0

    def claim_columns(
        self, table_slice: TableSlice, claims: Mapping[str, Sequence[str]]
    ) -> dict[str, list[str]]:
        """In the load's transaction: the file's one writer holds it for the whole load, so
        nothing changes the map between the claim and the commit."""
        state = _column_map_name(table_slice)
        self._connection.execute(CREATE_COLUMN_MAP.format(state=state, text="VARCHAR"))
        return claim_columns(
            self._run, state, table_slice.table, claims, lambda name: f"${name}", "VARCHAR"
        )

    def _run(self, sql: str, parameters: Mapping[str, str]) -> list[tuple]:
        return self._connection.execute(sql, dict(parameters) or None).fetchall()

    def existing(self, table_slice: TableSlice) -> dict[str, Kind]:
        columns = existing_columns(self._connection, table_slice)
        self._exists, self._width = bool(columns), len(columns)
        return columns

    def prepare(
        self, table_slice: TableSlice, existing: Mapping[str, Kind], change: SchemaChange
    ) -> dict[str, Kind]:
        target, execute = target_name(table_slice), self._connection.execute
        if not existing:
            definition = ", ".join(
                f"{quote_identifier(n)} {DUCKDB_TYPES[k]}" for n, k in change.add.items()
            )
            execute(f"CREATE TABLE {target} ({definition})")
        else:
            for name, kind in change.add.items():
                execute(
                    f"ALTER TABLE {target} ADD COLUMN {quote_identifier(name)} {DUCKDB_TYPES[kind]}"
                )
            for name, kind in change.widen.items():
                execute(
                    f"ALTER TABLE {target} ALTER COLUMN {quote_identifier(name)} "
                    f"TYPE {DUCKDB_TYPES[kind]}"
                )
        columns = evolved(existing, change)
        self._exists, self._width = True, len(columns)
        return columns

    def stage(
        self, table_slice: TableSlice, batch: EventBatch, targets: Mapping[str, Kind]
    ) -> EventBatch:
        """Nothing to stage: the INSERT reads the batch file."""
        return batch

    def replace(self, table_slice: TableSlice, staged: EventBatch | None) -> None:
        if not self._exists:
            return
        target = target_name(table_slice)
        self._connection.execute(f"DELETE FROM {target}{window_where(table_slice)}")
        if staged is None:
            return
        casts = ", ".join(
            f"{quote_identifier(n)}::{DUCKDB_TYPES[k]} AS {quote_identifier(n)}"
            for n, k in staged.columns().items()
        )
        fit_memory_to_batch(self._connection, self._width, staged.largest_row_bytes)
        self._connection.execute(
            f"INSERT INTO {target} BY NAME SELECT {casts} FROM read_parquet(?)",
            [str(staged.path)],
        )

    def row_count(self, table_slice: TableSlice) -> int:
        if not self._exists:
            return 0
        (rows,) = self._connection.execute(
            f"SELECT count(*) FROM {target_name(table_slice)}"
        ).fetchone()
        return rows


def _column_map_name(table_slice: TableSlice) -> str:
    return target_name(table_slice._replace(table=COLUMN_MAP_TABLE))

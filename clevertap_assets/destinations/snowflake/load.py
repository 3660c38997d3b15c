"""A window replacement on Snowflake (`destinations.window`).

Every DDL statement (CREATE TABLE, ALTER TABLE, and the temporary stage `write_pandas`
creates) commits the open transaction first, so the steps are:

1. Schema evolution, each statement committing on its own: create the table, add new
   columns, widen drifting ones. All of it is additive, so the previous rows stay readable
   and intact if the run stops between statements. Snowflake cannot change NUMBER to
   VARCHAR in place, so a column is widened by add `<C>$WIDENING` (`widening_column`, within
   Snowflake's 255 characters), update, drop, rename; a run that stops midway leaves a
   `$WIDENING` column that the next load finishes (rename) or restarts (drop).
2. Staging, still outside any transaction: the batch goes into a session-scoped temporary
   table by one `write_pandas` call (its Parquet files PUT `STAGE_CHUNK_ROWS` rows at a time,
   then one COPY), JSON columns as text. A failure here leaves the table untouched, and the
   temporary table ends with the session.
3. `BEGIN; DELETE` the window; `INSERT ... SELECT` from staging with `PARSE_JSON` into
   VARIANT and casts into the (possibly widened) column types; `COMMIT`. Any error rolls
   back, so readers see the old rows of those days or the new ones, never neither.
"""

from collections.abc import Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster._core.storage.db_io_manager import TableSlice
from snowflake.connector import pandas_tools
from snowflake.connector.cursor import SnowflakeCursor

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import LOAD_CHUNK_ROWS, EventBatch
from clevertap_assets.destinations.column_map import (
    COLUMN_MAP_TABLE,
    CREATE_COLUMN_MAP,
    claim_columns,
    lock_row_sql,
)
from clevertap_assets.destinations.common import (
    SchemaChange,
    qualified_name,
    rebuild_column,
    window_where,
)
from clevertap_assets.destinations.snowflake import dialect
from clevertap_assets.destinations.snowflake.client import existing_columns, schema_name
from clevertap_assets.destinations.snowflake.dialect import (
    SNOWFLAKE_TYPES,
    converted,
    snowflake_column,
    staged_kind,
)
from clevertap_assets.destinations.window import WindowLoad, evolved
from clevertap_assets.naming import SNOWFLAKE_IDENTIFIER_BYTES, fitted_identifier, quote_identifier

# `$` never occurs in our table or column names (slugs; TABLE_PREFIX is [A-Za-z0-9_]).
STAGING_SUFFIX = "$STAGING"
WIDENING_SUFFIX = "$WIDENING"
STAGE_CHUNK_ROWS = LOAD_CHUNK_ROWS
"""Rows per Parquet file `write_pandas` PUTs to its stage; one COPY loads them all."""


class SnowflakeWindowLoad(WindowLoad[str]):
    """The steps of the module docstring, on one connection and cursor."""

    def __init__(self, connection, cursor: SnowflakeCursor) -> None:
        self._connection = connection
        self._cursor = cursor
        self._exists = False
        self._incoming: dict[str, Kind] = {}
        self._kinds: dict[str, Kind] = {}
        self._targets: dict[str, Kind] = {}

    def claim_columns(
        self, table_slice: TableSlice, claims: Mapping[str, Sequence[str]]
    ) -> dict[str, list[str]]:
        """In a transaction of its own, before the DDL that would commit it: its first
        statement updates the table's lock row, and an UPDATE holds the state table's lock
        until the COMMIT, so a concurrent claim waits and then reads this one's columns
        (https://docs.snowflake.com/en/sql-reference/transactions#resource-locking; each
        statement sees what was committed before it began, read committed). Parameters are
        bound by the connector, which escapes quotes and backslashes as Snowflake reads them."""
        state = qualified_name(table_slice._replace(table=COLUMN_MAP_TABLE.upper()))
        add_lock_row, take_lock_row = lock_row_sql(state, table_slice.table)
        self._cursor.execute(CREATE_COLUMN_MAP.format(state=state, text="VARCHAR"))
        self._cursor.execute(add_lock_row)
        self._cursor.execute("BEGIN")
        try:
            self._cursor.execute(take_lock_row)
            stored = claim_columns(
                self._run, state, table_slice.table, claims, lambda n: f"%({n})s", "VARCHAR"
            )
        except BaseException:
            self._cursor.execute("ROLLBACK")
            raise
        self._cursor.execute("COMMIT")
        return stored

    def _run(self, sql: str, parameters: Mapping[str, str]) -> list[tuple]:
        return self._cursor.execute(sql, dict(parameters) or None).fetchall()

    def incoming(self, batch: EventBatch) -> dict[str, Kind]:
        self._incoming = {snowflake_column(name): kind for name, kind in batch.columns().items()}
        return self._incoming

    def existing(self, table_slice: TableSlice) -> dict[str, Kind]:
        """The table's columns, once a widening a previous run left half done is completed
        or undone. The update is committed before the old column is dropped, so a
        `$WIDENING` column whose original is gone holds every value and only needs its name
        back; one whose original is still there may be partial and is dropped, to be widened
        again from the original. A widening column of a name too long to keep whole names
        its original only by hash: it is matched against the table's and the batch's
        columns, and left as it is while its original is in neither."""
        existing = existing_columns(self._cursor, table_slice)
        target = qualified_name(table_slice)
        originals = {widening_column(name): name for name in [*existing, *self._incoming]}
        leftovers = [name for name in existing if name.endswith(WIDENING_SUFFIX)]
        repaired = False
        for leftover in leftovers:
            original = originals.get(leftover)
            if original is None:
                continue
            repaired = True
            if original in existing:
                self._cursor.execute(
                    f"ALTER TABLE {target} DROP COLUMN {quote_identifier(leftover)}"
                )
            else:
                self._cursor.execute(
                    f"ALTER TABLE {target} RENAME COLUMN {quote_identifier(leftover)} "
                    f"TO {quote_identifier(original)}"
                )
        if repaired:
            existing = existing_columns(self._cursor, table_slice)
        self._exists = bool(existing)
        return existing

    def prepare(
        self, table_slice: TableSlice, existing: Mapping[str, Kind], change: SchemaChange
    ) -> dict[str, Kind]:
        target = qualified_name(table_slice)
        if not existing:
            definition = ", ".join(
                f"{quote_identifier(n)} {SNOWFLAKE_TYPES[k]}" for n, k in change.add.items()
            )
            self._cursor.execute(f"CREATE TABLE IF NOT EXISTS {target} ({definition})")
        else:
            for name, kind in change.add.items():
                self._cursor.execute(
                    f"ALTER TABLE {target} ADD COLUMN {quote_identifier(name)} "
                    f"{SNOWFLAKE_TYPES[kind]}"
                )
            for name, kind in change.widen.items():
                self._widen_column(target, name, existing[name], kind)
        self._exists = True
        return evolved(existing, change)

    def _widen_column(self, target: str, name: str, current: Kind, kind: Kind) -> None:
        column = quote_identifier(name)
        rebuild_column(
            self._cursor.execute,
            target,
            column,
            quote_identifier(widening_column(name)),
            SNOWFLAKE_TYPES[kind],
            converted(column, current, kind),
        )

    def stage(self, table_slice: TableSlice, batch: EventBatch, targets: Mapping[str, Kind]) -> str:
        """Copy the batch into a temporary table, JSON kept as text, by one `write_pandas`.

        The table is unqualified (Snowflake puts temporary tables in the current schema), so
        `write_pandas` finds it without a database or schema and creates its stage there too.
        """
        self._kinds, self._targets = self.incoming(batch), dict(targets)
        name = fitted_identifier(table_slice.table, SNOWFLAKE_IDENTIFIER_BYTES, STAGING_SUFFIX)
        staging = quote_identifier(name)
        self._cursor.execute(f"USE SCHEMA {schema_name(table_slice)}")
        definition = ", ".join(
            f"{quote_identifier(n)} {SNOWFLAKE_TYPES[staged_kind(k)]}"
            for n, k in self._kinds.items()
        )
        self._cursor.execute(f"CREATE OR REPLACE TEMPORARY TABLE {staging} ({definition})")
        frame = (
            pa.Table.from_batches(batch.iter_arrow(), schema=pq.read_schema(batch.path))
            .to_pandas(types_mapper=pd.ArrowDtype)
            .rename(columns=snowflake_column)
        )
        pandas_tools.write_pandas(
            self._connection,
            frame,
            table_name=name,
            chunk_size=STAGE_CHUNK_ROWS,
            quote_identifiers=True,
            use_logical_type=True,
            compression="snappy",
        )
        return staging

    def replace(self, table_slice: TableSlice, staged: str | None) -> None:
        """DELETE the window and INSERT the staged rows as one transaction."""
        if not self._exists:
            return
        target = qualified_name(table_slice)
        self._cursor.execute("BEGIN")
        try:
            self._cursor.execute(f"DELETE FROM {target}{window_where(table_slice)}")
            if staged is not None:
                names = ", ".join(quote_identifier(name) for name in self._targets)
                values = ", ".join(
                    dialect.insert_expression(name, self._kinds[name], kind)
                    for name, kind in self._targets.items()
                )
                self._cursor.execute(
                    f"INSERT INTO {target} ({names}) SELECT {values} FROM {staged}"
                )
        except BaseException:
            self._cursor.execute("ROLLBACK")
            raise
        self._cursor.execute("COMMIT")
        if staged is not None:
            self._cursor.execute(f"DROP TABLE IF EXISTS {staged}")

    def row_count(self, table_slice: TableSlice) -> int:
        if not self._exists:
            return 0
        self._cursor.execute(f"SELECT COUNT(*) FROM {qualified_name(table_slice)}")
        return self._cursor.fetchone()[0]


def widening_column(name: str) -> str:
    """The column a widening of `name` builds, within Snowflake's identifier length."""
    return fitted_identifier(name, SNOWFLAKE_IDENTIFIER_BYTES, WIDENING_SUFFIX)

"""Which key path owns which column, stored with the tables: one state table per schema.

`naming.ColumnNames` gives colliding keys (`CT Source`, `ct_source`) the plain column in the
order a run first sees them, so that order must be remembered where the data is: a new
Dagster instance, a restored backup or a second deployment writing the same warehouse would
otherwise name a key afresh and put two properties' values into one column on different days.
Each load reads the stored map and adds the columns it introduces in its own transaction,
under the hold it already takes for the window's replacement (`destinations.window`), so the
first load to commit a column wins and a run that named a key otherwise moves its batch to
the stored names before writing. Every run reads the map before it names anything
(`EventTableStats.column_keys`), so normally nothing needs to move.

One SQL text for every destination: the runs read it through `SqlEventTableStats`, a load
through its `WindowLoad.stored_columns` and `store_columns`, which give the state table's
qualified name, its text type and a way to run a statement (DuckDB's load does; the others
keep the map in the Dagster instance for now, and find no state table).
"""

from collections.abc import Callable, Mapping, Sequence

import orjson

COLUMN_MAP_TABLE = "_clevertap_columns"
"""The state table, next to the event tables in their schema (a leading `_`: no event's table
name starts so, see `naming.slug`)."""

CREATE_COLUMN_MAP = (
    "CREATE TABLE IF NOT EXISTS {state} "
    "(table_name {text} NOT NULL, column_name {text} NOT NULL, key_path {text} NOT NULL)"
)
STORED_COLUMNS = "SELECT column_name, key_path FROM {state} WHERE table_name = {table}"
STORE_COLUMNS = "INSERT INTO {state} (table_name, column_name, key_path) VALUES {rows}"


def sql_text(value: str) -> str:
    """Standard SQL's string literal, quotes doubled and backslashes plain, as DuckDB (and
    Redshift with `standard_conforming_strings`) read it: key paths are any text CleverTap
    carries. Snowflake and BigQuery read a backslash as an escape; a load of theirs that
    stores the map needs its own literal or bound parameters."""
    return "'" + value.replace("'", "''") + "'"


def stored_columns_sql(state: str, table: str) -> str:
    return STORED_COLUMNS.format(state=state, table=sql_text(table))


def column_map(rows: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """The stored rows (column, key path as JSON) as a `ColumnNames` record."""
    return {column: orjson.loads(path) for column, path in rows}


def store_columns(
    execute: Callable[[str], object],
    state: str,
    table: str,
    added: Mapping[str, Sequence[str]],
) -> None:
    """Record the columns a load introduces, in its transaction."""
    if not added:
        return
    rows = ", ".join(
        f"({sql_text(table)}, {sql_text(column)}, {sql_text(orjson.dumps(list(path)).decode())})"
        for column, path in added.items()
    )
    execute(STORE_COLUMNS.format(state=state, rows=rows))

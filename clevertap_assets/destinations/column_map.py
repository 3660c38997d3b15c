"""Which key path owns which column, stored with the tables: one state table per schema.

`naming.ColumnNames` gives colliding keys (`CT Source`, `ct_source`) the plain column in the
order a run first sees them, so that order must be remembered where the data is: a new
Dagster instance, a restored backup or a second deployment writing the same warehouse would
otherwise name a key afresh and put two properties' values into one column on different days.
Every run reads the map before it names anything (`EventTableStats.column_keys`), so normally
nothing needs to move. A load then claims its batch's columns (`WindowLoad.claim_columns`):
one statement adds each claimed column whose name and key path the stored map leaves free,
and the map is read back. The claim is serialised per destination (DuckDB: the file's one
writer; Redshift: `LOCK` of the state table; Snowflake and BigQuery: a transaction that
updates the table's lock row), so the first claim to commit a column owns it and a load whose
run named a key otherwise moves its batch to the stored names before writing
(`window.agreed_columns`).

One SQL text for every destination. Column names and key paths (any text: quotes,
backslashes, any script) are bound parameters, never literals; table names are slugs (plain
ASCII letters, digits and `_`), written as standard literals.
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
STORED_COLUMNS = (
    "SELECT column_name, key_path FROM {state} WHERE table_name = {table} AND column_name <> ''"
)
CLAIM_COLUMNS = (
    "INSERT INTO {state} (table_name, column_name, key_path) "
    "SELECT {table}, claim.column_name, claim.key_path FROM ({claims}) AS claim "
    "WHERE NOT EXISTS (SELECT 1 FROM {state} AS held WHERE held.table_name = {table} "
    "AND (held.column_name = claim.column_name OR held.key_path = claim.key_path))"
)
"""Each claimed column whose name and key path are both still free in the table's map."""
CLAIM_ROW = "SELECT CAST({column} AS {text}) AS column_name, CAST({path} AS {text}) AS key_path"
ADD_LOCK_ROW = (
    "INSERT INTO {state} (table_name, column_name, key_path) "
    "SELECT {table}, '', '[]' FROM (SELECT 1 AS one) AS seed WHERE NOT EXISTS "
    "(SELECT 1 FROM {state} WHERE table_name = {table} AND column_name = '')"
)
TAKE_LOCK_ROW = (
    "UPDATE {state} SET key_path = key_path WHERE table_name = {table} AND column_name = ''"
)
"""Where a claim needs a row to update to be serialised (Snowflake's table lock of an UPDATE,
BigQuery's conflict between transactions that mutate the same rows), each table has a lock
row (`column_name` empty; never read as a column). Two loads adding it at once leave two,
which the update takes alike."""
CLAIM_ROUNDS = 3
"""Claims a load makes at most: the second only names keys whose column another load took
meanwhile (they get the hashed name), so a third is never needed unless hashes collide."""


def sql_text(value: str) -> str:
    """Standard SQL's string literal, for a table name (a slug: no backslash, no quote, so
    every destination's dialect reads it alike)."""
    return "'" + value.replace("'", "''") + "'"


def lock_row_sql(state: str, table: str) -> tuple[str, str]:
    """The statements that add the table's lock row if missing, then take it (`TAKE_LOCK_ROW`)."""
    return (
        ADD_LOCK_ROW.format(state=state, table=sql_text(table)),
        TAKE_LOCK_ROW.format(state=state, table=sql_text(table)),
    )


def stored_columns_sql(state: str, table: str) -> str:
    return STORED_COLUMNS.format(state=state, table=sql_text(table))


def claim_sql(
    state: str, table: str, count: int, placeholder: Callable[[str], str], text: str
) -> str:
    """The claim of `count` columns, their names and key paths the parameters `column_<i>`
    and `path_<i>` (`claim_parameters`), each spelled by `placeholder`."""
    rows = " UNION ALL ".join(
        CLAIM_ROW.format(
            column=placeholder(f"column_{i}"), path=placeholder(f"path_{i}"), text=text
        )
        for i in range(count)
    )
    return CLAIM_COLUMNS.format(state=state, table=sql_text(table), claims=rows)


def claim_parameters(claims: Mapping[str, Sequence[str]]) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for i, (column, path) in enumerate(claims.items()):
        parameters[f"column_{i}"] = column
        parameters[f"path_{i}"] = key_path_text(path)
    return parameters


def key_path_text(path: Sequence[str]) -> str:
    """A key path as stored: compact JSON, so one path is always the same text."""
    return orjson.dumps(list(path)).decode()


def column_map(rows: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """The stored rows (column, key path as JSON) as a `ColumnNames` record."""
    return {column: orjson.loads(path) for column, path in rows}


def claim_columns(
    run: Callable[[str, Mapping[str, str]], list[tuple]],
    state: str,
    table: str,
    claims: Mapping[str, Sequence[str]],
    placeholder: Callable[[str], str],
    text: str,
) -> dict[str, list[str]]:
    """Claim the columns (`claims`, column to key path) and read the table's map back, on a
    connection the caller holds serialised; `run` executes a statement with its parameters
    and returns its rows (none for the INSERT)."""
    if claims:
        run(claim_sql(state, table, len(claims), placeholder, text), claim_parameters(claims))
    return column_map(run(stored_columns_sql(state, table), {}))

"""Dagster's Snowflake client with our names, and the catalog lookups every load makes."""

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import InputContext, OutputContext
from dagster._core.storage.db_io_manager import TableSlice
from dagster_snowflake.snowflake_io_manager import SnowflakeDbClient
from snowflake.connector.cursor import SnowflakeCursor

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.destinations.common import NamedTableDbIOManager, qualified_name
from clevertap_assets.destinations.snowflake.dialect import catalog_kind
from clevertap_assets.destinations.window import HandlerReplacesWindow
from clevertap_assets.naming import quote_identifier

SESSION_TIMEZONE = "ALTER SESSION SET TIMEZONE = 'UTC'"
"""A `TIMESTAMP_TZ` value given without an offset (the UTC instants `write_pandas` stages)
takes the session's TIMEZONE, whose default is America/Los_Angeles
(https://docs.snowflake.com/en/sql-reference/parameters#timezone): in UTC, `event_time_utc`
keeps offset +00:00, so its `::DATE` and its text are UTC's whatever the account's zone."""


def upper_case(table_slice: TableSlice) -> TableSlice:
    return table_slice._replace(
        database=table_slice.database.upper() if table_slice.database else None,
        schema=table_slice.schema.upper(),
        table=table_slice.table.upper(),
    )


class UpperCaseNamedTableDbIOManager(NamedTableDbIOManager):
    """The prefixed table name, spelled as Snowflake stores an unquoted name: in upper case, so
    Dagster's unquoted SELECT for DataFrame inputs finds the tables this handler creates."""

    def _get_table_slice(
        self, context: OutputContext | InputContext, output_context: OutputContext
    ) -> TableSlice:
        return upper_case(super()._get_table_slice(context, output_context))


class SnowflakeEventDbClient(HandlerReplacesWindow, SnowflakeDbClient):
    """Dagster's Snowflake client; the window is replaced by `destinations.window`."""

    @staticmethod
    @contextmanager
    def connect(context, table_slice: TableSlice) -> Iterator:
        """Dagster's connection, also closed when the load fails, so the session (and any
        open transaction and temporary table) ends at once rather than at garbage collection.
        Its time zone is UTC (`SESSION_TIMEZONE`) whatever the account's is."""
        with SnowflakeDbClient.connect(context, table_slice) as connection:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(SESSION_TIMEZONE)
                yield connection
            except BaseException:
                connection.close()
                raise

    @staticmethod
    def ensure_schema_exists(context: OutputContext, table_slice: TableSlice, connection) -> None:
        with connection.cursor() as cursor:
            ensure_schema(cursor, table_slice.database, table_slice.schema)


def schema_name(table_slice: TableSlice) -> str:
    return qualified_name(table_slice._replace(table=""))


def ensure_schema(cursor: SnowflakeCursor, database: str | None, schema: str) -> bool:
    """Create the schema unless it exists; whether it was created. Looked up first: a role
    may use a schema it has no privilege to create."""
    cursor.execute(
        f"SELECT COUNT(*) FROM {_information_schema(database)}.SCHEMATA WHERE SCHEMA_NAME = %s",
        (schema,),
    )
    if cursor.fetchone()[0] > 0:
        return False
    target = TableSlice(table="", schema=schema, database=database)
    cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {schema_name(target)}")
    return True


def _information_schema(database: str | None) -> str:
    return f"{quote_identifier(database)}.INFORMATION_SCHEMA" if database else "INFORMATION_SCHEMA"


def existing_columns(cursor: SnowflakeCursor, table_slice: TableSlice) -> dict[str, Kind]:
    """The table's columns, in order; empty when it does not exist. Read from
    INFORMATION_SCHEMA rather than from error text, which differs between servers."""
    cursor.execute(
        "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_SCALE "
        f"FROM {_information_schema(table_slice.database)}.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (table_slice.schema, table_slice.table),
    )
    return {name: catalog_kind(data_type, scale) for name, data_type, scale in cursor.fetchall()}

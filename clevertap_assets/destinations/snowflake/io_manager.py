"""Snowflake: Dagster's Snowflake IO manager, with CleverTap batches loaded in one transaction.

Dagster's `DbIOManager` deletes the partition window and then hands the output to a type
handler on the same connection. On Snowflake that order cannot be atomic: every DDL
statement (CREATE TABLE, ALTER TABLE, and the temporary stage `write_pandas` creates)
commits the open transaction first. So the window's DELETE moves from the client into the
handler, which works in this order:

1. Schema evolution, each statement committing on its own: create the table, add new
   columns, widen drifting ones. All of it is additive, so the previous rows stay readable
   and intact if the run stops between statements. Snowflake cannot change NUMBER to
   VARCHAR in place, so a column is widened by add `<C>$WIDENING`, update, drop, rename; a
   run that stops midway leaves a `$WIDENING` column that the next load finishes (rename)
   or restarts (drop).
2. Staging, still outside any transaction: the batch goes chunk by chunk
   (`EventBatch.iter_arrow` -> pandas -> `write_pandas`, i.e. Parquet + PUT + COPY) into a
   session-scoped temporary table, JSON columns as text. A failure here leaves the table
   untouched, and the temporary table ends with the session.
3. `BEGIN; DELETE` the window; `INSERT ... SELECT` from staging with `PARSE_JSON` into
   VARIANT and casts into the (possibly widened) column types; `COMMIT`. Any error rolls
   back, so readers see the old rows of those days or the new ones, never neither.

Names: Snowflake folds unquoted identifiers to upper case, and Dagster's own Snowflake
pandas handler writes upper-case names and reads them back lower-cased. So database,
schema, table and column names are stored in upper case (DuckDB's names, upper-cased): a
plain `select event_time from clevertap.charged` works, and a downstream asset loading an
event table as a pandas DataFrame gets DuckDB's lower-case column names.
"""

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, timedelta

import pandas as pd
from dagster import ConfigurableResource, EnvVar, InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_snowflake import SnowflakeResource
from dagster_snowflake.snowflake_io_manager import SnowflakeDbClient, partition_where_clause
from dagster_snowflake_pandas import SnowflakePandasIOManager, SnowflakePandasTypeHandler
from snowflake.connector import pandas_tools
from snowflake.connector.cursor import SnowflakeCursor
from snowflake.connector.errors import Error as SnowflakeError

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import EventBatch
from clevertap_assets.days import days_between
from clevertap_assets.destinations.common import (
    NamedTableDbIOManager,
    SchemaChange,
    load_metadata,
    plan_schema_change,
    qualified_name,
)
from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.keys import WAREHOUSE_IO_MANAGER, WAREHOUSE_STATS
from clevertap_assets.naming import SNOWFLAKE_COLUMNS, destination_column, quote_identifier
from clevertap_assets.settings import PipelineSettings, SettingsError

MAX_VARCHAR_LENGTH = 134_217_728
"""An unlengthed VARCHAR holds 16,777,216 characters; up to 128 MB needs the length spelled
out (https://docs.snowflake.com/en/sql-reference/data-types-text#varchar), and rows of up to
MAX_ROW_BYTES (100 MB) reach here."""
SNOWFLAKE_TYPES = {
    Kind.BOOLEAN: "BOOLEAN",
    Kind.BIGINT: "NUMBER(38,0)",
    Kind.DOUBLE: "FLOAT",
    Kind.TIMESTAMP: "TIMESTAMP_NTZ",
    Kind.TIMESTAMPTZ: "TIMESTAMP_TZ",
    Kind.TEXT: f"VARCHAR({MAX_VARCHAR_LENGTH})",
    Kind.JSON: "VARIANT",
}
TEXT_FORMATS = {
    Kind.TIMESTAMP: "YYYY-MM-DD HH24:MI:SS.FF6",
    Kind.TIMESTAMPTZ: "YYYY-MM-DD HH24:MI:SS.FF6 TZH:TZM",
}
"""Timestamps widened to text keep their microseconds: Snowflake's default output format
(TIMESTAMP_OUTPUT_FORMAT) shows none
(https://docs.snowflake.com/en/sql-reference/functions/to_char)."""
# INFORMATION_SCHEMA.COLUMNS.DATA_TYPE; NUMBER with a scale is told apart in `_kind`.
_KINDS_BY_TYPE = {
    "BOOLEAN": Kind.BOOLEAN,
    "NUMBER": Kind.BIGINT,
    "FLOAT": Kind.DOUBLE,
    "TIMESTAMP_NTZ": Kind.TIMESTAMP,
    "TIMESTAMP_TZ": Kind.TIMESTAMPTZ,
    "TIMESTAMP_LTZ": Kind.TIMESTAMPTZ,
    "TEXT": Kind.TEXT,
    "VARIANT": Kind.JSON,
}
# `$` never occurs in our table or column names (slugs; TABLE_PREFIX is [A-Za-z0-9_]).
STAGING_SUFFIX = "$STAGING"
WIDENING_SUFFIX = "$WIDENING"

REQUIRED_VARIABLES = {
    "SNOWFLAKE_ACCOUNT": "account",
    "SNOWFLAKE_USER": "user",
    "SNOWFLAKE_DATABASE": "database",
}
AUTH_VARIABLES = {
    "SNOWFLAKE_PASSWORD": "password",
    "SNOWFLAKE_PRIVATE_KEY": "private_key",
    "SNOWFLAKE_PRIVATE_KEY_PATH": "private_key_path",
}
OPTIONAL_VARIABLES = {
    "SNOWFLAKE_WAREHOUSE": "warehouse",
    "SNOWFLAKE_ROLE": "role",
    "SNOWFLAKE_PRIVATE_KEY_PASSWORD": "private_key_password",
}


class SnowflakeCheckError(RuntimeError):
    """The destination check failed; the message says why, without any secret."""


def _upper_case(table_slice: TableSlice) -> TableSlice:
    return table_slice._replace(
        database=table_slice.database.upper() if table_slice.database else None,
        schema=table_slice.schema.upper(),
        table=table_slice.table.upper(),
    )


class UpperCaseNamedTableDbIOManager(NamedTableDbIOManager):
    """Hevo's table name, spelled as Snowflake stores an unquoted name: in upper case, so
    Dagster's unquoted SELECT for DataFrame inputs finds the tables this handler creates."""

    def _get_table_slice(
        self, context: OutputContext | InputContext, output_context: OutputContext
    ) -> TableSlice:
        return _upper_case(super()._get_table_slice(context, output_context))


class SnowflakeEventDbClient(SnowflakeDbClient):
    """Dagster's Snowflake client, minus the window DELETE, which the type handlers run
    themselves once their DDL is done (see the module docstring)."""

    @staticmethod
    @contextmanager
    def connect(context, table_slice: TableSlice) -> Iterator:
        """Dagster's connection, also closed when the load fails, so the session (and any
        open transaction and temporary table) ends at once rather than at garbage collection."""
        with SnowflakeDbClient.connect(context, table_slice) as connection:
            try:
                yield connection
            except BaseException:
                connection.close()
                raise

    @staticmethod
    def ensure_schema_exists(context: OutputContext, table_slice: TableSlice, connection) -> None:
        # Looked up first: a role may use a schema it has no privilege to create.
        with connection.cursor() as cursor:
            if not _schema_exists(cursor, table_slice.database, table_slice.schema):
                cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {_schema_name(table_slice)}")

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        """Deferred to the type handler's transaction."""


def _schema_name(table_slice: TableSlice) -> str:
    return qualified_name(table_slice._replace(table=""))


def _schema_exists(cursor: SnowflakeCursor, database: str | None, schema: str) -> bool:
    cursor.execute(
        f"SELECT COUNT(*) FROM {_information_schema(database)}.SCHEMATA WHERE SCHEMA_NAME = %s",
        (schema,),
    )
    return cursor.fetchone()[0] > 0


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
    return {name: _kind(data_type, scale) for name, data_type, scale in cursor.fetchall()}


def _kind(data_type: str, scale: int | None) -> Kind:
    if data_type == "NUMBER" and scale:
        return Kind.DOUBLE
    return _KINDS_BY_TYPE.get(data_type, Kind.TEXT)


def _delete_window(cursor: SnowflakeCursor, table_slice: TableSlice) -> None:
    statement = f"DELETE FROM {qualified_name(table_slice)}"
    if table_slice.partition_dimensions:
        statement += " WHERE " + partition_where_clause(table_slice.partition_dimensions)
    cursor.execute(statement)


class EventBatchSnowflakeTypeHandler(DbTypeHandler[EventBatch]):
    """Evolves the event table, stages the batch, then replaces the window in one transaction."""

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: EventBatch, connection
    ) -> dict:
        try:
            with connection.cursor() as cursor:
                return self._load(connection, cursor, table_slice, obj)
        finally:
            obj.discard()

    def _load(
        self, connection, cursor: SnowflakeCursor, table_slice: TableSlice, batch: EventBatch
    ) -> dict:
        incoming = {snowflake_column(name): kind for name, kind in batch.columns().items()}
        existing = _finish_interrupted_widening(cursor, table_slice)
        change = plan_schema_change(existing, incoming)
        if not incoming:
            if existing:
                _replace_window(cursor, table_slice, None, {}, {})
            return load_metadata(batch, table_slice, change)
        if existing:
            _evolve(cursor, table_slice, existing, change)
        else:
            _create(cursor, qualified_name(table_slice), incoming)
        staging = _stage(connection, cursor, table_slice, batch, incoming)
        targets = {
            name: change.widen.get(name, existing.get(name, kind))
            for name, kind in incoming.items()
        }
        _replace_window(cursor, table_slice, staging, targets, incoming)
        cursor.execute(f"DROP TABLE IF EXISTS {staging}")
        return load_metadata(batch, table_slice, change)

    def load_input(self, context: InputContext, table_slice: TableSlice, connection) -> EventBatch:
        raise TypeError(
            f"{table_slice.table}: on Snowflake, load event tables as pandas DataFrames "
            "(annotate the input as pd.DataFrame), not as EventBatch"
        )

    @property
    def supported_types(self) -> Sequence[type]:
        return [EventBatch]


def _create(cursor: SnowflakeCursor, target: str, columns: Mapping[str, Kind]) -> None:
    definition = ", ".join(
        f"{quote_identifier(n)} {SNOWFLAKE_TYPES[k]}" for n, k in columns.items()
    )
    cursor.execute(f"CREATE TABLE IF NOT EXISTS {target} ({definition})")


def _finish_interrupted_widening(
    cursor: SnowflakeCursor, table_slice: TableSlice
) -> dict[str, Kind]:
    """Complete or undo a widening a previous run left half done; returns the columns.

    The update is committed before the old column is dropped, so a `$WIDENING` column whose
    original is gone holds every value and only needs its name back; one whose original is
    still there may be partial and is dropped, to be widened again from the original.
    """
    existing = existing_columns(cursor, table_slice)
    leftovers = [name for name in existing if name.endswith(WIDENING_SUFFIX)]
    target = qualified_name(table_slice)
    for leftover in leftovers:
        original = leftover.removesuffix(WIDENING_SUFFIX)
        if original in existing:
            cursor.execute(f"ALTER TABLE {target} DROP COLUMN {quote_identifier(leftover)}")
        else:
            cursor.execute(
                f"ALTER TABLE {target} RENAME COLUMN {quote_identifier(leftover)} "
                f"TO {quote_identifier(original)}"
            )
    return existing_columns(cursor, table_slice) if leftovers else existing


def snowflake_column(name: str) -> str:
    """A batch column's name in Snowflake: upper case (see the module docstring), within
    Snowflake's length (`SNOWFLAKE_COLUMNS`)."""
    return destination_column(name, SNOWFLAKE_COLUMNS).upper()


def _evolve(
    cursor: SnowflakeCursor,
    table_slice: TableSlice,
    existing: Mapping[str, Kind],
    change: SchemaChange,
) -> None:
    target = qualified_name(table_slice)
    for name, kind in change.add.items():
        cursor.execute(
            f"ALTER TABLE {target} ADD COLUMN {quote_identifier(name)} {SNOWFLAKE_TYPES[kind]}"
        )
    for name, kind in change.widen.items():
        _widen_column(cursor, target, name, existing[name], kind)


def converted(column: str, current: Kind, target: Kind) -> str:
    """A column's values as the target kind. Text keeps what `::VARCHAR` would lose: a
    timestamp's microseconds and a VARIANT string's quotes (TO_JSON writes JSON text)."""
    if target == Kind.TEXT and current == Kind.JSON:
        return f"TO_JSON({column})"
    if target == Kind.TEXT and current in TEXT_FORMATS:
        return f"TO_VARCHAR({column}, '{TEXT_FORMATS[current]}')"
    return f"{column}::{SNOWFLAKE_TYPES[target]}"


def _widen_column(
    cursor: SnowflakeCursor, target: str, name: str, current: Kind, kind: Kind
) -> None:
    column = quote_identifier(name)
    widened = quote_identifier(name + WIDENING_SUFFIX)
    cursor.execute(f"ALTER TABLE {target} ADD COLUMN {widened} {SNOWFLAKE_TYPES[kind]}")
    cursor.execute(f"UPDATE {target} SET {widened} = {converted(column, current, kind)}")
    cursor.execute(f"ALTER TABLE {target} DROP COLUMN {column}")
    cursor.execute(f"ALTER TABLE {target} RENAME COLUMN {widened} TO {column}")


def _stage(
    connection,
    cursor: SnowflakeCursor,
    table_slice: TableSlice,
    batch: EventBatch,
    columns: Mapping[str, Kind],
) -> str:
    """Copy the batch into a temporary table, chunk by chunk, with JSON kept as text.

    The table is unqualified (Snowflake puts temporary tables in the current schema), so
    `write_pandas` finds it without a database or schema and creates its stage there too.
    """
    name = table_slice.table + STAGING_SUFFIX
    staging = quote_identifier(name)
    cursor.execute(f"USE SCHEMA {_schema_name(table_slice)}")
    definition = ", ".join(
        f"{quote_identifier(n)} {SNOWFLAKE_TYPES[Kind.TEXT if k == Kind.JSON else k]}"
        for n, k in columns.items()
    )
    cursor.execute(f"CREATE OR REPLACE TEMPORARY TABLE {staging} ({definition})")
    for chunk in batch.iter_arrow():
        frame = chunk.to_pandas(types_mapper=pd.ArrowDtype).rename(columns=snowflake_column)
        pandas_tools.write_pandas(
            connection,
            frame,
            table_name=name,
            quote_identifiers=True,
            use_logical_type=True,
            compression="snappy",
        )
    return staging


def _replace_window(
    cursor: SnowflakeCursor,
    table_slice: TableSlice,
    staging: str | None,
    targets: Mapping[str, Kind],
    staged: Mapping[str, Kind],
) -> None:
    """DELETE the window and INSERT the staged rows as one transaction; `staging=None`
    only empties the window (a day that now has no events)."""
    cursor.execute("BEGIN")
    try:
        _delete_window(cursor, table_slice)
        if staging is not None:
            names = ", ".join(quote_identifier(name) for name in targets)
            values = ", ".join(
                _insert_expression(name, staged[name], kind) for name, kind in targets.items()
            )
            cursor.execute(
                f"INSERT INTO {qualified_name(table_slice)} ({names}) "
                f"SELECT {values} FROM {staging}"
            )
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    cursor.execute("COMMIT")


def _insert_expression(name: str, staged: Kind, target: Kind) -> str:
    """A JSON target column is only ever fed JSON text (anything else widened it to TEXT),
    staged as text; anything else is converted as a widening converts it."""
    column = quote_identifier(name)
    if target == Kind.JSON:
        return f"PARSE_JSON({column})"
    return converted(column, Kind.TEXT if staged == Kind.JSON else staged, target)


class WindowReplacingPandasTypeHandler(SnowflakePandasTypeHandler):
    """Dagster's pandas handler, with the window DELETE its client no longer runs for it,
    so a DataFrame asset on this IO manager still replaces its partitions."""

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection
    ):
        with connection.cursor() as cursor:
            if existing_columns(cursor, table_slice):
                _delete_window(cursor, table_slice)
        return super().handle_output(context, table_slice, obj, connection)


class SnowflakeEventIOManager(SnowflakePandasIOManager):
    """Dagster's Snowflake + pandas IO manager (its connection settings, key-pair auth and
    DataFrame inputs), with CleverTap batches, one transaction per window and Hevo's names."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [EventBatchSnowflakeTypeHandler(), WindowReplacingPandasTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return UpperCaseNamedTableDbIOManager(
            db_client=SnowflakeEventDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="SnowflakeEventIOManager",
        )


class SnowflakeEventStats(ConfigurableResource, EventTableStats):
    """Counts for checks and reconciliation, over Dagster's Snowflake resource."""

    snowflake: SnowflakeResource

    def daily_row_counts(
        self, schema: str, table: str, first_day: date, last_day: date
    ) -> dict[date, int]:
        counts = dict.fromkeys(days_between(first_day, last_day), 0)
        with self._cursor() as cursor:
            table_slice = self._table_slice(schema, table)
            if not existing_columns(cursor, table_slice):
                return counts
            cursor.execute(
                f"SELECT CAST(EVENT_TIME AS DATE), COUNT(*) FROM {qualified_name(table_slice)} "
                "WHERE EVENT_TIME >= %s AND EVENT_TIME < %s GROUP BY 1",
                (first_day.isoformat(), (last_day + timedelta(days=1)).isoformat()),
            )
            return {**counts, **dict(cursor.fetchall())}

    def duplicate_record_ids(self, schema: str, table: str) -> int:
        with self._cursor() as cursor:
            table_slice = self._table_slice(schema, table)
            if not existing_columns(cursor, table_slice):
                return 0
            cursor.execute(
                f"SELECT COUNT(*) - COUNT(DISTINCT _RECORD_ID) FROM {qualified_name(table_slice)}"
            )
            return cursor.fetchone()[0]

    def _table_slice(self, schema: str, table: str) -> TableSlice:
        return _upper_case(TableSlice(table=table, schema=schema, database=self.snowflake.database))

    @contextmanager
    def _cursor(self) -> Iterator[SnowflakeCursor]:
        with self.snowflake.get_connection() as connection, connection.cursor() as cursor:
            yield cursor


def snowflake_connection_config() -> dict[str, str]:
    """Connection fields for Dagster's Snowflake resource and IO manager, as `EnvVar`s.

    Only variables that are set are passed (an unset `EnvVar` fails the run), and what is
    missing is reported all at once, when the definitions load.
    """
    missing = [name for name in REQUIRED_VARIABLES if not os.environ.get(name)]
    auth = [name for name in AUTH_VARIABLES if os.environ.get(name)]
    if not auth:
        missing.append(f"one of {' / '.join(AUTH_VARIABLES)}")
    if missing:
        raise SettingsError(
            f"DESTINATION=snowflake needs these environment variables set: {', '.join(missing)}"
        )
    if len(auth) > 1:
        raise SettingsError(
            f"set only one of {', '.join(AUTH_VARIABLES)} for Snowflake, not {' and '.join(auth)}"
        )
    fields = {**REQUIRED_VARIABLES, **AUTH_VARIABLES, **OPTIONAL_VARIABLES}
    return {field: EnvVar(name) for name, field in fields.items() if os.environ.get(name)}


def build_snowflake_resources(settings: PipelineSettings) -> dict[str, object]:
    connection = snowflake_connection_config()
    return {
        WAREHOUSE_IO_MANAGER: SnowflakeEventIOManager(
            schema=settings.warehouse_schema, **connection
        ),
        WAREHOUSE_STATS: SnowflakeEventStats(snowflake=SnowflakeResource(**connection)),
    }


def check_snowflake_destination(settings: PipelineSettings) -> str:
    """Log in, use the warehouse, and make sure the schema exists (creating it if the role
    may), so a first run fails here rather than after reading CleverTap."""
    connection = {
        field: value.get_value() for field, value in snowflake_connection_config().items()
    }
    database, schema = connection["database"].upper(), settings.warehouse_schema.upper()
    target = TableSlice(table="", schema=schema, database=database)
    try:
        with (
            SnowflakeResource(**connection).get_connection() as session,
            session.cursor() as cursor,
        ):
            cursor.execute("SELECT CURRENT_USER(), CURRENT_ROLE()")
            user, role = cursor.fetchone()
            if "warehouse" in connection:
                cursor.execute(f"USE WAREHOUSE {quote_identifier(connection['warehouse'].upper())}")
            created = not _schema_exists(cursor, database, schema)
            if created:
                cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {_schema_name(target)}")
    except SnowflakeError as exc:
        raise SnowflakeCheckError(f"Snowflake check failed: {exc.msg}") from None
    state = "created" if created else "present"
    return (
        f"Snowflake OK: user {user}, role {role}, warehouse {connection.get('warehouse', '(default)')}, "
        f"schema {database}.{schema} {state}"
    )

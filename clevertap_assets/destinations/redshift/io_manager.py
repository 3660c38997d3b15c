"""Amazon Redshift: a small IO manager of ours over psycopg 3, since Dagster ships none.

Redshift speaks PostgreSQL's protocol but only part of its SQL, so everything here keeps to
what Redshift documents: `CREATE ... IF NOT EXISTS`, a range `DELETE`, multi-row `INSERT`,
one `ALTER TABLE` per column, plain `BEGIN`/`COMMIT` (no savepoints), no `ON CONFLICT`, no
`COPY FROM STDIN` and no `ALTER COLUMN ... TYPE`. Rows travel as multi-row INSERTs of bounded
size, read chunk by chunk from the batch's Parquet file; loads far beyond a few million rows a
day would stage the Parquet in S3 and `COPY` it (future work).

Redshift's `VARCHAR` holds at most 65,535 bytes (its `TEXT` is only `VARCHAR(256)`), so text
columns are `VARCHAR(65535)`; longer text is cut at a character boundary. JSON goes into
`SUPER`, which holds up to 16 MB; larger JSON is stored as NULL. Both are counted in the
materialization metadata.

Names: Redshift folds identifiers to lower case, quoted ones too, unless
`enable_case_sensitive_identifier` is on (off by default), and its catalog answers in lower
case. So every schema, table and column name is lower-cased here before it is used, or a
`TABLE_PREFIX=CT` table would be created as `ct_charged` and then not found by its catalog
lookup for `CT_charged`.

Concurrency: provisioned clusters created before mid-2024 run every transaction
SERIALIZABLE. Two loads of one event at once (a schedule tick beside a backfill) would then
fail one of them with a serializable isolation violation (error 1023). As AWS documents, each
load locks its table as the first statement of its transaction, and a load that still meets
a conflict (or a concurrent first load's `CREATE`) is retried from the start, a few times
with a growing, jittered pause.
"""

import os
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import date, timedelta
from itertools import chain, islice

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import (
    ConfigurableIOManagerFactory,
    ConfigurableResource,
    EnvVar,
    InputContext,
    OutputContext,
)
from dagster._core.storage.db_io_manager import DbClient, DbIOManager, DbTypeHandler, TableSlice
from pydantic import Field

from clevertap_assets.batch.kinds import Kind, kind_of
from clevertap_assets.batch.spool import LOAD_CHUNK_ROWS, EventBatch, batch_file_path
from clevertap_assets.days import days_between
from clevertap_assets.destinations.common import (
    EventTableStats,
    NamedTableDbIOManager,
    SchemaChange,
    load_metadata,
    plan_schema_change,
    qualified_name,
    window_where,
)
from clevertap_assets.keys import WAREHOUSE_IO_MANAGER, WAREHOUSE_STATS
from clevertap_assets.naming import (
    REDSHIFT_COLUMNS,
    ColumnRules,
    destination_column,
    quote_identifier,
)
from clevertap_assets.settings import PipelineSettings, SettingsError

MAX_VARCHAR_BYTES = 65_535
MAX_SUPER_BYTES = 16 * 1024 * 1024
"""SUPER's limit per value (https://docs.aws.amazon.com/redshift/latest/dg/limitations-super.html)."""
# Redshift's bind-parameter ceiling per statement (PostgreSQL's is 65,535).
MAX_BIND_PARAMETERS = 32_767
# Redshift refuses statements over 16 MB; stay well below it, estimated from Arrow sizes.
MAX_STATEMENT_BYTES = 8 * 1024 * 1024
DEFAULT_INSERT_ROWS = 2_000
_WIDENING_COLUMN = "_clevertap_widening"

REDSHIFT_TYPES = {
    Kind.BOOLEAN: "BOOLEAN",
    Kind.BIGINT: "BIGINT",
    Kind.DOUBLE: "DOUBLE PRECISION",
    Kind.TIMESTAMP: "TIMESTAMP",
    Kind.TIMESTAMPTZ: "TIMESTAMPTZ",
    Kind.TEXT: f"VARCHAR({MAX_VARCHAR_BYTES})",
}
_KINDS_BY_CATALOG_TYPE = {
    "boolean": Kind.BOOLEAN,
    "bigint": Kind.BIGINT,
    "double precision": Kind.DOUBLE,
    "timestamp without time zone": Kind.TIMESTAMP,
    "timestamp with time zone": Kind.TIMESTAMPTZ,
    "character varying": Kind.TEXT,
}
_ARROW_TYPES = {
    Kind.BOOLEAN: pa.bool_(),
    Kind.BIGINT: pa.int64(),
    Kind.DOUBLE: pa.float64(),
    Kind.TIMESTAMP: pa.timestamp("us"),
    Kind.TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
    Kind.TEXT: pa.string(),
    Kind.JSON: pa.string(),
}
REQUIRED_VARIABLES = {
    "REDSHIFT_HOST": "the cluster or workgroup endpoint, without port",
    "REDSHIFT_DATABASE": "the database to load into",
    "REDSHIFT_USER": "a user that may create schemas and tables there",
    "REDSHIFT_PASSWORD": "that user's password",
}
PASSWORD_VARIABLE = "REDSHIFT_PASSWORD"


LOAD_ATTEMPTS = 5
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0
_CONFLICT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "23505",  # unique_violation: two first loads creating one schema or table in the catalog
        "42P06",  # duplicate_schema
        "42P07",  # duplicate_table
    }
)


class RedshiftConnectionError(ConnectionError):
    """Redshift could not be reached or refused the login; the message names the endpoint."""


class RedshiftConnection(ConfigurableResource):
    """Where and as whom to connect; shared by the IO manager and the stats reader."""

    host: str
    port: int = 5439
    database: str
    user: str
    password: str = Field(repr=False, description="Pass as EnvVar('REDSHIFT_PASSWORD').")
    sslmode: str = Field("require", description="libpq sslmode; Redshift accepts TLS.")
    connect_timeout_seconds: int = 30

    def connect(self) -> psycopg.Connection:
        """A connection with an implicit transaction. Automatic prepared statements are off:
        psycopg would DEALLOCATE them in ways Redshift does not support."""
        try:
            return psycopg.connect(
                host=self.host,
                port=self.port,
                dbname=self.database,
                user=self.user,
                password=self.password,
                sslmode=self.sslmode,
                connect_timeout=self.connect_timeout_seconds,
                application_name="clevertap_assets",
                prepare_threshold=None,
            )
        except psycopg.OperationalError as exc:
            reason = str(exc).replace(self.password, "***") if self.password else str(exc)
            raise RedshiftConnectionError(
                f"could not connect to Redshift {self.describe()}: {reason.strip()}"
            ) from None

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True)
class RedshiftDialect:
    """Redshift's SQL for each kind, and its rules for column names."""

    columns: ColumnRules = REDSHIFT_COLUMNS
    json_type: str = "SUPER"
    json_parse: str = "JSON_PARSE(%s)"
    json_serialize: str = "JSON_SERIALIZE({column})"

    def column_type(self, kind: Kind) -> str:
        return self.json_type if kind == Kind.JSON else REDSHIFT_TYPES[kind]

    def kind_of_catalog_type(self, data_type: str) -> Kind:
        if data_type.lower() == self.json_type.lower():
            return Kind.JSON
        return _KINDS_BY_CATALOG_TYPE.get(data_type.lower(), Kind.TEXT)

    def placeholder(self, kind: Kind) -> str:
        """Parameters go in text format (`%t`), which every Redshift release reads, rather
        than the binary format psycopg picks for numbers and timestamps by default."""
        return self.json_parse.replace("%s", "%t") if kind == Kind.JSON else "%t"

    def as_text(self, column: str, kind: Kind) -> str:
        """A column's values as text, spelled as DuckDB casts them (`true`, `10`, `1.5`)."""
        if kind == Kind.JSON:
            return self.json_serialize.format(column=column)
        if kind == Kind.BOOLEAN:
            return f"CASE WHEN {column} THEN 'true' WHEN NOT {column} THEN 'false' END"
        return f"CAST({column} AS {REDSHIFT_TYPES[Kind.TEXT]})"

    def converted(self, column: str, old: Kind, new: Kind) -> str:
        """The expression that moves a column's values to its widened kind."""
        if new == Kind.TEXT:
            return self.as_text(column, old)
        return f"CAST({column} AS {self.column_type(new)})"


def table_columns(connection: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """Column name to catalog type, in table order; empty when the table does not exist. A
    column of a domain type reports the domain's name (how PostgreSQL-based stand-ins spell
    `SUPER`); Redshift's own types have no domain."""
    rows = connection.execute(
        "SELECT column_name, COALESCE(domain_name, data_type) FROM information_schema.columns "
        "WHERE table_schema = %t AND table_name = %t ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    return dict(rows)


def existing_kinds(
    connection: psycopg.Connection, dialect: RedshiftDialect, table_slice: TableSlice
) -> dict[str, Kind]:
    columns = table_columns(connection, table_slice.schema, table_slice.table)
    return {name: dialect.kind_of_catalog_type(data_type) for name, data_type in columns.items()}


def _target(table_slice: TableSlice) -> str:
    """Schema-qualified only: Redshift writes cannot name another database."""
    return qualified_name(table_slice._replace(database=None))


def lower_case(table_slice: TableSlice) -> TableSlice:
    """Names as Redshift stores them (see the module docstring)."""
    return table_slice._replace(
        schema=table_slice.schema.lower(),
        table=table_slice.table.lower(),
        columns=[column.lower() for column in table_slice.columns or []] or None,
    )


def schema_exists(connection: psycopg.Connection, schema: str) -> bool:
    return bool(
        connection.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %t", [schema]
        ).fetchone()
    )


def create_schema(connection: psycopg.Connection, schema: str) -> None:
    """Create the schema if missing and commit. Looked up first, since a user may use a
    schema it may not create. Several loads creating it at the same moment race in the
    catalog even with `IF NOT EXISTS`: one wins, the others fail on a duplicate key and find
    the winner's schema there."""
    if not schema_exists(connection, schema):
        try:
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}")
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
            connection.rollback()
            if not schema_exists(connection, schema):
                raise
    connection.commit()


def is_concurrency_conflict(error: psycopg.Error) -> bool:
    """A load that failed only because another one ran beside it, and may simply run again."""
    message = str(error).lower()
    return error.sqlstate in _CONFLICT_SQLSTATES or "serializable isolation violation" in message


class RedshiftDbClient(DbClient):
    """One transaction per load: the table's LOCK, the window's DELETE, any schema change and
    every INSERT commit together or not at all, so a failed load leaves the previous rows in
    place and two loads of one table run one after the other."""

    def __init__(self, connection: RedshiftConnection) -> None:
        self._connection = connection

    @contextmanager
    def connect(
        self, context: OutputContext | InputContext, table_slice: TableSlice
    ) -> Iterator[psycopg.Connection]:
        connection = self._connection.connect()
        try:
            yield connection
            connection.commit()
        except BaseException:
            with suppress(psycopg.Error):  # a broken connection rolls back on the server
                connection.rollback()
            raise
        finally:
            connection.close()

    def delete_table_slice(
        self, context: OutputContext, table_slice: TableSlice, connection: psycopg.Connection
    ) -> None:
        """`LOCK` is the transaction's first statement, before anything reads: a SERIALIZABLE
        transaction's view is fixed by its first read, so locking later would still leave it
        blind to a load that committed while it waited. A table that does not exist yet is
        created by the type handler; the failed LOCK is rolled back, nothing else had run."""
        target = _target(table_slice)
        try:
            connection.execute(f"LOCK TABLE {target}")
        except psycopg.errors.UndefinedTable:
            connection.rollback()
            return
        connection.execute(f"DELETE FROM {target}{window_where(table_slice)}")

    def ensure_schema_exists(
        self, context: OutputContext, table_slice: TableSlice, connection: psycopg.Connection
    ) -> None:
        """In a transaction of its own (see `create_schema`), so the load's begins afresh."""
        create_schema(connection, table_slice.schema)

    @staticmethod
    def get_select_statement(table_slice: TableSlice) -> str:
        columns = ", ".join(quote_identifier(c) for c in table_slice.columns or []) or "*"
        return _select(columns, table_slice)


def _select(expressions: str, table_slice: TableSlice) -> str:
    return f"SELECT {expressions} FROM {_target(table_slice)}{window_where(table_slice)}"


@dataclass
class FitCounts:
    """Values changed to fit Redshift's 65,535-byte VARCHAR, reported with the load."""

    text_values_truncated: int = 0
    json_values_nulled: int = 0


def _truncate_utf8(value: str) -> str:
    return value.encode()[:MAX_VARCHAR_BYTES].decode(errors="ignore")


def _fit_strings(array: pa.Array, is_json: bool, counts: FitCounts) -> pa.Array:
    """NUL characters are dropped (no PostgreSQL-protocol text may hold them); over-long
    text is cut, and over-long JSON, which cannot be cut, becomes NULL."""
    array = pc.replace_substring(array, "\x00", "")
    limit = MAX_SUPER_BYTES if is_json else MAX_VARCHAR_BYTES
    too_long = pc.fill_null(pc.greater(pc.binary_length(array), limit), False)
    over = pc.sum(too_long).as_py() or 0
    if not over:
        return array
    if is_json:
        counts.json_values_nulled += over
        return pc.if_else(too_long, pa.scalar(None, array.type), array)
    counts.text_values_truncated += over
    values = array.to_pylist()
    return pa.array([_truncate_utf8(v) if v is not None else None for v in values], array.type)


def _column_values(array: pa.Array, incoming: Kind, target: Kind, counts: FitCounts) -> pa.Array:
    """Values ready for a column of the target kind: text columns receive text."""
    if target == Kind.TEXT and incoming not in (Kind.TEXT, Kind.JSON):
        array = pc.cast(array, pa.string())
    if target in (Kind.TEXT, Kind.JSON):
        return _fit_strings(array, target == Kind.JSON, counts)
    return array


def _statement_rows(batch: pa.RecordBatch, insert_rows: int) -> int:
    """Rows per INSERT, bounded by the configured count, the bind-parameter ceiling and the
    statement size."""
    by_parameters = MAX_BIND_PARAMETERS // max(batch.num_columns, 1)
    by_bytes = MAX_STATEMENT_BYTES * batch.num_rows // max(batch.nbytes, 1)
    return max(1, min(insert_rows, by_parameters, by_bytes))


def _insert(
    connection: psycopg.Connection,
    dialect: RedshiftDialect,
    target: str,
    batch: pa.RecordBatch,
    kinds: Mapping[str, Kind],
) -> None:
    names = batch.schema.names
    columns = ", ".join(quote_identifier(name) for name in names)
    row = "(" + ", ".join(dialect.placeholder(kinds[name]) for name in names) + ")"
    step = _statement_rows(batch, DEFAULT_INSERT_ROWS)
    for offset in range(0, batch.num_rows, step):
        part = batch.slice(offset, step)
        values = [value for record in part.to_pylist() for value in record.values()]
        connection.execute(
            f"INSERT INTO {target} ({columns}) VALUES " + ", ".join([row] * part.num_rows),
            values,
        )


def write_batches(
    connection: psycopg.Connection,
    dialect: RedshiftDialect,
    table_slice: TableSlice,
    incoming: Mapping[str, Kind],
    batches: Iterable[pa.RecordBatch],
) -> tuple[SchemaChange, FitCounts]:
    """Create or evolve the table for the incoming columns, then insert every batch, all in
    the caller's transaction. Columns are named by Redshift's rules (`REDSHIFT_COLUMNS`)."""
    names = {name: destination_column(name, dialect.columns) for name in incoming}
    incoming = {names[name]: kind for name, kind in incoming.items()}
    target = _target(table_slice)
    existing = existing_kinds(connection, dialect, table_slice)
    change = plan_schema_change(existing, incoming)
    if existing:
        _evolve(connection, dialect, target, existing, change)
    else:
        definition = ", ".join(
            f"{quote_identifier(n)} {dialect.column_type(k)}" for n, k in incoming.items()
        )
        connection.execute(f"CREATE TABLE IF NOT EXISTS {target} ({definition})")
    targets = {**existing, **change.add, **change.widen}
    by_lower = {name.lower(): kind for name, kind in targets.items()}
    counts = FitCounts()
    for batch in batches:
        batch = batch.rename_columns([names[name] for name in batch.schema.names])
        arrays = [
            _column_values(batch.column(name), incoming[name], by_lower[name.lower()], counts)
            for name in batch.schema.names
        ]
        fitted = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
        _insert(connection, dialect, target, fitted, {n: by_lower[n.lower()] for n in incoming})
    return change, counts


def _evolve(
    connection: psycopg.Connection,
    dialect: RedshiftDialect,
    target: str,
    existing: Mapping[str, Kind],
    change: SchemaChange,
) -> None:
    """New columns are added; a drifting column is rebuilt (add, copy converted, drop,
    rename), since Redshift can change a column's type only by lengthening a VARCHAR, and
    not inside a transaction. The rebuilt column moves to the end; inserts name columns."""
    for name, kind in change.add.items():
        connection.execute(
            f"ALTER TABLE {target} ADD COLUMN {quote_identifier(name)} {dialect.column_type(kind)}"
        )
    staging = quote_identifier(_WIDENING_COLUMN)
    for name, kind in change.widen.items():
        column = quote_identifier(name)
        converted = dialect.converted(column, existing[name], kind)
        connection.execute(f"ALTER TABLE {target} ADD COLUMN {staging} {dialect.column_type(kind)}")
        connection.execute(f"UPDATE {target} SET {staging} = {converted}")
        connection.execute(f"ALTER TABLE {target} DROP COLUMN {column}")
        connection.execute(f"ALTER TABLE {target} RENAME COLUMN {staging} TO {column}")


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
    schema = pa.schema([(name, _ARROW_TYPES[kinds[name]]) for name in names])
    expressions = ", ".join(
        f"{dialect.as_text(quote_identifier(n), Kind.JSON)} AS {quote_identifier(n)}"
        if kinds[n] == Kind.JSON
        else quote_identifier(n)
        for n in names
    )
    yielded = False
    with connection.cursor() as cursor:
        rows = cursor.stream(_select(expressions, table_slice), size=chunk_rows)
        while chunk := list(islice(rows, chunk_rows)):
            yielded = True
            yield pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in chunk], schema)
    if not yielded:
        yield schema.empty_table()


class EventBatchRedshiftTypeHandler(DbTypeHandler[EventBatch]):
    """Creates or evolves the event table and inserts the batch in bounded chunks."""

    def __init__(self, dialect: RedshiftDialect) -> None:
        self._dialect = dialect

    def handle_output(
        self,
        context: OutputContext,
        table_slice: TableSlice,
        obj: EventBatch,
        connection: psycopg.Connection,
    ) -> dict:
        incoming = obj.columns()
        if not incoming:
            return load_metadata(obj, table_slice, SchemaChange({}, {}))
        change, counts = write_batches(
            connection, self._dialect, table_slice, incoming, obj.iter_arrow()
        )
        _warn_fitted(context, counts)
        return {**load_metadata(obj, table_slice, change), **vars(counts)}

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection: psycopg.Connection
    ) -> EventBatch:
        """A downstream asset can take the rows as a batch file too, written in chunks."""
        kinds = existing_kinds(connection, self._dialect, table_slice)
        with batch_file_path() as path:
            rows = 0
            chunks = iter_slice_arrow(connection, self._dialect, table_slice)
            first = next(chunks)
            with pq.ParquetWriter(path, first.schema) as writer:
                for chunk in chain([first], chunks):
                    writer.write_table(chunk)
                    rows += chunk.num_rows
        json_columns = frozenset(name for name, kind in kinds.items() if kind == Kind.JSON)
        return EventBatch(table_slice.table, path, rows, json_columns)

    @property
    def supported_types(self) -> Sequence[type]:
        return [EventBatch]


def _warn_fitted(context: OutputContext, counts: FitCounts) -> None:
    if counts.text_values_truncated:
        context.log.warning(
            f"{counts.text_values_truncated} text values were longer than Redshift's "
            f"{MAX_VARCHAR_BYTES:,}-byte VARCHAR and were truncated"
        )
    if counts.json_values_nulled:
        context.log.warning(
            f"{counts.json_values_nulled} JSON values were longer than {MAX_SUPER_BYTES:,} "
            "bytes, the most a SUPER value holds, and were stored as NULL"
        )


class PolarsRedshiftTypeHandler(DbTypeHandler[pl.DataFrame]):
    """Downstream assets read event tables as polars DataFrames (and may write them)."""

    def __init__(self, dialect: RedshiftDialect) -> None:
        self._dialect = dialect

    def handle_output(
        self,
        context: OutputContext,
        table_slice: TableSlice,
        obj: pl.DataFrame,
        connection: psycopg.Connection,
    ) -> dict:
        table = obj.to_arrow()
        incoming = {field.name: kind_of(field.type, False) for field in table.schema}
        change, counts = write_batches(
            connection, self._dialect, table_slice, incoming, table.to_batches(LOAD_CHUNK_ROWS)
        )
        _warn_fitted(context, counts)
        return {"rows_written": obj.height, "columns_added": sorted(change.add), **vars(counts)}

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection: psycopg.Connection
    ) -> pl.DataFrame:
        chunks = list(iter_slice_arrow(connection, self._dialect, table_slice))
        return pl.from_arrow(pa.concat_tables(chunks)) if chunks else pl.DataFrame()

    @property
    def supported_types(self) -> Sequence[type]:
        return [pl.DataFrame]


class RedshiftEventDbIOManager(NamedTableDbIOManager):
    """Names in lower case, and a load that met a concurrent one retried from the start (see
    the module docstring)."""

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


def retry_pause(attempt: int) -> float:
    """Exponential, capped, with full jitter, so two loads that met do not meet again."""
    return random.uniform(0, min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2**attempt))


class RedshiftEventIOManager(ConfigurableIOManagerFactory):
    """Loads CleverTap event batches into Redshift; downstream assets read polars DataFrames."""

    connection: RedshiftConnection
    schema_: str | None = Field(default=None, alias="schema")
    max_identifier_bytes: int = Field(
        REDSHIFT_COLUMNS.max_bytes,
        description="Redshift's limit; PostgreSQL-based stand-ins keep only 63 bytes.",
    )

    def create_io_manager(self, context) -> DbIOManager:
        rules = replace(REDSHIFT_COLUMNS, max_bytes=self.max_identifier_bytes)
        dialect = RedshiftDialect(columns=rules)
        return RedshiftEventDbIOManager(
            db_client=RedshiftDbClient(self.connection),
            database=self.connection.database,
            schema=self.schema_,
            type_handlers=[
                EventBatchRedshiftTypeHandler(dialect),
                PolarsRedshiftTypeHandler(dialect),
            ],
            default_load_type=pl.DataFrame,
            io_manager_name="RedshiftEventIOManager",
        )


class RedshiftEventStats(ConfigurableResource, EventTableStats):
    """Counts for checks and reconciliation, each through a short-lived connection."""

    connection: RedshiftConnection

    def daily_row_counts(
        self, schema: str, table: str, first_day: date, last_day: date
    ) -> dict[date, int]:
        counts = dict.fromkeys(days_between(first_day, last_day), 0)
        table_slice = lower_case(TableSlice(table=table, schema=schema))
        with self._connect() as connection:
            if not table_columns(connection, table_slice.schema, table_slice.table):
                return counts
            target = _target(table_slice)
            rows = connection.execute(
                f"SELECT CAST(event_time AS DATE), count(*) FROM {target} "
                "WHERE event_time >= %t AND event_time < %t GROUP BY 1",
                [first_day, last_day + timedelta(days=1)],
            ).fetchall()
        return {**counts, **dict(rows)}

    def duplicate_record_ids(self, schema: str, table: str) -> int:
        table_slice = lower_case(TableSlice(table=table, schema=schema))
        with self._connect() as connection:
            if not table_columns(connection, table_slice.schema, table_slice.table):
                return 0
            target = _target(table_slice)
            (duplicates,) = connection.execute(
                f"SELECT count(*) - count(DISTINCT _record_id) FROM {target}"
            ).fetchone()
        return duplicates

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection]:
        connection = self.connection.connect()
        try:
            yield connection
        finally:
            connection.close()


def _connection_settings() -> dict[str, object]:
    """The non-secret connection settings from the environment; every missing variable is
    named in one error, with the password's presence checked here too, before any run."""
    missing = [name for name in REQUIRED_VARIABLES if not os.environ.get(name)]
    if missing:
        described = "; ".join(f"{name} ({REQUIRED_VARIABLES[name]})" for name in missing)
        raise SettingsError(f"DESTINATION=redshift needs these variables set: {described}")
    port = os.environ.get("REDSHIFT_PORT", "5439")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"REDSHIFT_PORT={port!r} is not a port number (Redshift uses 5439)")
    return {
        "host": os.environ["REDSHIFT_HOST"],
        "port": int(port),
        "database": os.environ["REDSHIFT_DATABASE"],
        "user": os.environ["REDSHIFT_USER"],
        "sslmode": os.environ.get("REDSHIFT_SSLMODE") or "require",
    }


def build_redshift_resources(settings: PipelineSettings) -> dict[str, object]:
    connection = RedshiftConnection(**_connection_settings(), password=EnvVar(PASSWORD_VARIABLE))
    return {
        WAREHOUSE_IO_MANAGER: RedshiftEventIOManager(
            connection=connection, schema=settings.warehouse_schema
        ),
        WAREHOUSE_STATS: RedshiftEventStats(connection=connection),
    }


def check_redshift_destination(settings: PipelineSettings) -> str:
    """Reachable, logged in, and the schema present or creatable; raises with the reason."""
    connection = RedshiftConnection(
        **_connection_settings(), password=os.environ[PASSWORD_VARIABLE]
    )
    schema = settings.warehouse_schema.lower()
    with connection.connect() as session:
        try:
            create_schema(session, schema)
        except psycopg.Error as exc:
            raise RedshiftConnectionError(
                f"logged in to Redshift {connection.describe()} but cannot create schema "
                f"{schema!r}: {str(exc).strip()}"
            ) from None
    return f"Redshift OK: {connection.describe()}, schema {schema!r} ready"

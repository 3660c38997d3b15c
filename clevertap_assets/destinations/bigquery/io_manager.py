"""BigQuery: Dagster's BigQuery IO manager (polars flavour), with batches that replace their
days in one statement.

A batch's Parquet file goes up in one load job (a resumable upload, so memory stays bounded
whatever its size) into a staging table that expires by itself; one `MERGE` then deletes the
window's old rows and inserts the new ones. A single DML statement is atomic in BigQuery, so
a load that fails or is killed at any point leaves the previous rows of those days in place,
and readers never see the window empty.

For that, the delete that Dagster's `DbIOManager` runs before the type handler is moved into
the handlers: a separate `DELETE` job would commit on its own and leave the days empty if the
load then failed. Polars outputs keep Dagster's delete-then-load, run by their handler.

Schema evolution happens before the `MERGE`, and each step keeps every row: new properties
are appended to the table's schema (one metadata update, no data rewritten), and a column
whose type drifts is widened by rewriting the table with a cast (`CREATE OR REPLACE TABLE ...
AS SELECT`), because BigQuery can change a column to STRING no other way. BigQuery does not
allow DDL in a transaction, so these are not rolled back with a failed load: a wider or
extra column is harmless and the next load needs it anyway.
"""

import base64
import binascii
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import EnvVar, InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_gcp import BigQueryResource
from dagster_gcp.bigquery.io_manager import BigQueryClient, _partition_where_clause
from dagster_polars import PolarsBigQueryIOManager
from dagster_polars.io_managers.bigquery import PolarsBigQueryTypeHandler
from google.api_core.exceptions import GoogleAPIError, NotFound
from google.auth.credentials import Credentials
from google.auth.exceptions import GoogleAuthError
from google.cloud import bigquery
from google.oauth2 import service_account

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import (
    BATCH_COMPRESSION,
    LOAD_CHUNK_ROWS,
    EventBatch,
    batch_file_path,
)
from clevertap_assets.days import days_between
from clevertap_assets.destinations.common import (
    NamedTableDbIOManager,
    SchemaChange,
    load_metadata,
    plan_schema_change,
)
from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.keys import WAREHOUSE_IO_MANAGER, WAREHOUSE_STATS
from clevertap_assets.naming import BIGQUERY_COLUMNS, destination_column
from clevertap_assets.settings import PipelineSettings, SettingsError

BIGQUERY_TYPES = {
    Kind.BOOLEAN: "BOOL",
    Kind.BIGINT: "INT64",
    Kind.DOUBLE: "FLOAT64",
    Kind.TIMESTAMP: "DATETIME",
    Kind.TIMESTAMPTZ: "TIMESTAMP",
    Kind.TEXT: "STRING",
    Kind.JSON: "JSON",
}
# The API answers with legacy names (INTEGER, FLOAT, BOOLEAN) for tables it describes.
_KINDS_BY_TYPE = {
    **{sql: kind for kind, sql in BIGQUERY_TYPES.items()},
    "INTEGER": Kind.BIGINT,
    "FLOAT": Kind.DOUBLE,
    "BOOLEAN": Kind.BOOLEAN,
}
STAGING_TTL = timedelta(days=1)
_DATASET_NAME = re.compile(r"^[A-Za-z0-9_]{1,1024}$")


def quote(name: str) -> str:
    """A BigQuery identifier in backticks (names may start with a digit or be keywords)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def table_id(table_slice: TableSlice, table: str | None = None) -> str:
    return f"{table_slice.database}.{table_slice.schema}.{table or table_slice.table}"


def table_sql(table_slice: TableSlice, table: str | None = None) -> str:
    parts = (table_slice.database, table_slice.schema, table or table_slice.table)
    return ".".join(quote(part) for part in parts)


def existing_table(client: bigquery.Client, table_slice: TableSlice) -> bigquery.Table | None:
    try:
        return client.get_table(table_id(table_slice))
    except NotFound:
        return None


def column_kinds(table: bigquery.Table | None) -> dict[str, Kind]:
    if table is None:
        return {}
    return {f.name: _KINDS_BY_TYPE.get(f.field_type, Kind.TEXT) for f in table.schema}


class WindowDeferringBigQueryClient(BigQueryClient):
    """Dagster's BigQuery client, except that the type handlers delete the window themselves
    (see the module docstring for why)."""

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        return None

    @staticmethod
    def ensure_schema_exists(
        context: OutputContext, table_slice: TableSlice, connection: bigquery.Client
    ) -> None:
        """Through the API, which answers "already exists" as success (`exists_ok`): a first
        load of several events at once creates the dataset in each step at the same moment."""
        dataset = bigquery.Dataset(f"{table_slice.database}.{table_slice.schema}")
        if connection.location:
            dataset.location = connection.location
        connection.create_dataset(dataset, exists_ok=True)


class WindowReplacingPolarsTypeHandler(PolarsBigQueryTypeHandler):
    """dagster-polars' handler with Dagster's own delete in front, as it expects."""

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj, connection
    ) -> None:
        BigQueryClient.delete_table_slice(context, table_slice, connection)
        return super().handle_output(context, table_slice, obj, connection)


class EventBatchBigQueryTypeHandler(DbTypeHandler[EventBatch]):
    """Creates or evolves the event table, stages the batch, replaces the window in one MERGE."""

    def handle_output(
        self,
        context: OutputContext,
        table_slice: TableSlice,
        obj: EventBatch,
        connection: bigquery.Client,
    ) -> dict:
        try:
            return replace_window(connection, table_slice, obj)
        finally:
            obj.discard()

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection: bigquery.Client
    ) -> EventBatch:
        """A downstream asset can take the rows as a batch file too, read page by page."""
        rows = connection.query(BigQueryClient.get_select_statement(table_slice)).result(
            page_size=LOAD_CHUNK_ROWS
        )
        json_columns = frozenset(f.name for f in rows.schema if f.field_type == "JSON")
        with batch_file_path() as path:
            count = 0
            writer: pq.ParquetWriter | None = None
            for chunk in rows.to_arrow_iterable():
                writer = writer or pq.ParquetWriter(path, chunk.schema)
                writer.write_batch(chunk)
                count += chunk.num_rows
            if writer is None:
                shutil.rmtree(path.parent, ignore_errors=True)
                return EventBatch(table_slice.table, None, 0)
            writer.close()
        return EventBatch(table_slice.table, path, count, json_columns)

    @property
    def supported_types(self) -> Sequence[type]:
        return [EventBatch]


def replace_window(client: bigquery.Client, table_slice: TableSlice, batch: EventBatch) -> dict:
    """Every step keeps the previous rows readable; only the final MERGE changes them, at once.
    An empty window still deletes its days (CleverTap has no rows for them any more)."""
    batch = with_bigquery_names(batch)
    incoming = batch.columns()
    table = existing_table(client, table_slice)
    existing = column_kinds(table)
    if not incoming:
        if table is not None:
            client.query(
                f"DELETE FROM {table_sql(table_slice)} WHERE {_window(table_slice)}"
            ).result()
        return load_metadata(batch, table_slice, SchemaChange({}, {}))
    change = plan_schema_change(existing, incoming)
    if table is None:
        _create_table(client, table_slice, incoming)
        # This load's table, or one a concurrent first load created, with its own columns.
        table = existing_table(client, table_slice)
    current = column_kinds(table)
    evolution = plan_schema_change(current, incoming)
    _evolve(client, table_slice, table, evolution)
    target_kinds = {
        n.lower(): k for n, k in {**current, **evolution.widen, **evolution.add}.items()
    }
    staging = _staging_table(client, table_slice, incoming)
    try:
        _upload(client, staging, batch)
        client.query(_merge_statement(table_slice, staging, incoming, target_kinds)).result()
    finally:
        client.delete_table(staging, not_found_ok=True)
    return load_metadata(batch, table_slice, change)


def with_bigquery_names(batch: EventBatch) -> EventBatch:
    """The batch with column names BigQuery's Parquet loads take (`BIGQUERY_COLUMNS`): the
    file is rewritten in chunks, in place, only when a name has to change."""
    if batch.path is None:
        return batch
    source = pq.ParquetFile(batch.path)
    names = {name: destination_column(name, BIGQUERY_COLUMNS) for name in source.schema_arrow.names}
    if all(old == new for old, new in names.items()):
        return batch
    renamed = batch.path.with_name("bigquery_" + batch.path.name)
    schema = pa.schema([field.with_name(names[field.name]) for field in source.schema_arrow])
    with pq.ParquetWriter(renamed, schema, compression=BATCH_COMPRESSION) as writer:
        for chunk in source.iter_batches(batch_size=LOAD_CHUNK_ROWS):
            writer.write_batch(chunk.rename_columns(schema.names))
    source.close()
    renamed.replace(batch.path)
    return replace(batch, json_columns=frozenset(names[name] for name in batch.json_columns))


def _window(table_slice: TableSlice, alias: str | None = None) -> str:
    """Dagster's own window predicate (naive timestamp bounds), optionally on an alias."""
    dimensions = table_slice.partition_dimensions
    if not dimensions:
        return "TRUE"
    if alias:
        dimensions = [d._replace(partition_expr=f"{alias}.{d.partition_expr}") for d in dimensions]
    return _partition_where_clause(dimensions)


def _partition_column(table_slice: TableSlice, incoming: Mapping[str, Kind]) -> str | None:
    """Daily partitions on the naive `event_time`, so a window's MERGE reads only its days."""
    for dimension in table_slice.partition_dimensions:
        if incoming.get(dimension.partition_expr) == Kind.TIMESTAMP:
            return dimension.partition_expr
    return None


def _schema(columns: Mapping[str, Kind], types: Mapping[Kind, str]) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(name, types[kind]) for name, kind in columns.items()]


def _create_table(
    client: bigquery.Client, table_slice: TableSlice, incoming: Mapping[str, Kind]
) -> None:
    table = bigquery.Table(table_id(table_slice), schema=_schema(incoming, BIGQUERY_TYPES))
    partition_column = _partition_column(table_slice, incoming)
    if partition_column:
        table.time_partitioning = bigquery.TimePartitioning(field=partition_column)
    clustering = [
        dimension.partition_expr
        for dimension in table_slice.partition_dimensions
        if dimension.partition_expr in incoming and dimension.partition_expr != partition_column
    ]
    if clustering:
        # A text partition key (the webhook table's `_inbox_range`): clustered on it, a range's
        # MERGE reads only the blocks of its range instead of the whole table.
        table.clustering_fields = clustering
    client.create_table(table, exists_ok=True)


def _evolve(
    client: bigquery.Client, table_slice: TableSlice, table: bigquery.Table, change: SchemaChange
) -> None:
    if change.add:
        table.schema = [*table.schema, *_schema(change.add, BIGQUERY_TYPES)]
        client.update_table(table, ["schema"])
    if change.widen:
        current = column_kinds(table)
        casts = ", ".join(
            f"{_widened(name, current[name], kind)} AS {quote(name)}"
            for name, kind in change.widen.items()
        )
        target = table_sql(table_slice)
        client.query(
            f"CREATE OR REPLACE TABLE {target}{_layout_and_options(table)} "
            f"AS SELECT * REPLACE ({casts}) FROM {target}"
        ).result()


def _layout_and_options(table: bigquery.Table) -> str:
    """The table's partitioning, clustering and options, spelled for `CREATE OR REPLACE`: a
    widening rewrites the table (BigQuery changes a column to STRING no other way) and
    must keep what its owner set (https://cloud.google.com/bigquery/docs/reference/standard-sql/data-definition-language#create_table_statement).
    Column policy tags cannot be written in DDL and are not carried over."""
    clauses = []
    partitioning = table.time_partitioning
    if partitioning and partitioning.field:
        clauses.append(f"PARTITION BY DATETIME_TRUNC({quote(partitioning.field)}, DAY)")
    if table.clustering_fields:
        clauses.append("CLUSTER BY " + ", ".join(map(quote, table.clustering_fields)))
    options = {
        "description": _string(table.description) if table.description else None,
        "friendly_name": _string(table.friendly_name) if table.friendly_name else None,
        "labels": (
            "[" + ", ".join(f"({_string(k)}, {_string(v)})" for k, v in table.labels.items()) + "]"
            if table.labels
            else None
        ),
        "expiration_timestamp": (
            f"TIMESTAMP {_string(table.expires.isoformat())}" if table.expires else None
        ),
        "require_partition_filter": "TRUE" if table.require_partition_filter else None,
        "partition_expiration_days": (
            str(partitioning.expiration_ms / 86_400_000)
            if partitioning and partitioning.expiration_ms
            else None
        ),
    }
    written = ", ".join(f"{name} = {value}" for name, value in options.items() if value)
    if written:
        clauses.append(f"OPTIONS ({written})")
    return "".join(" " + clause for clause in clauses)


def _string(value: str) -> str:
    """A GoogleSQL string literal (its escapes are JSON's)."""
    return json.dumps(value)


def _widened(name: str, current: Kind, target: Kind) -> str:
    if current == Kind.JSON:
        return f"TO_JSON_STRING({quote(name)})"
    return f"CAST({quote(name)} AS {BIGQUERY_TYPES[target]})"


def _staged_kind(kind: Kind) -> Kind:
    """JSON travels as text in the Parquet file and is parsed in the MERGE."""
    return Kind.TEXT if kind == Kind.JSON else kind


def _staging_table(
    client: bigquery.Client, table_slice: TableSlice, incoming: Mapping[str, Kind]
) -> bigquery.Table:
    """Named after its target and expiring by itself, so one left by a killed run is found
    and removed without anyone cleaning up."""
    name = f"{table_slice.table}__staging_{uuid.uuid4().hex[:12]}"
    staged = {column: _staged_kind(kind) for column, kind in incoming.items()}
    table = bigquery.Table(table_id(table_slice, name), schema=_schema(staged, BIGQUERY_TYPES))
    table.expires = datetime.now(UTC) + STAGING_TTL
    return client.create_table(table)


def _upload(client: bigquery.Client, staging: bigquery.Table, batch: EventBatch) -> None:
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
    )
    with batch.path.open("rb") as source:
        client.load_table_from_file(source, staging, job_config=config).result()


def _merge_statement(
    table_slice: TableSlice,
    staging: bigquery.Table,
    incoming: Mapping[str, Kind],
    target_kinds: Mapping[str, Kind],
) -> str:
    """Delete the window's rows and insert the batch as one atomic statement.

    `ON FALSE` matches nothing, so every target row is "not matched by source" (deleted when
    in the window) and every staged row is "not matched" (inserted).
    """
    names = ", ".join(quote(name) for name in incoming)
    expressions = ", ".join(
        f"{_converted(name, kind, target_kinds[name.lower()])} AS {quote(name)}"
        for name, kind in incoming.items()
    )
    return (
        f"MERGE {table_sql(table_slice)} AS target "
        f"USING (SELECT {expressions} FROM {table_sql(table_slice, staging.table_id)}) AS source "
        "ON FALSE "
        f"WHEN NOT MATCHED BY SOURCE AND {_window(table_slice, 'target')} THEN DELETE "
        f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({names})"
    )


def _converted(name: str, incoming: Kind, target: Kind) -> str:
    """A staged column as the target column's type (text to JSON, or to a widened type)."""
    if target == Kind.JSON:
        return f"PARSE_JSON({quote(name)}, wide_number_mode => 'round')"
    if _staged_kind(incoming) == target:
        return quote(name)
    return f"CAST({quote(name)} AS {BIGQUERY_TYPES[target]})"


class BigQueryEventIOManager(PolarsBigQueryIOManager):
    """dagster-polars' BigQuery IO manager with CleverTap batches, atomic windows and naming.

    Downstream assets can still load any event table as a polars DataFrame.
    """

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [EventBatchBigQueryTypeHandler(), WindowReplacingPolarsTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return NamedTableDbIOManager(
            db_client=WindowDeferringBigQueryClient(
                write_mode=self.write_mode, gcp_credentials=self.gcp_credentials
            ),
            database=self.project,
            schema=self.dataset,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="BigQueryEventIOManager",
        )


class BigQueryEventStats(BigQueryResource, EventTableStats):
    """Counts for checks and reconciliation, by query jobs that read two columns."""

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        """Dagster's resource points GOOGLE_APPLICATION_CREDENTIALS at a key file for the
        process, and refuses to when the IO manager of the same run already has: credentials
        made in memory from the key avoid that clash (and never touch the disk)."""
        yield bigquery.Client(
            project=self.project,
            location=self.location,
            credentials=credentials_from_key(self.gcp_credentials),
        )

    def daily_row_counts(
        self, schema: str, table: str, first_day: date, last_day: date
    ) -> dict[date, int]:
        counts = dict.fromkeys(days_between(first_day, last_day), 0)
        with self.get_client() as client:
            target = self._table(client, schema, table)
            if target is None:
                return counts
            rows = client.query(
                f"SELECT DATE(event_time) AS day, COUNT(*) AS n FROM {target} "
                "WHERE event_time >= DATETIME(@first_day) "
                "AND event_time < DATETIME(DATE_ADD(@last_day, INTERVAL 1 DAY)) GROUP BY day",
                job_config=bigquery.QueryJobConfig(
                    query_parameters=[
                        bigquery.ScalarQueryParameter("first_day", "DATE", first_day),
                        bigquery.ScalarQueryParameter("last_day", "DATE", last_day),
                    ]
                ),
            ).result()
            return {**counts, **{row["day"]: row["n"] for row in rows}}

    def duplicate_record_ids(self, schema: str, table: str) -> int:
        with self.get_client() as client:
            target = self._table(client, schema, table)
            if target is None:
                return 0
            (row,) = client.query(
                f"SELECT COUNT(*) - COUNT(DISTINCT _record_id) AS n FROM {target}"
            ).result()
            return row["n"]

    @staticmethod
    def _table(client: bigquery.Client, schema: str, table: str) -> str | None:
        """The table's quoted name, or None before its first load."""
        table_slice = TableSlice(table=table, schema=schema, database=client.project)
        return table_sql(table_slice) if existing_table(client, table_slice) else None


def read_bigquery_env(settings: PipelineSettings) -> dict[str, str | None]:
    """The connection settings, checked together so one message names every problem.

    Credentials are optional: without a key, Google's application default credentials
    apply (a workload identity, `gcloud auth application-default login`, a VM's account).
    """
    env = {
        name: os.environ.get(name) or None
        for name in (
            "BIGQUERY_PROJECT",
            "BIGQUERY_LOCATION",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "BIGQUERY_GCP_CREDENTIALS",
        )
    }
    problems = []
    if not env["BIGQUERY_PROJECT"]:
        problems.append("BIGQUERY_PROJECT is not set (the GCP project id to load into)")
    key_file = env["GOOGLE_APPLICATION_CREDENTIALS"]
    if key_file and env["BIGQUERY_GCP_CREDENTIALS"]:
        problems.append(
            "set only one of GOOGLE_APPLICATION_CREDENTIALS (a key file) and "
            "BIGQUERY_GCP_CREDENTIALS (the key, base64-encoded)"
        )
    elif key_file and not os.path.isfile(key_file):
        problems.append(f"GOOGLE_APPLICATION_CREDENTIALS={key_file!r}: no such file")
    if env["BIGQUERY_GCP_CREDENTIALS"] and not _is_base64_json(env["BIGQUERY_GCP_CREDENTIALS"]):
        problems.append("BIGQUERY_GCP_CREDENTIALS is not a base64-encoded JSON key")
    if not _DATASET_NAME.match(settings.warehouse_schema):
        problems.append(
            f"BIGQUERY_DATASET={settings.warehouse_schema!r} may hold only letters, digits "
            "and underscores"
        )
    if problems:
        raise SettingsError("BigQuery destination: " + "; ".join(problems))
    return env


def _is_base64_json(value: str) -> bool:
    try:
        return isinstance(json.loads(base64.b64decode(value, validate=True)), dict)
    except (binascii.Error, ValueError):
        return False


def build_bigquery_resources(settings: PipelineSettings) -> dict[str, object]:
    env = read_bigquery_env(settings)
    connection = {
        "project": env["BIGQUERY_PROJECT"],
        "location": env["BIGQUERY_LOCATION"],
        "gcp_credentials": (
            EnvVar("BIGQUERY_GCP_CREDENTIALS") if env["BIGQUERY_GCP_CREDENTIALS"] else None
        ),
    }
    return {
        WAREHOUSE_IO_MANAGER: BigQueryEventIOManager(
            dataset=settings.warehouse_schema, **connection
        ),
        WAREHOUSE_STATS: BigQueryEventStats(**connection),
    }


def credentials_from_key(encoded_key: str | None) -> Credentials | None:
    """A base64 service-account key as credentials; None leaves Google's defaults to apply."""
    if not encoded_key:
        return None
    info = json.loads(base64.b64decode(encoded_key))
    return service_account.Credentials.from_service_account_info(info)


def check_bigquery_destination(settings: PipelineSettings) -> str:
    """Authenticated, allowed to run jobs, and the dataset there (created if it was not)."""
    env = read_bigquery_env(settings)
    dataset_id = f"{env['BIGQUERY_PROJECT']}.{settings.warehouse_schema}"
    try:
        with BigQueryEventStats(
            project=env["BIGQUERY_PROJECT"],
            location=env["BIGQUERY_LOCATION"],
            gcp_credentials=env["BIGQUERY_GCP_CREDENTIALS"],
        ).get_client() as client:
            list(client.query("SELECT 1").result())
            try:
                dataset, state = client.get_dataset(dataset_id), "present"
            except NotFound:
                wanted = bigquery.Dataset(dataset_id)
                if env["BIGQUERY_LOCATION"]:
                    wanted.location = env["BIGQUERY_LOCATION"]
                dataset, state = client.create_dataset(wanted, exists_ok=True), "created"
    except GoogleAuthError as exc:
        raise ConnectionError(
            f"BigQuery: no usable Google credentials ({type(exc).__name__}); set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, "
            "BIGQUERY_GCP_CREDENTIALS to the key in base64, or run "
            "`gcloud auth application-default login`"
        ) from None
    except GoogleAPIError as exc:
        raise ConnectionError(f"BigQuery project {env['BIGQUERY_PROJECT']!r}: {exc}") from None
    return f"BigQuery OK: dataset {dataset_id} {state} (location {dataset.location})"

"""A window replacement on BigQuery (`destinations.window`): one MERGE per window.

A batch's Parquet file goes up in one load job (a resumable upload, so memory stays bounded
whatever its size) into a staging table that expires by itself; one `MERGE` then deletes the
window's old rows and inserts the new ones. A single DML statement is atomic in BigQuery, so
a load that fails or is killed at any point leaves the previous rows of those days in place,
and readers never see the window empty.

Schema evolution happens before the `MERGE`, and each step keeps every row: new properties
are appended to the table's schema (one metadata update, no data rewritten), and a column
whose type drifts is widened by rewriting the table with a cast (`CREATE OR REPLACE TABLE ...
AS SELECT`, carrying the table's layout and options), because BigQuery can change a column
to STRING no other way. BigQuery does not allow DDL in a transaction, so these are not
rolled back with a failed load: a wider or extra column is harmless and the next load needs
it anyway.
"""

import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from dagster._core.storage.db_io_manager import TableSlice
from google.api_core.exceptions import GoogleAPICallError
from google.cloud import bigquery

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import EventBatch
from clevertap_assets.destinations.bigquery.client import (
    column_kinds,
    existing_table,
    table_id,
    table_sql,
)
from clevertap_assets.destinations.bigquery.dialect import (
    converted,
    every_partition,
    layout_and_options,
    quote,
    schema_fields,
    staged_kind,
    widened,
)
from clevertap_assets.destinations.column_map import (
    COLUMN_MAP_TABLE,
    CREATE_COLUMN_MAP,
    claim_parameters,
    claim_sql,
    column_map,
    lock_row_sql,
    stored_columns_sql,
)
from clevertap_assets.destinations.common import (
    LOAD_ATTEMPTS,
    SchemaChange,
    plan_schema_change,
    retry_pause,
    window_condition,
)
from clevertap_assets.destinations.window import WindowLoad, evolved
from clevertap_assets.naming import (
    BIGQUERY_COLUMNS,
    BIGQUERY_TABLE_BYTES,
    destination_column,
    fitted_identifier,
)

STAGING_TTL = timedelta(days=1)
CONCURRENT_UPDATE = "due to concurrent update"
"""In BigQuery's messages `Could not serialize access to table <t> due to concurrent update`
and `Transaction is aborted due to concurrent update against table <t>`."""


class BigQueryWindowLoad(WindowLoad[bigquery.Table]):
    """Evolve the table, upload the batch to a staging table, then one MERGE."""

    def __init__(self, client: bigquery.Client) -> None:
        self._client = client
        self._table: bigquery.Table | None = None
        self._incoming: dict[str, Kind] = {}
        self._targets: dict[str, Kind] = {}

    def named(self, batch: EventBatch) -> EventBatch:
        return with_bigquery_names(batch)

    def claim_columns(
        self, table_slice: TableSlice, claims: Mapping[str, Sequence[str]]
    ) -> dict[str, list[str]]:
        """One script: the state table and the table's lock row made if missing, then one
        transaction that updates the lock row before it claims. BigQuery's transactions
        read a snapshot and "if a transaction mutates (updates or deletes) rows in a table,
        then other transactions ... that mutate rows in the same table cannot run
        concurrently. Conflicting transactions are cancelled"
        (https://cloud.google.com/bigquery/docs/transactions#transaction_concurrency): two
        claims at once both update the lock row, so one is cancelled and `run_dml` runs it
        again, when it reads the other's columns. Inserts alone would not conflict. Column
        names and key paths are query parameters."""
        state = table_sql(table_slice, COLUMN_MAP_TABLE)
        add_lock_row, take_lock_row = lock_row_sql(state, table_slice.table)
        statements = [CREATE_COLUMN_MAP.format(state=state, text="STRING"), add_lock_row]
        if claims:
            claim = claim_sql(state, table_slice.table, len(claims), lambda n: f"@{n}", "STRING")
            statements += ["BEGIN TRANSACTION", take_lock_row, claim, "COMMIT TRANSACTION"]
        statements.append(stored_columns_sql(state, table_slice.table))
        parameters = [
            bigquery.ScalarQueryParameter(name, "STRING", value)
            for name, value in claim_parameters(claims).items()
        ]
        config = bigquery.QueryJobConfig(query_parameters=parameters)
        return column_map(run_dml(self._client, ";\n".join(statements), config))

    def existing(self, table_slice: TableSlice) -> dict[str, Kind]:
        self._table = existing_table(self._client, table_slice)
        return column_kinds(self._table)

    def prepare(
        self, table_slice: TableSlice, existing: Mapping[str, Kind], change: SchemaChange
    ) -> dict[str, Kind]:
        """A new table is created, then read back: a concurrent first load may have made it
        with its own columns, which this load's then evolve like any other table's."""
        if self._table is None:
            _create_table(self._client, table_slice, change.add)
            self._table = existing_table(self._client, table_slice)
            current = column_kinds(self._table)
            change = plan_schema_change(current, change.add)
        else:
            current = dict(existing)
        _evolve(self._client, table_slice, self._table, change)
        return evolved(current, change)

    def stage(
        self, table_slice: TableSlice, batch: EventBatch, targets: Mapping[str, Kind]
    ) -> bigquery.Table:
        """Named after its target and expiring by itself, so one left by a killed run is
        found and removed without anyone cleaning up."""
        self._incoming, self._targets = batch.columns(), dict(targets)
        suffix = f"__staging_{uuid.uuid4().hex[:12]}"
        name = fitted_identifier(table_slice.table, BIGQUERY_TABLE_BYTES, suffix)
        staged = {column: staged_kind(kind) for column, kind in self._incoming.items()}
        table = bigquery.Table(table_id(table_slice, name), schema=schema_fields(staged))
        table.expires = datetime.now(UTC) + STAGING_TTL
        staging = self._client.create_table(table)
        try:
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET,
                write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            )
            with batch.path.open("rb") as source:
                self._client.load_table_from_file(source, staging, job_config=config).result()
        except BaseException:
            self._client.delete_table(staging, not_found_ok=True)
            raise
        return staging

    def replace(self, table_slice: TableSlice, staged: bigquery.Table | None) -> None:
        """An empty window only deletes its days (CleverTap has no rows for them any more)."""
        if staged is None:
            if self._table is not None:
                run_dml(
                    self._client,
                    f"DELETE FROM {table_sql(table_slice)} WHERE {window_condition(table_slice)}",
                )
            return
        try:
            run_dml(self._client, self._merge_statement(table_slice, staged))
        finally:
            self._client.delete_table(staged, not_found_ok=True)

    def _merge_statement(self, table_slice: TableSlice, staging: bigquery.Table) -> str:
        """Delete the window's rows and insert the batch as one atomic statement.

        `ON FALSE` matches nothing, so every target row is "not matched by source" (deleted
        when in the window) and every staged row is "not matched" (inserted).
        """
        names = ", ".join(quote(name) for name in self._incoming)
        expressions = ", ".join(
            f"{converted(quote(name), kind, self._targets[name])} AS {quote(name)}"
            for name, kind in self._incoming.items()
        )
        return (
            f"MERGE {table_sql(table_slice)} AS target "
            f"USING (SELECT {expressions} FROM {table_sql(table_slice, staging.table_id)}) "
            "AS source ON FALSE "
            f"WHEN NOT MATCHED BY SOURCE AND {window_condition(table_slice, 'target')} "
            "THEN DELETE "
            f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({names})"
        )

    def row_count(self, table_slice: TableSlice) -> int:
        if self._table is None:
            return 0
        (row,) = self._client.query(
            f"SELECT COUNT(*) AS n FROM {table_sql(table_slice)}{every_row(self._table)}"
        ).result()
        return row["n"]


def run_dml(
    client: bigquery.Client, statement: str, config: bigquery.QueryJobConfig | None = None
) -> list[tuple]:
    """Run a DML statement (or a script that is one transaction), again after a pause when a
    concurrent one on the same table made it fail: BigQuery retries conflicting mutating DML
    a few times itself, then fails it
    (https://cloud.google.com/bigquery/docs/data-manipulation-language#dml_statement_conflicts),
    and cancels a transaction that conflicts with another
    (https://cloud.google.com/bigquery/docs/transactions#transaction_concurrency). A
    statement or transaction is atomic, so running it again is exact; after `LOAD_ATTEMPTS`
    the error stands. The rows of its (last) statement."""
    for attempt in range(1, LOAD_ATTEMPTS):
        try:
            return _rows(client, statement, config)
        except GoogleAPICallError as error:
            if not is_concurrent_update(error):
                raise
            time.sleep(retry_pause(attempt))
    return _rows(client, statement, config)


def _rows(
    client: bigquery.Client, statement: str, config: bigquery.QueryJobConfig | None
) -> list[tuple]:
    return [tuple(row.values()) for row in client.query(statement, config).result()]


def is_concurrent_update(error: GoogleAPICallError) -> bool:
    """BigQuery's answer to a DML statement that lost to a concurrent one on its table."""
    return CONCURRENT_UPDATE in str(error.message)


def every_row(table: bigquery.Table) -> str:
    """` WHERE` every row, on the partitioning column; empty for a table not partitioned by a
    column (`every_partition`)."""
    partitioning = table.time_partitioning
    if partitioning is None or not partitioning.field:
        return ""
    return f" WHERE {every_partition(partitioning.field)}"


def with_bigquery_names(batch: EventBatch) -> EventBatch:
    """The batch with column names BigQuery's Parquet loads take (`BIGQUERY_COLUMNS`)."""
    names = {name: destination_column(name, BIGQUERY_COLUMNS) for name in batch.columns()}
    return batch.renamed(names)


def _partition_column(table_slice: TableSlice, incoming: Mapping[str, Kind]) -> str | None:
    """Daily partitions on the naive `event_time`, so a window's MERGE reads only its days."""
    for dimension in table_slice.partition_dimensions:
        if incoming.get(dimension.partition_expr) == Kind.TIMESTAMP:
            return dimension.partition_expr
    return None


def _create_table(
    client: bigquery.Client, table_slice: TableSlice, incoming: Mapping[str, Kind]
) -> None:
    table = bigquery.Table(table_id(table_slice), schema=schema_fields(dict(incoming)))
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
        table.schema = [*table.schema, *schema_fields(change.add)]
        client.update_table(table, ["schema"])
    if change.widen:
        current = column_kinds(table)
        casts = ", ".join(
            f"{widened(quote(name), current[name], kind)} AS {quote(name)}"
            for name, kind in change.widen.items()
        )
        target = table_sql(table_slice)
        client.query(
            f"CREATE OR REPLACE TABLE {target}{layout_and_options(table)} "
            f"AS SELECT * REPLACE ({casts}) FROM {target}{every_row(table)}"
        ).result()
        _restore_column_annotations(client, table)


def _restore_column_annotations(client: bigquery.Client, before: bigquery.Table) -> None:
    """Put back the descriptions and policy tags an owner set on columns: a rewrite by
    `CREATE OR REPLACE ... AS SELECT` keeps the columns but not these, and policy tags cannot
    be written in DDL, only in the schema of a table update
    (https://cloud.google.com/bigquery/docs/column-level-security#set_policy)."""
    annotated = {
        field.name: field for field in before.schema if field.description or field.policy_tags
    }
    if not annotated:
        return
    after = client.get_table(before.reference)
    after.schema = [_annotated(field, annotated.get(field.name)) for field in after.schema]
    client.update_table(after, ["schema"])


def _annotated(
    field: bigquery.SchemaField, owner: bigquery.SchemaField | None
) -> bigquery.SchemaField:
    """`field` with the description and policy tags its owner's version had."""
    if owner is None:
        return field
    spelled, owned = field.to_api_repr(), owner.to_api_repr()
    spelled.update({key: owned[key] for key in ("description", "policyTags") if key in owned})
    return bigquery.SchemaField.from_api_repr(spelled)

"""A window replacement on Redshift (`destinations.window`), all in the load's transaction.

Redshift speaks PostgreSQL's protocol but only part of its SQL, so everything here keeps to
what Redshift documents: `LOCK`, `CREATE ... IF NOT EXISTS`, a range `DELETE`, multi-row
`INSERT`, one `ALTER TABLE` per column, no `ON CONFLICT`, no `COPY FROM STDIN` and no
`ALTER COLUMN ... TYPE`. Rows reach the table through `insert_batch`: multi-row INSERTs of
bounded size, read chunk by chunk from the batch's Parquet file; or, with an S3 staging bucket,
through S3 and `COPY` into a staging table (`staging`).
"""

from collections.abc import Iterator, Mapping, Sequence

import psycopg
import pyarrow as pa
from dagster._core.storage.db_io_manager import TableSlice

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import EventBatch
from clevertap_assets.destinations.column_map import (
    COLUMN_MAP_TABLE,
    CREATE_COLUMN_MAP,
    claim_columns,
)
from clevertap_assets.destinations.common import (
    SchemaChange,
    plan_schema_change,
    rebuild_column,
    window_where,
)
from clevertap_assets.destinations.redshift.client import target_name
from clevertap_assets.destinations.redshift.dialect import (
    MAX_JSON_BYTES,
    FitCounts,
    RedshiftDialect,
    column_values,
    existing_kinds,
    json_limit,
)
from clevertap_assets.destinations.redshift.staging import (
    RedshiftS3Staging,
    StagedRows,
    UploadedRows,
    insert_staged,
    within_copy_row,
)
from clevertap_assets.destinations.window import WindowLoad, batch_targets, evolved
from clevertap_assets.naming import destination_column, quote_identifier

# Redshift's bind-parameter ceiling per statement (PostgreSQL's is 65,535).
MAX_BIND_PARAMETERS = 32_767
# Redshift refuses statements over 16 MB; stay well below it, estimated from Arrow sizes.
MAX_STATEMENT_BYTES = 8 * 1024 * 1024
DEFAULT_INSERT_ROWS = 2_000
_WIDENING_COLUMN = "_clevertap_widening"


class RedshiftWindowLoad(WindowLoad[EventBatch | StagedRows]):
    """With a staging bucket, the rows' upload to S3 first (`begin`); then the table's `LOCK`,
    the schema change, the window's `DELETE` and the INSERTs, in the caller's one
    transaction. Columns are named by Redshift's rules."""

    def __init__(
        self,
        connection: psycopg.Connection,
        dialect: RedshiftDialect,
        staging: RedshiftS3Staging | None = None,
    ) -> None:
        self._connection = connection
        self._dialect = dialect
        self._staging = staging
        self._exists = False
        self.fitted = FitCounts()
        self.json_bytes = MAX_JSON_BYTES
        self._uploaded: UploadedRows | None = None

    def claim_columns(
        self, table_slice: TableSlice, claims: Mapping[str, Sequence[str]]
    ) -> dict[str, list[str]]:
        """In a transaction of its own, before the upload and the load's: `LOCK` of the state
        table first, before anything reads (as `existing` locks the event table), so a
        concurrent claim waits for this one's COMMIT and then reads its columns. A claim
        holds the state table for a few statements only, not for the whole load. Two first
        loads creating the state table at once conflict in the catalog; the IO manager runs
        the load again, as for the event table."""
        state = target_name(table_slice._replace(table=COLUMN_MAP_TABLE))
        text = self._dialect.column_type(Kind.TEXT)
        self._connection.execute(CREATE_COLUMN_MAP.format(state=state, text=text))
        self._connection.commit()
        self._connection.execute(f"LOCK TABLE {state}")
        stored = claim_columns(
            self._run, state, table_slice.table, claims, lambda n: f"%({n})s", text
        )
        self._connection.commit()
        return stored

    def _run(self, sql: str, parameters: Mapping[str, str]) -> list[tuple]:
        cursor = self._connection.execute(sql, dict(parameters) or None)
        return cursor.fetchall() if cursor.description else []

    def incoming(self, batch: EventBatch) -> dict[str, Kind]:
        return {
            destination_column(name, self._dialect.columns): kind
            for name, kind in batch.columns().items()
        }

    def begin(
        self, table_slice: TableSlice, batch: EventBatch, incoming: Mapping[str, Kind]
    ) -> None:
        """Before the LOCK, each in a transaction of its own: how much JSON the cluster
        parses (`json_limit`) and, with a staging bucket, the rows' upload to S3, fitted to
        the table's columns as they are now and as this batch will evolve them; `stage`
        uploads again only if a concurrent load changed them meanwhile. Readers of the table
        so wait for the statements that change it, not for the Parquet file and the upload."""
        self.json_bytes = json_limit(self._connection)
        if self._staging is None or not incoming:
            return
        current = existing_kinds(self._connection, self._dialect, table_slice)
        self._connection.rollback()
        planned = evolved(current, plan_schema_change(current, incoming))
        targets = batch_targets(planned, incoming)
        self._uploaded = self._upload(self._staging, table_slice, batch, targets)

    def _upload(
        self,
        staging: RedshiftS3Staging,
        table_slice: TableSlice,
        batch: EventBatch,
        kinds: Mapping[str, Kind],
    ) -> UploadedRows:
        fitted = FitCounts()
        rows = (
            within_copy_row(chunk, kinds, fitted)
            for chunk in fitted_chunks(self._dialect, batch, kinds, fitted, self.json_bytes)
        )
        return staging.upload(table_slice, kinds, rows, fitted)

    def existing(self, table_slice: TableSlice) -> dict[str, Kind]:
        """`LOCK` is the transaction's first statement, before anything reads: a SERIALIZABLE
        transaction's view is fixed by its first read, so locking later would still leave it
        blind to a load that committed while it waited. A table that does not exist yet is
        created by `prepare`; the failed LOCK is rolled back, nothing else had run."""
        try:
            self._connection.execute(f"LOCK TABLE {target_name(table_slice)}")
        except psycopg.errors.UndefinedTable:
            self._connection.rollback()
            return {}
        self._exists = True
        return existing_kinds(self._connection, self._dialect, table_slice)

    def prepare(
        self, table_slice: TableSlice, existing: Mapping[str, Kind], change: SchemaChange
    ) -> dict[str, Kind]:
        target = target_name(table_slice)
        if existing:
            self._evolve(target, existing, change)
        else:
            definition = ", ".join(
                f"{quote_identifier(n)} {self._dialect.column_type(k)}"
                for n, k in change.add.items()
            )
            self._connection.execute(f"CREATE TABLE IF NOT EXISTS {target} ({definition})")
        self._exists = True
        return evolved(existing, change)

    def _evolve(self, target: str, existing: Mapping[str, Kind], change: SchemaChange) -> None:
        """New columns are added; a drifting column is rebuilt (add, copy converted, drop,
        rename), since Redshift can change a column's type only by lengthening a VARCHAR,
        and not inside a transaction. The rebuilt column moves to the end; inserts name
        columns."""
        execute, dialect = self._connection.execute, self._dialect
        for name, kind in change.add.items():
            execute(
                f"ALTER TABLE {target} ADD COLUMN {quote_identifier(name)} "
                f"{dialect.column_type(kind)}"
            )
        for name, kind in change.widen.items():
            column = quote_identifier(name)
            rebuild_column(
                execute,
                target,
                column,
                quote_identifier(_WIDENING_COLUMN),
                dialect.column_type(kind),
                dialect.converted(column, existing[name], kind),
            )

    def stage(
        self, table_slice: TableSlice, batch: EventBatch, targets: Mapping[str, Kind]
    ) -> EventBatch | StagedRows:
        """Without a staging bucket nothing to stage: the INSERTs read the batch file as
        they go. With one, the rows uploaded by `begin` (or again, for columns that changed
        since) are COPYed from S3 into a staging table."""
        self._targets = dict(targets)
        if self._staging is None:
            return batch
        if self._uploaded is None or self._uploaded.kinds != self._targets:
            self.discard()
            self._uploaded = self._upload(self._staging, table_slice, batch, self._targets)
        uploaded, self._uploaded = self._uploaded, None
        self.fitted = uploaded.fitted
        return self._staging.copy(self._connection, self._dialect, uploaded)

    def discard(self) -> None:
        """Delete an upload no COPY read (the load failed before it); nothing without one."""
        if self._staging is not None and self._uploaded is not None:
            self._staging.discard(self._uploaded)
            self._uploaded = None

    def replace(self, table_slice: TableSlice, staged: EventBatch | StagedRows | None) -> None:
        if not self._exists:
            return
        target = target_name(table_slice)
        self._connection.execute(f"DELETE FROM {target}{window_where(table_slice)}")
        if isinstance(staged, StagedRows):
            insert_staged(self._connection, target, staged)
        elif staged is not None:
            insert_batch(
                self._connection,
                self._dialect,
                target,
                staged,
                self._targets,
                self.fitted,
                self.json_bytes,
            )

    def row_count(self, table_slice: TableSlice) -> int:
        if not self._exists:
            return 0
        return self._connection.execute(
            f"SELECT count(*) FROM {target_name(table_slice)}"
        ).fetchone()[0]

    def metadata(self) -> dict:
        return vars(self.fitted)


def insert_batch(
    connection: psycopg.Connection,
    dialect: RedshiftDialect,
    target: str,
    batch: EventBatch,
    kinds: Mapping[str, Kind],
    fitted: FitCounts,
    json_bytes: int,
) -> None:
    """The insert path: the batch file's rows into `target`, in bounded multi-row INSERTs.
    `kinds` are the target's column kinds by Redshift column name; values that do not fit
    (JSON over `json_bytes`) are counted in `fitted`."""
    for chunk in fitted_chunks(dialect, batch, kinds, fitted, json_bytes):
        _insert(connection, dialect, target, chunk, kinds)


def fitted_chunks(
    dialect: RedshiftDialect,
    batch: EventBatch,
    kinds: Mapping[str, Kind],
    fitted: FitCounts,
    json_bytes: int,
) -> Iterator[pa.RecordBatch]:
    """The batch file's rows in chunks, columns named by Redshift's rules and values
    fitted to the target's column kinds (`kinds`, JSON up to `json_bytes`); what did not
    fit is counted in `fitted`."""
    incoming = batch.columns()
    names = {name: destination_column(name, dialect.columns) for name in incoming}
    for chunk in batch.iter_arrow():
        arrays = [
            column_values(
                chunk.column(name), incoming[name], kinds[names[name]], fitted, json_bytes
            )
            for name in chunk.schema.names
        ]
        yield pa.RecordBatch.from_arrays(arrays, [names[name] for name in chunk.schema.names])


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

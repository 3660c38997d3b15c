"""Redshift's COPY from S3 for the tests: PostgreSQL (the Redshift double) has none, so the
one statement is emulated (`emulated_copy`) from the S3 server's objects, as strict as
Redshift's documentation (see `destinations/test_redshift_staging.py` for what is real).
The fixtures `recorder` (every statement as sent, COPY emulated) and `bucket`, and
`staged_resources`, are shared by the Redshift tests that load through S3.
"""

from dataclasses import dataclass, field
from uuid import uuid4

import boto3
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import EnvVar
from sqlglot import exp

from clevertap_assets.destinations.redshift.io_manager import RedshiftEventIOManager
from clevertap_assets.destinations.redshift.staging import RedshiftS3Staging
from clevertap_assets.destinations.redshift.stats import RedshiftEventStats
from clevertap_assets_tests.redshift_warehouse import Warehouse
from clevertap_assets_tests.s3_server import S3Server
from clevertap_assets_tests.sql_grammar import parsed

ROLE = "arn:aws:iam::123456789012:role/clevertap-redshift-copy"

COLUMNAR_COPY_PARAMETERS = {"FORMAT", "ACCEPTINVCHARS", "FILLRECORD", "STATUPDATE", "MANIFEST"}
"""The parameters COPY from Parquet takes besides FROM and the authorization
(https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-copy-from-columnar.html)."""

LOADS_INTO = {
    "bool": "boolean",
    "int64": "bigint",
    "double": "double precision",
    "timestamp[us]": "timestamp without time zone",
    "string": "character varying(65535)",
    "binary": "varbyte(16777216)",
}
"""Parquet (Arrow) type to the Redshift column type COPY loads it into, as the staging table
uses them: scalars by Redshift Spectrum's type mapping
(https://docs.aws.amazon.com/redshift/latest/dg/c-spectrum-data-files.html), binary into
VARBYTE (https://docs.aws.amazon.com/redshift/latest/dg/copy-usage-varbyte.html)."""

MAX_COPY_ROW_BYTES = 4 * 1024 * 1024
"""'The maximum size of a single input row from any source is 4 MB'
(https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-source.html)."""


@dataclass
class CopiedObject:
    """One S3 object a COPY read, as the emulated COPY found it."""

    key: str
    codecs: set[str]
    table: pa.Table


@dataclass
class Recorder:
    """Every statement the loads sent (parameters bound), and the objects COPY read."""

    statements: list[str] = field(default_factory=list)
    copied: list[CopiedObject] = field(default_factory=list)
    fail_copies: bool = False


def emulated_copy(connection: psycopg.Connection, sql: str, recorder: Recorder) -> None:
    """Redshift's COPY from Parquet, as strict as its documentation, into PostgreSQL."""
    copy = parsed(sql, "redshift")
    assert isinstance(copy, exp.Copy) and copy.args["kind"] is True  # FROM, not TO
    (source,) = copy.args["files"]
    assert copy.args["credentials"].args["iam_role"].name == ROLE
    names = {param.this.name.upper() for param in copy.args["params"]}
    assert names <= COLUMNAR_COPY_PARAMETERS, names
    assert {p.this.name.upper(): p.expression.name for p in copy.args["params"]}["FORMAT"] == (
        "PARQUET"
    )
    if recorder.fail_copies:
        raise psycopg.errors.InternalError("S3ServiceException: Access Denied (emulated)")
    bucket, _, key = source.name.removeprefix("s3://").partition("/")
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    parquet = pq.ParquetFile(pa.BufferReader(body))
    metadata = parquet.metadata
    codecs = {
        metadata.row_group(g).column(c).compression
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
    }
    table = parquet.read()
    recorder.copied.append(CopiedObject(key, codecs, table))
    if table.num_rows and max(row_bytes(table).to_pylist()) > MAX_COPY_ROW_BYTES:
        raise psycopg.errors.InternalError(
            f"COPY: an input row of s3://{bucket}/{key} is over {MAX_COPY_ROW_BYTES} bytes"
        )

    staging = copy.this.name
    columns = connection.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [f'"{staging}"'],
    ).fetchall()
    # COPY from Parquet maps columns by position, and their numbers must match.
    assert len(columns) == table.num_columns, (columns, table.schema)
    for (column, column_type), parquet_field in zip(columns, table.schema, strict=True):
        assert LOADS_INTO[str(parquet_field.type)] == column_type, (column, parquet_field)
    with connection.cursor().copy(f'COPY "{staging}" FROM STDIN') as rows:
        for record in table.to_pylist():
            rows.write_row(tuple(record.values()))


def row_bytes(table: pa.Table) -> pa.Array:
    """Each row's bytes as COPY reads it: text and binary at their length, any other value at
    8 bytes."""
    sizes = [
        pc.fill_null(pc.binary_length(column), 0)
        if pa.types.is_string(column.type) or pa.types.is_binary(column.type)
        else pa.repeat(pa.scalar(8, pa.int32()), table.num_rows)
        for column in table.itercolumns()
    ]
    total = pa.repeat(pa.scalar(0, pa.int64()), table.num_rows)
    for size in sizes:
        total = pc.add(total, pc.cast(size, pa.int64()))
    return total


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Statements are recorded as sent (the multi-row INSERTs' parameters bound client-side,
    to parse them), COPY from S3 is emulated, all else runs on PostgreSQL unchanged."""
    recorded = Recorder()
    execute = psycopg.Connection.execute

    def recording(self, query, params=None, *args, **kwargs):
        sql = str(query)
        bound = psycopg.ClientCursor(self).mogrify(sql.replace("%t", "%s"), params)
        recorded.statements.append(bound)
        if sql.startswith("COPY ") and " FROM 's3://" in sql:
            emulated_copy(self, sql, recorded)
            return self.cursor()
        return execute(self, query, params, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", recording)
    return recorded


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A bucket of its own, and the AWS variables pointing boto3 at the S3 server."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    return s3_server.create_bucket(f"staging-{uuid4().hex[:12]}")


def staged_resources(warehouse: Warehouse, bucket: str) -> dict[str, object]:
    connection = warehouse.connection(EnvVar("REDSHIFT_PASSWORD"))
    staging = RedshiftS3Staging(uri=f"s3://{bucket}/loads/", iam_role=ROLE)
    return {
        "warehouse_io_manager": RedshiftEventIOManager(connection=connection, s3_staging=staging),
        "warehouse_stats": RedshiftEventStats(connection=connection),
    }

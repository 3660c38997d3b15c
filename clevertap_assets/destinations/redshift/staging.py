"""Redshift's bulk path: the rows as Parquet in S3, `COPY ... FORMAT AS PARQUET` into a
temporary staging table, then the window's delete and an `INSERT ... SELECT` from it.

Multi-row INSERTs pass every value through the leader node; AWS's recommended bulk path is
COPY from S3, which the compute slices read in parallel
(https://docs.aws.amazon.com/redshift/latest/dg/c_best-practices-use-copy.html). It is used
when `REDSHIFT_S3_STAGING_URI` names a bucket (and prefix) and `REDSHIFT_IAM_ROLE` a role the
cluster may assume to read it; without a bucket the loader keeps its INSERTs.

What COPY from Parquet allows shapes the staging table
(https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-copy-from-columnar.html):

- columns are matched by position, not by name, and the table must have exactly the file's
  columns: so the staging table is created with the file's columns in the file's order, and
  the target table (whose columns a widening may have moved) is filled by name from it;
- only FROM, IAM_ROLE/CREDENTIALS, MANIFEST, ACCEPTINVCHARS, FILLRECORD, STATUPDATE and
  EXPLICIT_IDS apply (no REGION: the bucket must be in the cluster's region);
- JSON text cannot go straight into SUPER: `SERIALIZETOJSON` turns Parquet's nested types
  into SUPER, but a Parquet string arrives as a SUPER string, not parsed
  (https://docs.aws.amazon.com/redshift/latest/dg/ingest-super.html#copy_json-from-parquet-orc).
  JSON is staged as Parquet binary into `VARBYTE(16777216)`, which COPY loads from Parquet
  (https://docs.aws.amazon.com/redshift/latest/dg/copy-usage-varbyte.html) and which holds a
  SUPER value's 16 MB (https://docs.aws.amazon.com/redshift/latest/dg/r_VARBYTE_type.html),
  and parsed by `JSON_PARSE`, which takes VARBYTE
  (https://docs.aws.amazon.com/redshift/latest/dg/JSON_PARSE.html);
- time zones: a `TIMESTAMPTZ` value is staged as its UTC wall time in a `TIMESTAMP` column
  and made a `TIMESTAMPTZ` again by `AT TIME ZONE 'UTC'`
  (https://docs.aws.amazon.com/redshift/latest/dg/r_AT_TIME_ZONE.html), rather than relying
  on how COPY reads a Parquet timestamp adjusted to UTC.

The Parquet file is Snappy-compressed, a codec Redshift Spectrum (which COPY from Parquet
uses) reads. Its S3 object lives only as long as the COPY: it is deleted once the COPY has
run or failed. S3 credentials come from boto3's own chain (environment, profile, instance
role) and never pass through this project's settings, logs or errors; the IAM role's ARN is
not a secret.
"""

import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import boto3
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError
from dagster import ConfigurableResource
from dagster._core.storage.db_io_manager import TableSlice
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.destinations.common import DestinationError
from clevertap_assets.destinations.redshift.dialect import (
    MAX_SUPER_BYTES,
    FitCounts,
    RedshiftDialect,
)
from clevertap_assets.destinations.redshift.settings import PREFIX
from clevertap_assets.naming import quote_identifier
from clevertap_assets.settings import SettingsError

STAGING_URI_VARIABLE = f"{PREFIX}S3_STAGING_URI"
MAX_COPY_ROW_BYTES = 4 * 1024 * 1024
"""COPY reads an input row of at most 4 MB from any source
(https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-source.html), less than
the 16,000,000 bytes of JSON a cluster with large strings parses (`dialect.json_limit`)."""
IAM_ROLE_VARIABLE = f"{PREFIX}IAM_ROLE"
PARQUET_COMPRESSION = "snappy"
STAGING_TABLE = "clevertap_staging"
"""A temporary table: private to the load's session, and gone with it whatever happens."""

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
"""S3's bucket naming rules (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html)."""
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
"""A role ARN; COPY also takes `default` (the cluster's default role) or a comma-separated
chain of ARNs (https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-authorization.html)."""

_STAGING_TYPES = {
    Kind.BOOLEAN: ("BOOLEAN", pa.bool_()),
    Kind.BIGINT: ("BIGINT", pa.int64()),
    Kind.DOUBLE: ("DOUBLE PRECISION", pa.float64()),
    Kind.TIMESTAMP: ("TIMESTAMP", pa.timestamp("us")),
    Kind.TIMESTAMPTZ: ("TIMESTAMP", pa.timestamp("us")),
    Kind.TEXT: (None, pa.string()),  # the target's own VARCHAR
    Kind.JSON: (f"VARBYTE({MAX_SUPER_BYTES})", pa.binary()),
}
"""Per kind: the staging column's type and the Parquet (Arrow) type COPY loads into it."""


class RedshiftStagingError(DestinationError):
    """The staging bucket refused an upload or a delete; the message names the object."""


class StagingSettings(BaseSettings):
    """`REDSHIFT_S3_STAGING_URI`, `REDSHIFT_IAM_ROLE` and, where boto3 cannot tell the
    bucket's region from its environment, `REDSHIFT_S3_REGION`."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    s3_staging_uri: str = ""
    iam_role: str = ""
    s3_region: str = ""

    def staging(self) -> "RedshiftS3Staging | None":
        """The S3 path, or None without a staging URI (the INSERT path). Every mistake is
        named in one message when the definitions load."""
        if not self.s3_staging_uri:
            if self.iam_role:
                raise SettingsError(
                    f"{IAM_ROLE_VARIABLE} is set but {STAGING_URI_VARIABLE} is not: set both "
                    "to load through S3 and COPY, or neither to load with INSERTs"
                )
            return None
        problems = [*_uri_problems(self.s3_staging_uri), *_role_problems(self.iam_role)]
        if problems:
            raise SettingsError("Redshift S3 staging: " + "; ".join(problems))
        return RedshiftS3Staging(
            uri=self.s3_staging_uri, iam_role=self.iam_role, region=self.s3_region or None
        )


def _uri_problems(uri: str) -> list[str]:
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    if not uri.startswith("s3://") or not _BUCKET.match(bucket):
        return [
            f"{STAGING_URI_VARIABLE}={uri!r} is not s3://<bucket>[/<prefix>] with a valid "
            "bucket name (3-63 lower-case letters, digits, dots and hyphens)"
        ]
    return []


def _role_problems(role: str) -> list[str]:
    if not role:
        return [
            f"{IAM_ROLE_VARIABLE} is not set: the ARN of an IAM role associated with the "
            "cluster that may read the staging bucket (or 'default' for its default role)"
        ]
    if role != "default" and not all(_ROLE_ARN.match(arn) for arn in role.split(",")):
        return [
            f"{IAM_ROLE_VARIABLE}={role!r} is not an IAM role ARN "
            "(arn:aws:iam::<12-digit account>:role/<name>), a comma-separated chain of them, "
            "or 'default'"
        ]
    return []


@dataclass(frozen=True)
class UploadedRows:
    """A load's rows as one Parquet object in S3, fitted for these target column kinds."""

    key: str
    kinds: Mapping[str, Kind]
    rows: int
    fitted: FitCounts


@dataclass(frozen=True)
class StagedRows:
    """The load's rows in the session's staging table: target column name to kind, in the
    staging table's (the Parquet file's) order."""

    kinds: Mapping[str, Kind]
    rows: int


class RedshiftS3Staging(ConfigurableResource):
    """Where the Parquet files go and which role the cluster assumes to COPY them."""

    uri: str = Field(description="s3://bucket[/prefix] for the files COPY reads")
    iam_role: str = Field(description="IAM role ARN(s) for COPY, or 'default'")
    region: str | None = Field(None, description="The bucket's region, if boto3 cannot tell")

    @property
    def bucket(self) -> str:
        return self.uri.removeprefix("s3://").split("/", 1)[0]

    def object_key(self, schema: str, table: str) -> str:
        """A key of its own per load, under the prefix, named after the target."""
        prefix = self.uri.removeprefix("s3://").partition("/")[2].strip("/")
        name = f"{schema}.{table}/{uuid.uuid4().hex}.parquet"
        return f"{prefix}/{name}" if prefix else name

    def copy_statement(self, key: str) -> str:
        role = "default" if self.iam_role == "default" else _literal(self.iam_role)
        source = _literal(f"s3://{self.bucket}/{key}")
        return (
            f"COPY {quote_identifier(STAGING_TABLE)} FROM {source} IAM_ROLE {role} "
            "FORMAT AS PARQUET"
        )

    def upload(
        self,
        table_slice: TableSlice,
        kinds: Mapping[str, Kind],
        rows: Iterable[pa.RecordBatch],
        fitted: FitCounts,
    ) -> UploadedRows:
        """Write the rows (named and fitted for the target, `kinds` in their order, what did
        not fit counted in `fitted`) as one Parquet file and put it in S3. Outside any
        transaction: nothing here touches the table."""
        key = self.object_key(table_slice.schema, table_slice.table)
        with tempfile.TemporaryDirectory(prefix="redshift_staging_") as folder:
            path = Path(folder) / "rows.parquet"
            count = write_parquet(path, kinds, rows)
            with self._s3_errors("upload the rows to", key):
                self._s3().upload_file(str(path), self.bucket, key)
        return UploadedRows(key, dict(kinds), count, fitted)

    def copy(
        self, connection: psycopg.Connection, dialect: RedshiftDialect, uploaded: UploadedRows
    ) -> StagedRows:
        """Create the staging table and COPY the uploaded file into it, in the caller's
        transaction. The S3 object is deleted whether the COPY worked or not."""
        try:
            columns = ", ".join(
                f"{quote_identifier(name)} {staging_type(dialect, kind)}"
                for name, kind in uploaded.kinds.items()
            )
            staging = quote_identifier(STAGING_TABLE)
            connection.execute(f"CREATE TEMPORARY TABLE {staging} ({columns})")
            connection.execute(self.copy_statement(uploaded.key))
        except BaseException:
            self.discard(uploaded)  # the COPY's error is the one to tell
            raise
        with self._s3_errors("delete (s3:DeleteObject) the COPYed", uploaded.key):
            self._s3().delete_object(Bucket=self.bucket, Key=uploaded.key)
        return StagedRows(uploaded.kinds, uploaded.rows)

    def discard(self, uploaded: UploadedRows) -> None:
        """Delete an uploaded object no COPY will read, on the way out of a failure (whose
        error is the one to tell) or a replaced upload."""
        with suppress(BotoCoreError, ClientError):
            self._s3().delete_object(Bucket=self.bucket, Key=uploaded.key)

    def _s3(self):
        return boto3.client("s3", region_name=self.region)

    @contextmanager
    def _s3_errors(self, action: str, key: str) -> Iterator[None]:
        """An S3 failure as one error naming the object, the setting and S3's reason.
        boto3's messages name the operation, bucket and code, never the credentials."""
        try:
            yield
        except (BotoCoreError, ClientError, S3UploadFailedError) as error:
            raise RedshiftStagingError(
                f"could not {action} s3://{self.bucket}/{key} ({STAGING_URI_VARIABLE}="
                f"{self.uri}): {error}"
            ) from None


def copy_limit_text() -> str:
    """Why a row's JSON was stored as NULL on the S3 path, naming the setting that chose it."""
    return (
        f"their rows were over the {MAX_COPY_ROW_BYTES:,} bytes Redshift's COPY reads in one "
        f"row ({STAGING_URI_VARIABLE} loads through COPY; the INSERTs used without it take "
        "rows up to 16 MB)"
    )


def within_copy_row(
    batch: pa.RecordBatch, kinds: Mapping[str, Kind], fitted: FitCounts
) -> pa.RecordBatch:
    """The rows, a row over `MAX_COPY_ROW_BYTES` with its largest JSON values made NULL
    until it fits, counted in `fitted`: a row COPY cannot read would fail the whole load on
    every run. Sized as Redshift sizes values: text and JSON at their bytes, anything else
    at 8."""
    sizes = {
        name: pc.fill_null(pc.binary_length(batch.column(name)), 0).to_pylist()
        for name, kind in kinds.items()
        if kind in (Kind.TEXT, Kind.JSON)
    }
    fixed = 8 * (len(kinds) - len(sizes))
    totals = [fixed + sum(row) for row in zip(*sizes.values(), strict=True)]
    json_names = [name for name, kind in kinds.items() if kind == Kind.JSON]
    nulled = {name: [False] * batch.num_rows for name in json_names}
    for row, total in enumerate(totals):
        excess = total - MAX_COPY_ROW_BYTES
        for name in sorted(json_names, key=lambda n: sizes[n][row], reverse=True):
            if excess <= 0 or not sizes[name][row]:
                break
            nulled[name][row] = True
            excess -= sizes[name][row]
            fitted.json_values_nulled_for_copy += 1
    if not any(any(mask) for mask in nulled.values()):
        return batch
    arrays = [
        pc.if_else(pa.array(nulled[name]), pa.scalar(None, column.type), column)
        if name in nulled
        else column
        for name, column in ((name, batch.column(name)) for name in kinds)
    ]
    return pa.RecordBatch.from_arrays(arrays, list(kinds))


def staging_type(dialect: RedshiftDialect, kind: Kind) -> str:
    return _STAGING_TYPES[kind][0] or dialect.column_type(kind)


def parquet_schema(kinds: Mapping[str, Kind]) -> pa.Schema:
    return pa.schema([(name, _STAGING_TYPES[kind][1]) for name, kind in kinds.items()])


def write_parquet(path: Path, kinds: Mapping[str, Kind], rows: Iterable[pa.RecordBatch]) -> int:
    """The rows as the staging table's Parquet file, chunk by chunk (memory stays flat);
    the number of rows written."""
    schema = parquet_schema(kinds)
    count = 0
    with pq.ParquetWriter(path, schema, compression=PARQUET_COMPRESSION) as writer:
        for batch in rows:
            arrays = [pc.cast(batch.column(name), schema.field(name).type) for name in kinds]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            count += batch.num_rows
    return count


def insert_staged(connection: psycopg.Connection, target: str, staged: StagedRows) -> None:
    """The staged rows into the target by column name (JSON parsed, UTC times given their
    zone back), then the staging table dropped; in the caller's transaction, after the
    window's DELETE, as AWS's staging-table merge does
    (https://docs.aws.amazon.com/redshift/latest/dg/merge-replacing-existing-rows.html)."""
    columns = ", ".join(quote_identifier(name) for name in staged.kinds)
    values = ", ".join(_from_staging(quote_identifier(n), k) for n, k in staged.kinds.items())
    staging = quote_identifier(STAGING_TABLE)
    connection.execute(f"INSERT INTO {target} ({columns}) SELECT {values} FROM {staging}")
    connection.execute(f"DROP TABLE {staging}")


def _from_staging(column: str, kind: Kind) -> str:
    if kind == Kind.JSON:
        return f"JSON_PARSE({column})"
    if kind == Kind.TIMESTAMPTZ:
        return f"{column} AT TIME ZONE 'UTC'"
    return column


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"

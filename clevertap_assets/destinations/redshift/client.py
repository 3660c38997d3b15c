"""Connections to Redshift over psycopg 3, and the catalog lookups every load makes.

Concurrency: provisioned clusters created before mid-2024 run every transaction
SERIALIZABLE. Two loads of one event at once (a schedule tick beside a backfill) would then
fail one of them with a serializable isolation violation (error 1023). As AWS documents, each
load locks its table as the first statement of its transaction (`RedshiftWindowLoad`), and a
load that still meets a conflict (or a concurrent first load's `CREATE`) is retried from the
start, a few times with a growing, jittered pause (`RedshiftEventDbIOManager`).
"""

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import boto3
import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from dagster import ConfigurableResource, InputContext, OutputContext
from dagster._core.storage.db_io_manager import DbClient, TableSlice
from pydantic import Field

from clevertap_assets.destinations.common import DestinationError, qualified_name, window_where
from clevertap_assets.destinations.window import HandlerReplacesWindow
from clevertap_assets.naming import quote_identifier

IAM_CREDENTIAL_SECONDS = 900
"""The shortest lifetime both credential calls allow: a connection is opened right after."""
_CONFLICT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "23505",  # unique_violation: two first loads creating one schema or table in the catalog
        "42P06",  # duplicate_schema
        "42P07",  # duplicate_table
    }
)


class RedshiftConnection(ConfigurableResource):
    """Where and as whom to connect; shared by the IO manager and the stats reader."""

    host: str
    port: int = 5439
    database: str
    user: str
    password: str = Field(
        "", repr=False, description="Pass as EnvVar('REDSHIFT_PASSWORD'); empty with IAM."
    )
    iam_cluster_id: str = Field(
        "", description="A provisioned cluster's identifier: log in with GetClusterCredentials"
    )
    iam_workgroup: str = Field(
        "", description="A Serverless workgroup's name: log in with its GetCredentials"
    )
    sslmode: str = Field("require", description="libpq sslmode; Redshift accepts TLS.")
    connect_timeout_seconds: int = 30

    def connect(self) -> psycopg.Connection:
        """A connection with an implicit transaction. Automatic prepared statements are off:
        psycopg would DEALLOCATE them in ways Redshift does not support."""
        user, password = self.login()
        try:
            return psycopg.connect(
                host=self.host,
                port=self.port,
                dbname=self.database,
                user=user,
                password=password,
                sslmode=self.sslmode,
                connect_timeout=self.connect_timeout_seconds,
                application_name="clevertap_assets",
                prepare_threshold=None,
            )
        except psycopg.OperationalError as exc:
            reason = str(exc).replace(password, "***") if password else str(exc)
            raise DestinationError(
                f"could not connect to Redshift {self.describe()}: {reason.strip()}"
            ) from None

    def login(self) -> tuple[str, str]:
        """The database user and password to log in with: temporary ones from IAM, asked
        with boto3's own credentials for `user` (Redshift names it `IAM:<user>`), or the
        configured password (https://docs.aws.amazon.com/redshift/latest/mgmt/generating-user-credentials.html)."""
        if not (self.iam_cluster_id or self.iam_workgroup):
            return self.user, self.password
        setting = (
            f"REDSHIFT_IAM_CLUSTER_ID={self.iam_cluster_id}"
            if self.iam_cluster_id
            else f"REDSHIFT_IAM_WORKGROUP={self.iam_workgroup}"
        )
        try:
            if self.iam_cluster_id:
                answer = boto3.client("redshift").get_cluster_credentials(
                    DbUser=self.user,
                    DbName=self.database,
                    ClusterIdentifier=self.iam_cluster_id,
                    DurationSeconds=IAM_CREDENTIAL_SECONDS,
                    AutoCreate=False,
                )
                return answer["DbUser"], answer["DbPassword"]
            answer = boto3.client("redshift-serverless").get_credentials(
                workgroupName=self.iam_workgroup,
                dbName=self.database,
                durationSeconds=IAM_CREDENTIAL_SECONDS,
            )
            return answer["dbUser"], answer["dbPassword"]
        except (BotoCoreError, ClientError) as error:
            raise DestinationError(
                f"could not get temporary Redshift credentials for {self.describe()} "
                f"({setting}): {error}"
            ) from None

    @contextmanager
    def session(self) -> Iterator[psycopg.Connection]:
        """A connection closed on leaving, committed by nobody: for reads."""
        connection = self.connect()
        try:
            yield connection
        finally:
            connection.close()

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def target_name(table_slice: TableSlice) -> str:
    """Schema-qualified only: Redshift writes cannot name another database."""
    return qualified_name(table_slice._replace(database=None))


def lower_case(table_slice: TableSlice) -> TableSlice:
    """Names as Redshift stores them: it folds identifiers to lower case, quoted ones too,
    unless `enable_case_sensitive_identifier` is on (off by default), and its catalog answers
    in lower case, so a `TABLE_PREFIX=CT` table is created as `ct_charged` and must be looked
    up as such."""
    return table_slice._replace(
        schema=table_slice.schema.lower(),
        table=table_slice.table.lower(),
        columns=[column.lower() for column in table_slice.columns or []] or None,
    )


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


class RedshiftDbClient(HandlerReplacesWindow, DbClient):
    """One transaction per load: the table's LOCK, any schema change, the window's DELETE and
    every INSERT commit together or not at all (`destinations.window`), so a failed load
    leaves the previous rows in place and two loads of one table run one after the other."""

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

    def ensure_schema_exists(
        self, context: OutputContext, table_slice: TableSlice, connection: psycopg.Connection
    ) -> None:
        """In a transaction of its own (see `create_schema`), so the load's begins afresh."""
        create_schema(connection, table_slice.schema)

    @staticmethod
    def get_select_statement(table_slice: TableSlice) -> str:
        columns = ", ".join(quote_identifier(c) for c in table_slice.columns or []) or "*"
        return select(columns, table_slice)


def select(expressions: str, table_slice: TableSlice) -> str:
    return f"SELECT {expressions} FROM {target_name(table_slice)}{window_where(table_slice)}"

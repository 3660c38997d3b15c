"""One test's Redshift stand-in: a fresh database on the test PostgreSQL server set up as
`postgres_server.REDSHIFT_LIKE`, the REDSHIFT_* variables pointing at it, and how to read it
back. Import the fixture into a test module:

    from clevertap_assets_tests.redshift_warehouse import Warehouse, warehouse  # noqa: F401
"""

from collections.abc import Iterator
from dataclasses import dataclass
from uuid import uuid4

import psycopg
import pytest
from dagster import EnvVar

from clevertap_assets.destinations.redshift.client import RedshiftConnection
from clevertap_assets.destinations.redshift.io_manager import RedshiftEventIOManager
from clevertap_assets.destinations.redshift.stats import RedshiftEventStats
from clevertap_assets_tests.postgres_server import PostgresServer


@dataclass
class Warehouse:
    """One test's database on the test server, and how to read it back."""

    server: PostgresServer
    database: str

    def connection(self, password: str | EnvVar | None = None) -> RedshiftConnection:
        return RedshiftConnection(
            host=self.server.host,
            port=self.server.port,
            database=self.database,
            user=self.server.user,
            password=password or self.server.password,
            sslmode="disable",
        )

    def resources(self) -> dict[str, object]:
        """What `build_redshift_resources` builds (password as an EnvVar), JSON as JSONB."""
        connection = self.connection(EnvVar("REDSHIFT_PASSWORD"))
        return {
            "warehouse_io_manager": RedshiftEventIOManager(connection=connection),
            "warehouse_stats": RedshiftEventStats(connection=connection),
        }

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.server.conninfo(self.database)) as connection:
            return connection.execute(sql, params).fetchall()

    def daily_rows(self, table: str, schema: str = "clevertap") -> dict:
        return dict(
            self.query(
                f'SELECT CAST(event_time AS DATE), count(*) FROM "{schema}"."{table}" GROUP BY 1'
            )
        )

    def opt_in_to_large_strings(self) -> None:
        """What a cluster's owner sets, in the shim's spelling (`postgres_server.REDSHIFT_LIKE`)."""
        with psycopg.connect(self.server.conninfo(self.database), autocommit=True) as connection:
            connection.execute(
                f'ALTER DATABASE "{self.database}" SET redshift.enable_large_strings_opt_in = on'
            )

    def use_snapshot_isolation(self) -> None:
        """Transactions as Redshift Serverless and newer provisioned clusters run them
        (SNAPSHOT: https://docs.aws.amazon.com/redshift/latest/dg/c_serial_isolation.html), in
        PostgreSQL's spelling (REPEATABLE READ is snapshot isolation); the database is
        SERIALIZABLE otherwise, as older clusters."""
        with psycopg.connect(self.server.conninfo(self.database), autocommit=True) as connection:
            connection.execute(
                f'ALTER DATABASE "{self.database}" SET default_transaction_isolation = '
                "'repeatable read'"
            )

    def columns(self, table: str) -> dict[str, str]:
        rows = self.query(
            "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns "
            "WHERE table_name = %s",
            (table,),
        )
        return {name: f"{kind}({length})" if length else kind for name, kind, length in rows}


@pytest.fixture
def warehouse(
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Warehouse]:
    """A fresh database, and the REDSHIFT_* variables pointing at it, as a user would set them."""
    database = postgres_server.create_redshift_database(f"t_{uuid4().hex[:12]}")
    for name, value in {
        "REDSHIFT_HOST": postgres_server.host,
        "REDSHIFT_PORT": str(postgres_server.port),
        "REDSHIFT_DATABASE": database,
        "REDSHIFT_USER": postgres_server.user,
        "REDSHIFT_PASSWORD": postgres_server.password,
        "REDSHIFT_SSLMODE": "disable",
    }.items():
        monkeypatch.setenv(name, value)
    yield Warehouse(postgres_server, database)

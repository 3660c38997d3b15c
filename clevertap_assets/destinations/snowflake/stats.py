"""Counts for checks and reconciliation on Snowflake, through the shared SQL."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date

from dagster import ConfigurableResource
from dagster._core.storage.db_io_manager import TableSlice
from dagster_snowflake import SnowflakeResource
from snowflake.connector.cursor import SnowflakeCursor

from clevertap_assets.destinations.common import qualified_name
from clevertap_assets.destinations.snowflake.client import existing_columns, upper_case
from clevertap_assets.destinations.stats import SqlEventTableStats


class SnowflakeEventStats(ConfigurableResource, SqlEventTableStats):
    """Over Dagster's Snowflake resource; names in upper case, as the loads store them."""

    snowflake: SnowflakeResource

    @contextmanager
    def open_session(self) -> Iterator[SnowflakeCursor]:
        with self.snowflake.get_connection() as connection, connection.cursor() as cursor:
            yield cursor

    def table_reference(self, session: SnowflakeCursor, schema: str, table: str) -> str | None:
        database = self.snowflake.database
        table_slice = upper_case(TableSlice(table=table, schema=schema, database=database))
        return qualified_name(table_slice) if existing_columns(session, table_slice) else None

    def stored_table_name(self, table: str) -> str:
        return table.upper()

    def day_parameter(self, name: str) -> str:
        return f"%({name})s"

    def fetch(self, session: SnowflakeCursor, sql: str, days: Mapping[str, date]) -> list[tuple]:
        session.execute(sql, {name: day.isoformat() for name, day in days.items()})
        return session.fetchall()

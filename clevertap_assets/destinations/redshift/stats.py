"""Counts for checks and reconciliation on Redshift, through the shared SQL."""

from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import date

import psycopg
from dagster import ConfigurableResource
from dagster._core.storage.db_io_manager import TableSlice

from clevertap_assets.destinations.redshift.client import (
    RedshiftConnection,
    lower_case,
    table_columns,
    target_name,
)
from clevertap_assets.destinations.stats import SqlEventTableStats


class RedshiftEventStats(ConfigurableResource, SqlEventTableStats):
    """Each question through a short-lived connection, names in lower case."""

    connection: RedshiftConnection

    def open_session(self) -> AbstractContextManager[psycopg.Connection]:
        return self.connection.session()

    def table_reference(self, session: psycopg.Connection, schema: str, table: str) -> str | None:
        table_slice = lower_case(TableSlice(table=table, schema=schema))
        if not table_columns(session, table_slice.schema, table_slice.table):
            return None
        return target_name(table_slice)

    def stored_table_name(self, table: str) -> str:
        return table.lower()

    def day_parameter(self, name: str) -> str:
        return f"%({name})t"

    def fetch(self, session: psycopg.Connection, sql: str, days: Mapping[str, date]) -> list[tuple]:
        return session.execute(sql, days).fetchall()

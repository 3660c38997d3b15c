"""Counts for checks and reconciliation on BigQuery, through the shared SQL."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date

from dagster._core.storage.db_io_manager import TableSlice
from dagster_gcp import BigQueryResource
from google.cloud import bigquery

from clevertap_assets.destinations.bigquery.client import existing_table, make_client, table_sql
from clevertap_assets.destinations.bigquery.dialect import every_partition
from clevertap_assets.destinations.stats import SqlEventTableStats


class BigQueryEventStats(BigQueryResource, SqlEventTableStats):
    """Query jobs that read two columns."""

    @contextmanager
    def get_client(self) -> Iterator[bigquery.Client]:
        """In-memory credentials (see `make_client`)."""
        yield make_client(self.project, self.location, self.gcp_credentials)

    def open_session(self):
        return self.get_client()

    def table_reference(self, session: bigquery.Client, schema: str, table: str) -> str | None:
        table_slice = TableSlice(table=table, schema=schema, database=session.project)
        return table_sql(table_slice) if existing_table(session, table_slice) else None

    def day_parameter(self, name: str) -> str:
        """`event_time` is a DATETIME; BigQuery compares it with a DATETIME, not a DATE."""
        return f"DATETIME(@{name})"

    def every_row(self) -> str:
        """Event tables are partitioned on `event_time`, which an owner may require queries
        to filter on (`every_partition`)."""
        return f" WHERE {every_partition('event_time')}"

    def fetch(self, session: bigquery.Client, sql: str, days: Mapping[str, date]) -> list[tuple]:
        parameters = [bigquery.ScalarQueryParameter(n, "DATE", day) for n, day in days.items()]
        config = bigquery.QueryJobConfig(query_parameters=parameters)
        return [tuple(row.values()) for row in session.query(sql, job_config=config).result()]

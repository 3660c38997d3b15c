"""Dagster's BigQuery client with our names, and the table lookups every load makes."""

import base64
import json

from dagster import OutputContext
from dagster._core.storage.db_io_manager import TableSlice
from dagster_gcp.bigquery.io_manager import BigQueryClient
from google.api_core.exceptions import NotFound
from google.auth.credentials import Credentials
from google.cloud import bigquery
from google.oauth2 import service_account

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.destinations.bigquery.dialect import catalog_kind, quote
from clevertap_assets.destinations.window import HandlerReplacesWindow


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
    return {field.name: catalog_kind(field.field_type) for field in table.schema}


def credentials_from_key(encoded_key: str | None) -> Credentials | None:
    """A base64 service-account key as credentials; None leaves Google's defaults to apply."""
    if not encoded_key:
        return None
    info = json.loads(base64.b64decode(encoded_key))
    return service_account.Credentials.from_service_account_info(info)


def make_client(project: str, location: str | None, encoded_key: str | None) -> bigquery.Client:
    """Credentials made in memory from the key: Dagster's resource would point
    GOOGLE_APPLICATION_CREDENTIALS at a key file for the whole process, and refuses to when
    the IO manager of the same run already has (and it never touches the disk)."""
    return bigquery.Client(
        project=project, location=location, credentials=credentials_from_key(encoded_key)
    )


class BigQueryEventClient(HandlerReplacesWindow, BigQueryClient):
    """Dagster's BigQuery client; the window is replaced by `destinations.window`."""

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

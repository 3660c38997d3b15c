"""`clevertap-assets check` for DuckDB: the file opens for writing and the schema exists."""

from clevertap_assets.destinations.duckdb.client import CONNECTION_CONFIG
from clevertap_assets.destinations.duckdb.lock import connect_when_unlocked
from clevertap_assets.naming import quote_identifier
from clevertap_assets.settings import PipelineSettings


def check_duckdb_destination(settings: PipelineSettings) -> str:
    """Not locked by another process, schema created; raises `DuckDBLockTimeout` (a `DestinationError`) otherwise."""
    connection = connect_when_unlocked(
        settings.duckdb_path, read_only=False, config=CONNECTION_CONFIG
    )
    with connection:
        schema = quote_identifier(settings.warehouse_schema)
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    return f"DuckDB OK: {settings.duckdb_path}, schema {settings.warehouse_schema!r} ready"

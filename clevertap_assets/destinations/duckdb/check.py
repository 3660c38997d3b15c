"""`clevertap-assets check` for DuckDB: the file opens for writing and the schema exists."""

from clevertap_assets.destinations.duckdb.client import CONNECTION_CONFIG
from clevertap_assets.destinations.duckdb.lock import connect_when_unlocked
from clevertap_assets.destinations.duckdb.settings import DuckDBSettings
from clevertap_assets.destinations.settings import Warehouse
from clevertap_assets.naming import quote_identifier


def check_duckdb_destination(warehouse: Warehouse[DuckDBSettings]) -> str:
    """Not locked by another process, schema created; raises `DuckDBLockTimeout` (a `DestinationError`) otherwise."""
    path = warehouse.settings.path
    connection = connect_when_unlocked(path, read_only=False, config=CONNECTION_CONFIG)
    with connection:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(warehouse.schema)}")
    return f"DuckDB OK: {path}, schema {warehouse.schema!r} ready"

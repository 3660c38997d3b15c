"""The DuckDB resources a pipeline runs with: the file is `DUCKDB_PATH`, the schema
`DUCKDB_SCHEMA` (see `settings`: the file's name is checked against the schema's)."""

from clevertap_assets.destinations.duckdb.client import CONNECTION_CONFIG
from clevertap_assets.destinations.duckdb.io_manager import DuckDBEventIOManager
from clevertap_assets.destinations.duckdb.settings import DuckDBSettings
from clevertap_assets.destinations.duckdb.stats import DuckDBEventStats
from clevertap_assets.destinations.settings import Warehouse
from clevertap_assets.keys import WAREHOUSE_IO_MANAGER, WAREHOUSE_STATS


def build_duckdb_resources(warehouse: Warehouse[DuckDBSettings]) -> dict[str, object]:
    path = warehouse.settings.path
    return {
        WAREHOUSE_IO_MANAGER: DuckDBEventIOManager(
            database=path, connection_config=CONNECTION_CONFIG
        ),
        WAREHOUSE_STATS: DuckDBEventStats(database=path),
    }

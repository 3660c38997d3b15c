"""The DuckDB resources a pipeline runs with: the file is `DUCKDB_PATH`, the schema
`DUCKDB_SCHEMA`, both pipeline settings (the file's name is checked against the schema's)."""

from clevertap_assets.destinations.duckdb.client import CONNECTION_CONFIG
from clevertap_assets.destinations.duckdb.io_manager import DuckDBEventIOManager
from clevertap_assets.destinations.duckdb.stats import DuckDBEventStats
from clevertap_assets.keys import WAREHOUSE_IO_MANAGER, WAREHOUSE_STATS
from clevertap_assets.settings import PipelineSettings


def build_duckdb_resources(settings: PipelineSettings) -> dict[str, object]:
    return {
        WAREHOUSE_IO_MANAGER: DuckDBEventIOManager(
            database=settings.duckdb_path, connection_config=CONNECTION_CONFIG
        ),
        WAREHOUSE_STATS: DuckDBEventStats(database=settings.duckdb_path),
    }

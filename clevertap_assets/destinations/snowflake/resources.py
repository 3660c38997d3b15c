"""The Snowflake resources a pipeline runs with, from `SNOWFLAKE_*` (see `settings`)."""

from dagster_snowflake import SnowflakeResource

from clevertap_assets.destinations.settings import Warehouse
from clevertap_assets.destinations.snowflake.io_manager import SnowflakeEventIOManager
from clevertap_assets.destinations.snowflake.settings import SnowflakeSettings
from clevertap_assets.destinations.snowflake.stats import SnowflakeEventStats
from clevertap_assets.keys import WAREHOUSE_IO_MANAGER, WAREHOUSE_STATS


def build_snowflake_resources(warehouse: Warehouse[SnowflakeSettings]) -> dict[str, object]:
    connection = SnowflakeSettings.from_env().resource_fields()
    return {
        WAREHOUSE_IO_MANAGER: SnowflakeEventIOManager(schema=warehouse.schema, **connection),
        WAREHOUSE_STATS: SnowflakeEventStats(snowflake=SnowflakeResource(**connection)),
    }

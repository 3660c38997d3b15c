"""The BigQuery resources a pipeline runs with, from the variables `settings` reads."""

from dagster import EnvVar

from clevertap_assets.destinations.bigquery.io_manager import BigQueryEventIOManager
from clevertap_assets.destinations.bigquery.settings import KEY_VARIABLE, BigQuerySettings
from clevertap_assets.destinations.bigquery.stats import BigQueryEventStats
from clevertap_assets.destinations.settings import Warehouse
from clevertap_assets.keys import WAREHOUSE_IO_MANAGER, WAREHOUSE_STATS


def build_bigquery_resources(warehouse: Warehouse[BigQuerySettings]) -> dict[str, object]:
    bigquery = BigQuerySettings.from_env(warehouse.schema)
    connection = {
        "project": bigquery.project,
        "location": bigquery.location_or_none,
        "gcp_credentials": (
            EnvVar(KEY_VARIABLE) if bigquery.gcp_credentials.get_secret_value() else None
        ),
    }
    return {
        WAREHOUSE_IO_MANAGER: BigQueryEventIOManager(dataset=warehouse.schema, **connection),
        WAREHOUSE_STATS: BigQueryEventStats(**connection),
    }

"""The resources a pipeline runs with, chosen by its settings.

Credentials are `EnvVar`s: Dagster resolves them inside runs only, and shows the variable's
name, never its value, in the UI.
"""

from dagster import ConfigurableIOManagerFactory, ConfigurableResource, EnvVar

from clevertap_assets.clevertap_client import CleverTapResource
from clevertap_assets.event_assets import WAREHOUSE_IO_MANAGER
from clevertap_assets.io_managers.duckdb_io_manager import DuckDBEventIOManager, DuckDBEventStats
from clevertap_assets.settings import PipelineSettings

WAREHOUSE_STATS = "warehouse_stats"


def build_clevertap_resource(settings: PipelineSettings) -> CleverTapResource:
    return CleverTapResource(
        account_id=EnvVar("CLEVERTAP_ACCOUNT_ID"),
        passcode=EnvVar("CLEVERTAP_PASSCODE"),
        region=settings.region,
        api_url=settings.api_url,
    )


def build_destination_resources(
    settings: PipelineSettings,
) -> dict[str, ConfigurableIOManagerFactory | ConfigurableResource]:
    """The IO manager that loads event tables and the reader that checks them, per DESTINATION."""
    return {
        WAREHOUSE_IO_MANAGER: DuckDBEventIOManager(database=settings.duckdb_path),
        WAREHOUSE_STATS: DuckDBEventStats(database=settings.duckdb_path),
    }


def build_resources(settings: PipelineSettings) -> dict[str, object]:
    return {
        "clevertap": build_clevertap_resource(settings),
        **build_destination_resources(settings),
    }

"""The resources a pipeline runs with, chosen by its settings.

Credentials are `EnvVar`s: Dagster resolves them inside runs only, and shows the variable's
name, never its value, in the UI. Each destination module builds its own pair of resources
(the IO manager that loads event tables, the reader that checks them) and is imported only
when chosen, so a DuckDB user needs no Snowflake or BigQuery client configured.
"""

from collections.abc import Callable
from importlib import import_module

from dagster import EnvVar

from clevertap_assets.clevertap_client import CleverTapResource
from clevertap_assets.settings import PipelineSettings

DESTINATION_BUILDERS = {
    "duckdb": "clevertap_assets.io_managers.duckdb_io_manager:build_duckdb_resources",
    "snowflake": "clevertap_assets.io_managers.snowflake_io_manager:build_snowflake_resources",
    "bigquery": "clevertap_assets.io_managers.bigquery_io_manager:build_bigquery_resources",
    "redshift": "clevertap_assets.io_managers.redshift_io_manager:build_redshift_resources",
}


def build_clevertap_resource(settings: PipelineSettings) -> CleverTapResource:
    return CleverTapResource(
        account_id=EnvVar("CLEVERTAP_ACCOUNT_ID"),
        passcode=EnvVar("CLEVERTAP_PASSCODE"),
        region=settings.region,
        api_url=settings.api_url,
    )


def build_destination_resources(settings: PipelineSettings) -> dict[str, object]:
    """`{warehouse_io_manager: ..., warehouse_stats: ...}` for the chosen DESTINATION."""
    module, _, function = DESTINATION_BUILDERS[settings.destination].partition(":")
    builder: Callable[[PipelineSettings], dict[str, object]] = getattr(
        import_module(module), function
    )
    return builder(settings)


def build_resources(settings: PipelineSettings) -> dict[str, object]:
    return {
        "clevertap": build_clevertap_resource(settings),
        **build_destination_resources(settings),
    }

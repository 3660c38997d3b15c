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

DESTINATION_MODULE = "clevertap_assets.io_managers.{destination}_io_manager"
"""Each destination module has `build_<destination>_resources(settings)` and
`check_<destination>_destination(settings) -> str`."""


def build_clevertap_resource(settings: PipelineSettings) -> CleverTapResource:
    return CleverTapResource(
        account_id=EnvVar("CLEVERTAP_ACCOUNT_ID"),
        passcode=EnvVar("CLEVERTAP_PASSCODE"),
        region=settings.region,
        api_url=settings.api_url,
    )


def build_destination_resources(settings: PipelineSettings) -> dict[str, object]:
    """`{warehouse_io_manager: ..., warehouse_stats: ...}` for the chosen DESTINATION."""
    build = _destination_function(settings, "build_{destination}_resources")
    return build(settings)


def check_destination(settings: PipelineSettings) -> str:
    """Reach, authenticate and prepare the warehouse; one line on success, raises otherwise."""
    check = _destination_function(settings, "check_{destination}_destination")
    return check(settings)


def build_resources(settings: PipelineSettings) -> dict[str, object]:
    return {
        "clevertap": build_clevertap_resource(settings),
        **build_destination_resources(settings),
    }


def _destination_function(settings: PipelineSettings, name: str) -> Callable:
    module = import_module(DESTINATION_MODULE.format(destination=settings.destination))
    return getattr(module, name.format(destination=settings.destination))

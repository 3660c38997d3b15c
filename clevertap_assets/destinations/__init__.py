"""The warehouses events can land in, one subpackage each, chosen by `DESTINATION`.

`DESTINATIONS` maps each name to a loader rather than to the module itself: a destination's
client libraries are imported only when it is chosen, so a DuckDB user needs neither the
Snowflake nor the Google client installed (they are the `[snowflake]`, `[bigquery]` and
`[redshift]` extras).
"""

from collections.abc import Callable
from dataclasses import dataclass

from clevertap_assets.settings import PipelineSettings, SettingsError


@dataclass(frozen=True)
class Destination:
    """What every destination provides to the rest of the package."""

    build_resources: Callable[[PipelineSettings], dict[str, object]]
    """`{warehouse_io_manager: ..., warehouse_stats: ...}` for the event tables."""
    check: Callable[[PipelineSettings], str]
    """Reach, authenticate and prepare the warehouse; one line on success, raises otherwise."""


def _duckdb() -> Destination:
    from clevertap_assets.destinations.duckdb.io_manager import (
        build_duckdb_resources,
        check_duckdb_destination,
    )

    return Destination(build_duckdb_resources, check_duckdb_destination)


def _snowflake() -> Destination:
    from clevertap_assets.destinations.snowflake.io_manager import (
        build_snowflake_resources,
        check_snowflake_destination,
    )

    return Destination(build_snowflake_resources, check_snowflake_destination)


def _bigquery() -> Destination:
    from clevertap_assets.destinations.bigquery.io_manager import (
        build_bigquery_resources,
        check_bigquery_destination,
    )

    return Destination(build_bigquery_resources, check_bigquery_destination)


def _redshift() -> Destination:
    from clevertap_assets.destinations.redshift.io_manager import (
        build_redshift_resources,
        check_redshift_destination,
    )

    return Destination(build_redshift_resources, check_redshift_destination)


DESTINATIONS: dict[str, Callable[[], Destination]] = {
    "duckdb": _duckdb,
    "snowflake": _snowflake,
    "bigquery": _bigquery,
    "redshift": _redshift,
}


def destination_for(settings: PipelineSettings) -> Destination:
    """The chosen destination; one clear message when its extra is not installed."""
    try:
        return DESTINATIONS[settings.destination]()
    except ModuleNotFoundError as exc:
        raise SettingsError(
            f"DESTINATION={settings.destination} needs its client libraries "
            f"(module {exc.name!r} is missing): pip install "
            f"'clevertap_assets[{settings.destination}]'"
        ) from None

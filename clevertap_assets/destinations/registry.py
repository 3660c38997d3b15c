"""The registry: each destination name mapped to a loader rather than to the module itself,
so a destination's client libraries are imported only when it is chosen, and a DuckDB user
needs neither the Snowflake nor the Google client installed (they are the `[snowflake]`,
`[bigquery]` and `[redshift]` extras).
"""

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

from clevertap_assets.settings import DESTINATION_NAMES, PipelineSettings, SettingsError


@dataclass(frozen=True)
class Destination:
    """What every destination provides to the rest of the package."""

    build_resources: Callable[[PipelineSettings], dict[str, object]]
    """`{warehouse_io_manager: ..., warehouse_stats: ...}` for the event tables."""
    check: Callable[[PipelineSettings], str]
    """Reach, authenticate and prepare the warehouse; one line on success, raises
    `DestinationError` (or `SettingsError`) otherwise."""


def _loader(name: str) -> Callable[[], Destination]:
    """Imports `<name>.resources` and `<name>.check` when the destination is chosen."""

    def load() -> Destination:
        package = f"clevertap_assets.destinations.{name}"
        resources = import_module(f"{package}.resources")
        check = import_module(f"{package}.check")
        return Destination(
            getattr(resources, f"build_{name}_resources"),
            getattr(check, f"check_{name}_destination"),
        )

    return load


DESTINATIONS: dict[str, Callable[[], Destination]] = {
    name: _loader(name) for name in DESTINATION_NAMES
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

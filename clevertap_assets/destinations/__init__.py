"""The warehouses events can land in, one subpackage each, chosen by `DESTINATION`.

`DESTINATIONS` is the one list of them: the settings accept exactly its names. Each maps to a
loader rather than to the module itself: a destination's client libraries are imported only
when it is chosen, so a DuckDB user needs neither the Snowflake nor the Google client
installed (they are the `[snowflake]`, `[bigquery]` and `[redshift]` extras).

Every subpackage has the same parts: `settings` (its environment variables, under its own
prefix), `client` and `io_manager` (connection, type handlers, window load), `stats` (the
shared SQL of `destinations.stats`), `check` and `resources`. The module does not import the
pipeline's settings at import time, since those import `DESTINATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clevertap_assets.settings import PipelineSettings


@dataclass(frozen=True)
class Destination:
    """What every destination provides to the rest of the package."""

    build_resources: Callable[[PipelineSettings], dict[str, object]]
    """`{warehouse_io_manager: ..., warehouse_stats: ...}` for the event tables."""
    check: Callable[[PipelineSettings], str]
    """Reach, authenticate and prepare the warehouse; one line on success, raises
    `DestinationError` (or `SettingsError`) otherwise."""


def _loader(
    name: str, resources: str = "resources", check: str = "check"
) -> Callable[[], Destination]:
    """Imports `<name>.resources` and `<name>.check` when the destination is chosen."""

    def load() -> Destination:
        package = f"{__name__}.{name}"
        resources_module = import_module(f"{package}.{resources}")
        check_module = import_module(f"{package}.{check}")
        return Destination(
            getattr(resources_module, f"build_{name}_resources"),
            getattr(check_module, f"check_{name}_destination"),
        )

    return load


DESTINATIONS: dict[str, Callable[[], Destination]] = {
    name: _loader(name) for name in ("duckdb", "snowflake", "bigquery", "redshift")
}


def destination_for(settings: PipelineSettings) -> Destination:
    """The chosen destination; one clear message when its extra is not installed."""
    from clevertap_assets.settings import SettingsError

    try:
        return DESTINATIONS[settings.destination]()
    except ModuleNotFoundError as exc:
        raise SettingsError(
            f"DESTINATION={settings.destination} needs its client libraries "
            f"(module {exc.name!r} is missing): pip install "
            f"'clevertap_assets[{settings.destination}]'"
        ) from None

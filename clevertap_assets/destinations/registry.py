"""The registry: each destination name mapped to a loader rather than to the module itself,
so a destination's client libraries are imported only when it is chosen, and a DuckDB user
needs neither the Snowflake nor the Google client installed (they are the `[snowflake]`,
`[bigquery]` and `[redshift]` extras).

The chosen destination's own settings (`<name>/settings.py`: its schema, its limits, its
checks) are read here too, as a `Warehouse`, so the core settings only say which destination.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

from clevertap_assets.destinations.settings import DestinationSettings, Warehouse
from clevertap_assets.naming import WEBHOOK_TABLE, table_name
from clevertap_assets.settings import (
    DESTINATION_NAMES,
    PipelineSettings,
    SettingsError,
    read_settings,
)

PACKAGE = "clevertap_assets.destinations"


@dataclass(frozen=True)
class Destination:
    """What every destination provides to the rest of the package."""

    build_resources: Callable[[Warehouse], dict[str, object]]
    """`{warehouse_io_manager: ..., warehouse_stats: ...}` for the event tables."""
    check: Callable[[Warehouse], str]
    """Reach, authenticate and prepare the warehouse; one line on success, raises
    `DestinationError` (or `SettingsError`) otherwise."""


def _loader(name: str) -> Callable[[], Destination]:
    """Imports `<name>.resources` and `<name>.check` when the destination is chosen."""

    def load() -> Destination:
        resources = import_module(f"{PACKAGE}.{name}.resources")
        check = import_module(f"{PACKAGE}.{name}.check")
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


def destination_settings(settings: PipelineSettings) -> DestinationSettings:
    """The chosen destination's variables, from the environment (and `.env`): its settings
    module needs none of the extras."""
    module = import_module(f"{PACKAGE}.{settings.destination}.settings")
    return read_settings(module.SETTINGS)


def warehouse_for(settings: PipelineSettings) -> Warehouse:
    """The chosen destination's settings resolved for the pipeline and checked, when the
    definitions load: a bad one raises `SettingsError` naming the variable."""
    destination = destination_settings(settings)
    schema = destination.schema_for(settings.pipeline_slug)
    destination.check(schema)
    _check_table_names(settings, destination.table_name_bytes)
    row_limit = min(settings.max_row_bytes, destination.max_row_bytes or math.inf)
    return Warehouse(settings=destination, schema=schema, row_limit_bytes=int(row_limit))


def refuse_run_local_warehouse(settings: PipelineSettings, run_launcher: str | None) -> None:
    """A warehouse that lives on a run's own disk cannot load under a launcher that gives each
    run a pod or container of its own: refused before anything runs."""
    destination_settings(settings).refuse_run_launcher(run_launcher)


def _check_table_names(settings: PipelineSettings, limit: int | None) -> None:
    """Every table, with the prefix, within the destination's limit, checked before a run
    (the webhook table and every event's)."""
    if limit is None:
        return
    slugs = [WEBHOOK_TABLE, *(settings.event_slugs[name] for name in settings.event_names)]
    longest = max((table_name(s, settings.table_prefix) for s in slugs), key=_utf8_length)
    if _utf8_length(longest) > limit:
        shown = longest if len(longest) <= 60 else longest[:57] + "..."
        raise SettingsError(
            f"TABLE_PREFIX ({len(settings.table_prefix)} characters) makes table {shown!r} "
            f"{_utf8_length(longest)} bytes long, over {settings.destination}'s limit of "
            f"{limit} bytes; shorten the prefix"
        )


def _utf8_length(name: str) -> int:
    return len(name.encode())

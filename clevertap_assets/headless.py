"""Headless loads of a range of days, in one in-process run: what the demo, the benchmark and
`clevertap-assets load` do, callable from Python."""

import fcntl
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from datetime import date
from pathlib import Path

from dagster import AssetSelection, DagsterInstance, ExecuteInProcessResult, materialize

from clevertap_assets.assets.partitions import recent_range
from clevertap_assets.assets.pipeline_events import pipeline_events
from clevertap_assets.definitions import build_definitions
from clevertap_assets.keys import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from clevertap_assets.settings import PipelineSettings, SettingsError, dagster_home


def load_days(
    settings: PipelineSettings,
    first_day: date,
    last_day: date,
    resources: Mapping[str, object] | None = None,
    log_level: str = "INFO",
    instance: DagsterInstance | None = None,
    events: Sequence[str] | None = None,
) -> ExecuteInProcessResult:
    """Selected events (default: all) over the days, as one read of the whole range by the
    account's reader, with their checks; `resources` replaces some of the defaults. With a
    persistent `instance`, the run waits for the account's reader like any other."""
    definitions = build_definitions(settings)
    keys = [e.key for e in pipeline_events(settings) if events is None or e.name in events]
    return materialize(
        list(definitions.assets or []),
        selection=AssetSelection.assets(*keys),
        resources={**(definitions.resources or {}), **(resources or {})},
        instance=instance,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: first_day.isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: last_day.isoformat(),
        },
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        raise_on_error=False,
    )


INIT_LOCK = ".clevertap_assets.lock"


def open_home_instance(home: str) -> DagsterInstance:
    """`$DAGSTER_HOME`'s instance, opened by one process at a time: the first process to open
    a fresh SQLite home creates its tables, and several doing so at once leave it broken for
    good ("alembic_version has more than one head"), so loads started together wait in turn."""
    if not Path(home).is_dir():
        raise SettingsError(
            f"DAGSTER_HOME={home!r} is not a directory: create it, or unset DAGSTER_HOME for a "
            "run that is not recorded"
        )
    with (Path(home) / INIT_LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return DagsterInstance.get()


def load_recent_days(
    settings: PipelineSettings, days: int | None = None, events: Sequence[str] | None = None
) -> bool:
    """`clevertap-assets load`: the last `days` days of some events (default: the history
    window, every selected event), on `$DAGSTER_HOME`'s instance when it is set, so the run
    shows in the UI and waits for the account's reader like the schedule's runs."""
    unknown = sorted(set(events or ()) - set(settings.event_names))
    if unknown:
        raise SettingsError(
            f"--event {', '.join(map(repr, unknown))} is not among the selected events "
            f"({', '.join(map(repr, settings.event_names))})"
        )
    first, last = recent_range(settings, days).split("...")
    home = dagster_home()
    persistent = open_home_instance(home) if home else nullcontext(None)
    with persistent as instance:
        result = load_days(
            settings,
            date.fromisoformat(first),
            date.fromisoformat(last),
            instance=instance,
            events=events,
        )
    return result.success

"""Headless loads of a range of days, in one in-process run: what the demo, the benchmark and
`dagster asset materialize --partition-range` do, callable from Python."""

from collections.abc import Mapping
from datetime import date

from dagster import ExecuteInProcessResult, materialize

from clevertap_assets.definitions import build_definitions
from clevertap_assets.keys import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from clevertap_assets.settings import PipelineSettings


def load_days(
    settings: PipelineSettings,
    first_day: date,
    last_day: date,
    resources: Mapping[str, object] | None = None,
    log_level: str = "INFO",
) -> ExecuteInProcessResult:
    """Every selected event over the days, each as one export of the whole range (single-run
    backfill policy), with the event checks; `resources` replaces some of the defaults."""
    definitions = build_definitions(settings)
    return materialize(
        [*(definitions.assets or []), *(definitions.asset_checks or [])],
        resources={**(definitions.resources or {}), **(resources or {})},
        tags={
            ASSET_PARTITION_RANGE_START_TAG: first_day.isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: last_day.isoformat(),
        },
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        raise_on_error=False,
    )

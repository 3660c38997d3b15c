"""How stale an event may get before someone is told: a bound derived from the ingestion
frequency, as a freshness policy (the UI's freshness view, where the instance enables it) and
as freshness checks, whose failures the alerts sensor reports.

Two ticks may pass without a load (the second skips an event whose run is still going), and
a run reading the whole history takes a while, so an event is stale once its newest load is
older than two ticks and an hour. The checks are Dagster's own; their sensor runs them
whenever an event could have turned stale, and never again while they fail.
"""

import warnings
from collections.abc import Sequence
from datetime import timedelta

from dagster import (
    AssetChecksDefinition,
    AssetsDefinition,
    DefaultSensorStatus,
    FreshnessPolicy,
    SensorDefinition,
    build_last_update_freshness_checks,
    build_sensor_for_freshness_checks,
)

FRESHNESS_MARGIN = timedelta(hours=1)
FRESHNESS_SENSOR_SECONDS = 300


def freshness_bound(ingestion_interval: timedelta) -> timedelta:
    return 2 * ingestion_interval + FRESHNESS_MARGIN


def freshness_policy(bound: timedelta) -> FreshnessPolicy:
    return FreshnessPolicy.time_window(fail_window=bound)


def build_freshness_checks(
    bound: timedelta, reader: AssetsDefinition
) -> Sequence[AssetChecksDefinition]:
    # Dagster 1.13 marks the checks superseded by freshness policies, whose failures reach
    # no sensor in open source; the warning, on every load, only buried output.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_last_update_freshness_checks(assets=[reader], lower_bound_delta=bound)


def build_freshness_sensor(checks: Sequence[AssetChecksDefinition]) -> SensorDefinition:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sensor_for_freshness_checks(
            freshness_checks=checks,
            minimum_interval_seconds=FRESHNESS_SENSOR_SECONDS,
            default_status=DefaultSensorStatus.RUNNING,
        )

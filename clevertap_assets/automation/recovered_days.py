"""`recovered_days_sensor`: the days the warehouse holds that the Dagster instance has no
record of, recorded as the events' materializations.

A new instance (a temporary or wiped `DAGSTER_HOME`, a restored backup, a second deployment
writing the same warehouse) knows no run that loaded the tables. The schedule finds those
days in the warehouse and does not load them again (`schedules.loaded_in_warehouse`); this
sensor tells the instance too, so the UI shows them loaded and the reconciliation compares
them. It returns the materializations and the daemon records them, so a previewed
evaluation changes nothing. An evaluation asks an event's table at most once, one grouped
count over the days of the history window the instance lacks, and asks nothing once the
instance has them all; it never asks CleverTap. A day without rows stays unrecorded (the
schedule loads it) and is not counted again for an hour (the cursor), so a day the schedule
has not reached yet (today after midnight) costs one count an hour, not one per evaluation.

A recovered materialization states when its rows were loaded (`dagster/last_updated_timestamp`,
the newest `_loaded_at` of the day), which the freshness checks judge from, so a stale
warehouse stays stale after a restart. The freshness policy reads only when the event was
recorded, which Dagster sets itself: it counts a recovered event fresh for one bound.
"""

import json
import time
from collections.abc import Mapping, Sequence
from datetime import date

from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DefaultSensorStatus,
    MetadataValue,
    ResourceParam,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.asset_checks.asset_check_factories.utils import (
    LAST_UPDATED_TIMESTAMP_METADATA_KEY,
    retrieve_last_update_record,
    retrieve_timestamp_from_record,
)

from clevertap_assets.assets.pipeline_events import EventAsset, PipelineFacts
from clevertap_assets.assets.refusals import latest_refusal
from clevertap_assets.automation.runs import unfinished_runs
from clevertap_assets.automation.schedules import history_start
from clevertap_assets.days import days_between, local_today
from clevertap_assets.destinations.stats import DayLoad, EventTableStats
from clevertap_assets.keys import PARTITION_ROW_COUNT

RECOVERED = "recovered_from_warehouse"
"""Materialization metadata key: the table whose rows made the day count as loaded."""
RECOVERY_INTERVAL_SECONDS = 300
RECOUNT_SECONDS = 3600
"""How long a lacking day counted without rows is not counted again: the schedule loads it
meanwhile, or another deployment writing the warehouse does, and an hour later it is
recovered."""


def lacking_days(
    instance: DagsterInstance, event: EventAsset, first: date, last: date
) -> list[date]:
    """The days from `first` to `last` the instance has no materialization of."""
    materialized = instance.get_materialized_partitions(event.key)
    return [day for day in days_between(first, last) if day.isoformat() not in materialized]


def recover_days(
    instance: DagsterInstance,
    warehouse_stats: EventTableStats,
    pipeline: PipelineFacts,
    today: date,
    counted_empty: Mapping[str, Mapping[str, float]],
    now: float,
) -> tuple[list[AssetMaterialization], dict[str, dict[str, float]]]:
    """A materialization for each day of the history window the warehouse holds and the
    instance lacks; and, per event, the lacking days counted without rows, with when
    (`counted_empty` is the previous evaluation's), which are not counted again for
    `RECOUNT_SECONDS`.

    An event some unfinished run writes, or whose latest materialization is a refusal, is
    left to its run or the schedule's probe; the instance is asked again after the count,
    so a run that committed its rows meanwhile records its own materialization."""
    first = history_start(pipeline, today)
    busy = {
        key
        for run in unfinished_runs(instance, [event.key for event in pipeline.events])
        for key in run.asset_selection or ()
    }
    recovered: list[AssetMaterialization] = []
    still_empty: dict[str, dict[str, float]] = {}
    for event in pipeline.events:
        lacking = lacking_days(instance, event, first, today)
        if event.key in busy or not lacking or latest_refusal(instance, event.key) is not None:
            continue
        name = event.key.to_user_string()
        empty = {
            day: at
            for day, at in counted_empty.get(name, {}).items()
            if now - at < RECOUNT_SECONDS and date.fromisoformat(day) in lacking
        }
        uncounted = [day for day in lacking if day.isoformat() not in empty]
        if uncounted:
            loads = warehouse_stats.daily_loads(
                pipeline.schema, event.table, uncounted[0], uncounted[-1]
            )
            held = {day: loads[day] for day in uncounted if day in loads}
            empty |= {day.isoformat(): now for day in uncounted if day not in held}
            recovered += _still_lacking(instance, pipeline.schema, event, held)
        if empty:
            still_empty[name] = empty
    return recovered, still_empty


def _still_lacking(
    instance: DagsterInstance,
    schema: str,
    event: EventAsset,
    loads: Mapping[date, DayLoad],
) -> list[AssetMaterialization]:
    """In the order of their loads, newest last: the freshness check reads only an event's
    latest record."""
    if not loads:
        return []
    lacking = set(lacking_days(instance, event, min(loads), max(loads)))
    known = known_update(instance, event.key)
    in_load_order = sorted(loads.items(), key=lambda item: (item[1].loaded_at, item[0]))
    return [
        recovered_day(schema, event, day, load, known)
        for day, load in in_load_order
        if day in lacking
    ]


def known_update(instance: DagsterInstance, key: AssetKey) -> float | None:
    """When the instance holds the event last updated, as its freshness check reads it."""
    record = retrieve_last_update_record(instance, key, partition_key=None)
    return retrieve_timestamp_from_record(record) if record else None


def recovered_day(
    schema: str, event: EventAsset, day: date, load: DayLoad, known: float | None
) -> AssetMaterialization:
    """The day as loaded, its rows first, then where they were found and when they were
    loaded: never before an update the instance already knows (a run's), which this record
    follows and would otherwise hide from the freshness check."""
    table = f"{schema}.{event.table}"
    updated = max(load.loaded_at.timestamp(), known or 0.0)
    metadata: Mapping[str, object] = {
        PARTITION_ROW_COUNT: load.rows,
        RECOVERED: MetadataValue.text(
            f"{table} holds {load.rows} rows of this day, loaded by a run this Dagster "
            f"instance has no record of, the newest at {load.loaded_at.isoformat()}"
        ),
        LAST_UPDATED_TIMESTAMP_METADATA_KEY: MetadataValue.timestamp(updated),
    }
    return AssetMaterialization(
        asset_key=event.key,
        partition=day.isoformat(),
        description=f"Recovered from the warehouse: {load.rows} rows in {table}",
        metadata=metadata,
    )


def recovery_result(recovered: Sequence[AssetMaterialization], cursor: str) -> SensorResult:
    """The materializations for the daemon to record, and what the tick says."""
    if not recovered:
        reason = "the instance knows every day of the history window the warehouse holds"
    else:
        keys = {materialization.asset_key for materialization in recovered}
        reason = f"recorded {len(recovered)} day(s) of {len(keys)} event(s) from the warehouse"
    return SensorResult(asset_events=recovered, skip_reason=SkipReason(reason), cursor=cursor)


def build_recovered_days_sensor(pipeline: PipelineFacts) -> SensorDefinition:
    @sensor(
        name="recovered_days_sensor",
        minimum_interval_seconds=RECOVERY_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            f"Records as materialized the days of the last {pipeline.history_days} that the "
            "warehouse holds and this Dagster instance has no record of (a new or wiped "
            "instance): one row count per event table, nothing asked of CleverTap."
        ),
    )
    def recovered_days_sensor(
        context: SensorEvaluationContext, warehouse_stats: ResourceParam[EventTableStats]
    ) -> SensorResult:
        counted_empty = json.loads(context.cursor) if context.cursor else {}
        recovered, counted_empty = recover_days(
            context.instance,
            warehouse_stats,
            pipeline,
            local_today(pipeline.timezone),
            counted_empty,
            time.time(),
        )
        return recovery_result(recovered, json.dumps(counted_empty))

    return recovered_days_sensor

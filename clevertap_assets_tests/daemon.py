"""The daemon's and the run worker's part, played by a test: evaluate a schedule tick, apply a
sensor's partition requests and record its asset events, and run what a request asks for on the same instance, exactly as
the run worker would select it."""

from datetime import datetime
from zoneinfo import ZoneInfo

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    RunRequest,
    SensorResult,
    build_schedule_context,
    materialize,
)

from clevertap_assets.keys import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from clevertap_assets_tests.harness import Pipeline, fast_clevertap


def run_range(request: RunRequest) -> tuple[frozenset[AssetKey], str, str]:
    """The events a requested run reads, and its first and last day."""
    return (
        frozenset(request.asset_selection or ()),
        request.tags[ASSET_PARTITION_RANGE_START_TAG],
        request.tags[ASSET_PARTITION_RANGE_END_TAG],
    )


def execute(
    pipeline: Pipeline, definitions: Definitions, request: RunRequest, instance: DagsterInstance
) -> ExecuteInProcessResult:
    """What the run worker does with a requested run: its assets and checks (exactly those it
    names), over its tags' days."""
    selection = None  # a request naming no assets runs them all, with their checks
    if request.asset_selection is not None:
        selection = AssetSelection.assets(*request.asset_selection).without_checks()
        selection |= AssetSelection.checks(*(request.asset_check_keys or []))
    return materialize(
        list(definitions.assets or []),
        selection=selection,
        tags=request.tags,
        instance=instance,
        resources={**(definitions.resources or {}), "clevertap": fast_clevertap(pipeline.emulator)},
        raise_on_error=False,
    )


def tick(definitions: Definitions, instance: DagsterInstance, timezone: str) -> list[RunRequest]:
    schedule = definitions.resolve_schedule_def("ingestion_schedule")
    now = datetime.now(ZoneInfo(timezone))
    with build_schedule_context(
        instance=instance, scheduled_execution_time=now, resources=definitions.resources
    ) as context:
        return list(schedule.evaluate_tick(context).run_requests or [])


def apply_partition_requests(instance: DagsterInstance, result: SensorResult) -> None:
    """What the daemon does with a sensor's dynamic partition requests, before its runs."""
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def record_asset_events(instance: DagsterInstance, result: SensorResult) -> None:
    """What the daemon does with the asset events a sensor returns (`_evaluate_sensor` in
    dagster/_daemon/sensor.py): each is recorded as a runless event."""
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)

"""`recovered_days_sensor`: a new instance over a warehouse that holds data learns the days
loaded, with their rows, once, and the schedule, the reconciliation and the freshness checks
then treat them as loaded."""

from datetime import timedelta

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    Definitions,
    SensorResult,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from clevertap_assets.assets.events import PARTITION_ROW_COUNT
from clevertap_assets.assets.pipeline_events import pipeline_events
from clevertap_assets.automation.recovered_days import RECOVERED
from clevertap_assets.automation.sensors import reconciliation_result
from clevertap_assets.days import local_today
from clevertap_assets.definitions import build_definitions
from clevertap_assets.materializations import materialization_records
from clevertap_assets_tests.daemon import execute, record_asset_events, run_range, tick
from clevertap_assets_tests.harness import daily_rows, make_pipeline

EVENTS = ["Charged", "App Launched"]
TABLES = {AssetKey(["clevertap", slug]): slug for slug in ["charged", "app_launched"]}
KEYS = list(TABLES)


def evaluate(definitions: Definitions, instance) -> SensorResult:
    """With the definitions' resources: the test's DuckDB file."""
    with build_sensor_context(instance=instance, resources=definitions.resources) as context:
        return definitions.resolve_sensor_def("recovered_days_sensor").evaluate_tick(context)


def recorded_rows(instance, key: AssetKey) -> dict[str, int]:
    """Each day's latest `dagster/partition_row_count`, as the asset's partitions page has it."""
    rows: dict[str, int] = {}
    for record in materialization_records(instance, key, page_size=100):
        materialization = record.asset_materialization
        if materialization.partition not in rows:
            rows[materialization.partition] = materialization.metadata[PARTITION_ROW_COUNT].value
    return rows


def test_a_wiped_instance_learns_the_warehouses_days_once(tmp_path, make_emulator):
    emulator = make_emulator(events=EVENTS)
    pipeline = make_pipeline(tmp_path, emulator, events=EVENTS, history_days=5)
    definitions = build_definitions(pipeline.settings)
    timezone = pipeline.settings.timezone
    today = local_today(timezone)
    with instance_for_test() as instance:
        (first_tick,) = tick(definitions, instance, timezone)
        assert execute(pipeline, definitions, first_tick, instance).success
        assert evaluate(definitions, instance).asset_events == []  # it knows them all

    warehouse = {
        key: {day.isoformat(): rows for day, rows in daily_rows(pipeline, table).items() if rows}
        for key, table in TABLES.items()
    }
    assert all(len(days) == 5 for days in warehouse.values())
    with instance_for_test() as wiped:
        requests_before = sum(emulator.stats.requests.values())
        previewed = evaluate(definitions, wiped)
        assert len(previewed.asset_events) == 10
        assert all(not wiped.get_materialized_partitions(key) for key in KEYS)  # a preview

        record_asset_events(wiped, previewed)
        for key in KEYS:
            assert recorded_rows(wiped, key) == warehouse[key]
            latest = wiped.get_latest_materialization_event(key).asset_materialization
            assert next(iter(latest.metadata)) == PARTITION_ROW_COUNT
            assert latest.metadata[RECOVERED].value.startswith(f"clevertap.{TABLES[key]} holds")
        assert evaluate(definitions, wiped).asset_events == []  # once recorded, nothing again
        assert sum(emulator.stats.requests.values()) == requests_before  # CleverTap was not asked

        (next_tick,) = tick(definitions, wiped, timezone)
        yesterday = today - timedelta(days=1)
        assert run_range(next_tick) == (set(KEYS), yesterday.isoformat(), today.isoformat())
        counting = reconciliation_result(
            wiped, pipeline.settings, pipeline_events(pipeline.settings), None, 0.0
        )
        (request,) = counting.run_requests  # the recovered full days are compared
        assert {check.asset_key for check in request.asset_check_keys} == set(KEYS)
        freshness = [AssetCheckKey(key, "freshness_check") for key in KEYS]
        checked = materialize(
            [*(definitions.assets or []), *(definitions.asset_checks or [])],
            selection=AssetSelection.checks(*freshness),
            instance=wiped,
            resources=definitions.resources,
        )
        assert all(check.passed for check in checked.get_asset_check_evaluations())

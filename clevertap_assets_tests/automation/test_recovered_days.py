"""`recovered_days_sensor`: a new instance over a warehouse that holds data learns the days
loaded, with their rows, once, and the schedule, the reconciliation and the freshness checks
then treat them as loaded."""

import json
import time
from datetime import UTC, date, datetime, timedelta

import duckdb
import pytest
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

from clevertap_assets.assets.freshness import freshness_bound
from clevertap_assets.assets.pipeline_events import pipeline_facts
from clevertap_assets.automation.recovered_days import RECOUNT_SECONDS, RECOVERED
from clevertap_assets.automation.sensors import reconciliation_result
from clevertap_assets.days import local_today
from clevertap_assets.definitions import build_definitions
from clevertap_assets.destinations.duckdb.client import CONNECTION_CONFIG
from clevertap_assets.keys import PARTITION_ROW_COUNT
from clevertap_assets.materializations import materialization_records
from clevertap_assets_tests.daemon import execute, record_asset_events, run_range, tick
from clevertap_assets_tests.harness import Pipeline, daily_rows, make_pipeline

EVENTS = ["Charged", "App Launched"]
TABLES = {AssetKey(["clevertap", slug]): slug for slug in ["charged", "app_launched"]}
KEYS = list(TABLES)


def evaluate(definitions: Definitions, instance, cursor: str | None = None) -> SensorResult:
    """With the definitions' resources: the test's DuckDB file."""
    with build_sensor_context(
        instance=instance, cursor=cursor, resources=definitions.resources
    ) as context:
        return definitions.resolve_sensor_def("recovered_days_sensor").evaluate_tick(context)


def freshness_evaluations(definitions: Definitions, instance) -> dict[AssetKey, tuple[bool, float]]:
    """Each event's freshness check, run now: whether it passed, and the last update it
    judged from."""
    checked = materialize(
        [*(definitions.assets or []), *(definitions.asset_checks or [])],
        selection=AssetSelection.checks(*(AssetCheckKey(key, "freshness_check") for key in KEYS)),
        instance=instance,
        resources=definitions.resources,
    )
    return {
        evaluation.asset_key: (
            evaluation.passed,
            evaluation.metadata["dagster/last_updated_timestamp"].value,
        )
        for evaluation in checked.get_asset_check_evaluations()
    }


def set_loaded_at(pipeline: Pipeline, ago: timedelta, day: date | None = None) -> datetime:
    """Stamp the rows of every event table (or of one day) as loaded `ago`, in the DuckDB
    file; the stamp."""
    loaded_at = datetime.now(UTC).replace(microsecond=0) - ago
    where = "" if day is None else "WHERE CAST(event_time AS DATE) = $day"
    with duckdb.connect(pipeline.duckdb_path, config=CONNECTION_CONFIG) as connection:
        for table in TABLES.values():
            connection.execute(
                f'UPDATE clevertap."{table}" SET _loaded_at = $at {where}',
                {"at": loaded_at} | ({} if day is None else {"day": day}),
            )
    return loaded_at


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
    window = [(today - timedelta(days=n)).isoformat() for n in range(5)]
    with instance_for_test() as instance:
        before = evaluate(definitions, instance)  # nothing loaded: every day counted empty
        assert before.asset_events == []
        counted = json.loads(before.cursor)
        assert {name: sorted(days) for name, days in counted.items()} == {
            key.to_user_string(): sorted(window) for key in KEYS
        }
        (first_tick,) = tick(definitions, instance, timezone)
        assert execute(pipeline, definitions, first_tick, instance).success
        after = evaluate(definitions, instance, before.cursor)
        assert after.asset_events == [] and json.loads(after.cursor) == {}  # it knows them all

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
        again = evaluate(definitions, wiped, previewed.cursor)
        assert again.asset_events == []  # once recorded, nothing again
        assert sum(emulator.stats.requests.values()) == requests_before  # CleverTap was not asked

        (next_tick,) = tick(definitions, wiped, timezone)
        yesterday = today - timedelta(days=1)
        assert run_range(next_tick) == (set(KEYS), yesterday.isoformat(), today.isoformat())
        counting = reconciliation_result(wiped, pipeline_facts(pipeline.settings), None, 0.0)
        (request,) = counting.run_requests  # the recovered full days are compared
        assert {check.asset_key for check in request.asset_check_keys} == set(KEYS)
        evaluations = freshness_evaluations(definitions, wiped)
        assert all(passed for passed, _ in evaluations.values())


def test_a_day_counted_empty_is_counted_again_after_an_hour(tmp_path, emulator):
    """A second deployment over the same warehouse: the days its cursor counted empty are
    trusted for an hour, then counted again and recovered once the other one loaded them."""
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], history_days=3)
    definitions = build_definitions(pipeline.settings)
    key = AssetKey(["clevertap", "charged"])
    today = local_today(pipeline.settings.timezone)
    first = today - timedelta(days=2)
    assert pipeline.load(first, today).success  # the other deployment's load
    days = [(first + timedelta(days=n)).isoformat() for n in range(3)]

    def counted_empty(seconds_ago: float) -> str:
        return json.dumps({key.to_user_string(): dict.fromkeys(days, time.time() - seconds_ago)})

    with instance_for_test() as instance:
        trusted = counted_empty(60)
        recent = evaluate(definitions, instance, trusted)
        assert recent.asset_events == [] and json.loads(recent.cursor) == json.loads(trusted)
        stale = evaluate(definitions, instance, counted_empty(RECOUNT_SECONDS + 60))
    assert sorted(event.partition for event in stale.asset_events) == days
    assert json.loads(stale.cursor) == {}


@pytest.mark.parametrize("loaded_ago", [timedelta(days=2), timedelta(minutes=30)])
def test_the_freshness_checks_judge_recovered_days_by_when_their_rows_were_loaded(
    tmp_path, make_emulator, loaded_ago
):
    """A stale warehouse recovered by a restarted instance stays stale: the checks read when
    the rows were loaded (`_loaded_at`), not when the instance recorded them, and fail naming
    each event; rows loaded within the bound pass."""
    pipeline = make_pipeline(tmp_path, make_emulator(events=EVENTS), events=EVENTS, history_days=3)
    definitions = build_definitions(pipeline.settings)
    today = local_today(pipeline.settings.timezone)
    assert pipeline.load(today - timedelta(days=2), today).success
    loaded_at = set_loaded_at(pipeline, loaded_ago)  # as the warehouse holds it when loads stop
    bound = freshness_bound(pipeline.settings.ingestion_interval)

    with instance_for_test() as wiped:
        record_asset_events(wiped, evaluate(definitions, wiped))
        assert freshness_evaluations(definitions, wiped) == dict.fromkeys(
            KEYS, (loaded_ago < bound, loaded_at.timestamp())
        )


def test_a_reloaded_older_day_is_the_events_last_update(tmp_path, make_emulator):
    """An older day reloaded after the newest day: recovered, the event was last updated
    by that reload, so the check passes from it."""
    pipeline = make_pipeline(tmp_path, make_emulator(events=EVENTS), events=EVENTS, history_days=3)
    definitions = build_definitions(pipeline.settings)
    today = local_today(pipeline.settings.timezone)
    oldest = today - timedelta(days=2)
    assert pipeline.load(oldest, today).success
    set_loaded_at(pipeline, timedelta(days=2))
    reloaded = set_loaded_at(pipeline, timedelta(minutes=30), day=oldest)

    with instance_for_test() as wiped:
        record_asset_events(wiped, evaluate(definitions, wiped))
        assert all(len(wiped.get_materialized_partitions(key)) == 3 for key in KEYS)
        assert freshness_evaluations(definitions, wiped) == dict.fromkeys(
            KEYS, (True, reloaded.timestamp())
        )


def test_recovering_older_days_keeps_a_newer_run_fresh(tmp_path, make_emulator):
    """A run of the restarted instance loaded today before the sensor recovered the older,
    stale days: those records come later, and still carry the run's update."""
    pipeline = make_pipeline(tmp_path, make_emulator(events=EVENTS), events=EVENTS, history_days=3)
    definitions = build_definitions(pipeline.settings)
    today = local_today(pipeline.settings.timezone)
    assert pipeline.load(today - timedelta(days=2), today - timedelta(days=1)).success
    set_loaded_at(pipeline, timedelta(days=2))

    with instance_for_test() as wiped:
        (first_tick,) = tick(definitions, wiped, pipeline.settings.timezone)
        assert execute(pipeline, definitions, first_tick, wiped).success
        ran = {key: wiped.get_latest_materialization_event(key).timestamp for key in KEYS}
        recovered = evaluate(definitions, wiped)
        assert recovered.asset_events
        record_asset_events(wiped, recovered)
        assert freshness_evaluations(definitions, wiped) == {key: (True, ran[key]) for key in KEYS}

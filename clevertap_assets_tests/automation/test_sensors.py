"""`reconciliation_sensor` against the emulator: CleverTap's counts asked in a run of the
checks alone, each event judged alone, the gaps re-run, and then quiet."""

import time
from datetime import timedelta

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterRunStatus,
    Definitions,
    RunRequest,
    SensorResult,
    build_sensor_context,
    instance_for_test,
)

from clevertap_assets.automation.sensors import (
    COUNTING_RUN_TAG,
    RECONCILE_COUNTS_TAG,
    RECONCILE_INTERVAL_SECONDS,
)
from clevertap_assets.days import local_today
from clevertap_assets.definitions import build_definitions
from clevertap_assets.keys import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from clevertap_assets_tests.daemon import execute, run_range
from clevertap_assets_tests.harness import Pipeline, daily_rows, make_pipeline

RECONCILIATION = "row_count_matches_clevertap"


def evaluate(definitions: Definitions, instance, cursor: str | None = None) -> SensorResult:
    """With the definitions' own resources (the emulator's URL, the test's DuckDB file)."""
    with build_sensor_context(instance=instance, cursor=cursor) as context:
        return definitions.resolve_sensor_def("reconciliation_sensor").evaluate_tick(context)


def launch(pipeline: Pipeline, definitions: Definitions, request: RunRequest, instance):
    """What the daemon does with a request: a run with the request's tags, then its work."""
    result = execute(pipeline, definitions, request, instance)
    assert result.success
    return result


def test_a_day_that_changed_after_loading_is_rerun_once(tmp_path, make_emulator):
    events = ["Charged", "Notification Sent"]
    emulator = make_emulator(events=events)
    pipeline = make_pipeline(tmp_path, emulator, events=events)
    definitions = build_definitions(pipeline.settings)
    today = local_today(pipeline.settings.timezone)
    first, late = today - timedelta(days=5), today - timedelta(days=3)
    charged = AssetKey(["clevertap", "charged"])
    with instance_for_test() as instance:
        load_all = RunRequest(
            tags={
                ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
                ASSET_PARTITION_RANGE_END_TAG: today.isoformat(),
            }
        )
        launch(pipeline, definitions, load_all, instance)

        (counting,) = evaluate(definitions, instance).run_requests
        assert counting.asset_selection == []
        assert counting.tags[COUNTING_RUN_TAG] == "clevertap"
        launch(pipeline, definitions, counting, instance)
        quiet = evaluate(definitions, instance)
        assert quiet.run_requests == [] and "matches CleverTap" in quiet.skip_message
        assert evaluate(definitions, instance, quiet.cursor).skip_message.startswith(
            "next count of CleverTap's days at"
        )

        loaded = daily_rows(pipeline, "charged")[late]
        emulator.add_records("Charged", late, 3)
        emulator.add_records("Charged", today, 2)  # today still moves: the schedule's to reload
        counting = counting.with_replaced_attrs(run_key="the next hour")
        launch(pipeline, definitions, counting, instance)
        found = evaluate(definitions, instance, quiet.cursor)
        (rerun,) = found.run_requests
        assert run_range(rerun) == ({charged}, late.isoformat(), late.isoformat())
        assert rerun.tags[RECONCILE_COUNTS_TAG] == f"charged={loaded}/{loaded + 3}"
        assert evaluate(definitions, instance, found.cursor).run_requests == []  # once

        launch(pipeline, definitions, rerun, instance)
        assert daily_rows(pipeline, "charged")[late] == emulator.true_count("Charged", late)


@pytest.mark.slow
def test_two_hundred_events_are_counted_in_a_run_each_judged_alone(tmp_path, make_emulator):
    """The sensor itself asks CleverTap nothing, however many events; the counting run gives
    every event its verdict, an unreadable count is that event's alone, and the gap of
    another event is re-run."""
    events = [f"Event {number:03d}" for number in range(200)]
    unreadable, short = events[7], events[150]
    emulator = make_emulator(events=events, records_per_day=2, unreadable_counts=(unreadable,))
    pipeline = make_pipeline(tmp_path, emulator, events=events)
    definitions = build_definitions(pipeline.settings)
    yesterday = local_today(pipeline.settings.timezone) - timedelta(days=1)
    keys = {name: AssetKey(["clevertap", f"event_{name[-3:]}"]) for name in events}
    with instance_for_test() as instance:
        one_day = RunRequest(
            tags={
                ASSET_PARTITION_RANGE_START_TAG: yesterday.isoformat(),
                ASSET_PARTITION_RANGE_END_TAG: yesterday.isoformat(),
            },
            asset_selection=list(keys.values()),
        )
        launch(pipeline, definitions, one_day, instance)
        loaded = daily_rows(pipeline, f"event_{short[-3:]}")[yesterday]
        emulator.add_records(short, yesterday, 4)

        emulator.reset_stats()
        (counting,) = evaluate(definitions, instance).run_requests
        assert sum(emulator.stats.requests.values()) == 0
        assert set(counting.asset_check_keys) == {
            AssetCheckKey(key, RECONCILIATION) for key in keys.values()
        }
        result = launch(pipeline, definitions, counting, instance)
        verdicts = {e.asset_key: e for e in result.get_asset_check_evaluations()}
        assert set(verdicts) == set(keys.values())
        failed = {key for key, verdict in verdicts.items() if not verdict.passed}
        assert failed == {keys[unreadable], keys[short]}
        assert "no integer count" in verdicts[keys[unreadable]].metadata["counts_unavailable"].value
        assert verdicts[keys[short]].metadata["differences"].value == {
            yesterday.isoformat(): {"warehouse": loaded, "clevertap": loaded + 4}
        }

        (rerun,) = evaluate(definitions, instance).run_requests
        assert run_range(rerun) == ({keys[short]}, yesterday.isoformat(), yesterday.isoformat())


def test_a_new_count_waits_for_a_loaded_day_the_hour_and_the_last_counting_run(tmp_path, emulator):
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    definitions = build_definitions(pipeline.settings)
    today = local_today(pipeline.settings.timezone)
    with instance_for_test() as instance:
        assert evaluate(definitions, instance).skip_message == "no full day loaded yet"
        today_only = RunRequest(
            tags={
                ASSET_PARTITION_RANGE_START_TAG: today.isoformat(),
                ASSET_PARTITION_RANGE_END_TAG: today.isoformat(),
            }
        )
        launch(pipeline, definitions, today_only, instance)
        assert evaluate(definitions, instance).skip_message == "no full day loaded yet"
        yesterday = today - timedelta(days=1)
        launch(
            pipeline,
            definitions,
            today_only.with_replaced_attrs(
                tags={
                    ASSET_PARTITION_RANGE_START_TAG: yesterday.isoformat(),
                    ASSET_PARTITION_RANGE_END_TAG: yesterday.isoformat(),
                }
            ),
            instance,
        )

        (counting,) = evaluate(definitions, instance).run_requests
        run = instance.create_run_for_job(
            definitions.resolve_implicit_global_asset_job_def(), tags=counting.tags
        )
        assert evaluate(definitions, instance).skip_message == f"counting in run {run.run_id}"
        instance.report_run_failed(run)
        handled = evaluate(definitions, instance)
        assert handled.run_requests == [] and handled.cursor == run.run_id
        waiting = evaluate(definitions, instance, handled.cursor)
        assert waiting.run_requests == [] and waiting.skip_message.startswith("next count")
        record = instance.get_run_record_by_id(run.run_id)
        assert record.create_timestamp.timestamp() + RECONCILE_INTERVAL_SECONDS > time.time()
        assert record.dagster_run.status == DagsterRunStatus.FAILURE


def test_without_credentials_the_sensor_skips_naming_them(tmp_path, emulator, monkeypatch):
    """With the definitions' own resources, whose credentials are `EnvVar`s: what the daemon
    evaluates when `dagster dev` was started without `.env`."""
    monkeypatch.delenv("CLEVERTAP_PASSCODE")
    definitions = build_definitions(make_pipeline(tmp_path, emulator).settings)
    with instance_for_test() as instance:
        result = evaluate(definitions, instance)
    assert result.run_requests == []
    assert result.skip_message == (
        "CLEVERTAP_PASSCODE is not set: it is the Passcode under Settings > Project in the "
        "CleverTap dashboard (see .env.example)"
    )

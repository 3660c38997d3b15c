"""`reconciliation_sensor` against the emulator: late records found, re-run, and then quiet."""

from datetime import timedelta

from dagster import (
    AssetKey,
    DagsterRun,
    DagsterRunStatus,
    RunRequest,
    SkipReason,
    build_sensor_context,
    instance_for_test,
)

from clevertap_assets.automation.sensors import RECONCILE_COUNTS_TAG
from clevertap_assets.days import local_today
from clevertap_assets.definitions import build_definitions
from clevertap_assets.keys import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from clevertap_assets_tests.daemon import execute, run_range
from clevertap_assets_tests.harness import Pipeline, daily_rows, make_pipeline

EVENTS = ["Charged", "Notification Sent"]


def evaluate(pipeline: Pipeline, definitions, instance) -> list[RunRequest] | SkipReason:
    """With the definitions' own resources (the emulator's URL, the test's DuckDB file)."""
    with build_sensor_context(instance=instance) as context:
        return definitions.resolve_sensor_def("reconciliation_sensor")(context)


def test_a_day_that_changed_after_loading_is_rerun_once(tmp_path, make_emulator):
    emulator = make_emulator(events=EVENTS)
    pipeline = make_pipeline(tmp_path, emulator, events=EVENTS)
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
        assert execute(pipeline, definitions, load_all, instance).success
        assert isinstance(evaluate(pipeline, definitions, instance), SkipReason)

        loaded = daily_rows(pipeline, "charged")[late]
        emulator.add_records("Charged", late, 3)
        emulator.add_records("Charged", today, 2)  # today still moves: the schedule's to reload
        busy = instance.add_run(
            DagsterRun(
                job_name="__ASSET_JOB",
                status=DagsterRunStatus.STARTED,
                asset_selection=frozenset([charged]),
            )
        )
        assert isinstance(evaluate(pipeline, definitions, instance), SkipReason)
        instance.report_run_failed(busy)

        (rerun,) = evaluate(pipeline, definitions, instance)
        assert run_range(rerun) == ({charged}, late.isoformat(), late.isoformat())
        assert rerun.tags[RECONCILE_COUNTS_TAG] == f"charged={loaded}/{loaded + 3}"

        assert execute(pipeline, definitions, rerun, instance).success
        assert daily_rows(pipeline, "charged")[late] == emulator.true_count("Charged", late)
        assert isinstance(evaluate(pipeline, definitions, instance), SkipReason)


def test_without_credentials_the_sensor_skips_naming_them(tmp_path, emulator, monkeypatch):
    """With the definitions' own resources, whose credentials are `EnvVar`s: what the daemon
    evaluates when `dagster dev` was started without `.env`."""
    monkeypatch.delenv("CLEVERTAP_PASSCODE")
    definitions = build_definitions(make_pipeline(tmp_path, emulator).settings)
    with instance_for_test() as instance, build_sensor_context(instance=instance) as context:
        sensor = definitions.resolve_sensor_def("reconciliation_sensor")
        result = sensor.evaluate_tick(context)
    assert result.run_requests == []
    assert result.skip_message == (
        "CLEVERTAP_PASSCODE is not set: it is the Passcode under Settings > Project in the "
        "CleverTap dashboard (see .env.example)"
    )

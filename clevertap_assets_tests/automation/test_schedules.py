"""`ingestion_schedule`: the frequency rules, and what a tick asks for on a real instance."""

import os
import subprocess
import sys
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    build_schedule_context,
    instance_for_test,
)

from clevertap_assets.assets import refusals
from clevertap_assets.automation.schedules import cron_for_interval
from clevertap_assets.connection_check import check_connection
from clevertap_assets.days import local_today
from clevertap_assets.definitions import build_definitions
from clevertap_assets.keys import WAREHOUSE_STATS
from clevertap_assets.settings import INGESTION_FREQUENCIES, SettingsError
from clevertap_assets_tests.daemon import execute, run_range, tick
from clevertap_assets_tests.harness import daily_rows, make_pipeline

MODULE = "clevertap_assets.definitions"

ALLOWED = {
    "30m": "*/30 * * * *",
    "1h": "0 * * * *",
    "2h": "0 */2 * * *",
    "6h": "0 */6 * * *",
    "12h": "0 */12 * * *",
    "23h": "0 */23 * * *",
    "24h": "0 0 * * *",
}
REFUSED = ["5m", "1.5h", "90m", "25h", "0h", "60m", "daily", ""]


def mark_loaded(instance: DagsterInstance, key: AssetKey, days: list[date]) -> None:
    for day in days:
        instance.report_runless_asset_event(AssetMaterialization(key, partition=day.isoformat()))


@pytest.mark.parametrize("frequency", sorted(ALLOWED))
def test_allowed_frequencies_give_their_cron(tmp_path, emulator, frequency):
    pipeline = make_pipeline(tmp_path, emulator, ingestion_frequency=frequency)
    schedule = build_definitions(pipeline.settings).resolve_schedule_def("ingestion_schedule")
    assert schedule.cron_schedule == ALLOWED[frequency]
    assert schedule.execution_timezone == pipeline.settings.timezone
    assert schedule.default_status.value == "RUNNING"


def test_every_whole_hour_is_allowed_and_every_hour_fires():
    for hours in range(1, 24):
        cron = cron_for_interval(timedelta(hours=hours))
        assert cron.startswith("0 ") and cron.endswith(" * * *")


@pytest.mark.parametrize("frequency", REFUSED)
def test_refused_frequencies_name_what_is_allowed(tmp_path, emulator, frequency):
    with pytest.raises(SettingsError) as refused:
        make_pipeline(tmp_path, emulator, ingestion_frequency=frequency)
    assert str(refused.value) == (
        f"INGESTION_FREQUENCY={frequency!r} is not allowed; use {INGESTION_FREQUENCIES}"
    )


def test_a_refused_frequency_stops_the_definitions_and_the_connection_check(tmp_path, monkeypatch):
    monkeypatch.setattr("clevertap_assets.settings.load_dotenv", lambda **_: False)
    csv = tmp_path / "events.csv"
    csv.write_text("Event Name\nCharged\n", encoding="utf-8")
    monkeypatch.setenv("CLEVERTAP_EVENTS_CSV", str(csv))
    monkeypatch.setenv("INGESTION_FREQUENCY", "90m")
    loading = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", MODULE],
        capture_output=True,
        text=True,
        env={**os.environ},
        cwd=tmp_path,
        timeout=60,
    )
    assert loading.returncode != 0
    message = f"INGESTION_FREQUENCY='90m' is not allowed; use {INGESTION_FREQUENCIES}"
    assert message in loading.stdout + loading.stderr
    assert check_connection().failure == message


def test_first_tick_loads_the_history_window_then_today_and_the_lookback(tmp_path, emulator):
    """Also on a new instance: the history is in the warehouse, where the tick finds it."""
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], history_days=5)
    definitions = build_definitions(pipeline.settings)
    today = local_today(pipeline.settings.timezone)
    key = AssetKey(["clevertap", "charged"])
    with instance_for_test() as instance:
        (first_tick,) = tick(definitions, instance, pipeline.settings.timezone)
        first_day = today - timedelta(days=4)
        assert run_range(first_tick) == ({key}, first_day.isoformat(), today.isoformat())

        assert execute(pipeline, definitions, first_tick, instance).success
        assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", first_day, today)
        (next_tick,) = tick(definitions, instance, pipeline.settings.timezone)
        yesterday = today - timedelta(days=1)
        assert run_range(next_tick) == ({key}, yesterday.isoformat(), today.isoformat())
    with instance_for_test() as wiped:
        (after_wipe,) = tick(definitions, wiped, pipeline.settings.timezone)
    assert run_range(after_wipe) == ({key}, yesterday.isoformat(), today.isoformat())


def test_a_start_date_before_the_history_window_stays_for_manual_backfills(tmp_path, emulator):
    today = local_today(emulator.config.timezone)
    start = today - timedelta(days=20)
    pipeline = make_pipeline(
        tmp_path, emulator, events=["Charged"], history_days=5, start_date=start
    )
    definitions = build_definitions(pipeline.settings)
    (asset,) = definitions.assets or []
    assert asset.partitions_def.get_first_partition_key() == start.isoformat()
    with instance_for_test() as instance:
        (first_tick,) = tick(definitions, instance, pipeline.settings.timezone)
    history_start = today - timedelta(days=4)
    key = AssetKey(["clevertap", "charged"])
    assert run_range(first_tick) == ({key}, history_start.isoformat(), today.isoformat())


def test_events_needing_the_same_days_share_one_run_and_missing_days_get_their_own(
    tmp_path, emulator
):
    pipeline = make_pipeline(tmp_path, emulator, history_days=10, lookback_days=2)
    definitions = build_definitions(pipeline.settings)
    today = local_today(pipeline.settings.timezone)
    days = [today - timedelta(days=n) for n in range(10)]
    charged, launched = AssetKey(["clevertap", "charged"]), AssetKey(["clevertap", "app_launched"])
    viewed = AssetKey(["clevertap", "product_viewed"])
    with instance_for_test() as instance:
        mark_loaded(instance, launched, days)
        mark_loaded(instance, viewed, days)
        mark_loaded(instance, charged, [d for d in days if d not in (days[5], days[6], days[8])])
        ranges = {run_range(r) for r in tick(definitions, instance, pipeline.settings.timezone)}
    recent = (days[2].isoformat(), today.isoformat())
    assert ranges == {
        (frozenset({charged}), days[8].isoformat(), days[8].isoformat()),
        (frozenset({charged}), days[6].isoformat(), days[5].isoformat()),
        (frozenset({charged, launched, viewed}), *recent),
    }


def test_no_pile_up_behind_a_run_still_in_progress(tmp_path, emulator):
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged", "App Launched"])
    definitions = build_definitions(pipeline.settings)
    charged, launched = AssetKey(["clevertap", "charged"]), AssetKey(["clevertap", "app_launched"])
    with instance_for_test() as instance:
        for status in (DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTED):
            run = instance.add_run(
                DagsterRun(
                    job_name="__ASSET_JOB", status=status, asset_selection=frozenset([charged])
                )
            )
            assert [run_range(r)[0] for r in tick(definitions, instance, "UTC")] == [{launched}]
            instance.report_run_failed(run)
        assert [run_range(r)[0] for r in tick(definitions, instance, "UTC")] == [
            {charged, launched}
        ]


def test_a_backfill_in_progress_does_not_hold_the_tick_back_which_goes_first(tmp_path, emulator):
    """A backfill's runs (chunks of days, queued behind the account's reader) are not the
    tick's to wait for: the tick still asks for every event, at a priority the run queue
    serves before the backfill's next chunk."""
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged", "App Launched"])
    definitions = build_definitions(pipeline.settings)
    charged, launched = AssetKey(["clevertap", "charged"]), AssetKey(["clevertap", "app_launched"])
    with instance_for_test() as instance:
        instance.add_run(
            DagsterRun(
                job_name="__ASSET_JOB",
                status=DagsterRunStatus.NOT_STARTED,
                asset_selection=frozenset([charged, launched]),
                tags={"dagster/backfill": "abcdefgh"},
            )
        )
        (request,) = tick(definitions, instance, "UTC")
    assert run_range(request)[0] == {charged, launched}
    assert request.tags["clevertap/event"] == "2 events"
    assert int(request.tags["dagster/priority"]) > 0


def test_an_event_clevertap_refuses_is_not_requested_again_until_its_account_changes(
    tmp_path, make_emulator, monkeypatch
):
    events = ["Notification Sent"]
    pipeline = make_pipeline(tmp_path, make_emulator(events=events), events=events)
    definitions = build_definitions(pipeline.settings)
    today = local_today("UTC")
    key = AssetKey(["clevertap", "notification_sent"])
    with instance_for_test() as instance:
        schedule = definitions.resolve_schedule_def("ingestion_schedule")
        (first_tick,) = tick(definitions, instance, "UTC")
        assert execute(pipeline, definitions, first_tick, instance).success
        refusal = instance.get_latest_materialization_event(key).asset_materialization
        assert refusal.metadata[refusals.REFUSED].value == refusals.REFUSAL_TEXT

        now = datetime.now(ZoneInfo("UTC"))
        with build_schedule_context(
            instance=instance, scheduled_execution_time=now, resources=definitions.resources
        ) as context:
            later = schedule.evaluate_tick(context)
        assert later.run_requests == []
        assert later.skip_message.startswith(
            "not requested, CleverTap refuses to export them: clevertap/notification_sent "
            f"(refused {today:%Y-%m-%d}"
        )

        monkeypatch.setenv("CLEVERTAP_ACCOUNT_ID", "ANOTHER-ACCOUNT")
        (probe,) = tick(definitions, instance, "UTC")
    assert run_range(probe) == ({key}, today.isoformat(), today.isoformat())


def test_a_refused_event_backfills_green_and_its_days_load_once_the_refusal_lifts(
    tmp_path, make_emulator, monkeypatch
):
    """Every requested day of a refused event is materialized as refused (what Dagster's
    backfill counts as done, not failed); when a later probe loads, the tick asks for the
    days recorded as refused, and they load exactly."""
    events = ["Notification Sent"]
    emulator = make_emulator(events=events)
    pipeline = make_pipeline(tmp_path, emulator, events=events, history_days=4)
    definitions = build_definitions(pipeline.settings)
    today = local_today("UTC")
    key = AssetKey(["clevertap", "notification_sent"])
    window = {(today - timedelta(days=n)).isoformat() for n in range(4)}
    with instance_for_test() as instance:
        (first_tick,) = tick(definitions, instance, "UTC")
        result = execute(pipeline, definitions, first_tick, instance)
        assert result.success
        assert instance.get_materialized_partitions(key) == window
        assert not result.get_asset_check_evaluations()

        emulator.set_faults(not_exportable_prefixes=())
        monkeypatch.setenv("CLEVERTAP_ACCOUNT_ID", "ANOTHER-ACCOUNT")  # a probe is due
        (probe,) = tick(definitions, instance, "UTC")
        assert run_range(probe) == ({key}, today.isoformat(), today.isoformat())
        monkeypatch.setenv("CLEVERTAP_ACCOUNT_ID", pipeline.emulator.config.account_id)
        assert execute(pipeline, definitions, probe, instance).success

        (history,) = tick(definitions, instance, "UTC")
        first = today - timedelta(days=3)
        assert run_range(history) == ({key}, first.isoformat(), today.isoformat())
        assert execute(pipeline, definitions, history, instance).success
    assert daily_rows(pipeline, "notification_sent") == pipeline.truth(
        "Notification Sent", first, today
    )


def test_a_refusal_is_probed_again_after_a_week():
    refused_at = datetime(2026, 11, 1, 12, 0, tzinfo=ZoneInfo("UTC"))
    refusal = refusals.Refusal(at=refused_at, source="abc")
    assert refusal.holds("abc", refused_at + timedelta(days=6, hours=23))
    assert not refusal.holds("abc", refused_at + timedelta(days=7))
    assert not refusal.holds("other", refused_at)


def test_without_credentials_a_tick_skips_naming_them(tmp_path, emulator, monkeypatch):
    monkeypatch.delenv("CLEVERTAP_ACCOUNT_ID")
    monkeypatch.setenv("CLEVERTAP_PASSCODE", " ")
    definitions = build_definitions(make_pipeline(tmp_path, emulator).settings)
    with instance_for_test() as instance:
        schedule = definitions.resolve_schedule_def("ingestion_schedule")
        with build_schedule_context(
            instance=instance,
            resources={WAREHOUSE_STATS: (definitions.resources or {})[WAREHOUSE_STATS]},
        ) as context:
            result = schedule.evaluate_tick(context)
    assert result.run_requests == []
    assert result.skip_message == (
        "CLEVERTAP_ACCOUNT_ID is not set: it is the Project ID under Settings > Project in the "
        "CleverTap dashboard; CLEVERTAP_PASSCODE is not set: it is the Passcode under "
        "Settings > Project in the CleverTap dashboard (see .env.example)"
    )


def test_scheduled_runs_carry_the_checks_and_name_their_event(tmp_path, make_emulator):
    emulator = make_emulator(events=["Charged"], duplicate_share=0.3)
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], history_days=3)
    definitions = build_definitions(pipeline.settings)
    key = AssetKey(["clevertap", "charged"])
    with instance_for_test() as instance:
        schedule = definitions.resolve_schedule_def("ingestion_schedule")
        assert schedule.job_name == "clevertap_ingestion"
        (request,) = tick(definitions, instance, pipeline.settings.timezone)
        assert request.tags["clevertap/event"] == "charged"
        assert set(request.asset_check_keys or []) == {
            AssetCheckKey(key, "no_duplicate_record_ids"),
            AssetCheckKey(key, "row_count_matches_clevertap"),
        }
        result = execute(pipeline, definitions, request, instance)
    assert result.success
    verdicts = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert verdicts == {"no_duplicate_record_ids": True, "row_count_matches_clevertap": True}

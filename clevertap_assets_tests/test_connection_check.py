"""`clevertap-assets check` and `connection_check_job` against the emulator, configured only
through the environment, as a user would."""

import os
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from clevertap_assets import cli
from clevertap_assets.connection_check import (
    CHECK_STEPS,
    CheckFailed,
    CheckState,
    check_connection,
    connection_check_job,
    run_connection_check,
)
from clevertap_assets.definitions import build_code_location
from clevertap_assets.settings import load_settings

ACCOUNT = "CHECK-ACCOUNT"
PASSCODE = "check-SECRET-passcode-93"
EVENTS = ["Notification Sent", "App Launched", "Charged"]
DAY = "2024-03-01"


@pytest.fixture
def emulator(make_emulator):
    return make_emulator(account_id=ACCOUNT, passcode=PASSCODE, events=EVENTS, duplicate_share=0.0)


@pytest.fixture(autouse=True)
def environment(tmp_path, monkeypatch, emulator) -> None:
    """Only what the test sets counts: no `.env` file, no CLEVERTAP_* from the shell."""
    monkeypatch.setattr("clevertap_assets.settings.load_dotenv", lambda **_: False)
    for name in list(os.environ):
        if name.startswith("CLEVERTAP_"):
            monkeypatch.delenv(name)
    events_csv = tmp_path / "events.csv"
    events_csv.write_text("Event Name\n" + "\n".join(EVENTS) + "\n", encoding="utf-8")
    monkeypatch.setenv("CLEVERTAP_EVENTS_CSV", str(events_csv))
    monkeypatch.setenv("CLEVERTAP_API_URL", emulator.url)
    monkeypatch.setenv("CLEVERTAP_ACCOUNT_ID", ACCOUNT)
    monkeypatch.setenv("CLEVERTAP_PASSCODE", PASSCODE)
    monkeypatch.setenv("DESTINATION", "duckdb")
    monkeypatch.setenv("DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))


def test_ok_report_against_the_emulator(emulator, capsys) -> None:
    assert run_connection_check(day=DAY) == 0
    out = capsys.readouterr().out
    assert "CleverTap connection check OK" in out
    assert f"base URL:              {emulator.url}" in out
    assert f"account id:            {ACCOUNT}" in out
    assert "region:                eu1" in out
    assert "events selected:       3" in out
    assert f"event tested:          App Launched on {DAY}" in out
    assert "note: skipped 'Notification Sent'" in out
    assert "destination:           DuckDB OK: " in out
    assert PASSCODE not in out
    records = int(out.split("records in first page:")[1].split()[0])
    assert 0 < records <= emulator.true_count("App Launched", date.fromisoformat(DAY))
    assert emulator.stats.requests["page"] == 1


def test_default_day_is_yesterday_in_the_project_time_zone(monkeypatch) -> None:
    monkeypatch.setenv("CLEVERTAP_TIMEZONE", "Pacific/Kiritimati")
    report = check_connection()
    assert report.ok, report.failure
    assert report.day == datetime.now(ZoneInfo("Pacific/Kiritimati")).date() - timedelta(days=1)


def test_the_cli_runs_the_check(capsys) -> None:
    assert cli.main(["check", "--day", DAY]) == 0
    assert "CleverTap connection check OK" in capsys.readouterr().out


def test_wrong_passcode_fails_with_the_auth_message(monkeypatch, capsys) -> None:
    monkeypatch.setenv("CLEVERTAP_PASSCODE", "not-the-passcode")
    assert run_connection_check(day=DAY) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith("CleverTap connection check FAILED: authentication failed for account")
    assert "CLEVERTAP_REGION" in out and "not-the-passcode" not in out


@pytest.mark.parametrize("variable", ["CLEVERTAP_ACCOUNT_ID", "CLEVERTAP_PASSCODE"])
def test_missing_credentials_name_the_variable(monkeypatch, capsys, variable: str) -> None:
    monkeypatch.delenv(variable)
    assert run_connection_check(day=DAY) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert f"{variable} is not set" in out


def test_bad_region_names_the_setting(monkeypatch, capsys) -> None:
    monkeypatch.setenv("CLEVERTAP_REGION", "mars1")
    assert run_connection_check(day=DAY) == 1
    out = capsys.readouterr().out
    assert "CLEVERTAP_REGION='mars1' is not a CleverTap region" in out


def test_bad_day_is_reported(capsys) -> None:
    assert run_connection_check(day="yesterday") == 1
    assert "--day 'yesterday' is not a date YYYY-MM-DD" in capsys.readouterr().out


def test_only_notification_events_selected(monkeypatch, capsys) -> None:
    monkeypatch.setenv("CLEVERTAP_EXCLUDE_EVENTS", "App Launched,Charged")
    assert run_connection_check(day=DAY) == 1
    assert "none of the 1 selected events can be exported" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("project_zone", "implied"), [("Asia/Kolkata", "UTC+05:30"), ("America/New_York", "UTC-05:00")]
)
def test_a_time_zone_other_than_the_projects_fails_the_check(
    make_emulator, monkeypatch, capsys, project_zone, implied
) -> None:
    """A sample of a day's records read in CLEVERTAP_TIMEZONE: epoch `ts` of a project in
    another zone fall outside the day, and the check names the setting and the implied zone."""
    emulator = make_emulator(
        account_id=ACCOUNT,
        passcode=PASSCODE,
        events=EVENTS,
        timezone=project_zone,
        ts_format="epoch",
        records_per_day=200,
    )
    monkeypatch.setenv("CLEVERTAP_API_URL", emulator.url)
    monkeypatch.setenv("CLEVERTAP_TIMEZONE", "UTC")
    assert run_connection_check(day=DAY) == 1
    out = capsys.readouterr().out
    assert "CleverTap connection check FAILED: " in out
    assert f"records of event 'App Launched' ({DAY}..{DAY}) lie outside" in out
    assert "CLEVERTAP_TIMEZONE='UTC' (UTC+00:00)" in out
    assert f"as if the CleverTap project's time zone were {implied}" in out
    monkeypatch.setenv("CLEVERTAP_TIMEZONE", project_zone)
    assert run_connection_check(day=DAY) == 0


def test_more_steps_can_follow_the_clevertap_check() -> None:
    """The seam for destination checks: a step appended after CleverTap's runs with its state."""
    seen: list[str | None] = []

    def destination(state: CheckState) -> None:
        seen.append(state.report.event_tested)
        raise CheckFailed("DESTINATION=duckdb: cannot open clevertap.duckdb")

    report = check_connection(DAY, steps=[*CHECK_STEPS, destination])
    assert seen == ["App Launched"]
    assert not report.ok and report.failure == "DESTINATION=duckdb: cannot open clevertap.duckdb"


def test_the_dagster_job_passes_and_fails_like_the_command(monkeypatch) -> None:
    run_config = {"ops": {"clevertap_connection_check": {"config": {"day": DAY}}}}
    assert connection_check_job.execute_in_process(run_config=run_config).success

    monkeypatch.setenv("CLEVERTAP_PASSCODE", "not-the-passcode")
    with dg.instance_for_test() as instance:
        result = connection_check_job.execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False
        )
        assert not result.success
        failure = result.failure_data_for_node("clevertap_connection_check")
        assert failure is not None
        message = failure.error.message
        logged = [str(entry) for entry in instance.all_logs(result.run_id)]
    assert "CleverTap connection check FAILED: authentication failed for account" in message
    assert not any("not-the-passcode" in line for line in logged)


def test_an_unreachable_destination_fails_the_check(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DUCKDB_PATH", str(tmp_path / "missing-folder" / "warehouse.duckdb"))
    assert run_connection_check(day=DAY) == 1
    out = capsys.readouterr().out
    assert out.startswith("CleverTap connection check FAILED: destination duckdb: ")
    assert "missing-folder" in out


def write_csv(tmp_path, text: str, encoding: str = "utf-8") -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(text.encode(encoding))


def test_names_in_any_script_and_alike_in_case_pass_the_check_and_load(tmp_path, capsys):
    """What `check` passes, the code location loads: the same validation runs in both."""
    names = ["Charged", "charged", "購入", "شراء", "Ünïcødé Évènt ✓"]
    write_csv(tmp_path, "Event Name\n" + "\n".join(names) + "\n", encoding="utf-16")
    assert cli.main(["check", "--day", DAY]) == 0
    assert "events selected:       5" in capsys.readouterr().out
    definitions = build_code_location(load_settings())
    dg.Definitions.validate_loadable(definitions)
    keys = {key.path[-1] for key in definitions.resolve_all_asset_keys()}
    assert {"charged", "webhook_events"} <= keys and len(keys) == 6


@pytest.mark.parametrize(
    ("csv_text", "exclude", "message"),
    [
        ("Event Name\n", "", "lists no event under its 'Event Name' column"),
        ("Event Name\nCharged\n", "Charged", "excludes all 1 events of"),
        ("Event Name\nWebhook Events\n", "", "would load into the webhook table"),
    ],
)
def test_what_the_definitions_refuse_the_check_refuses_in_one_sentence(
    tmp_path, monkeypatch, capsys, csv_text, exclude, message
) -> None:
    write_csv(tmp_path, csv_text)
    monkeypatch.setenv("CLEVERTAP_EXCLUDE_EVENTS", exclude)
    assert cli.main(["check", "--day", DAY]) == 1
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert message in line and "{" not in line


def test_a_csv_in_neither_utf8_nor_utf16_is_one_sentence(tmp_path, capsys) -> None:
    write_csv(tmp_path, "Event Name\nAchat réussi\n", encoding="latin-1")
    assert cli.main(["check", "--day", DAY]) == 1
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert "is neither UTF-8 nor UTF-16" in line and "save it as 'CSV UTF-8'" in line
    assert PASSCODE not in line and "{" not in line

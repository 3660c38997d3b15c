from datetime import date, timedelta
from pathlib import Path

import pytest

from clevertap_assets.settings import (
    SettingsError,
    base_url_for,
    load_settings,
    parse_ingestion_frequency,
    read_event_names,
)


@pytest.fixture
def events_csv(tmp_path: Path) -> Path:
    path = tmp_path / "events.csv"
    path.write_text("Event Name,Type\nApp Launched,System\nCharged,System\n", encoding="utf-8")
    return path


def settings_error(**values: object) -> str:
    with pytest.raises(SettingsError) as raised:
        load_settings(**values)
    return str(raised.value)


def test_defaults_are_the_documented_ones(events_csv: Path):
    settings = load_settings(events_csv=events_csv)
    assert settings.event_names == ["App Launched", "Charged"]
    assert settings.region == "eu1"
    assert settings.base_url == "https://api.clevertap.com"
    assert settings.ingestion_interval == timedelta(hours=6)
    assert settings.destination == "duckdb"
    assert settings.auto_mapping is True
    assert settings.pipeline_slug == "clevertap"


def test_environment_variables_are_read(events_csv: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CLEVERTAP_EVENTS_CSV", str(events_csv))
    monkeypatch.setenv("CLEVERTAP_REGION", "Global")
    monkeypatch.setenv("CLEVERTAP_PIPELINE_NAME", "Growth App (prod)")
    monkeypatch.setenv("TABLE_PREFIX", "ct")
    monkeypatch.setenv("AUTO_MAPPING", "false")
    monkeypatch.setenv("CLEVERTAP_EXCLUDE_EVENTS", "Charged")
    settings = load_settings()
    assert settings.region == "eu1"
    assert settings.pipeline_slug == "growth_app_prod"
    assert (settings.table_prefix, settings.auto_mapping) == ("ct", False)
    assert settings.event_names == ["App Launched"]


def test_api_url_overrides_the_region_host():
    assert base_url_for("in1", None) == "https://in1.api.clevertap.com"
    assert base_url_for("in1", "http://127.0.0.1:8765/") == "http://127.0.0.1:8765"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"region": "eu2"}, "CLEVERTAP_REGION='eu2' is not a CleverTap region; allowed: eu1, in1"),
        ({"pipeline_name": ""}, "CLEVERTAP_PIPELINE_NAME must be 1 to 255 characters, got 0"),
        (
            {"pipeline_name": "p" * 256},
            "CLEVERTAP_PIPELINE_NAME must be 1 to 255 characters, got 256",
        ),
        (
            {"pipeline_name": "***"},
            "CLEVERTAP_PIPELINE_NAME='***' needs at least one letter or digit",
        ),
        (
            {"timezone": "Mars/Olympus"},
            "CLEVERTAP_TIMEZONE='Mars/Olympus' is not an IANA time zone",
        ),
        (
            {"table_prefix": "ct-"},
            "TABLE_PREFIX='ct-' may hold only letters, digits and underscores",
        ),
        ({"exclude_events": "charged"}, "CLEVERTAP_EXCLUDE_EVENTS names events that are not in"),
        ({"destination": "oracle"}, "DESTINATION='oracle'"),
        (
            {"account_id": "W9R-486 4W5Z"},
            "CLEVERTAP_ACCOUNT_ID='W9R-486 4W5Z' contains whitespace; copy the Project ID",
        ),
        ({"history_days": 0}, "CLEVERTAP_HISTORY_DAYS=0"),
        ({"start_date": "2026-13-01"}, "CLEVERTAP_START_DATE='2026-13-01'"),
        ({"start_date": "2999-01-01"}, "CLEVERTAP_START_DATE='2999-01-01' is after today"),
    ],
)
def test_bad_values_get_one_clear_error(events_csv: Path, values: dict, message: str):
    assert message in settings_error(events_csv=events_csv, **values)


def test_an_empty_start_date_is_unset(events_csv: Path):
    assert load_settings(events_csv=events_csv, start_date="").start_date is None
    chosen = load_settings(events_csv=events_csv, start_date="2026-01-01").start_date
    assert chosen == date(2026, 1, 1)


def test_missing_csv_names_the_setting(tmp_path: Path):
    message = settings_error(events_csv=tmp_path / "nope.csv")
    assert message == f"CLEVERTAP_EVENTS_CSV={str(tmp_path / 'nope.csv')!r}: no such file"


def test_csv_without_event_name_column(tmp_path: Path):
    path = tmp_path / "events.csv"
    path.write_text("Name,Type\nCharged,System\n", encoding="utf-8")
    assert "has no event-name column (found 'Name', 'Type')" in settings_error(events_csv=path)


def test_csv_export_quirks_are_tolerated(tmp_path: Path):
    path = tmp_path / "events.csv"
    path.write_bytes(
        "\ufeff\n Event  name ,Count\n"
        '"Search Performed, Filtered",3\n\nCharged,5\nCharged,5\n,7\n'.encode()
    )
    assert read_event_names(path) == ["Search Performed, Filtered", "Charged"]


def test_names_differing_only_by_surrounding_spaces_are_refused_in_one_sentence(tmp_path: Path):
    """Read without their spaces they would be one event, and one of them never loaded."""
    path = tmp_path / "events.csv"
    path.write_text('Event Name\nCharged\n" Charged "\nApp Launched\n', encoding="utf-8")
    assert settings_error(events_csv=path) == (
        f"CLEVERTAP_EVENTS_CSV={str(path)!r} lists event names that differ only by surrounding "
        "spaces (' Charged ' and 'Charged'); names are read without surrounding spaces, so they "
        "would load as one event: keep one line of each"
    )


def test_excluding_an_event_with_a_comma_in_its_name(tmp_path: Path):
    path = tmp_path / "events.csv"
    path.write_text('event_name\n"Search Performed, Filtered"\nCharged\n', encoding="utf-8")
    settings = load_settings(events_csv=path, exclude_events='"Search Performed, Filtered"')
    assert settings.event_names == ["Charged"]


@pytest.mark.parametrize(
    ("value", "interval"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("6h", timedelta(hours=6)),
        ("24H", timedelta(hours=24)),
        (" 12 hours ", timedelta(hours=12)),
    ],
)
def test_allowed_ingestion_frequencies(value: str, interval: timedelta):
    assert parse_ingestion_frequency(value) == interval


@pytest.mark.parametrize("value", ["5m", "1.5h", "90m", "25h", "0h", "60m", "hourly", ""])
def test_refused_ingestion_frequencies_list_what_is_allowed(value: str):
    with pytest.raises(SettingsError) as raised:
        parse_ingestion_frequency(value)
    assert str(raised.value) == (
        f"INGESTION_FREQUENCY={value!r} is not allowed; "
        "use 30m, or a whole number of hours from 1h to 24h"
    )


def test_bad_email_alert_settings_name_the_setting_and_never_show_the_password(events_csv):
    mail = {
        "alert_email_to": "data@example.com, oncall@example.com",
        "alert_email_from": "dagster@example.com",
        "alert_smtp_host": "smtp.example.com",
    }
    good = load_settings(
        events_csv=events_csv, **mail, alert_smtp_user="alerts", alert_smtp_password="pw-secret"
    )
    assert good.alert_email_recipients == ["data@example.com", "oncall@example.com"]
    assert "pw-secret" not in repr(good) and good.alert_smtp_port == 587
    for wrong, message in (
        ({"alert_smtp_host": ""}, "ALERT_EMAIL_TO is set but ALERT_SMTP_HOST is not"),
        ({"alert_email_from": ""}, "ALERT_EMAIL_TO is set but ALERT_EMAIL_FROM is not"),
        ({"alert_email_to": "data@example.com, data-team"}, "not: 'data-team'"),
        ({"alert_smtp_security": "tls"}, "ALERT_SMTP_SECURITY='tls' is not allowed; use starttls"),
        ({"alert_smtp_password": "pw-secret"}, "ALERT_SMTP_USER and ALERT_SMTP_PASSWORD go"),
    ):
        with pytest.raises(SettingsError) as error:
            load_settings(events_csv=events_csv, **{**mail, **wrong})
        assert message in str(error.value) and "pw-secret" not in str(error.value)


def test_a_bad_alert_url_or_owner_names_its_setting_and_never_shows_the_secret(events_csv):
    csv = events_csv
    secret = "hooks.slack.com/services/T0/B0/xoxb-secret"
    with pytest.raises(SettingsError) as error:
        load_settings(events_csv=csv, alert_webhook_url=secret)
    assert "ALERT_WEBHOOK_URL is not an http(s) URL" in str(error.value)
    assert "xoxb-secret" not in str(error.value)
    good = load_settings(events_csv=csv, alert_webhook_url=f"https://{secret}")
    assert "xoxb-secret" not in repr(good) and "xoxb-secret" not in str(good)
    with pytest.raises(SettingsError, match=r"ASSET_OWNERS names 'data-team'.*team:"):
        load_settings(events_csv=csv, asset_owners="a@example.com, data-team")


def test_an_override_naming_no_setting_is_refused(events_csv: Path):
    """A setting the environment would ignore is a mistake when code names it: an override
    left from a setting that moved (`duckdb_path`, now the DuckDB destination's) is refused,
    not silently dropped."""
    with pytest.raises(TypeError, match="PipelineSettings has no setting duckdb_path"):
        load_settings(events_csv=events_csv, duckdb_path="elsewhere.duckdb")
    assert load_settings(CLEVERTAP_EVENTS_CSV=str(events_csv)).events_csv == events_csv

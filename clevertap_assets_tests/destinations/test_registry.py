"""The registry that picks a destination by `DESTINATION`."""

import importlib

import pytest

from clevertap_assets.destinations import registry
from clevertap_assets.destinations.registry import DESTINATIONS, destination_for
from clevertap_assets.settings import SettingsError, load_settings
from clevertap_assets_tests.harness import write_events_csv


def test_the_settings_accept_exactly_the_registrys_destinations_and_each_loads(tmp_path):
    events_csv = write_events_csv(tmp_path / "events.csv", ["Charged"])
    for name, load in DESTINATIONS.items():
        assert load_settings(events_csv=events_csv, destination=name).destination == name
        destination = load()
        assert callable(destination.build_resources) and callable(destination.check)
    with pytest.raises(SettingsError) as error:
        load_settings(events_csv=events_csv, destination="oracle")
    assert str(error.value) == (
        "DESTINATION='oracle' is not a destination; allowed: duckdb, snowflake, bigquery, redshift"
    )


def test_a_missing_extra_is_one_clear_message(tmp_path, monkeypatch):
    """A destination whose client library is not installed names the extra to install."""

    def missing_stack() -> registry.Destination:
        importlib.import_module("snowflake_not_installed_here")
        raise AssertionError("unreachable")

    monkeypatch.setitem(DESTINATIONS, "snowflake", missing_stack)
    settings = load_settings(
        events_csv=write_events_csv(tmp_path / "events.csv", ["Charged"]),
        destination="snowflake",
    )
    with pytest.raises(SettingsError) as error:
        destination_for(settings)
    assert str(error.value) == (
        "DESTINATION=snowflake needs its client libraries (module 'snowflake_not_installed_here'"
        " is missing): pip install 'clevertap_assets[snowflake]'"
    )

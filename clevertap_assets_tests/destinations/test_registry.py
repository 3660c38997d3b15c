"""The registry that picks a destination by `DESTINATION`."""

import importlib

import pytest

from clevertap_assets import destinations
from clevertap_assets.destinations import DESTINATIONS, destination_for
from clevertap_assets.settings import DESTINATIONS as ALLOWED
from clevertap_assets.settings import SettingsError, load_settings
from clevertap_assets_tests.harness import write_events_csv


def test_every_allowed_destination_has_a_loader_and_each_loads():
    assert set(DESTINATIONS) == set(ALLOWED)
    for load in DESTINATIONS.values():
        destination = load()
        assert callable(destination.build_resources) and callable(destination.check)


def test_a_missing_extra_is_one_clear_message(tmp_path, monkeypatch):
    """A destination whose client library is not installed names the extra to install."""

    def missing_stack() -> destinations.Destination:
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

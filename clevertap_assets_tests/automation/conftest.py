"""Fixtures of the automation tests."""

import pytest

from clevertap_assets.emulator import EmulatorConfig


@pytest.fixture(autouse=True)
def credentials(monkeypatch) -> None:
    """The emulator's credentials in the environment, as `.env.example` sets them for the code
    location: the schedule and the sensors skip without them."""
    monkeypatch.setenv("CLEVERTAP_ACCOUNT_ID", EmulatorConfig.account_id)
    monkeypatch.setenv("CLEVERTAP_PASSCODE", EmulatorConfig.passcode)

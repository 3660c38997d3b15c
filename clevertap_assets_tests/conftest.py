"""Shared pytest fixtures. Each block is owned by one module's tests; add new blocks below."""

from collections.abc import Callable, Iterator

import pytest

# --- CleverTap emulator fixtures (owner: clevertap_assets/emulator.py) -------------------
from clevertap_assets.emulator.server import CleverTapEmulator, EmulatorConfig


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., CleverTapEmulator]]:
    """Start emulators with any `EmulatorConfig` fields, on 127.0.0.1 and a free port; all
    are stopped after the test. `make_emulator(records_per_day=5, throttle_every=2)`."""
    started: list[CleverTapEmulator] = []

    def make(**config: object) -> CleverTapEmulator:
        emulator = CleverTapEmulator(EmulatorConfig(host="127.0.0.1", port=0, **config))
        started.append(emulator)
        emulator.start()
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., CleverTapEmulator]) -> CleverTapEmulator:
    """A fresh emulator with default settings (demo account, UTC, 40 records a day)."""
    return make_emulator()


# --- end of CleverTap emulator fixtures ---------------------------------------------------

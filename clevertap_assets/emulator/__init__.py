"""A local CleverTap with its quirks and faults, for the demo, the tests and the benchmark;
nothing the definitions load imports it. config.py (what shapes it), data.py (records),
faults.py (switchable faults, what it saw), api.py (the two APIs' answers), server.py (HTTP)."""

from clevertap_assets.emulator.config import EmulatorConfig, InFlightGate
from clevertap_assets.emulator.data import OVERSIZE_PROPERTY
from clevertap_assets.emulator.faults import peak_in_flight
from clevertap_assets.emulator.server import CleverTapEmulator, serve_forever

__all__ = [
    "OVERSIZE_PROPERTY",
    "CleverTapEmulator",
    "EmulatorConfig",
    "InFlightGate",
    "peak_in_flight",
    "serve_forever",
]

"""What shapes the emulator's answers: its data, the behaviour of the real service it copies,
and the faults a test switches on; the switchable fields are named here once."""

import os
import threading
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

from dotenv import load_dotenv

from clevertap_assets.settings import read_event_names

FAULT_FIELDS = frozenset(
    {
        "max_concurrent",
        "retry_after",
        "server_error_every",
        "throttle_every",
        "drop_every",
        "delay_seconds",
        "page_in_progress",
        "page_in_progress_polls",
        "cursor_expiry_pages",
        "cursor_expiry_times",
        "repeat_cursor",
        "endless_empty_pages",
        "endless_cursor_events",
        "counts_partial",
        "counts_partial_polls",
        "final_page",
        "vary_page_sizes",
        "batch_size_over_max",
        "not_exportable_prefixes",
    }
)
DATA_FIELDS = frozenset(
    {
        "extra_event_props",
        "extra_event_props_from",
        "oversize_records",
        "duplicate_share",
        "ts_format",
    }
)


class InFlightGate:
    """Holds export requests (counts requests too, as `counts_gate`) until `count` are in flight
    at once across every emulator sharing the gate, then lets every request through from then
    on (or a waiter through alone after `timeout_seconds`). A test can so prove that several
    accounts' (or APIs') requests overlapped, however slowly a loaded machine starts the
    threads or processes that send them; if they cannot overlap (a shared concurrency limit),
    the first wave is only late and the peak count stays short."""

    def __init__(self, count: int, timeout_seconds: float) -> None:
        self._count, self._timeout = count, timeout_seconds
        self._waiting = 0
        self._open = False
        self._gave_up = False
        self._condition = threading.Condition()

    @property
    def filled(self) -> bool:
        """Whether `count` requests were once held here together: the gate opened before any
        waiter was let go alone (arrivals are counted, not departures, so after a timeout an
        opening no longer proves that they overlapped)."""
        with self._condition:
            return self._open and not self._gave_up

    def pass_through(self) -> None:
        with self._condition:
            if self._open:
                return
            self._waiting += 1
            if self._waiting >= self._count:
                self._open = True
                self._condition.notify_all()
                return
            if not self._condition.wait_for(lambda: self._open, timeout=self._timeout):
                self._gave_up = True


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that shapes the emulator's answers; faults default to off, except the
    concurrency limit of 3, which the real service always enforces."""

    account_id: str = "DEMO-ACCOUNT"
    passcode: str = field(default="demo-passcode", repr=False)
    timezone: str = "UTC"
    seed: int = 0
    records_per_day: int = 40
    duplicate_share: float = 0.05
    events: list[str] | None = None
    not_exportable_prefixes: tuple[str, ...] = ("Notification",)
    host: str = "127.0.0.1"
    port: int = 0
    # Data variants for schema-evolution and size-limit tests.
    extra_event_props: dict[str, object] = field(default_factory=dict)
    extra_event_props_from: date | None = None
    oversize_records: dict[tuple[str, date], int] = field(default_factory=dict)
    # `ts` as CleverTap's 14-digit local time, or as the epoch seconds some clients meet.
    ts_format: Literal["compact", "epoch"] = "compact"
    # Behaviour and faults (changeable on a running server through `set_faults`).
    final_page: Literal["empty", "records"] = "empty"
    vary_page_sizes: bool = True
    batch_size_over_max: Literal["clamp", "reject"] = "clamp"
    max_concurrent: int | None = 3
    retry_after: float | None = None
    server_error_every: int = 0
    throttle_every: int = 0
    drop_every: int = 0
    delay_seconds: float = 0.0  # latency of every request, held while it counts as in flight
    page_in_progress: bool = False
    page_in_progress_polls: int | None = 1  # fetches of each page still in progress; None: all
    cursor_expiry_pages: int = 0
    cursor_expiry_times: int | None = 1
    repeat_cursor: bool = False  # next_cursor equals the cursor just used: a stuck export
    endless_empty_pages: bool = False  # past the last record, a new empty cursor, forever
    # Past the last record, these events' chains start over with new cursors, forever.
    endless_cursor_events: frozenset[str] = frozenset()
    counts_partial: bool = False
    counts_partial_polls: int = 1
    unreadable_counts: tuple[str, ...] = ()  # events whose count answer is not a number
    prerender: bool = False
    prerender_cache_bytes: int = 1 << 30
    # Export requests wait here, counted in flight, until the gate opens (see InFlightGate).
    gate: InFlightGate | None = field(default=None, compare=False)
    # The same for counts requests; one gate in both fields counts both APIs together.
    counts_gate: InFlightGate | None = field(default=None, compare=False)


def config_from_env(host: str, port: int, latency_seconds: float) -> EmulatorConfig:
    """The project's time zone and events CSV (the environment, then `.env`), so the demo's
    settings work against the emulator unchanged."""
    load_dotenv(override=False)
    csv_path = os.environ.get("CLEVERTAP_EVENTS_CSV")
    return EmulatorConfig(
        host=host,
        port=port,
        timezone=os.environ.get("CLEVERTAP_TIMEZONE") or "UTC",
        events=read_event_names(Path(csv_path)) if csv_path else None,
        delay_seconds=latency_seconds,
    )

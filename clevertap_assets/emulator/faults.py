"""The faults a test switches on (delays, dropped connections, 5xx, throttling, the concurrency
limit, expiring cursors) and the counts of what the emulator saw, so a test asserts on the
client's behaviour and not only on the data that arrived."""

import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any

import orjson

from clevertap_assets.emulator.config import FAULT_FIELDS, EmulatorConfig


@dataclass
class EmulatorStats:
    """What the emulator saw, so tests can assert on client behaviour (e.g. never more than
    three requests in flight) and not only on the data that arrived."""

    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    # (time.monotonic(), requests in flight right after) at every arrival and departure:
    # emulators in one process share the clock, so `peak_in_flight` can tell whether two
    # accounts' exports ran at the same moment, not only how many each ran.
    in_flight_changes: list[tuple[float, int]] = field(default_factory=list)
    open_bodies: list[dict[str, Any]] = field(default_factory=list)
    open_params: list[dict[str, str]] = field(default_factory=list)
    counts_in_flight: int = 0
    max_counts_in_flight: int = 0

    @property
    def rate_limited(self) -> int:
        """HTTP 429s served."""
        return self.faults["too_many_concurrent"]


def peak_in_flight(*stats: EmulatorStats) -> int:
    """The most export requests in flight at one moment across several emulators (accounts)."""
    changes = sorted(
        (moment, index, count)
        for index, one in enumerate(stats)
        for moment, count in one.in_flight_changes
    )
    current = [0] * len(stats)
    peak = 0
    for _, index, count in changes:
        current[index] = count
        peak = max(peak, sum(current))
    return peak


class EmulatorError(ValueError):
    """An answer that ends the request early: HTTP status plus CleverTap's JSON error body."""

    def __init__(self, status: int, error: str, code: int, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status, self.error, self.code = status, error, code
        self.headers = headers or {}

    def body(self) -> bytes:
        return orjson.dumps({"status": "fail", "error": self.error, "code": self.code})


class Dropped(Exception):
    """The fault that closes the socket without any answer."""


def incorrect_usage() -> EmulatorError:
    return EmulatorError(200, "Incorrect Usage", 3)


class FaultInjection:
    """The state every answer consults: the config, the lock that guards it, what was seen, and
    each fault's every-Nth counter."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._stats = EmulatorStats()
        self._fault_counters: Counter[str] = Counter()
        self._expiries = 0

    @property
    def config(self) -> EmulatorConfig:
        return self._config

    @property
    def stats(self) -> EmulatorStats:
        return self._stats

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = EmulatorStats()

    def set_faults(self, **changes: Any) -> None:
        """Change faults and answer shapes on a running server; each changed fault's
        every-Nth counter restarts, so "the next N-th request" means from now."""
        unknown = set(changes) - FAULT_FIELDS
        if unknown:
            raise TypeError(f"not fault switches: {', '.join(sorted(unknown))}")
        with self._lock:
            self._config = replace(self._config, **changes)
            for name in changes:
                self._fault_counters.pop(name, None)
            if "cursor_expiry_pages" in changes or "cursor_expiry_times" in changes:
                self._expiries = 0

    def count(self, kind: str) -> None:
        with self._lock:
            self._stats.requests[kind] += 1

    def _fault(self, kind: str) -> None:
        with self._lock:
            self._stats.faults[kind] += 1

    def _every(self, name: str, every: int) -> bool:
        if every <= 0:
            return False
        with self._lock:
            self._fault_counters[name] += 1
            return self._fault_counters[name] % every == 0

    def common_faults(self) -> None:
        """Faults any API call can meet, in the order a real outage would show them."""
        config = self._config
        if config.delay_seconds > 0:
            time.sleep(config.delay_seconds)
        if self._every("drop_every", config.drop_every):
            self._fault("dropped")
            raise Dropped
        if self._every("server_error_every", config.server_error_every):
            self._fault("server_error")
            status = 503 if self._stats.faults["server_error"] % 2 == 0 else 500
            raise EmulatorError(status, HTTPStatus(status).phrase, status)
        if self._every("throttle_every", config.throttle_every):
            self._fault("throttled")
            raise EmulatorError(200, "Too many requests, please retry later", 1)

    def enter_events(self) -> None:
        """An export request arrives: counted in flight, refused past the concurrency limit."""
        with self._lock:
            stats = self._stats
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            stats.in_flight_changes.append((time.monotonic(), stats.in_flight))
            limit = self._config.max_concurrent
            over = limit is not None and stats.in_flight > limit
        if over:
            self._fault("too_many_concurrent")
            retry_after = self._config.retry_after
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            raise EmulatorError(429, "Too many concurrent requests", 429, headers)

    def leave_events(self) -> None:
        with self._lock:
            self._stats.in_flight -= 1
            self._stats.in_flight_changes.append((time.monotonic(), self._stats.in_flight))

    def cursor_expires(self, pages_served: int) -> bool:
        """Whether a chain that has served `pages_served` pages expires now: after N pages, a
        limited number of times, so a client that reopens can finish (the real expiry is by
        age, about 4 h, which tests cannot wait for). Called under the lock."""
        config = self._config
        budget = config.cursor_expiry_times
        if (
            config.cursor_expiry_pages > 0
            and pages_served >= config.cursor_expiry_pages
            and (budget is None or self._expiries < budget)
        ):
            self._expiries += 1
            return True
        return False

"""A local stand-in for CleverTap's Get Events and event-count APIs, so the demo and every test
run without a CleverTap account.

It copies the documented behaviour of the real service
(https://developer.clevertap.com/docs/get-events-api), including the awkward parts a
client must survive: errors with HTTP 200, an already percent-encoded cursor that must not be
re-encoded, a last page without `records`, duplicated records, type drift, the three-request
concurrency limit and switchable faults. Data is synthetic but deterministic: the same config
(seed included) gives the same records on any machine, and the emulator can state the truth
(`true_count`, `true_records`) that the warehouse is reconciled against.

Choices where the real service is unconfirmed (documented here once):

* `batch_size` above 5000 is clamped to 5000 (deployed clients send 50000 and get pages), or
  answered `400 {"status":"fail","error":"batch_size must be between 1 and 5000","code":400}`
  with `batch_size_over_max="reject"`. Without `batch_size` a page holds up to 10 records.
* Unknown event: HTTP 400 `{"status":"fail","error":"Invalid event : <name>","code":400}`.
* An expired cursor: HTTP 200 `{"status":"fail","error":"Cursor expired, please reopen","code":4}`.
* Counts are of distinct records: duplicates are an export artefact, CleverTap counts events.
  Counting a notification event is allowed (only its export is refused).
* The concurrency limit applies to `/1/events.json` only (requests in flight on the counts
  API are counted, not refused); the other faults (delay, drops, 5xx, throttling) apply to
  every authenticated API call, counts included, each with its own request counter that
  restarts when the fault is switched.
"""

import base64
import binascii
import bisect
import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote, unquote_plus
from zoneinfo import ZoneInfo

import orjson

from clevertap_assets.settings import read_event_names

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 5000
DEFAULT_BATCH_SIZE = 10
EVENTS_PATH = "/1/events.json"
COUNTS_PATH = "/1/counts/events.json"
OVERSIZE_PROPERTY = "Large Blob"
_USERS = 5000  # profile pool: the same people act across events and days, as in a real app
_SECOND_STRIDE = 7919  # prime, coprime to 82800/86400/90000: a bijection over a day's seconds
_PROFILE_NOW = 1_750_000_000  # profiles are "state now": a fixed now keeps them deterministic
_DEFAULT_EVENTS_CSV = Path(__file__).resolve().parents[2] / "events.csv"

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


class _Dropped(Exception):
    """The fault that closes the socket without any answer."""


def _incorrect_usage() -> EmulatorError:
    return EmulatorError(200, "Incorrect Usage", 3)


# --- deterministic synthetic data -------------------------------------------------------


def _digest(*parts: object) -> int:
    """A 256-bit number from the parts: one hash per record is far cheaper than a seeded
    `random.Random`, and it is stable across processes (unlike `hash`)."""
    key = "|".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=32).digest(), "big")


class _Draw:
    """Consumes a hash number digit by digit, so one digest yields all of a record's choices."""

    def __init__(self, number: int) -> None:
        self.number = number

    def below(self, n: int) -> int:
        self.number, value = divmod(self.number, n)
        if self.number < n:  # a digest lasts about 30 draws; stretch it deterministically
            self.number = _digest(value, n, self.number)
        return value

    def pick(self, options: tuple[Any, ...]) -> Any:
        return options[self.below(len(options))]

    def chance(self, percent: int) -> bool:
        return self.below(100) < percent


_FIRST = ("Asha", "Ravi", "Maria", "John", "Wei", "Fatima", "Lucas", "Aiko", "Omar", "Priya")
_LAST = ("Sharma", "Silva", "Smith", "Chen", "Khan", "Mueller", "Rossi", "Tanaka", "Okafor")
_CITIES = ("Mumbai", "Bengaluru", "São Paulo", "Berlin", "Jakarta", "Dubai", "Singapore", "Seoul")
_DEVICES = (
    ("Android", "Samsung", "Sm-s821b", "14"),
    ("Android", "Xiaomi", "Redmi Note 12", "13"),
    ("Android", "Google", "Pixel 8", "15"),
    ("iOS", "Apple", "iPhone15,2", "17.5"),
    ("iOS", "Apple", "iPhone13,1", "16.7"),
    ("Web", "", "", ""),
)
_PRODUCTS = (
    ("Trail Shoes", "Footwear", 4999),
    ("Cotton Tee", "Apparel", 799),
    ("Noise Buds", "Electronics", 2499),
    ("Steel Bottle", "Home", 649),
    ("Yoga Mat", "Fitness", 1299),
    ("Desk Lamp", "Home", 1899),
)
_SOURCES = ("Mobile", "Mobile", "API", "Web")
_UTM = (("google-play", "organic"), ("google", "cpc"), ("newsletter", "email"), ("", "Direct"))


def _profile_base(seed: int, user: int) -> dict[str, Any]:
    """A person's full profile; request flags later drop the parts not asked for."""
    draw = _Draw(_digest(seed, "user", user))
    object_id = f"__{_digest(seed, 'oid', user):064x}"[:32]
    profile: dict[str, Any] = {"objectId": object_id}
    platform, make, model, os_version = draw.pick(_DEVICES)
    first, last = draw.pick(_FIRST), draw.pick(_LAST)
    if draw.chance(80):  # identified users; the rest are anonymous devices
        identity = f"{_digest(seed, 'identity', user):064x}"[:24]
        email = f"{first}.{last}{user}@example.com".lower()
        profile.update(identity=identity, all_identities=[identity, email], email=email)
        profile["name"] = f"{first} {last}"
        phone = 910_000_000_000 + draw.below(10**9)
        shape = draw.below(10)
        if shape < 5:
            profile["phone"] = phone
        elif shape < 7:
            profile["phone"] = f"+{phone}"
    profile["platform"] = platform
    if platform != "Web":
        token = f"{_digest(seed, 'push', user):064x}"[:40]
        profile["push_token"] = f"{'fcm' if platform == 'Android' else 'apns'}:{token}"
    profile["_app"] = {
        "os_version": os_version,
        "app_version": f"9.{draw.below(3)}.{draw.below(10)}.{draw.below(9)}",
        "make": make,
        "model": model,
    }
    signup = _PROFILE_NOW - draw.below(3 * 365 * 86400)
    data: dict[str, Any] = {"signupon": f"$D_{signup}", "City": draw.pick(_CITIES)}
    if draw.chance(70):
        data["rating"] = 1 + draw.below(5)
    data["Customer Type"] = draw.pick(("Gold", "Silver", "New"))
    profile["_data"] = data
    launches = 1 + draw.below(900)
    profile["_events"] = {
        "App Launched": {
            "count": launches,
            "first_seen": signup,
            "last_seen": _PROFILE_NOW - draw.below(86400 * 30),
        },
        "Product Viewed": {
            "count": draw.below(launches * 3 + 1),
            "first_seen": signup + draw.below(86400),
            "last_seen": _PROFILE_NOW - draw.below(86400 * 60),
        },
    }
    return profile


def _shape_profile(base: dict[str, Any], app: bool, events: bool, profile: bool) -> dict:
    shaped = {key: value for key, value in base.items() if not key.startswith("_")}
    if app:
        shaped.update(base["_app"])
    if profile:
        shaped["profileData"] = base["_data"]
    if events:
        shaped["events"] = base["_events"]
    return shaped


def _items(draw: _Draw) -> list[dict[str, Any]]:
    items = []
    for _ in range(1 + draw.below(3)):
        name, category, price = draw.pick(_PRODUCTS)
        items.append(
            {
                "Product Name": name,
                "Category": category,
                "Price": price,
                "Quantity": 1 + draw.below(3),
            }
        )
    return items


def _event_specific_props(event: str, draw: _Draw, epoch: int) -> dict[str, Any]:
    """Properties by the kind of event, so tables differ the way real events do."""
    if event == "Charged":
        items = _items(draw)
        amount = sum(item["Price"] * item["Quantity"] for item in items)
        return {
            "Amount": amount if draw.chance(60) else amount + draw.below(100) / 100,
            "Currency": "INR",
            "Payment Mode": draw.pick(("UPI", "Credit Card", "COD", "Wallet")),
            "Charged ID": f"ord-{draw.below(10**9):09d}",
            "Delivery Date": f"$D_{epoch + 86400 * (2 + draw.below(5))}",
            "Items": items,
        }
    if "Product" in event or "Cart" in event:
        name, category, price = draw.pick(_PRODUCTS)
        return {"Product Name": name, "Category": category, "Price": price}
    if "Search" in event:
        return {"Query": draw.pick(("shoes", "tee", "lamp")), "Results": draw.below(200)}
    if "Checkout" in event:
        return {"Cart Value": 500 + draw.below(20000), "Items Count": 1 + draw.below(6)}
    if "UTM" in event:
        utm_source, utm_medium = draw.pick(_UTM)
        return {"utm_source": utm_source, "utm_medium": utm_medium, "utm_campaign": "spring"}
    return {"Screen": draw.pick(("Home", "Search", "Offers", "Profile")), "Value": draw.below(50)}


def _local_day(day: date, tz: ZoneInfo) -> tuple[int, int]:
    """The day's first instant (UTC epoch) and its length: DST days last 23 or 25 hours.

    Midnight can be missing or doubled around DST: `fold=0` midnight maps to the day's first
    real instant in both cases, which is what a local-day window means.
    """
    start = int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())
    after = day + timedelta(days=1)
    end = int(datetime(after.year, after.month, after.day, tzinfo=tz).timestamp())
    return start, end - start


@dataclass(frozen=True)
class _DayPlan:
    """What every record of one (event, day) shares, worked out once per day, not per record."""

    start: int
    length: int
    shift: int
    key_prefix: str
    extra_props: dict[str, object]
    oversize: int


def _compact_ts(moment: datetime) -> int:
    return (
        moment.year * 10**10
        + moment.month * 10**8
        + moment.day * 10**6
        + moment.hour * 10**4
        + moment.minute * 100
        + moment.second
    )


@dataclass(frozen=True)
class _Flags:
    app: bool = False
    events: bool = True
    profile: bool = True


class _Generator:
    """Builds record i of (event, day) on demand: nothing is materialised beyond one page.

    Record i's second within the day is a bijection of i (for i below the day's length) and
    its person shifts with i // length, so two distinct records never render to the same JSON.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.tz = ZoneInfo(config.timezone)
        self._profiles: dict[tuple[int, _Flags], dict] = {}
        self._plans: dict[tuple[str, date], _DayPlan] = {}

    def plan(self, event: str, day: date) -> _DayPlan:
        found = self._plans.get((event, day))
        if found is None:
            config = self.config
            start, length = _local_day(day, self.tz)
            since = config.extra_event_props_from
            found = self._plans[(event, day)] = _DayPlan(
                start=start,
                length=length,
                shift=_digest(config.seed, "shift", event, day),
                key_prefix=f"{config.seed}|{event}|{day}|",
                extra_props=config.extra_event_props if since is None or day >= since else {},
                oversize=config.oversize_records.get((event, day), 0),
            )
        return found

    def base_count(self, event: str, day: date) -> int:
        """Varies by (event, day) between half and one and a half times the configured mean."""
        spread = _digest(self.config.seed, "count", event, day) % 1001 / 1000
        return round(self.config.records_per_day * (0.5 + spread))

    def profile(self, user: int, flags: _Flags) -> dict:
        key = (user, flags)
        found = self._profiles.get(key)
        if found is None:
            base = _profile_base(self.config.seed, user)
            found = self._profiles[key] = _shape_profile(
                base, flags.app, flags.events, flags.profile
            )
        return found

    def record(self, event: str, day: date, index: int, flags: _Flags) -> dict[str, Any]:
        plan = self.plan(event, day)
        second = (_SECOND_STRIDE * index + plan.shift) % plan.length
        user = (second + index // plan.length + plan.shift) % _USERS
        epoch = plan.start + second
        key = (plan.key_prefix + str(index)).encode()
        draw = _Draw(int.from_bytes(hashlib.blake2b(key, digest_size=32).digest(), "big"))
        record: dict[str, Any] = {"profile": self.profile(user, flags)}
        if draw.chance(75):
            utm_source, utm_medium = draw.pick(_UTM)
            record["session_props"] = {
                "session_source": "Campaign" if utm_source else "Direct",
                "utm_source": utm_source,
                "utm_medium": utm_medium,
            }
        if self.config.ts_format == "epoch":
            record["ts"] = epoch
        else:
            record["ts"] = _compact_ts(datetime.fromtimestamp(epoch, self.tz))
        props = _event_specific_props(event, draw, epoch)
        version = 1900 + draw.below(100)
        props["CT Source"] = draw.pick(_SOURCES)
        props["CT App Version"] = version if draw.chance(70) else str(version)
        props["Occurred On"] = f"$D_{epoch - draw.below(3600)}"
        props.update(plan.extra_props)
        if plan.oversize and index == 0:
            props[OVERSIZE_PROPERTY] = "x" * plan.oversize
        record["event_props"] = props
        return record


# --- exports: a cursor chain over a window of days ---------------------------------------


@dataclass
class _Export:
    """One opened cursor and its pages. Day sizes are fixed at open time so that records
    added later show up in the next export, not halfway through this one."""

    export_id: int
    event: str
    days: tuple[date, ...]
    distinct: tuple[int, ...]
    duplicates: tuple[int, ...]
    batch_size: int
    flags: _Flags
    ends: list[int] = field(init=False)
    pages_served: int = 0
    expired: bool = False

    def __post_init__(self) -> None:
        total, self.ends = 0, []
        for n, d in zip(self.distinct, self.duplicates, strict=True):
            total += n + d
            self.ends.append(total)

    @property
    def total(self) -> int:
        return self.ends[-1] if self.ends else 0

    def positions(self, start: int, stop: int) -> Iterator[tuple[date, int]]:
        """(day, record index) for stream positions [start, stop): each day's distinct records,
        then its duplicates, spread evenly over the day's records."""
        position = start
        while position < stop:
            slot = bisect.bisect_right(self.ends, position)
            day_start = self.ends[slot - 1] if slot else 0
            n, d = self.distinct[slot], self.duplicates[slot]
            for offset in range(position - day_start, min(n + d, stop - day_start)):
                yield (
                    self.days[slot],
                    offset if offset < n else (2 * (offset - n) + 1) * n // (2 * d),
                )
            position = min(self.ends[slot], stop)


def _page_size(export: _Export, page: int, vary: bool) -> int:
    """ "The response may vary": about one page in three is cut short, deterministically."""
    if not vary:
        return export.batch_size
    key = f"{export.event}|{export.days[0]}|{export.days[-1]}|{export.batch_size}|{page}"
    h = zlib.crc32(key.encode())
    if h % 3:
        return export.batch_size
    return max(1, export.batch_size - (h >> 2) % max(1, export.batch_size // 2))


def encode_cursor(export_id: int, page: int, offset: int) -> str:
    """Opaque, about 1.5 KB and already percent-encoded, like the real cursor: base64 of the
    state plus filler, percent-encoded, so a client that re-encodes it is caught."""
    state = orjson.dumps([export_id, page, offset])
    filler = hashlib.blake2b(state, digest_size=64).digest() * 14
    return quote(base64.b64encode(state + b"\x00" + filler).decode(), safe="")


def decode_cursor(raw: str) -> tuple[int, int, int]:
    """The state in a cursor exactly as issued; any other spelling is "Incorrect Usage"."""
    try:
        blob = base64.b64decode(unquote(raw), validate=True)
        export_id, page, offset = orjson.loads(blob.split(b"\x00", 1)[0])
    except (binascii.Error, ValueError, TypeError):
        raise _incorrect_usage() from None
    if encode_cursor(export_id, page, offset) != raw:
        raise _incorrect_usage()
    return export_id, page, offset


# --- the emulator ----------------------------------------------------------------------


def _default_event_names() -> list[str] | None:
    """The project's events CSV, found from the package so any working directory works;
    without it every event name is accepted."""
    if _DEFAULT_EVENTS_CSV.is_file():
        return read_event_names(_DEFAULT_EVENTS_CSV)
    return None


def _parse_day(value: object, name: str) -> date:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise EmulatorError(400, f"Invalid {name} date: expected YYYYMMDD", 400)
    try:
        return datetime.strptime(str(value), "%Y%m%d").date()
    except ValueError:
        raise EmulatorError(400, f"Invalid {name} date: expected YYYYMMDD", 400) from None


def _flag(params: dict[str, str], name: str, default: bool) -> bool:
    value = params.get(name)
    return default if value is None else value.strip().lower() in ("true", "1", "yes")


class CleverTapEmulator:
    """The server plus its data and truth. Start it, point a client at `.url`, flip faults with
    `set_faults`, and compare the warehouse with `true_count`/`true_records`."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        config = config or EmulatorConfig()
        if config.events is None:
            config = replace(config, events=_default_event_names())
        self._config = config
        self._generator = _Generator(config)
        self._lock = threading.Lock()
        self._added: Counter[tuple[str, date]] = Counter()
        self._exports: dict[int, _Export] = {}
        self._page_fetches: Counter[tuple[int, int]] = Counter()
        self._expiries = 0
        self._fault_counters: Counter[str] = Counter()
        self._count_requests: dict[int, list[int]] = {}
        self._next_req_id = 123
        self._page_cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._page_cache_bytes = 0
        self._data_version = 0
        self._stats = EmulatorStats()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> str:
        """Serve in a background thread; port 0 picks a free port. Returns the base URL."""
        if self._server is None:
            self._server = _Server((self._config.host, self._config.port), self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},  # so stop() returns at once in tests
                name="clevertap-emulator",
                daemon=True,
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Also cuts keep-alive connections: their threads would otherwise keep serving."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "CleverTapEmulator":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def config(self) -> EmulatorConfig:
        return self._config

    @property
    def stats(self) -> EmulatorStats:
        return self._stats

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = EmulatorStats()

    # switches

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

    def set_data(self, **changes: Any) -> None:
        """Change data variants (extra properties, oversize records, duplicate share); the next
        pages and the truth follow the new values."""
        unknown = set(changes) - DATA_FIELDS
        if unknown:
            raise TypeError(f"not data settings: {', '.join(sorted(unknown))}")
        with self._lock:
            self._config = replace(self._config, **changes)
            self._generator = _Generator(self._config)
            self._data_version += 1
            self._page_cache.clear()
            self._page_cache_bytes = 0

    def add_records(self, event: str, day: date, n: int) -> None:
        """New distinct records for a day already loaded: the next export and count see them."""
        self._check_known(event)
        with self._lock:
            self._added[(event, day)] += n

    # truth

    def true_count(self, event: str, day: date) -> int:
        """Distinct records of the event on that local day, as a loaded table should hold."""
        self._check_known(event)
        return self._generator.base_count(event, day) + self._added[(event, day)]

    def true_records(
        self, event: str, day: date, *, app: bool = False, events: bool = True, profile: bool = True
    ) -> list[dict[str, Any]]:
        """The distinct records of that day, shaped like an export with the same flags."""
        flags = _Flags(app, events, profile)
        generator = self._generator
        return [
            generator.record(event, day, index, flags)
            for index in range(self.true_count(event, day))
        ]

    def _check_known(self, event: str) -> None:
        known = self._config.events
        if known is not None and event not in known:
            raise EmulatorError(400, f"Invalid event : {event}", 400)

    # request handling (called from the server's threads)

    def _authorise(self, headers: Any) -> None:
        account = headers.get("X-CleverTap-Account-Id")
        passcode = headers.get("X-CleverTap-Passcode")
        if account != self._config.account_id or passcode != self._config.passcode:
            self._count("unauthorized")
            log.warning("rejected credentials for account id %r", account)
            raise EmulatorError(401, "Account ID is not valid", 401)

    def _count(self, kind: str) -> None:
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

    def _common_faults(self) -> None:
        """Faults any API call can meet, in the order a real outage would show them."""
        config = self._config
        if config.delay_seconds > 0:
            time.sleep(config.delay_seconds)
        if self._every("drop_every", config.drop_every):
            self._fault("dropped")
            raise _Dropped
        if self._every("server_error_every", config.server_error_every):
            self._fault("server_error")
            status = 503 if self._stats.faults["server_error"] % 2 == 0 else 500
            raise EmulatorError(status, HTTPStatus(status).phrase, status)
        if self._every("throttle_every", config.throttle_every):
            self._fault("throttled")
            raise EmulatorError(200, "Too many requests, please retry later", 1)

    def _enter_events(self) -> None:
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

    def _leave_events(self) -> None:
        with self._lock:
            self._stats.in_flight -= 1
            self._stats.in_flight_changes.append((time.monotonic(), self._stats.in_flight))

    def handle_events(self, method: str, raw: dict[str, str], body: bytes) -> bytes:
        try:
            self._enter_events()
            if self._config.gate is not None:
                self._config.gate.pass_through()
            self._common_faults()
            if "cursor" in raw:
                self._count("page")
                return self._page(raw["cursor"])
            params = {key: unquote_plus(value) for key, value in raw.items()}
            if method == "POST":
                return self._open(params, self._json_body(body))
            if "query" in params:
                return self._open(params, self._json_body(params["query"].encode()))
            raise _incorrect_usage()
        finally:
            self._leave_events()

    @staticmethod
    def _json_body(body: bytes) -> dict[str, Any]:
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise EmulatorError(400, "Invalid JSON payload", 400) from None
        if not isinstance(decoded, dict):
            raise EmulatorError(400, "Invalid JSON payload", 400)
        return decoded

    def _window(self, body: dict[str, Any]) -> tuple[str, list[date]]:
        event = body.get("event_name")
        if not isinstance(event, str) or not event:
            raise EmulatorError(400, "Missing event_name", 400)
        self._check_known(event)
        first, last = _parse_day(body.get("from"), "from"), _parse_day(body.get("to"), "to")
        if last < first:
            raise EmulatorError(400, "Invalid date range: from is after to", 400)
        return event, [first + timedelta(days=n) for n in range((last - first).days + 1)]

    def _batch_size(self, params: dict[str, str]) -> int:
        try:
            size = int(params.get("batch_size", DEFAULT_BATCH_SIZE))
        except ValueError:
            size = 0
        if size > MAX_BATCH_SIZE and self._config.batch_size_over_max == "clamp":
            return MAX_BATCH_SIZE
        if not 1 <= size <= MAX_BATCH_SIZE:
            raise EmulatorError(400, f"batch_size must be between 1 and {MAX_BATCH_SIZE}", 400)
        return size

    def _open(self, params: dict[str, str], body: dict[str, Any]) -> bytes:
        self._count("open")
        with self._lock:
            self._stats.open_bodies.append(body)
            self._stats.open_params.append(params)
        export = self._create_export(params, body)
        cursor = encode_cursor(export.export_id, 0, 0)
        return orjson.dumps({"status": "success", "cursor": cursor})

    def _create_export(self, params: dict[str, str], body: dict[str, Any]) -> _Export:
        event, days = self._window(body)
        if event.startswith(tuple(self._config.not_exportable_prefixes)):
            raise EmulatorError(400, "Export not allowed for this event", 400)
        flags = _Flags(
            _flag(params, "app", False),
            _flag(params, "events", True),
            _flag(params, "profile", True),
        )
        distinct = tuple(self.true_count(event, day) for day in days)
        share = self._config.duplicate_share
        with self._lock:
            export = _Export(
                export_id=len(self._exports) + 1,
                event=event,
                days=tuple(days),
                distinct=distinct,
                duplicates=tuple(int(n * share + 0.5) for n in distinct),
                batch_size=self._batch_size(params),
                flags=flags,
            )
            self._exports[export.export_id] = export
        return export

    def _page(self, raw_cursor: str) -> bytes:
        export_id, page, offset = decode_cursor(raw_cursor)
        config = self._config
        with self._lock:
            export = self._exports.get(export_id)
            if export is None:
                raise _incorrect_usage()
            fetched_before = self._page_fetches[(export_id, page)]
            self._page_fetches[(export_id, page)] += 1
            self._expire_if_due(export)
        if export.expired:
            self._fault("cursor_expired")
            raise EmulatorError(200, "Cursor expired, please reopen", 4)
        polls = config.page_in_progress_polls
        if config.page_in_progress and (polls is None or fetched_before < polls):
            self._fault("in_progress")
            raise EmulatorError(200, "Request still in progress, please retry later", 2)
        endless = export.event in config.endless_cursor_events and export.total > 0
        if offset >= export.total and config.endless_empty_pages:
            cursor = encode_cursor(export_id, page + 1, offset)
            return b'{"status":"success","next_cursor":"' + cursor.encode() + b'","records":[]}'
        if offset >= export.total and not endless:
            return b'{"status":"success"}'
        start = offset % export.total if endless else offset
        stop = min(export.total, start + _page_size(export, page, config.vary_page_sizes))
        records = self._records_json(export, page, start, stop)
        with self._lock:
            export.pages_served += 1
        if stop >= export.total and config.final_page == "records" and not endless:
            return b'{"status":"success","records":' + records + b"}"
        following = offset + stop - start
        cursor = (
            raw_cursor if config.repeat_cursor else encode_cursor(export_id, page + 1, following)
        )
        return (
            b'{"status":"success","next_cursor":"'
            + cursor.encode()
            + b'","records":'
            + records
            + b"}"
        )

    def _expire_if_due(self, export: _Export) -> None:
        """Expires a chain after N pages, a limited number of times, so a client that reopens
        can finish (the real expiry is by age, ~4 h, which tests cannot wait for)."""
        config = self._config
        budget = config.cursor_expiry_times
        if (
            not export.expired
            and config.cursor_expiry_pages > 0
            and export.pages_served >= config.cursor_expiry_pages
            and (budget is None or self._expiries < budget)
        ):
            export.expired = True
            self._expiries += 1

    def _records_json(self, export: _Export, page: int, start: int, stop: int) -> bytes:
        """The page's records array; in prerender mode each page is rendered once and kept
        (bounded), so benchmarks measure the client, not the emulator."""
        if not self._config.prerender:
            return self._render(export, start, stop)
        key = (export.event, export.days, export.distinct, export.duplicates, export.batch_size)
        key += (export.flags, page, start, stop, self._data_version)
        with self._lock:
            cached = self._page_cache.get(key)
            if cached is not None:
                self._page_cache.move_to_end(key)
                return cached
        rendered = self._render(export, start, stop)
        with self._lock:
            self._page_cache[key] = rendered
            self._page_cache_bytes += len(rendered)
            while self._page_cache_bytes > self._config.prerender_cache_bytes:
                _, evicted = self._page_cache.popitem(last=False)
                self._page_cache_bytes -= len(evicted)
        return rendered

    def _render(self, export: _Export, start: int, stop: int) -> bytes:
        generator, event, flags = self._generator, export.event, export.flags
        return orjson.dumps(
            [
                generator.record(event, day, index, flags)
                for day, index in export.positions(start, stop)
            ]
        )

    def prerender(
        self,
        event: str,
        first: date,
        last: date,
        *,
        batch_size: int = MAX_BATCH_SIZE,
        app: bool = False,
        events: bool = True,
        profile: bool = True,
    ) -> None:
        """Warm the page cache for a window before a benchmark, by reading it once through
        the emulator's own page path (needs `prerender=True`)."""
        params = {"batch_size": str(batch_size), "app": str(app), "events": str(events)}
        params["profile"] = str(profile)
        body = {"event_name": event, "from": int(f"{first:%Y%m%d}"), "to": int(f"{last:%Y%m%d}")}
        export = self._create_export(params, body)
        page, offset = 0, 0
        while offset < export.total:
            stop = min(
                export.total, offset + _page_size(export, page, self._config.vary_page_sizes)
            )
            self._records_json(export, page, offset, stop)
            page, offset = page + 1, stop

    def handle_counts(self, method: str, raw: dict[str, str], body: bytes) -> bytes:
        with self._lock:
            stats = self._stats
            stats.counts_in_flight += 1
            stats.max_counts_in_flight = max(stats.max_counts_in_flight, stats.counts_in_flight)
        try:
            if self._config.counts_gate is not None:
                self._config.counts_gate.pass_through()
            return self._count_answer(method, raw, body)
        finally:
            with self._lock:
                self._stats.counts_in_flight -= 1

    def _count_answer(self, method: str, raw: dict[str, str], body: bytes) -> bytes:
        self._common_faults()
        if method == "POST":
            self._count("count")
            event, days = self._window(self._json_body(body))
            count = sum(self.true_count(event, day) for day in days)
            config = self._config
            if event in config.unreadable_counts:
                return orjson.dumps({"status": "success", "count": "lots"})
            if not config.counts_partial:
                return orjson.dumps({"status": "success", "count": count})
            with self._lock:
                req_id, self._next_req_id = self._next_req_id, self._next_req_id + 1
                self._count_requests[req_id] = [count, config.counts_partial_polls]
            return orjson.dumps({"status": "partial", "req_id": req_id})
        self._count("count_poll")
        return self._poll_count(unquote_plus(raw.get("req_id", "")))

    def _poll_count(self, req_id: str) -> bytes:
        with self._lock:
            pending = self._count_requests.get(int(req_id)) if req_id.isdigit() else None
            if pending is None:
                raise EmulatorError(400, "Invalid req_id", 400)
            if pending[1] > 0:
                pending[1] -= 1
                return orjson.dumps({"status": "partial", "req_id": int(req_id)})
        return orjson.dumps({"status": "success", "count": pending[0]})


# --- HTTP plumbing -----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Raw-socket control (dropped connections) and the raw query string (cursor check) are
    why this is the stdlib server rather than a framework."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: "_Server"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        raw = dict(part.partition("=")[::2] for part in query.split("&") if part)
        emulator = self.server.emulator
        routes = {EVENTS_PATH: emulator.handle_events, COUNTS_PATH: emulator.handle_counts}
        route = routes.get(path)
        if route is None:
            emulator._count("unknown_path")
            self._reply(200, b"", {})
            return
        try:
            emulator._authorise(self.headers)
            self._reply(200, route(method, raw, body), {})
        except EmulatorError as error:
            self._reply(error.status, error.body(), error.headers)
        except _Dropped:
            self.close_connection = True

    def handle_one_request(self) -> None:
        """A client that gave up (timeout, retry) before its answer is normal here, not a bug."""
        try:
            super().handle_one_request()
        except ConnectionError as error:
            log.debug("client went away: %s", error)
            self.close_connection = True

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    """Remembers open connections so `stop` can close idle keep-alive ones."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], emulator: CleverTapEmulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def serve_forever(host: str = "127.0.0.1", port: int = 8765, latency_seconds: float = 0.0) -> None:
    """`clevertap-assets emulator`: serve until Ctrl-C, in the project's time zone and with the
    project's events CSV, so the demo's settings work against it unchanged. `latency_seconds`
    is added to every request, as the live API's few hundred milliseconds per round trip."""
    from dotenv import load_dotenv

    load_dotenv(override=False)
    csv_path = os.environ.get("CLEVERTAP_EVENTS_CSV")
    config = EmulatorConfig(
        host=host,
        port=port,
        timezone=os.environ.get("CLEVERTAP_TIMEZONE") or "UTC",
        events=read_event_names(Path(csv_path)) if csv_path else None,
        delay_seconds=latency_seconds,
    )
    emulator = CleverTapEmulator(config)
    url = emulator.start()
    print(
        f"CleverTap emulator listening on {url} (time zone {config.timezone}, "
        f"{latency_seconds * 1000:g} ms added to every request)"
    )
    print("Use these demo settings:")
    print(f"  CLEVERTAP_API_URL={url}")
    print(f"  CLEVERTAP_ACCOUNT_ID={config.account_id}")
    print(f"  CLEVERTAP_PASSCODE={config.passcode}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping")
    finally:
        emulator.stop()

"""The answers of CleverTap's Get Events and event-count APIs, without HTTP (server.py serves
them), so the demo and every test run without a CleverTap account.

It copies the documented service (https://developer.clevertap.com/docs/get-events-api),
including what a client must survive: errors with HTTP 200, an already percent-encoded cursor
that must not be re-encoded, a last page without `records`, duplicated records, type drift,
the three-request concurrency limit and switchable faults. Data is synthetic and deterministic
(the same config and seed give the same records anywhere), and the emulator states the truth
(`true_count`, `true_records`) the warehouse is reconciled against.

Choices where the real service is unconfirmed (documented here once):

* `batch_size` above 5000 is clamped to 5000 (a client sending 50000 still gets pages), or
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
import hashlib
import logging
import zlib
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_plus

import orjson

from clevertap_assets.emulator.config import DATA_FIELDS, EmulatorConfig
from clevertap_assets.emulator.data import Flags, Generator
from clevertap_assets.emulator.faults import EmulatorError, FaultInjection, incorrect_usage
from clevertap_assets.settings import read_event_names

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 5000
DEFAULT_BATCH_SIZE = 10
EVENTS_PATH = "/1/events.json"
COUNTS_PATH = "/1/counts/events.json"
_DEFAULT_EVENTS_CSV = Path(__file__).resolve().parents[2] / "events.csv"


# --- exports: a cursor chain over a window of days ---------------------------------------


@dataclass
class Export:
    """One opened cursor and its pages. Day sizes are fixed at open time so that records
    added later show up in the next export, not halfway through this one."""

    export_id: int
    event: str
    days: tuple[date, ...]
    distinct: tuple[int, ...]
    duplicates: tuple[int, ...]
    batch_size: int
    flags: Flags
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


def _page_size(export: Export, page: int, vary: bool) -> int:
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
        raise incorrect_usage() from None
    if encode_cursor(export_id, page, offset) != raw:
        raise incorrect_usage()
    return export_id, page, offset


# --- reading a request ------------------------------------------------------------------


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


class CleverTapApi(FaultInjection):
    """The two APIs' answers to a request's method, raw query and body, the data behind them and
    its truth; `CleverTapEmulator` serves them over HTTP."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        config = config or EmulatorConfig()
        if config.events is None:
            config = replace(config, events=_default_event_names())
        super().__init__(config)
        self._generator = Generator(config)
        self._added: Counter[tuple[str, date]] = Counter()
        self._exports: dict[int, Export] = {}
        self._page_fetches: Counter[tuple[int, int]] = Counter()
        self._count_requests: dict[int, list[int]] = {}
        self._next_req_id = 123
        self._page_cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._page_cache_bytes = 0
        self._data_version = 0

    # switches

    def set_data(self, **changes: Any) -> None:
        """Change data variants (extra properties, oversize records, duplicate share); the next
        pages and the truth follow the new values."""
        unknown = set(changes) - DATA_FIELDS
        if unknown:
            raise TypeError(f"not data settings: {', '.join(sorted(unknown))}")
        with self._lock:
            self._config = replace(self._config, **changes)
            self._generator = Generator(self._config)
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
        flags = Flags(app, events, profile)
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

    def authorise(self, headers: Any) -> None:
        account = headers.get("X-CleverTap-Account-Id")
        passcode = headers.get("X-CleverTap-Passcode")
        if account != self._config.account_id or passcode != self._config.passcode:
            self.count("unauthorized")
            log.warning("rejected credentials for account id %r", account)
            raise EmulatorError(401, "Account ID is not valid", 401)

    def handle_events(self, method: str, raw: dict[str, str], body: bytes) -> bytes:
        try:
            self.enter_events()
            if self._config.gate is not None:
                self._config.gate.pass_through()
            self.common_faults()
            if "cursor" in raw:
                self.count("page")
                return self._page(raw["cursor"])
            params = {key: unquote_plus(value) for key, value in raw.items()}
            if method == "POST":
                return self._open(params, self._json_body(body))
            if "query" in params:
                return self._open(params, self._json_body(params["query"].encode()))
            raise incorrect_usage()
        finally:
            self.leave_events()

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
        self.count("open")
        with self._lock:
            self._stats.open_bodies.append(body)
            self._stats.open_params.append(params)
        export = self._create_export(params, body)
        cursor = encode_cursor(export.export_id, 0, 0)
        return orjson.dumps({"status": "success", "cursor": cursor})

    def _create_export(self, params: dict[str, str], body: dict[str, Any]) -> Export:
        event, days = self._window(body)
        if event.startswith(tuple(self._config.not_exportable_prefixes)):
            raise EmulatorError(400, "Export not allowed for this event", 400)
        flags = Flags(
            _flag(params, "app", False),
            _flag(params, "events", True),
            _flag(params, "profile", True),
        )
        distinct = tuple(self.true_count(event, day) for day in days)
        share = self._config.duplicate_share
        with self._lock:
            export = Export(
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
                raise incorrect_usage()
            fetched_before = self._page_fetches[(export_id, page)]
            self._page_fetches[(export_id, page)] += 1
            if not export.expired and self.cursor_expires(export.pages_served):
                export.expired = True
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

    def _records_json(self, export: Export, page: int, start: int, stop: int) -> bytes:
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

    def _render(self, export: Export, start: int, stop: int) -> bytes:
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
        self.common_faults()
        if method == "POST":
            self.count("count")
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
        self.count("count_poll")
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

"""CleverTap's Get Events API as a Dagster resource: the cursor flow, counts, retries and limits.

The service reports most failures inside an HTTP 200 body, throttles by concurrency rather than
by rate, and treats a re-encoded cursor as misuse, so a generic HTTP client is not enough. Every
rule of the API (https://developer.clevertap.com/docs/get-events-api) that shapes a request or
an answer lives here, so the assets and the connection check only see records, counts and a
small set of exceptions.
"""

import email.utils
import logging
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import httpx
import msgspec
import orjson
from pydantic import Field, PrivateAttr, field_validator

from clevertap_assets.source.api import (
    CleverTapAuthError,
    CleverTapError,
    CleverTapProtocolError,
    CursorExpiredError,
    ExportNotAllowedError,
    FetchStats,
    UnknownEventError,
)
from clevertap_assets.source.regions import base_url_for, normalise_region

Log = logging.Logger | dg.DagsterLogManager

EVENTS_PATH = "/1/events.json"
COUNTS_PATH = "/1/counts/events.json"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_TRANSIENT_TRANSPORT_ERRORS = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
_MAX_ERROR_TEXT = 300
_default_log = dg.get_dagster_logger("clevertap")


@dataclass(frozen=True)
class _Window:
    """What a request is for, so a message about it names the event and the days."""

    event_name: str
    first_day: date
    last_day: date

    def __str__(self) -> str:
        return f"event {self.event_name!r} ({self.first_day}..{self.last_day})"


@dataclass
class _RecordBound:
    """How many records one cursor chain sent, and how many it may (see `_within_count`)."""

    margin: int
    received: int = 0
    counted: bool = False
    count: int | None = None


class _Transient(Exception):
    """A failure worth another try; `wait` overrides the backoff when the server says how long."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


_client_lock = threading.Lock()


def _yyyymmdd(day: date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a `Retry-After` header (delta or HTTP date); CleverTap documents none."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _seconds(value: float) -> str:
    """Whole seconds for the long waits production sees, a tenth for the short ones tests use."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _unlink_stream(response: httpx.Response) -> None:
    """A read httpx response and its stream refer to each other, so only the cyclic
    collector would free it, body included, and with several cursors memory would grow with
    the answers waiting for it. Closing the response and replacing its spent stream breaks the
    cycle: reference counting frees the body as soon as its records are handed over."""
    response.close()
    response.stream = httpx.ByteStream(b"")


_ANSWER = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RECORDS = msgspec.json.Decoder(list[msgspec.Raw])
_NO_RECORDS = msgspec.Raw(b"[]")
_EMPTY_LIST = re.compile(rb"\[\s*\]\Z")


def _decode(response: httpx.Response) -> dict[str, Any] | None:
    """The JSON object in a body, or None when the body is empty or not an object.

    Every field but `records` is decoded; `records` stays the JSON text CleverTap sent
    (`msgspec.Raw`), for whoever parses it (see `iter_raw_pages`)."""
    if not response.content.strip():
        return None
    try:
        fields = _ANSWER.decode(response.content)
        return {
            name: value if name == "records" else msgspec.json.decode(value)
            for name, value in fields.items()
        }
    except msgspec.DecodeError:
        return None


class CleverTapResource(dg.ConfigurableResource):
    """One CleverTap project, read through the Get Events and Counts APIs.

    An `httpx.Client` is created on first use and shared by all threads (it is thread-safe and
    keeps connections alive); Dagster closes it after the step, other callers use `with`.
    CleverTap limits requests in flight per account and per API; one reader at a time holds
    the account (a Dagster pool, see the reader asset), and this instance bounds that reader's
    threads with one semaphore per API.
    """

    account_id: str = Field(description="CleverTap project (account) id")
    passcode: str = Field(description="CleverTap passcode; pass EnvVar('CLEVERTAP_PASSCODE')")
    region: str = Field("eu1", description="eu1, in1, sg1, us1, aps3, mec1, sk1 (or 'global')")
    api_url: str | None = Field(None, description="overrides the region's host (emulator, proxy)")
    batch_size: int = Field(5000, ge=1, le=5000)
    max_concurrent_requests: int = Field(
        3,
        ge=1,
        description="requests in flight per API through this resource; one reader per account "
        "holds the account, see the reader asset (CleverTap answers 429 beyond 3); also the "
        "cursors a window is read with",
    )
    timeout_seconds: float = Field(60, gt=0)
    max_wait_seconds: float = Field(
        900,
        gt=0,
        description="how long one request (opening a cursor, a page, a count) keeps being "
        "retried, and a count polled, before the read fails: CleverTap asks to retry a 429 "
        "after 10 minutes and to ask again for a page still in progress",
    )
    backoff_seconds: float = Field(1.0, ge=0)
    max_backoff_seconds: float = Field(60, ge=0)
    throttle_wait_seconds: float = Field(30, ge=0)
    max_empty_pages: int = Field(
        100, ge=1, description="pages in a row without records before a cursor chain is a fault"
    )
    max_window_seconds: float = Field(
        4 * 3600, gt=0, description="longest read of one window (cursors expire after ~4 h)"
    )
    count_margin_records: int = Field(
        10_000,
        ge=0,
        description="a cursor chain may send twice what CleverTap's counts API says its days "
        "hold (duplicates, records arriving meanwhile) plus this many records; beyond that it "
        "is a chain that never ends, stopped instead of holding the account for hours",
    )

    _client: httpx.Client | None = PrivateAttr(default=None)
    _slots: dict[str, threading.BoundedSemaphore] | None = PrivateAttr(default=None)

    @field_validator("region", mode="before")
    @classmethod
    def _known_region(cls, value: object) -> object:
        # An EnvVar is only a name until the run resolves it; the resolved value comes back here.
        if isinstance(value, str) and not isinstance(value, dg.EnvVar):
            return normalise_region(value)
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "passcode" else value)

    @property
    def base_url(self) -> str:
        return base_url_for(self.region, self.api_url)

    def __enter__(self) -> "CleverTapResource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        with _client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def iter_event_pages(
        self,
        event_name: str,
        first_day: date,
        last_day: date,
        *,
        stats: FetchStats | None = None,
        **request: Any,
    ) -> Iterator[list[dict[str, Any]]]:
        """Each page's records of one event over whole local days, as the pages arrive;
        `request` takes `iter_raw_pages`'s flags and log.

        One list per page answer (possibly empty), so a reader can stop after any page and
        memory holds one page at a time. On `CursorExpiredError` the caller must discard what
        it read of this window and call again.
        """
        stats = stats if stats is not None else FetchStats()
        for raw in self.iter_raw_pages(event_name, first_day, last_day, stats=stats, **request):
            records = orjson.loads(raw)
            stats.records += len(records)
            yield records

    def iter_raw_pages(
        self,
        event_name: str,
        first_day: date,
        last_day: date,
        *,
        stats: FetchStats | None = None,
        app: bool = False,
        events: bool = False,
        profile: bool = True,
        log: Log | None = None,
    ) -> Iterator[bytes]:
        """`iter_event_pages` with each page's records as the JSON array CleverTap sent.

        Only the answer's envelope is parsed here (msgspec skips over the records), so the
        cursor moves on at once and the records can be parsed elsewhere, in another process;
        `stats.records` is left to whoever parses them (`iter_event_pages` counts them, the
        assets count what their workers received).
        """
        if first_day > last_day:
            raise ValueError(f"first_day {first_day} is after last_day {last_day}")
        stats = stats if stats is not None else FetchStats()
        log = log or _default_log
        query = {
            "batch_size": str(self.batch_size),
            "app": _flag(app),
            "events": _flag(events),
            "profile": _flag(profile),
        }
        window = _Window(event_name, first_day, last_day)
        body = {"event_name": event_name, "from": _yyyymmdd(first_day), "to": _yyyymmdd(last_day)}
        opened = self._call(
            "POST", EVENTS_PATH, self._url(EVENTS_PATH, query), window, stats, log, body
        )
        cursor = opened.get("cursor")
        if not isinstance(cursor, str) or not cursor:
            raise CleverTapProtocolError(
                f"CleverTap opened no cursor for event {event_name!r} on {EVENTS_PATH}"
            )
        used = {cursor}
        started, empty_in_a_row = time.monotonic(), 0
        bound = _RecordBound(self.count_margin_records)
        while True:
            self._within_bounds(window, stats, started, empty_in_a_row)
            page = self._call("GET", EVENTS_PATH, self._cursor_url(cursor), window, stats, log)
            records = bytes(page.get("records", _NO_RECORDS))
            if not records.startswith(b"["):
                raise CleverTapProtocolError(
                    f"CleverTap sent 'records' that is not a list for event {event_name!r}"
                )
            stats.pages += 1
            self._within_count(window, stats, bound, records, log)
            empty_in_a_row = empty_in_a_row + 1 if _EMPTY_LIST.match(records) else 0
            cursor = page.get("next_cursor")
            del page  # the page's bytes go with the records handed over
            yield records
            if not cursor:
                return
            if cursor in used:
                raise CleverTapProtocolError(
                    f"CleverTap returned a cursor already used for {window} after "
                    f"{stats.pages} pages; stopping instead of looping"
                )
            used.add(cursor)

    def _within_bounds(
        self, window: _Window, stats: FetchStats, started: float, empty_in_a_row: int
    ) -> None:
        """A stand-in that keeps handing out new cursors (empty pages, or pages that never
        end) would otherwise keep a run going forever: stop it with a clear error."""
        if empty_in_a_row >= self.max_empty_pages:
            raise CleverTapProtocolError(
                f"CleverTap sent {empty_in_a_row} pages in a row without records for {window}, "
                f"each with a new cursor; stopping instead of paging forever "
                f"(max_empty_pages={self.max_empty_pages})"
            )
        elapsed = time.monotonic() - started
        if elapsed > self.max_window_seconds:
            raise CleverTapProtocolError(
                f"reading {window} took {elapsed:.0f} s, over max_window_seconds="
                f"{self.max_window_seconds:g}, after {stats.pages} pages; stopping (split the "
                "window, or raise the limit)"
            )

    def _within_count(
        self, window: _Window, stats: FetchStats, bound: "_RecordBound", records: bytes, log: Log
    ) -> None:
        """A chain whose pages keep coming with records never ends on its own: past the
        margin, CleverTap's count for the same days (asked once, on the counts API's own
        slots) says how many records the chain may send; a chain over twice that, plus the
        margin, is stopped. A count CleverTap cannot give leaves the chain to its time bound."""
        try:
            bound.received += len(_RECORDS.decode(records))
        except msgspec.DecodeError:
            raise CleverTapProtocolError(
                f"CleverTap sent 'records' that are not readable JSON for {window}"
            ) from None
        if bound.received <= bound.margin:
            return
        if not bound.counted:
            bound.counted = True
            bound.count = self._chain_count(window, stats, log)
        if bound.count is not None and bound.received > 2 * bound.count + bound.margin:
            raise CleverTapProtocolError(
                f"CleverTap's cursor chain for {window} sent {bound.received:,} records in "
                f"{stats.pages} pages, but CleverTap's counts API says those days hold "
                f"{bound.count:,}: over twice that plus count_margin_records={bound.margin:,}, "
                "the chain is not ending; stopped instead of holding the account (nothing of "
                "this event's window was loaded)"
            )

    def _chain_count(self, window: _Window, stats: FetchStats, log: Log) -> int | None:
        try:
            return self.count_events(
                window.event_name, window.first_day, window.last_day, stats=stats, log=log
            )
        except CleverTapAuthError:
            raise
        except CleverTapError as exc:
            log.warning(
                f"CleverTap could not count {window} to bound its cursor chain ({exc}); "
                f"reading on within max_window_seconds={self.max_window_seconds:g}"
            )
            return None

    def count_events(
        self,
        event_name: str,
        first_day: date,
        last_day: date,
        *,
        stats: FetchStats | None = None,
        log: Log | None = None,
    ) -> int:
        """CleverTap's own count for a window, to reconcile what was loaded against it.

        Large counts are computed in the background ("partial"), so the answer is polled with
        the same backoff as a retry, for as long as a retried request may take, until it is
        final; each poll is a request of its own, with its own retries.
        """
        stats = stats if stats is not None else FetchStats()
        log = log or _default_log
        window = _Window(event_name, first_day, last_day)
        body = {"event_name": event_name, "from": _yyyymmdd(first_day), "to": _yyyymmdd(last_day)}
        accept = ("success", "partial")
        started = time.monotonic()
        answer = self._call(
            "POST", COUNTS_PATH, self._url(COUNTS_PATH), window, stats, log, body, accept
        )
        polls = 0
        while answer["status"] == "partial":
            req_id = answer.get("req_id")
            if req_id is None:
                raise CleverTapProtocolError(
                    f"CleverTap answered 'partial' without a req_id on {COUNTS_PATH}"
                )
            remaining = started + self.max_wait_seconds - time.monotonic()
            if remaining <= 0:
                raise CleverTapError(
                    f"CleverTap GET {COUNTS_PATH} for {window} still partial after "
                    f"{_seconds(time.monotonic() - started)} s of polling ({polls} polls)"
                )
            polls += 1
            self._pause(min(self._backoff(polls), remaining), stats)
            url = self._url(COUNTS_PATH, {"req_id": str(req_id)})
            answer = self._call("GET", COUNTS_PATH, url, window, stats, log, accept=accept)
        count = answer.get("count")
        if not isinstance(count, int) or isinstance(count, bool):
            raise CleverTapProtocolError(f"CleverTap answered no integer count on {COUNTS_PATH}")
        return count

    def _url(self, path: str, query: dict[str, str] | None = None) -> httpx.URL:
        return httpx.URL(self.base_url + path, params=query)

    def _cursor_url(self, cursor: str) -> httpx.URL:
        """The cursor goes out byte for byte: it is already percent-encoded, and CleverTap
        answers "Incorrect Usage" to a cursor encoded twice (as `params=` would do)."""
        base = httpx.URL(self.base_url)
        raw = base.raw_path.rstrip(b"/") + EVENTS_PATH.encode() + b"?cursor=" + cursor.encode()
        return base.copy_with(raw_path=raw)

    def _http(self) -> httpx.Client:
        with _client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    headers={
                        "X-CleverTap-Account-Id": self.account_id,
                        "X-CleverTap-Passcode": self.passcode,
                        "Content-Type": "application/json",
                    },
                    timeout=httpx.Timeout(self.timeout_seconds),
                )
            return self._client

    def _call(
        self,
        method: str,
        api: str,
        url: httpx.URL,
        window: _Window,
        stats: FetchStats,
        log: Log,
        body: dict[str, Any] | None = None,
        accept: tuple[str, ...] = ("success",),
    ) -> dict[str, Any]:
        """One logical request: transient failures are retried with backoff, the rest raise.

        Bounded by time, not by a count of attempts: a page CleverTap takes minutes to prepare
        is still read, and every retry asks again with the same URL, so the cursor and the
        pages read so far are kept.
        """
        started = time.monotonic()
        deadline = started + self.max_wait_seconds
        attempt = 1
        while True:
            try:
                response = self._send(method, api, url, body, stats)
                return self._interpret(response, url.path, window.event_name, accept)
            except _Transient as transient:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CleverTapError(
                        f"CleverTap {method} {url.path} for {window} still failing after "
                        f"{_seconds(time.monotonic() - started)} s of retries ({attempt} "
                        f"attempts); last failure: {transient.reason}"
                    ) from None
                wanted = transient.wait if transient.wait is not None else self._backoff(attempt)
                delay = min(wanted, remaining)
                spent = _seconds(self.max_wait_seconds - remaining)
                log.warning(
                    f"CleverTap {method} {url.path} for {window}: {transient.reason}; "
                    f"retry {attempt} in {delay:.2f} s ({spent} of {self.max_wait_seconds:g} s "
                    "spent)"
                )
                stats.retries += 1
                self._pause(delay, stats)
                attempt += 1

    def _send(
        self,
        method: str,
        api: str,
        url: httpx.URL,
        body: dict[str, Any] | None,
        stats: FetchStats,
    ) -> httpx.Response:
        """The API's request slot is held for the request alone, never while waiting."""
        content = orjson.dumps(body) if body is not None else None
        with self._slot(api):
            stats.requests += 1
            try:
                response = self._http().request(method, url, content=content)
            except _TRANSIENT_TRANSPORT_ERRORS as exc:
                raise _Transient(f"{type(exc).__name__} {self._scrub(str(exc))}".strip()) from None
            except httpx.TransportError as exc:
                raise CleverTapError(
                    f"cannot call CleverTap at {self.base_url}: {type(exc).__name__} "
                    f"{self._scrub(str(exc))}"
                ) from None
        stats.bytes_received += len(response.content)
        _unlink_stream(response)
        return response

    def _slot(self, api: str) -> threading.BoundedSemaphore:
        """Every thread using this instance shares the API's semaphore; CleverTap counts the
        Get Events and Counts APIs apart, so a count never waits for an export's slot."""
        with _client_lock:
            if self._slots is None:
                self._slots = {
                    path: threading.BoundedSemaphore(self.max_concurrent_requests)
                    for path in (EVENTS_PATH, COUNTS_PATH)
                }
            return self._slots[api]

    def _interpret(
        self, response: httpx.Response, path: str, event_name: str, accept: tuple[str, ...]
    ) -> dict[str, Any]:
        """Map an answer to its payload or to the failure the doc's table prescribes."""
        if response.status_code == 401:
            raise self._auth_error()
        payload = _decode(response)
        error = self._scrub(str(payload.get("error", "")) if payload else response.text)
        if response.status_code in _RETRY_STATUSES:
            reason = f"HTTP {response.status_code} {error}".strip()
            raise _Transient(reason, wait=_retry_after(response))
        if payload is None and response.is_success:
            raise CleverTapProtocolError(
                f"CleverTap sent an empty or non-JSON body with HTTP {response.status_code} "
                f"on {path}; refusing to read it as 'no data'"
            )
        outcome = payload.get("status") if payload else None
        if payload is not None and response.is_success and outcome in accept:
            return payload
        if response.is_success and outcome != "fail":
            raise CleverTapProtocolError(
                f"CleverTap answered status {outcome!r} on {path}, expected one of {accept}"
            )
        code = payload.get("code") if payload else None
        raise self._failure(response.status_code, code, error, path, event_name)

    def _failure(
        self, status: int, code: object, error: str, path: str, event_name: str
    ) -> Exception:
        """The exception for a `fail` answer; `_Transient` for the kinds that clear up."""
        lowered = error.lower()
        if code == 401:
            return self._auth_error()
        if "expired" in lowered:
            return CursorExpiredError(event_name, error)
        if "export not allowed" in lowered:
            return ExportNotAllowedError(event_name)
        if "invalid event" in lowered:
            return UnknownEventError(event_name)
        if code == 2:
            return _Transient(f"page not ready (code 2: {error})")
        if code == 1:
            return _Transient(f"throttled (code 1: {error})", wait=self.throttle_wait_seconds)
        if code == 3:
            return CleverTapProtocolError(
                f"CleverTap answered 'Incorrect Usage' (code 3) on {path} for event "
                f"{event_name!r}: the request or cursor was not as CleverTap issued it"
            )
        return CleverTapError(
            f"CleverTap failed on {path} for event {event_name!r} with HTTP {status}, "
            f"code {code}: {error or 'no error text'}"
        )

    def _auth_error(self) -> CleverTapAuthError:
        return CleverTapAuthError(
            f"authentication failed for account {self.account_id} at {self.base_url}; check "
            "CLEVERTAP_ACCOUNT_ID, CLEVERTAP_PASSCODE and CLEVERTAP_REGION "
            "(a wrong region answers 401 too)"
        )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter, so parallel readers do not retry in step."""
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)

    def _pause(self, seconds: float, stats: FetchStats) -> None:
        stats.backoff_seconds += seconds
        time.sleep(seconds)

    def _scrub(self, text: str) -> str:
        """Server text goes into messages; cut it short and never let the passcode through."""
        if self.passcode:
            text = text.replace(self.passcode, "***")
        return " ".join(text.split())[:_MAX_ERROR_TEXT]

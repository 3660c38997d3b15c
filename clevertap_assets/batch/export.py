"""One CleverTap account's read: every requested event and day through the account's request
slots as one scheduler, each event ending as a deduplicated batch on local disk.

CleverTap allows 3 Get Events requests in flight per account and reads a cursor one page after
another, so throughput is the number of cursors kept open. One reader per account runs
`read_events`: its cursor threads take (event, days) ranges from one queue, longest first, so
the slots stay busy across events instead of idling at the tail of one event's window. Pages
are parsed in worker processes (`parse_processes`) into their event's spool, and an event's
batch is handed back as soon as its last cursor ends, to be written while the others read.

Nothing here knows Dagster: the assets are glue over `read_events`.
"""

import math
import queue
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, Protocol

from clevertap_assets.batch.parse_processes import (
    SpooledWindowPage,
    parse_pool,
    spool_raw_page,
    start_workers,
)
from clevertap_assets.batch.settings import parse_processes
from clevertap_assets.batch.spool import EventBatch, EventSpool, SpoolStats
from clevertap_assets.days import day_bounds, day_ranges
from clevertap_assets.naming import ColumnNames
from clevertap_assets.source.api import CursorExpiredError, ExportNotAllowedError, FetchStats
from clevertap_assets.source.normalise import NormaliseOptions, column_names
from clevertap_assets.source.zone_check import TimezoneMismatchError, zone_mismatch

PROGRESS_EVERY_SECONDS = 10.0
CURSOR_REOPENS = 3
STOP_WAIT_SECONDS = 30.0


class PageSource(Protocol):
    """What the reader needs of a CleverTap client (`CleverTapResource` is one)."""

    def iter_raw_pages(
        self,
        event_name: str,
        first_day: date,
        last_day: date,
        *,
        stats: FetchStats,
        app: bool,
        log: Any,
    ) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class EventWindow:
    """One event over whole local days, with the columns its keys were given so far;
    `app_fields` asks CleverTap for the device and app fields in `profile` (`app=true`)."""

    options: NormaliseOptions
    first_day: date
    last_day: date
    names: ColumnNames
    app_fields: bool

    @property
    def event_name(self) -> str:
        return self.options.event_name

    @property
    def bounds(self) -> tuple[datetime, datetime]:
        """The window as local times, start inclusive, end exclusive."""
        return day_bounds(self.first_day, self.last_day)


@dataclass
class EventRead:
    """How one event's read ended: a batch to load, a refusal (notification events), or an
    error; with what the read cost."""

    window: EventWindow
    batch: EventBatch | None
    refused: bool
    error: BaseException | None
    spool: SpoolStats
    fetch: FetchStats
    cursors: int
    seconds: float
    dedupe_seconds: float


def read_events(
    source: PageSource,
    windows: Sequence[EventWindow],
    cursors: int,
    log: Any,
    reopens: int = CURSOR_REOPENS,
) -> Iterator[EventRead]:
    """Each window's `EventRead`, in the order the events finish. At most `cursors` requests
    are in flight, one per cursor thread. An expired cursor re-reads its event's whole window
    (up to `reopens` times); one event's failure does not stop the others. Closing the
    iterator early stops every cursor and removes what was spooled but not handed back."""
    if not windows:
        return
    with _Reader(source, windows, cursors, log) as reader:
        yield from reader.results(reopens)


@dataclass(eq=False)
class _Event:
    """One window's state while it is read; guarded by the reader's lock."""

    window: EventWindow
    spans: list[tuple[date, date]]
    spool: EventSpool | None = None
    fetches: list[FetchStats] = field(default_factory=list)
    open_cursors: int = 0
    pages_in_flight: int = 0
    failure: BaseException | None = None
    attempts: int = 0
    started: float | None = None


class _Reader:
    def __init__(
        self, source: PageSource, windows: Sequence[EventWindow], cursors: int, log: Any
    ) -> None:
        parts = max(1, math.ceil(cursors / len(windows)))
        self._events = [_Event(w, day_ranges(w.first_day, w.last_day, parts)) for w in windows]
        self._source, self._log = source, log
        self._cursors = max(1, min(cursors, sum(len(e.spans) for e in self._events)))
        self._lock = threading.Lock()
        self._tasks: queue.Queue[tuple[_Event, tuple[date, date], FetchStats] | None]
        self._tasks = queue.Queue()
        self._settled: queue.Queue[_Event] = queue.Queue()
        self._stopped = threading.Event()
        workers = parse_processes()
        self._parsers = parse_pool(workers)
        self._workers = workers
        self._spoolers = ThreadPoolExecutor(workers + 1, thread_name_prefix="clevertap-spool")
        # At most this many pages are between the cursors and the spools: memory holds their
        # bytes whatever the windows, and a cursor that gets ahead waits.
        self._room = threading.Semaphore(workers + 1)
        self._threads = [
            threading.Thread(target=self._cursor_loop, name=f"clevertap-cursor-{n}", daemon=True)
            for n in range(self._cursors)
        ]

    def __enter__(self) -> "_Reader":
        for event in self._events:
            self._open(event)
        for thread in self._threads:
            thread.start()
        start_workers(self._parsers, self._workers)  # while the first cursors open
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        for _ in self._threads:
            self._tasks.put(None)
        self._spoolers.shutdown(wait=True, cancel_futures=True)
        for thread in self._threads:
            # A cursor in a long backoff ends with its next request; its event is discarded.
            thread.join(timeout=STOP_WAIT_SECONDS)
        self._parsers.shutdown(wait=True, cancel_futures=True)
        for event in self._events:
            self._discard(event)

    def _open(self, event: _Event) -> None:
        """Queue the event's ranges, longest first among all queued, on a fresh spool."""
        event.spool = EventSpool(event_name=event.window.event_name)
        event.fetches = [*event.fetches, *(FetchStats() for _ in event.spans)]
        event.open_cursors, event.failure = len(event.spans), None
        event.attempts += 1
        fresh = event.fetches[-len(event.spans) :]
        pending = []
        while not self._tasks.empty():
            pending.append(self._tasks.get_nowait())
        pending += [(event, span, fetch) for span, fetch in zip(event.spans, fresh, strict=True)]
        pending.sort(key=lambda task: -_days(task[1]))
        for task in pending:
            self._tasks.put(task)

    def _cursor_loop(self) -> None:
        """One request slot: reads a range through its cursor, then takes the next range."""
        while (task := self._tasks.get()) is not None:
            event, (first_day, last_day), fetch = task
            if self._stopped.is_set():
                continue
            with self._lock:
                event.started = event.started or time.monotonic()
            try:
                pages = self._source.iter_raw_pages(
                    event.window.event_name,
                    first_day,
                    last_day,
                    stats=fetch,
                    app=event.window.app_fields,
                    log=self._log,
                )
                for raw in pages:
                    if event.failure is not None or self._stopped.is_set():
                        break  # that failure is what the event reports
                    self._submit(event, raw)
            except BaseException as exc:
                with self._lock:
                    event.failure = event.failure or exc
            finally:
                with self._lock:
                    event.open_cursors -= 1
                    self._settle_if_done(event)

    def _submit(self, event: _Event, raw: bytes) -> None:
        self._room.acquire()
        spool = event.spool
        assert spool is not None
        with self._lock:
            event.pages_in_flight += 1
        window = event.window
        written = self._parsers.submit(
            spool_raw_page,
            raw,
            window.options,
            window.bounds,
            spool.directory,
            spool.next_page_number(),
        )
        spooled = self._spoolers.submit(self._record_page, spool, window.names, written)
        spooled.add_done_callback(partial(self._page_done, event))

    @staticmethod
    def _record_page(
        spool: EventSpool, names: ColumnNames, written: Future[SpooledWindowPage]
    ) -> None:
        """Runs on a spool thread while the workers parse the next pages."""
        page = written.result()
        spool.add_files(
            page.files,
            page.received,
            page.outside_window,
            column_names(page.files.schema, names),
            page.outside,
        )

    def _page_done(self, event: _Event, spooled: Future[None]) -> None:
        self._room.release()
        failure = None if spooled.cancelled() else spooled.exception()
        with self._lock:
            event.pages_in_flight -= 1
            if failure is not None:
                event.failure = event.failure or failure
            self._settle_if_done(event)

    def _settle_if_done(self, event: _Event) -> None:
        """With the lock held: the event's cursors have ended and its pages are spooled."""
        if event.open_cursors == 0 and event.pages_in_flight == 0:
            self._settled.put(event)

    def results(self, reopens: int) -> Iterator[EventRead]:
        unfinished = len(self._events)
        while unfinished:
            try:
                event = self._settled.get(timeout=PROGRESS_EVERY_SECONDS)
            except queue.Empty:
                self._log_progress(unfinished)
                continue
            if isinstance(event.failure, CursorExpiredError) and event.attempts < reopens:
                self._log.warning(
                    f"cursor for {event.window.event_name!r} expired; reopening and re-reading "
                    f"{event.window.first_day}..{event.window.last_day} "
                    f"(attempt {event.attempts + 1} of {reopens})"
                )
                with self._lock:
                    self._discard(event)
                    self._open(event)
                continue
            unfinished -= 1
            yield self._result(event)

    def _result(self, event: _Event) -> EventRead:
        spool = event.spool
        assert spool is not None
        started = time.monotonic()
        failure = event.failure or _zone_failure(event.window, spool.stats)
        batch = None if failure is not None else spool.finish(loaded_at=datetime.now(UTC))
        if failure is not None:
            self._discard(event)
        event.spool = None  # the batch, if any, now owns the folder
        finished = time.monotonic()
        return EventRead(
            window=event.window,
            batch=batch,
            refused=isinstance(failure, ExportNotAllowedError),
            error=None if isinstance(failure, ExportNotAllowedError) else failure,
            spool=spool.stats,
            fetch=FetchStats.combined(event.fetches),
            cursors=len(event.spans),
            seconds=round(finished - (event.started or started), 3),
            dedupe_seconds=round(finished - started, 3),
        )

    @staticmethod
    def _discard(event: _Event) -> None:
        if event.spool is not None:
            shutil.rmtree(event.spool.directory, ignore_errors=True)
            event.spool = None

    def _log_progress(self, unfinished: int) -> None:
        pages = sum(f.pages for e in self._events for f in e.fetches)
        received = sum(e.spool.stats.received for e in self._events if e.spool is not None)
        self._log.info(
            f"{len(self._events) - unfinished} of {len(self._events)} events read; "
            f"{pages} pages through {self._cursors} cursors, {received:,} records so far"
        )


def _zone_failure(window: EventWindow, stats: SpoolStats) -> TimezoneMismatchError | None:
    mismatch = zone_mismatch(
        window.event_name,
        (window.first_day, window.last_day),
        stats.received,
        stats.outside_window,
        stats.outside,
        window.options.timezone,
    )
    if mismatch is None:
        return None
    return TimezoneMismatchError(f"{mismatch}; nothing of this event's window was loaded")


def _days(span: tuple[date, date]) -> int:
    return (span[1] - span[0]).days + 1

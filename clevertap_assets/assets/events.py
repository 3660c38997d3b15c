"""The asset factory: one daily-partitioned asset per selected CleverTap event.

An asset run reads its whole window of days as one export (a single-run backfill of thirty
days is not thirty runs), cut into up to three ranges of days, each through its own cursor so
that CleverTap's three request slots per account stay busy while pages are parsed (in worker
processes, see `source.parse_processes`); it spools page by page into Parquet, and hands the IO
manager one deduplicated batch that replaces exactly those days.
"""

import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    DagsterLogManager,
    JsonMetadataValue,
    MetadataValue,
    Output,
    TableColumn,
    TableSchema,
    asset,
)

from clevertap_assets.assets.partitions import daily_partitions
from clevertap_assets.assets.refusals import refusal_observation, source_digest
from clevertap_assets.batch.spool import EventBatch, EventSpool, SpoolStats
from clevertap_assets.days import day_ranges
from clevertap_assets.keys import WAREHOUSE_IO_MANAGER, clevertap_pool
from clevertap_assets.naming import ColumnNames, table_name
from clevertap_assets.settings import PipelineSettings, base_url_for
from clevertap_assets.source.client import (
    CleverTapResource,
    CursorExpiredError,
    ExportNotAllowedError,
    FetchStats,
)
from clevertap_assets.source.normalise import NormaliseOptions, column_names
from clevertap_assets.source.parse_processes import (
    SpooledWindowPage,
    parse_pool,
    parse_processes,
    spool_raw_page,
    start_workers,
)

PROGRESS_EVERY_SECONDS = 10.0
CURSOR_REOPENS = 3


def event_asset_key(settings: PipelineSettings, event_name: str) -> AssetKey:
    return AssetKey([settings.pipeline_slug, settings.event_slugs[event_name]])


def event_table(settings: PipelineSettings, event_name: str) -> str:
    """The warehouse table of an event, Hevo's way: `<TABLE_PREFIX>_<event slug>`; the slug
    is unique per name of the CSV, in any script (see `naming.event_slugs`)."""
    return table_name(settings.event_slugs[event_name], settings.table_prefix)


def build_event_assets(settings: PipelineSettings) -> list[AssetsDefinition]:
    return [build_event_asset(settings, name) for name in settings.event_names]


def build_event_asset(settings: PipelineSettings, event_name: str) -> AssetsDefinition:
    key = event_asset_key(settings, event_name)
    table = event_table(settings, event_name)

    # `backfill_policy` is beta in Dagster 1.13, and it is what reads a range of days through
    # one cursor; its BetaWarning, once per event on every load, only buried the output.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        event_asset = asset(
            key=key,
            group_name=settings.pipeline_slug,
            description=f"CleverTap event {event_name!r}, one row per event, by local day.",
            partitions_def=daily_partitions(settings),
            backfill_policy=BackfillPolicy.single_run(),
            io_manager_key=WAREHOUSE_IO_MANAGER,
            pool=clevertap_pool(settings.account_id),
            output_required=False,
            kinds={"clevertap", settings.destination},
            metadata={
                "clevertap_event": event_name,
                "schema": settings.warehouse_schema,
                "table": table,
                "partition_expr": "event_time",
            },
        )

    @event_asset
    def _event_asset(
        context: AssetExecutionContext, clevertap: CleverTapResource
    ) -> Iterator[Output[EventBatch]]:
        days = context.partition_time_window
        last_day = (days.end - timedelta(days=1)).date()
        window = _Window(event_name, days.start.date(), last_day, recorded_column_names(context))
        try:
            batch, read = _read_window(context, clevertap, settings, window)
        except ExportNotAllowedError:
            context.log.warning(
                f"CleverTap does not allow exporting {event_name!r} (notification events are "
                "not exportable); skipped, nothing in the warehouse was changed"
            )
            source = source_digest(
                clevertap.account_id, base_url_for(clevertap.region, clevertap.api_url)
            )
            for partition_key in context.partition_keys:
                context.log_event(refusal_observation(key, partition_key, source))
            return
        for partition_key in context.partition_keys:
            context.add_asset_metadata(
                day_metadata(batch, date.fromisoformat(partition_key)), partition_key=partition_key
            )
        yield Output(
            batch,
            metadata={
                **read,
                "table": table,
                "preview": _preview(batch, [date.fromisoformat(k) for k in context.partition_keys]),
                COLUMN_SCHEMA: _column_schema(batch),
            },
        )

    return _event_asset


COLUMN_SCHEMA = "dagster/column_schema"
PARTITION_ROW_COUNT = "dagster/partition_row_count"
"""Dagster's standard table metadata keys, which the catalog shows as the table's columns and
row counts (https://docs.dagster.io/guides/build/assets/metadata-and-tags/table-metadata);
Dagster's database IO managers add `dagster/table_name` themselves."""

COLUMN_KEYS = "column_keys"
"""Output metadata: every data column and the property key path it holds (see ColumnNames)."""


def recorded_column_names(context: AssetExecutionContext) -> ColumnNames:
    """The columns the asset's keys were given so far, from its latest materialization."""
    latest = context.instance.get_latest_materialization_event(context.asset_key)
    materialization = latest.asset_materialization if latest else None
    recorded = (materialization.metadata if materialization else {}).get(COLUMN_KEYS)
    return ColumnNames(recorded.value if isinstance(recorded, JsonMetadataValue) else None)


@dataclass(frozen=True)
class _Window:
    """What one asset run reads: an event over whole local days, with the columns its keys
    were given so far (shared by every page, and by a reopened read of the window)."""

    event_name: str
    first_day: date
    last_day: date
    names: ColumnNames


def _read_window(
    context: AssetExecutionContext,
    clevertap: CleverTapResource,
    settings: PipelineSettings,
    window: _Window,
) -> tuple[EventBatch, dict]:
    """Read and spool the window; an expired cursor means reopening and reading it all again,
    with the partial spool thrown away."""
    for attempt in range(1, CURSOR_REOPENS + 1):
        try:
            return _read_window_once(context, clevertap, settings, window)
        except CursorExpiredError:
            if attempt == CURSOR_REOPENS:
                raise
            context.log.warning(
                f"cursor for {window.event_name!r} expired; reopening and re-reading "
                f"{window.first_day}..{window.last_day} "
                f"(attempt {attempt + 1} of {CURSOR_REOPENS})"
            )
    raise AssertionError("unreachable")


def _read_window_once(
    context: AssetExecutionContext,
    clevertap: CleverTapResource,
    settings: PipelineSettings,
    window: _Window,
) -> tuple[EventBatch, dict]:
    event_name, first_day, last_day = window.event_name, window.first_day, window.last_day
    names = window.names
    options = NormaliseOptions(
        event_name=event_name,
        timezone=settings.timezone,
        auto_mapping=settings.auto_mapping,
        max_record_bytes=settings.max_record_bytes,
        max_row_bytes=settings.row_limit_bytes,
    )
    window_start = datetime.combine(first_day, datetime.min.time())
    window_end = datetime.combine(last_day + timedelta(days=1), datetime.min.time())
    spans = day_ranges(first_day, last_day, clevertap.max_concurrent_requests)
    fetches = [FetchStats() for _ in spans]
    started = time.monotonic()
    with (
        EventSpool(event_name=event_name) as spool,
        _PageHandoff(spool, options, (window_start, window_end), names) as handoff,
        ThreadPoolExecutor(len(spans), thread_name_prefix="clevertap-cursor") as readers,
    ):
        cursors = [
            readers.submit(_read_span, clevertap, event_name, span, fetch, handoff, context.log)
            for span, fetch in zip(spans, fetches, strict=True)
        ]
        handoff.start_workers()  # while the cursors open
        _await_cursors(context, event_name, cursors, handoff, spool, fetches)
        handoff.finish()
        read_seconds = time.monotonic() - started
        batch = spool.finish(loaded_at=datetime.now(UTC))
    seconds = time.monotonic() - started
    fetch = FetchStats.combined(fetches)
    stats = spool.stats
    skipped = stats.oversize_records + stats.oversize_rows + stats.invalid_ts
    _warn_skipped(context, settings, event_name, stats)
    kept = stats.received - skipped - stats.outside_window
    read = {
        "window_records_received": stats.received,
        "window_duplicates_dropped": kept - batch.rows,
        "window_rows_written": batch.rows,
        "window_records_skipped": skipped,
        "records_over_size_limit": stats.oversize_records,
        "rows_over_size_limit": stats.oversize_rows,
        "records_with_invalid_ts": stats.invalid_ts,
        "records_outside_window": stats.outside_window,
        "api_cursors": len(spans),
        "api_pages": fetch.pages,
        "api_requests": fetch.requests,
        "api_retries": fetch.retries,
        "bytes_received": stats.bytes,
        "seconds": round(seconds, 3),
        "dedupe_seconds": round(seconds - read_seconds, 3),
        "rows_per_second": round(batch.rows / seconds, 1) if seconds else 0.0,
        "window": f"{first_day}..{last_day}",
        COLUMN_KEYS: MetadataValue.json(names.record()),
    }
    return batch, read


class _PageHandoff:
    """Cursor threads hand each page's raw records to the parse processes here, which write
    the page into the spool's folder; spool threads record each page in the spool, naming its
    columns.

    At most `parse processes + 1` pages are between a cursor and the spool: a cursor that
    gets ahead blocks until one is spooled, so memory holds those pages' bytes whatever the
    window. A failed page stops every cursor (`stopped`) and is raised by `finish`.
    """

    def __init__(
        self,
        spool: EventSpool,
        options: NormaliseOptions,
        window: tuple[datetime, datetime],
        names: ColumnNames,
    ) -> None:
        self._spool = spool
        self._options = options
        self._window = window
        self._names = names
        self._workers = workers = parse_processes()
        self._parsers = parse_pool(workers)
        self._spoolers = ThreadPoolExecutor(workers + 1, thread_name_prefix="clevertap-spool")
        self._room = threading.Semaphore(workers + 1)
        self._failures: list[BaseException] = []
        self.stopped = threading.Event()

    def __enter__(self) -> "_PageHandoff":
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None:
            self.stopped.set()
        self._spoolers.shutdown(wait=True, cancel_futures=True)
        self._parsers.shutdown(wait=True, cancel_futures=True)

    def start_workers(self) -> None:
        start_workers(self._parsers, self._workers)

    def submit(self, raw: bytes) -> None:
        self._room.acquire()
        number = self._spool.next_page_number()
        written = self._parsers.submit(
            spool_raw_page, raw, self._options, self._window, self._spool.directory, number
        )
        spooled = self._spoolers.submit(self._record_page, written)
        spooled.add_done_callback(self._done)

    def _record_page(self, written: Future[SpooledWindowPage]) -> None:
        """Runs on a spool thread while the workers parse the next pages."""
        page = written.result()
        names = column_names(page.files.schema, self._names)
        self._spool.add_files(page.files, page.received, page.outside_window, names)

    def _done(self, future: Future[None]) -> None:
        self._room.release()
        failure = None if future.cancelled() else future.exception()
        if failure is not None:
            self._failures.append(failure)
            self.stopped.set()

    def finish(self) -> None:
        """Wait for the pages handed over and stop the workers, whose memory the window's
        deduplication can use; the first failure, if any, is raised."""
        self._spoolers.shutdown(wait=True)
        self._parsers.shutdown(wait=True)
        if self._failures:
            raise self._failures[0]


def _read_span(
    clevertap: CleverTapResource,
    event_name: str,
    span: tuple[date, date],
    fetch: FetchStats,
    handoff: _PageHandoff,
    log: DagsterLogManager,
) -> None:
    """One cursor over its range of days, on its own thread: it only waits on CleverTap and
    hands pages over, so the three cursors keep the account's request slots busy."""
    for raw in clevertap.iter_raw_pages(event_name, *span, stats=fetch, log=log):
        if handoff.stopped.is_set():
            return  # another cursor or a page failed; that failure is what the run reports
        handoff.submit(raw)


def _await_cursors(
    context: AssetExecutionContext,
    event_name: str,
    cursors: list[Future[None]],
    handoff: _PageHandoff,
    spool: EventSpool,
    fetches: list[FetchStats],
) -> None:
    """Wait for every cursor, logging progress; the first failure stops the others and is
    raised (an expired cursor then reopens the whole window)."""
    try:
        while True:
            done, pending = wait(cursors, PROGRESS_EVERY_SECONDS, FIRST_EXCEPTION)
            for cursor in done:
                cursor.result()
            if not pending:
                return
            pages = sum(fetch.pages for fetch in fetches)
            context.log.info(
                f"{event_name}: {pages} pages through {len(cursors)} cursors, "
                f"{spool.stats.received:,} records so far"
            )
    except BaseException:
        handoff.stopped.set()
        raise


def _warn_skipped(
    context: AssetExecutionContext, settings: PipelineSettings, event_name: str, stats: SpoolStats
) -> None:
    for field, reason in (
        ("oversize_records", f"records over {settings.max_record_bytes:,} bytes were not ingested"),
        ("oversize_rows", f"rows over {settings.row_limit_bytes:,} bytes were rejected"),
        ("invalid_ts", "records without a readable ts were skipped"),
        ("outside_window", "records outside the requested days were left for their own day"),
    ):
        count = asdict(stats)[field]
        if count:
            context.log.warning(f"{event_name}: {count} {reason}")


def day_metadata(batch: EventBatch, day: date) -> dict[str, object]:
    """What one partition's materialization says: that day's rows, dropped copies and records
    skipped over the size limits. A single-run backfill is one Output for many days; Dagster
    would otherwise give every partition the window's totals (which stay on it as
    `window_*`). Records without a readable `ts` have no day: they count in the window only."""
    rows = batch.rows_by_day.get(day, 0)
    return {
        "rows_written": rows,
        "duplicates_dropped": batch.duplicates_by_day.get(day, 0),
        "records_skipped": batch.skipped_by_day.get(day, 0),
        PARTITION_ROW_COUNT: rows,
    }


def _column_schema(batch: EventBatch) -> TableSchema:
    return TableSchema(columns=[TableColumn(n, kind.value) for n, kind in batch.columns().items()])


PREVIEW_ROWS = 5
PREVIEW_PROPERTIES = 3
PREVIEW_CELL_CHARS = 24


def _preview(batch: EventBatch, days: list[date]) -> MetadataValue:
    """What the UI's preview shows at a glance, in two small tables that fit its dialog: each
    day of the window (rows, copies dropped, records skipped) and a few rows' time and event
    properties, each value cut short. A frame of every column printed as markdown gave
    headers cut to a few characters and values wrapped over many lines."""
    per_day = [
        (
            day,
            batch.rows_by_day.get(day, 0),
            batch.duplicates_by_day.get(day, 0),
            batch.skipped_by_day.get(day, 0),
        )
        for day in days
    ]
    days_table = _markdown_table(["day", "rows", "duplicates dropped", "skipped"], per_day)
    parts = [f"Each day of this run:\n\n{days_table}"]
    sample = batch.preview(PREVIEW_ROWS)
    if not sample.is_empty():
        properties = [c for c in sample.columns if c.startswith("event_props")]
        shown = ["event_time", *properties[:PREVIEW_PROPERTIES]]
        header = [name.removeprefix("event_props__") for name in shown]
        table = _markdown_table(header, sample.select(shown).rows())
        parts.append(f"First rows (event properties without `event_props__`):\n\n{table}")
    return MetadataValue.md("\n\n".join(parts))


def _markdown_table(header: list[str], rows: list) -> str:
    lines = [header, ["---"] * len(header), *[[_cell(v) for v in row] for row in rows]]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def _cell(value: object) -> str:
    text = "" if value is None else str(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"

"""Asset checks per event table: exactly-once, and agreement with CleverTap's own counts.

They are check specs of the reader's multi-asset, evaluated in the reader's step once its
events are written: a tick is one step, not one step per event and check."""

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from datetime import date, timedelta

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
)

from clevertap_assets.assets.pipeline_events import EventAsset
from clevertap_assets.assets.reconciliation import RECONCILED_DAYS, DayCounts
from clevertap_assets.days import days_between, local_today
from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.settings import PipelineSettings
from clevertap_assets.source.api import CleverTapError
from clevertap_assets.source.client import CleverTapResource

DUPLICATE_CHECK = "no_duplicate_record_ids"
RECONCILIATION_CHECK = "row_count_matches_clevertap"


def event_check_keys(key: AssetKey) -> list[AssetCheckKey]:
    """The checks of one event asset: every run that loads it carries them."""
    return [AssetCheckKey(key, DUPLICATE_CHECK), AssetCheckKey(key, RECONCILIATION_CHECK)]


def event_check_specs(events: Sequence[EventAsset]) -> list[AssetCheckSpec]:
    return [
        spec
        for event in events
        for spec in (
            AssetCheckSpec(
                DUPLICATE_CHECK,
                asset=event.key,
                description="Every `_record_id` is in the table once: reruns and backfills "
                "never duplicate.",
            ),
            AssetCheckSpec(
                RECONCILIATION_CHECK,
                asset=event.key,
                description=f"Rows per day over the last {RECONCILED_DAYS} full days the run "
                "loaded (without a load: the last full days) equal CleverTap's count API.",
            ),
        )
    ]


def compared_days(settings: PipelineSettings, loaded: Sequence[str] | None) -> list[date]:
    """The full days of the history window a reconciliation compares: the last
    `RECONCILED_DAYS` the run loads, else (a run of today alone, or the checks alone) the last
    `RECONCILED_DAYS`. Today's count moves while events arrive, so it is never compared; older
    days of a long load are the reconciliation sensor's (a count is a round trip: 29 days of
    12 events were 348 of them, 116 s at 1 s a request)."""
    today = local_today(settings.timezone)
    window_start = today - timedelta(days=settings.history_days - 1)
    full = [day for day in map(date.fromisoformat, loaded or ()) if day < today]
    if not full:
        full = list(days_between(today - timedelta(days=RECONCILED_DAYS), today))[:-1]
    return [day for day in full[-RECONCILED_DAYS:] if day >= window_start]


class ReconciliationCounts:
    """CleverTap's counts of the days each selected reconciliation compares, asked when the
    step starts: the counts API has request slots of its own, so the counts come in while
    the events are read rather than after them (a 29-day load's 28 counts took 9 s at 1 s a
    request)."""

    def __init__(
        self,
        context: AssetExecutionContext,
        settings: PipelineSettings,
        events: Sequence[EventAsset],
        clevertap: CleverTapResource,
    ) -> None:
        selected = context.selected_asset_check_keys
        run_days = context.partition_keys if context.selected_asset_keys else None
        self.days = {
            event.key: compared_days(
                settings, run_days if event.key in context.selected_asset_keys else None
            )
            for event in events
            if AssetCheckKey(event.key, RECONCILIATION_CHECK) in selected
        }
        self._pool = ThreadPoolExecutor(clevertap.max_concurrent_requests, "clevertap-counts")
        names = {event.key: event.name for event in events}
        self._counts: dict[AssetKey, list[Future[int]]] = {
            key: [self._pool.submit(clevertap.count_events, names[key], d, d) for d in days]
            for key, days in self.days.items()
        }

    def __enter__(self) -> "ReconciliationCounts":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def of(self, key: AssetKey) -> dict[date, int]:
        """The event's counts by day; raises the `CleverTapError` of a count that failed."""
        return {
            day: count.result()
            for day, count in zip(self.days[key], self._counts[key], strict=True)
        }


def event_check_results(
    context: AssetExecutionContext,
    settings: PipelineSettings,
    events: Sequence[EventAsset],
    warehouse_stats: EventTableStats,
    loaded: Sequence[EventAsset],
    counts: ReconciliationCounts,
) -> Iterator[AssetCheckResult]:
    """The selected checks of the events this step wrote (or of the events whose checks were
    selected alone); an event selected but not written (refused, failed) has nothing new to
    check."""
    selected = context.selected_asset_check_keys
    checked = [
        event
        for event in events
        if selected & set(event_check_keys(event.key))
        and (event in loaded or event.key not in context.selected_asset_keys)
    ]
    schema = settings.warehouse_schema
    for event in checked:
        if AssetCheckKey(event.key, DUPLICATE_CHECK) in selected:
            duplicates = warehouse_stats.duplicate_record_ids(schema, event.table)
            yield AssetCheckResult(
                asset_key=event.key,
                check_name=DUPLICATE_CHECK,
                passed=duplicates == 0,
                metadata={"duplicate_rows": duplicates},
            )
        if AssetCheckKey(event.key, RECONCILIATION_CHECK) in selected:
            yield _reconciliation(context, settings, warehouse_stats, event, counts)


def _reconciliation(
    context: AssetExecutionContext,
    settings: PipelineSettings,
    warehouse_stats: EventTableStats,
    event: EventAsset,
    counts: ReconciliationCounts,
) -> AssetCheckResult:
    days = counts.days[event.key]
    result = {"asset_key": event.key, "check_name": RECONCILIATION_CHECK}
    result["severity"] = AssetCheckSeverity.WARN
    if not days:
        return AssetCheckResult(
            **result, passed=True, description="no full day in the history window to compare"
        )
    try:
        expected = counts.of(event.key)
    except CleverTapError as exc:
        # The data loaded; only the comparison is missing: a warning with the reason.
        context.log.warning(f"CleverTap's counts are unavailable for {event.name!r}: {exc}")
        return AssetCheckResult(
            **result,
            passed=False,
            description="CleverTap's count API gave no usable answer; nothing was compared",
            metadata={"counts_unavailable": str(exc)},
        )
    rows = warehouse_stats.daily_row_counts(
        settings.warehouse_schema, event.table, days[0], days[-1]
    )
    differences = {
        day.isoformat(): asdict(DayCounts(rows[day], expected[day]))
        for day in days
        if rows[day] != expected[day]
    }
    return AssetCheckResult(
        **result,
        passed=not differences,
        metadata={
            "days_checked": len(days),
            "days_differing": len(differences),
            "differences": differences,
        },
    )

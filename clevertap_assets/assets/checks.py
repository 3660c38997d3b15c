"""Asset checks per event table: exactly-once, and agreement with CleverTap's own counts.

They are check specs of the reader's multi-asset, evaluated in the reader's step once its
events are written: a tick is one step, not one step per event and check."""

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    DagsterInstance,
)

from clevertap_assets.assets.pipeline_events import (
    DUPLICATE_CHECK,
    RECONCILIATION_CHECK,
    EventAsset,
    PipelineFacts,
)
from clevertap_assets.assets.reconciliation import (
    RECONCILED_DAYS,
    compare,
    compared_days,
    recent_full_days,
)
from clevertap_assets.days import local_today
from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.source.api import CleverTapError
from clevertap_assets.source.client import CleverTapResource


def event_check_specs(events: Sequence[EventAsset]) -> list[AssetCheckSpec]:
    return [
        spec
        for event in events
        for spec in (
            AssetCheckSpec(
                DUPLICATE_CHECK,
                asset=event.key,
                description="Every `_record_id` of the days the run wrote is in the table "
                "once: reruns and backfills never duplicate.",
            ),
            AssetCheckSpec(
                RECONCILIATION_CHECK,
                asset=event.key,
                description=f"Rows per day over the last {RECONCILED_DAYS} full days the run "
                "loaded (run alone: the last full days loaded) equal CleverTap's count API; "
                "today is never compared, and a day whose count moves is settling, not a gap.",
            ),
        )
    ]


def loaded_full_days(instance: DagsterInstance, key: AssetKey, today: date) -> list[date]:
    """The recent full days with a materialization: what a run of the checks alone compares,
    and what the reconciliation sensor asks for before it requests one."""
    loaded = instance.get_materialized_partitions(key)
    return [day for day in recent_full_days(today) if day.isoformat() in loaded]


class ReconciliationCounts:
    """CleverTap's counts of the days each selected reconciliation compares, asked when the
    step starts: the counts API has request slots of its own, so the counts come in while
    the events are read rather than after them.

    Today is fixed when the step starts, so a day that ends while the run reads is still
    today to it: the run loaded part of that day, and comparing it would report a gap."""

    def __init__(
        self,
        context: AssetExecutionContext,
        pipeline: PipelineFacts,
        clevertap: CleverTapResource,
    ) -> None:
        self.today = local_today(pipeline.timezone)
        selected = context.selected_asset_check_keys
        run_days = run_partition_days(context)
        self.days: dict[AssetKey, list[date]] = {}
        for event in pipeline.events:
            if event.reconciliation_check not in selected:
                continue
            loaded = (
                run_days
                if event.key in context.selected_asset_keys
                else loaded_full_days(context.instance, event.key, self.today)
            )
            self.days[event.key] = compared_days(self.today, pipeline.history_days, loaded)
        self._clevertap = clevertap
        self._names = {event.key: event.name for event in pipeline.events}
        self._pool = ThreadPoolExecutor(clevertap.max_concurrent_requests, "clevertap-counts")
        self._counts = {key: self._ask(key, days) for key, days in self.days.items()}

    def __enter__(self) -> "ReconciliationCounts":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _ask(self, key: AssetKey, days: Sequence[date]) -> dict[date, Future[int]]:
        name = self._names[key]
        return {
            day: self._pool.submit(self._clevertap.count_events, name, day, day) for day in days
        }

    def of(self, key: AssetKey) -> dict[date, int]:
        """The event's counts by day; raises the `CleverTapError` of a count that failed."""
        return {day: count.result() for day, count in self._counts[key].items()}

    def again(self, key: AssetKey, days: Sequence[date]) -> dict[date, int]:
        """A second count of the days that differed, to tell a settling day from a gap."""
        return {day: count.result() for day, count in self._ask(key, days).items()}


def run_partition_days(context: AssetExecutionContext) -> list[date]:
    """The days this run loads; none for a run of checks alone (it has no partition)."""
    if not context.selected_asset_keys:
        return []
    return [date.fromisoformat(key) for key in context.partition_keys]


def event_check_results(
    context: AssetExecutionContext,
    pipeline: PipelineFacts,
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
        for event in pipeline.events
        if selected & set(event.check_keys)
        and (event in loaded or event.key not in context.selected_asset_keys)
    ]
    for event in checked:
        if event.duplicate_check in selected:
            first_day, last_day = _duplicate_check_days(
                context, pipeline.history_days, event, counts.today
            )
            duplicates = warehouse_stats.duplicate_record_ids(
                pipeline.schema, event.table, first_day, last_day
            )
            yield AssetCheckResult(
                asset_key=event.key,
                check_name=DUPLICATE_CHECK,
                passed=duplicates == 0,
                description=f"looked at {first_day} to {last_day}",
                metadata={
                    "duplicate_rows": duplicates,
                    "first_day": str(first_day),
                    "last_day": str(last_day),
                },
            )
        if event.reconciliation_check in selected:
            yield _reconciliation(context, pipeline.schema, warehouse_stats, event, counts)


def _duplicate_check_days(
    context: AssetExecutionContext, history_days: int, event: EventAsset, today: date
) -> tuple[date, date]:
    """The days the run wrote, else the history window: a record's id is derived with its
    `ts`, so its copies share a day, and a run can only have duplicated the days it wrote.
    The check's cost follows the run, not the table's age."""
    if event.key in context.selected_asset_keys:
        days = run_partition_days(context)
        return days[0], days[-1]
    return today - timedelta(days=history_days - 1), today


def _reconciliation(
    context: AssetExecutionContext,
    schema: str,
    warehouse_stats: EventTableStats,
    event: EventAsset,
    counts: ReconciliationCounts,
) -> AssetCheckResult:
    days = counts.days[event.key]
    result = {"asset_key": event.key, "check_name": RECONCILIATION_CHECK}
    result["severity"] = AssetCheckSeverity.WARN
    if not days:
        return AssetCheckResult(
            **result,
            passed=True,
            description=f"no full day loaded to compare (today, {counts.today}, never is: "
            "its count moves while events arrive)",
        )
    try:
        expected = counts.of(event.key)
        rows = warehouse_stats.daily_row_counts(schema, event.table, days[0], days[-1])
        differing = [day for day in days if rows[day] != expected[day]]
        recounted = counts.again(event.key, differing)
    except CleverTapError as exc:
        # The data loaded; only the comparison is missing: a warning with the reason.
        context.log.warning(f"CleverTap's counts are unavailable for {event.name!r}: {exc}")
        return AssetCheckResult(
            **result,
            passed=False,
            description="CleverTap's count API gave no usable answer; nothing was compared",
            metadata={"counts_unavailable": str(exc)},
        )
    comparison = compare(days, rows, expected, recounted)
    return AssetCheckResult(
        **result,
        passed=not comparison.gaps,
        description=comparison.description(),
        metadata={
            **comparison.metadata(counts.today),
            "days_checked": len(days),
            "days_differing": len(comparison.gaps),
        },
    )

"""Asset checks per event table: exactly-once, and agreement with CleverTap's own counts.

They are check specs of the reader's multi-asset, evaluated in the reader's step once its
events are written: a tick is one step, not one step per event and check."""

from collections.abc import Iterator, Sequence
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
from clevertap_assets.assets.reconciliation import RECONCILED_DAYS, DayCounts, clevertap_counts
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
                description="Rows per full day loaded by the run (without a load: the last "
                f"{RECONCILED_DAYS} full days) equal CleverTap's count API.",
            ),
        )
    ]


def compared_days(settings: PipelineSettings, loaded: Sequence[str] | None) -> list[date]:
    """The full days of the history window a reconciliation compares: those the run loaded,
    else (a run of today alone, or the checks alone) the last `RECONCILED_DAYS`. Today's count
    moves while events arrive, so it is never compared."""
    today = local_today(settings.timezone)
    window_start = today - timedelta(days=settings.history_days - 1)
    full = [day for day in map(date.fromisoformat, loaded or ()) if day < today]
    if not full:
        full = list(days_between(today - timedelta(days=RECONCILED_DAYS), today))[:-1]
    return [day for day in full if day >= window_start]


def event_check_results(
    context: AssetExecutionContext,
    settings: PipelineSettings,
    events: Sequence[EventAsset],
    clevertap: CleverTapResource,
    warehouse_stats: EventTableStats,
    loaded: Sequence[tuple[EventAsset, Sequence[str]]],
) -> Iterator[AssetCheckResult]:
    """The selected checks of the events this step wrote (or of the events whose checks were
    selected alone); an event selected but not written (refused, failed) has nothing new to
    check. CleverTap's counts for every event are asked side by side."""
    selected = context.selected_asset_check_keys
    written = {event.key: days for event, days in loaded}
    checked = [
        event
        for event in events
        if selected & set(_keys(event))
        and (event.key in written or event.key not in context.selected_asset_keys)
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
    reconciled = [e for e in checked if AssetCheckKey(e.key, RECONCILIATION_CHECK) in selected]
    days = {event.key: compared_days(settings, written.get(event.key)) for event in reconciled}
    try:
        counts = clevertap_counts(
            clevertap, [(event.name, day) for event in reconciled for day in days[event.key]]
        )
    except CleverTapError as exc:
        # The data loaded; only the comparison is missing: a warning with the reason.
        context.log.warning(f"CleverTap's counts are unavailable: {exc}")
        for event in reconciled:
            yield _reconciliation(
                event,
                description="CleverTap's count API gave no usable answer; nothing was compared",
                metadata={"counts_unavailable": str(exc)},
            )
        return
    for event in reconciled:
        rows = warehouse_stats.daily_row_counts(
            schema, event.table, days[event.key][0], days[event.key][-1]
        )
        differences = {
            day.isoformat(): asdict(DayCounts(rows[day], counts[event.name, day]))
            for day in days[event.key]
            if rows[day] != counts[event.name, day]
        }
        yield _reconciliation(
            event,
            passed=not differences,
            metadata={
                "days_checked": len(days[event.key]),
                "days_differing": len(differences),
                "differences": differences,
            },
        )


def _keys(event: EventAsset) -> list[AssetCheckKey]:
    return event_check_keys(event.key)


def _reconciliation(event: EventAsset, passed: bool = False, **result: object) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=event.key,
        check_name=RECONCILIATION_CHECK,
        passed=passed,
        severity=AssetCheckSeverity.WARN,
        **result,
    )

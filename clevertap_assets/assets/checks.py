"""Asset checks per event table: exactly-once, and agreement with CleverTap's own counts."""

from dataclasses import asdict
from datetime import timedelta

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    ResourceParam,
    asset_check,
)

from clevertap_assets.assets.events import event_asset_key, event_table
from clevertap_assets.assets.reconciliation import RECONCILED_DAYS, differing_days
from clevertap_assets.days import days_between, local_today
from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.settings import PipelineSettings
from clevertap_assets.source.client import CleverTapError, CleverTapResource

DUPLICATE_CHECK = "no_duplicate_record_ids"
RECONCILIATION_CHECK = "row_count_matches_clevertap"


def event_check_keys(key: AssetKey) -> list[AssetCheckKey]:
    """The checks of one event asset: every run that loads it carries them."""
    return [AssetCheckKey(key, DUPLICATE_CHECK), AssetCheckKey(key, RECONCILIATION_CHECK)]


def build_event_checks(settings: PipelineSettings) -> list[AssetChecksDefinition]:
    return [
        check
        for name in settings.event_names
        for check in (
            build_duplicate_check(settings, name),
            build_reconciliation_check(settings, name),
        )
    ]


def build_duplicate_check(settings: PipelineSettings, event_name: str) -> AssetChecksDefinition:
    table = event_table(settings, event_name)

    @asset_check(
        asset=event_asset_key(settings, event_name),
        name=DUPLICATE_CHECK,
        description="Every `_record_id` is in the table once: reruns and backfills never duplicate.",
    )
    def _check(warehouse_stats: ResourceParam[EventTableStats]) -> AssetCheckResult:
        duplicates = warehouse_stats.duplicate_record_ids(settings.warehouse_schema, table)
        return AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_rows": duplicates})

    return _check


def build_reconciliation_check(
    settings: PipelineSettings, event_name: str
) -> AssetChecksDefinition:
    table = event_table(settings, event_name)

    @asset_check(
        asset=event_asset_key(settings, event_name),
        name=RECONCILIATION_CHECK,
        description=(
            f"Rows per day over the last {RECONCILED_DAYS} days equal CleverTap's count API "
            "(warning: late events make today's count move)."
        ),
    )
    def _check(
        context: AssetCheckExecutionContext,
        clevertap: CleverTapResource,
        warehouse_stats: ResourceParam[EventTableStats],
    ) -> AssetCheckResult:
        last_day = local_today(settings.timezone)
        first_day = last_day - timedelta(days=min(RECONCILED_DAYS, settings.history_days) - 1)
        days = list(days_between(first_day, last_day))
        try:
            differing = differing_days(
                clevertap, warehouse_stats, settings.warehouse_schema, table, event_name, days
            )
        except CleverTapError as exc:
            # The data loaded; only the comparison is missing: a warning with the reason,
            # never a failed run.
            context.log.warning(f"CleverTap's counts are unavailable for {event_name!r}: {exc}")
            return AssetCheckResult(
                passed=False,
                severity=AssetCheckSeverity.WARN,
                description="CleverTap's count API gave no usable answer; nothing was compared",
                metadata={"counts_unavailable": str(exc)},
            )
        differences = {day.isoformat(): asdict(counts) for day, counts in differing.items()}
        return AssetCheckResult(
            passed=not differences,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "days_checked": len(days),
                "days_differing": len(differences),
                "differences": differences,
            },
        )

    return _check

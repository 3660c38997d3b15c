"""`ingestion_schedule`: Hevo's ingestion frequency, as one cron schedule over every event asset.

Each tick asks, per event, for today and the previous LOOKBACK_DAYS days (late events from
offline devices land in days already loaded) plus every day of the history window that was
never loaded, so the first tick of a new pipeline loads the whole window. Days are grouped into
contiguous ranges and each range is one run tagged with Dagster's partition-range tags: that is
what the backfill daemon itself launches for `BackfillPolicy.single_run()` assets, so a range
of days is read through one CleverTap cursor. `RunRequest` has no partition-range argument in
1.13 and its asset-graph-subset backfills are private API that launch through the backfill
daemon, where "is a run for this asset still going?" could not be answered per tick.

An event whose previous run is still queued or running is left out of the tick, so a slow
CleverTap export never piles runs up behind itself; the next tick picks the days up again.
"""

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from dagster import (
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    TimeWindowPartitionsDefinition,
    schedule,
)

from clevertap_assets.automation.runs import assets_in_progress, range_run_request
from clevertap_assets.days import days_between
from clevertap_assets.settings import PipelineSettings


def cron_for_interval(interval: timedelta) -> str:
    """30 minutes, or every N whole hours on the hour (24h is midnight once a day).

    Cron counts hours within a day, so an N that does not divide 24 (5h) restarts at midnight:
    00, 05, 10, 15, 20, then 00 again; Hevo's allowed values are kept, not its exact spacing.
    """
    minutes = int(interval.total_seconds()) // 60
    if minutes == 30:
        return "*/30 * * * *"
    hours = minutes // 60
    if hours == 24:
        return "0 0 * * *"
    return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"


def contiguous_ranges(days: Iterable[date]) -> Iterator[tuple[date, date]]:
    """(first, last) of each run of consecutive days, oldest first."""
    ordered = sorted(set(days))
    if not ordered:
        return
    first = previous = ordered[0]
    for day in ordered[1:]:
        if day != previous + timedelta(days=1):
            yield first, previous
            first = day
        previous = day
    yield first, previous


def days_to_load(
    instance: DagsterInstance,
    settings: PipelineSettings,
    asset: AssetsDefinition,
    today: date,
) -> set[date]:
    """Today, the lookback days, and every never-loaded day of the history window.

    An event CleverTap refused to export, and that never loaded, only gets the recent days:
    its history can never materialize, and asking for it every tick would cost a run each time.
    """
    partitions_def = asset.partitions_def
    assert isinstance(partitions_def, TimeWindowPartitionsDefinition)
    window_start = max(
        today - timedelta(days=settings.history_days - 1),
        partitions_def.start.astimezone(ZoneInfo(settings.timezone)).date(),
    )
    recent_start = max(window_start, today - timedelta(days=settings.lookback_days))
    days = set(days_between(recent_start, today))
    if _refused_export(instance, asset.key):
        return days
    loaded = instance.get_materialized_partitions(asset.key)
    return days | {d for d in days_between(window_start, today) if d.isoformat() not in loaded}


def _refused_export(instance: DagsterInstance, key: AssetKey) -> bool:
    """The event asset records a `skipped` observation when CleverTap refuses the export."""
    if instance.get_latest_materialization_event(key) is not None:
        return False
    latest = instance.fetch_observations(key, limit=1).records
    return bool(latest) and "skipped" in (latest[0].asset_observation.metadata or {})


def ingestion_run_requests(
    instance: DagsterInstance,
    settings: PipelineSettings,
    assets: Sequence[AssetsDefinition],
    now: datetime,
) -> list[RunRequest]:
    """The tick's runs: one per event and contiguous range, none for an event still running."""
    today = now.astimezone(ZoneInfo(settings.timezone)).date()
    busy = assets_in_progress(instance)
    return [
        range_run_request(asset.key, first, last, f"{asset.key.to_user_string()}:{first}:{last}")
        for asset in assets
        if asset.key not in busy
        for first, last in contiguous_ranges(days_to_load(instance, settings, asset, today))
    ]


def build_ingestion_schedule(
    settings: PipelineSettings, assets: Sequence[AssetsDefinition]
) -> ScheduleDefinition:
    """RUNNING by default: a deployed pipeline ingests without anyone switching it on."""

    @schedule(
        name="ingestion_schedule",
        cron_schedule=cron_for_interval(settings.ingestion_interval),
        execution_timezone=settings.timezone,
        target=assets,
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            f"Every {settings.ingestion_frequency}: today and the previous "
            f"{settings.lookback_days} day(s) of each event, plus any day of the last "
            f"{settings.history_days} never loaded."
        ),
    )
    def ingestion_schedule(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        now = context.scheduled_execution_time or datetime.now(ZoneInfo(settings.timezone))
        requests = ingestion_run_requests(context.instance, settings, assets, now)
        return requests or SkipReason("every event still has a run in progress")

    return ingestion_schedule

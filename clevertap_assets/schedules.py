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

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from dagster import (
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    TimeWindowPartitionsDefinition,
    schedule,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from clevertap_assets.partitions import days_between
from clevertap_assets.settings import PipelineSettings

# Every status in which a run still holds, or will take, a worker: the ones a new run for the
# same asset would pile up behind.
IN_PROGRESS_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


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


def in_progress_runs(instance: DagsterInstance) -> Sequence[DagsterRun]:
    return instance.get_runs(RunsFilter(statuses=IN_PROGRESS_STATUSES))


def assets_in_progress(instance: DagsterInstance) -> set[AssetKey]:
    """Assets some unfinished run will write, whoever launched it (tick, sensor, UI backfill)."""
    return {key for run in in_progress_runs(instance) for key in run.asset_selection or ()}


def range_run_request(
    key: AssetKey,
    first_day: date,
    last_day: date,
    run_key: str,
    tags: Mapping[str, str] | None = None,
) -> RunRequest:
    """One run of one event over consecutive days, read as a single window.

    A schedule's run key only dedupes within its tick (a tick retried after a daemon crash
    launches nothing twice); a sensor's dedupes forever.
    """
    return RunRequest(
        run_key=run_key,
        asset_selection=[key],
        tags={
            **(tags or {}),
            ASSET_PARTITION_RANGE_START_TAG: first_day.isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: last_day.isoformat(),
        },
    )


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

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

import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from dagster import (
    AssetsDefinition,
    AssetSelection,
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    TimeWindowPartitionsDefinition,
    define_asset_job,
    schedule,
)

from clevertap_assets.assets.refusals import latest_refusal, source_digest
from clevertap_assets.automation.runs import assets_in_progress, range_run_request
from clevertap_assets.days import days_between
from clevertap_assets.settings import PipelineSettings, missing_credentials


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
    source: str,
) -> set[date]:
    """Today, the lookback days, and every never-loaded day of the history window.

    An event CleverTap refused to export gets nothing while the refusal holds (see
    `refusals`), then today alone as a probe: its history cannot load while refused, and
    asking for it every tick would cost a run each time.
    """
    refusal = latest_refusal(instance, asset.key)
    if refusal is not None:
        now = datetime.now(UTC)
        return set() if refusal.holds(source, now) else {today}
    partitions_def = asset.partitions_def
    assert isinstance(partitions_def, TimeWindowPartitionsDefinition)
    window_start = max(
        today - timedelta(days=settings.history_days - 1),
        partitions_def.start.astimezone(ZoneInfo(settings.timezone)).date(),
    )
    recent_start = max(window_start, today - timedelta(days=settings.lookback_days))
    days = set(days_between(recent_start, today))
    loaded = instance.get_materialized_partitions(asset.key)
    return days | {d for d in days_between(window_start, today) if d.isoformat() not in loaded}


def ingestion_run_requests(
    instance: DagsterInstance,
    settings: PipelineSettings,
    assets: Sequence[AssetsDefinition],
    now: datetime,
    source: str,
) -> list[RunRequest]:
    """The tick's runs: one per event and contiguous range, none for an event still running
    or refused by CleverTap; `source` is `refusals.source_digest` of the current account."""
    today = now.astimezone(ZoneInfo(settings.timezone)).date()
    busy = assets_in_progress(instance)
    return [
        range_run_request(asset.key, first, last, f"{asset.key.to_user_string()}:{first}:{last}")
        for asset in assets
        if asset.key not in busy
        for first, last in contiguous_ranges(days_to_load(instance, settings, asset, today, source))
    ]


def refused_events(
    instance: DagsterInstance, assets: Sequence[AssetsDefinition], source: str
) -> list[str]:
    """What the tick says about the events it leaves out because CleverTap refused them."""
    now = datetime.now(UTC)
    notes = []
    for asset in assets:
        refusal = latest_refusal(instance, asset.key)
        if refusal is not None and refusal.holds(source, now):
            notes.append(
                f"{asset.key.to_user_string()} (refused {refusal.at:%Y-%m-%d %H:%M} UTC, "
                f"probed again after {refusal.reprobe_after:%Y-%m-%d})"
            )
    return notes


def build_ingestion_schedule(
    settings: PipelineSettings, assets: Sequence[AssetsDefinition]
) -> ScheduleDefinition:
    """RUNNING by default: a deployed pipeline ingests without anyone switching it on."""

    @schedule(
        name="ingestion_schedule",
        cron_schedule=cron_for_interval(settings.ingestion_interval),
        execution_timezone=settings.timezone,
        target=define_asset_job(
            f"{settings.pipeline_slug}_ingestion",
            selection=AssetSelection.assets(*assets),
            description="An event's new days, with its checks; one run per event and range.",
        ),
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            f"Every {settings.ingestion_frequency}: today and the previous "
            f"{settings.lookback_days} day(s) of each event, plus any day of the last "
            f"{settings.history_days} never loaded."
        ),
    )
    def ingestion_schedule(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
        if missing := missing_credentials():
            return SkipReason(f"{missing} (see .env.example)")
        now = context.scheduled_execution_time or datetime.now(ZoneInfo(settings.timezone))
        source = source_digest(os.environ["CLEVERTAP_ACCOUNT_ID"].strip(), settings.base_url)
        requests = ingestion_run_requests(context.instance, settings, assets, now, source)
        refused = refused_events(context.instance, assets, source)
        note = f"not requested, CleverTap refuses to export them: {', '.join(refused)}"
        if refused:
            context.log.info(note)
        if requests:
            return requests
        return SkipReason(note if refused else "every event still has a run in progress")

    return ingestion_schedule

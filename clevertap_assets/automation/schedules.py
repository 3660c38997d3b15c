"""`ingestion_schedule`: INGESTION_FREQUENCY as one cron schedule over every event.

Each tick asks, per event, for today and the previous LOOKBACK_DAYS days (late events from
offline devices land in days already loaded) plus every day of the history window that was
never loaded, so the first tick of a new pipeline loads the whole window. Events that need the
same contiguous range of days share one run, tagged with Dagster's partition-range tags, so a
tick is normally one run: one step reads every event through the account's request slots.
`RunRequest` has no partition-range argument in 1.13, and a range run is what the backfill
daemon itself launches for a range of days.

An event whose previous tick (or sensor) run is still queued or running is left out, so a slow
export never piles runs up behind itself; a backfill's runs do not hold the tick back, which
runs at a higher priority and so waits for one backfill run at most.
"""

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from dagster import (
    AssetsDefinition,
    AssetSelection,
    DagsterInstance,
    DefaultScheduleStatus,
    ResourceParam,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    schedule,
)

from clevertap_assets.assets.pipeline_events import EventAsset, PipelineFacts
from clevertap_assets.assets.refusals import latest_refusal, refused_days, source_digest
from clevertap_assets.automation.runs import assets_in_progress, range_run_request
from clevertap_assets.days import days_between
from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.keys import PRIORITY_TAG
from clevertap_assets.settings import credential, missing_credentials

TICK_PRIORITY = 10
"""Above a backfill's runs (priority 0): a tick waits for one backfill run at most."""


def cron_for_interval(interval: timedelta) -> str:
    """30 minutes, or every N whole hours on the hour (24h is midnight once a day).

    Cron counts hours within a day, so an N that does not divide 24 (5h) restarts at midnight:
    00, 05, 10, 15, 20, then 00 again: every allowed frequency runs, at most that far apart.
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
    warehouse_stats: EventTableStats,
    pipeline: PipelineFacts,
    event: EventAsset,
    today: date,
    source: str,
) -> set[date]:
    """Today, the lookback days, and every never-loaded day of the history window.

    A day is loaded if the instance has its materialization or, failing that, the table has
    rows on it (`loaded_in_warehouse`): a wiped instance, a restored backup or a second
    deployment does not load the history again.

    An event CleverTap refused to export gets nothing while the refusal holds (see
    `refusals`), then today alone as a probe: its history cannot load while refused, and
    asking for it every tick would cost a run each time. Once a day loads, the days recorded
    as refused count as never loaded.
    """
    key = event.key
    refusal = latest_refusal(instance, key)
    if refusal is not None:
        now = datetime.now(UTC)
        return set() if refusal.holds(source, now) else {today}
    window_start = history_start(pipeline, today)
    recent_start = max(window_start, today - timedelta(days=pipeline.lookback_days))
    days = set(days_between(recent_start, today))
    materialized = instance.get_materialized_partitions(key)
    older_days = list(days_between(window_start, recent_start - timedelta(days=1)))
    older = [d.isoformat() for d in older_days]
    loaded = set(materialized) - refused_days(
        instance, key, [day for day in older if day in materialized]
    )
    missing = {d for d in older_days if d.isoformat() not in loaded}
    if missing:
        missing -= loaded_in_warehouse(
            warehouse_stats, pipeline.schema, event, min(missing), max(missing)
        )
    return days | missing


def history_start(pipeline: PipelineFacts, today: date) -> date:
    """The first day of the history window the pipeline keeps loaded (to `today`): the last
    CLEVERTAP_HISTORY_DAYS days, none before the first partition."""
    return max(
        today - timedelta(days=pipeline.history_days - 1),
        pipeline.partitions_def.start.astimezone(ZoneInfo(pipeline.timezone)).date(),
    )


def loaded_in_warehouse(
    warehouse_stats: EventTableStats,
    schema: str,
    event: EventAsset,
    first_day: date,
    last_day: date,
) -> set[date]:
    """Days with rows in the event's table: loaded by some run this instance does not know.
    A day that loaded empty has no rows and is asked for again, which costs one request."""
    counts = warehouse_stats.daily_row_counts(schema, event.table, first_day, last_day)
    return {day for day, rows in counts.items() if rows}


def ingestion_run_requests(
    instance: DagsterInstance,
    warehouse_stats: EventTableStats,
    pipeline: PipelineFacts,
    now: datetime,
    source: str,
) -> list[RunRequest]:
    """The tick's runs: one per distinct range of days, each over every event that needs that
    range; none for an event still in a tick's or sensor's run (a backfill's runs do not
    hold the schedule back) or refused by CleverTap. `source` is `refusals.source_digest` of
    the current account."""
    today = now.astimezone(ZoneInfo(pipeline.timezone)).date()
    busy = assets_in_progress(instance, [e.key for e in pipeline.events])
    by_range: dict[tuple[date, date], list[EventAsset]] = {}
    for event in pipeline.events:
        if event.key in busy:
            continue
        days = days_to_load(instance, warehouse_stats, pipeline, event, today, source)
        for days_range in contiguous_ranges(days):
            by_range.setdefault(days_range, []).append(event)
    return [
        range_run_request(
            events,
            first,
            last,
            f"{first}:{last}:{_digest(events)}",
            {PRIORITY_TAG: str(TICK_PRIORITY)},
        )
        for (first, last), events in sorted(by_range.items())
    ]


def _digest(events: Sequence[EventAsset]) -> str:
    """Names a set of events in a run key of bounded length."""
    text = "\n".join(sorted(event.key.to_user_string() for event in events))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def refused_events(
    instance: DagsterInstance, events: Sequence[EventAsset], source: str
) -> list[str]:
    """What the tick says about the events it leaves out because CleverTap refused them."""
    now = datetime.now(UTC)
    notes = []
    for event in events:
        refusal = latest_refusal(instance, event.key)
        if refusal is not None and refusal.holds(source, now):
            notes.append(
                f"{event.key.to_user_string()} (refused {refusal.at:%Y-%m-%d %H:%M} UTC, "
                f"probed again after {refusal.reprobe_after:%Y-%m-%d})"
            )
    return notes


def build_ingestion_schedule(
    pipeline: PipelineFacts, reader: AssetsDefinition
) -> ScheduleDefinition:
    """RUNNING by default: a deployed pipeline ingests without anyone switching it on."""

    @schedule(
        name="ingestion_schedule",
        cron_schedule=cron_for_interval(pipeline.ingestion_interval),
        execution_timezone=pipeline.timezone,
        target=define_asset_job(
            f"{pipeline.slug}_ingestion",
            selection=AssetSelection.assets(reader),
            description="The events' new days, with their checks; one run per range of days.",
        ),
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            f"Every {pipeline.ingestion_frequency}: today and the previous "
            f"{pipeline.lookback_days} day(s) of each event, plus any day of the last "
            f"{pipeline.history_days} never loaded."
        ),
    )
    def ingestion_schedule(
        context: ScheduleEvaluationContext, warehouse_stats: ResourceParam[EventTableStats]
    ) -> list[RunRequest] | SkipReason:
        if missing := missing_credentials():
            return SkipReason(f"{missing} (see .env.example)")
        now = context.scheduled_execution_time or datetime.now(ZoneInfo(pipeline.timezone))
        source = source_digest(credential("CLEVERTAP_ACCOUNT_ID"), pipeline.base_url)
        requests = ingestion_run_requests(context.instance, warehouse_stats, pipeline, now, source)
        refused = refused_events(context.instance, pipeline.events, source)
        note = f"not requested, CleverTap refuses to export them: {', '.join(refused)}"
        if refused:
            context.log.info(note)
        if requests:
            return requests
        return SkipReason(note if refused else "every event still has a run in progress")

    return ingestion_schedule

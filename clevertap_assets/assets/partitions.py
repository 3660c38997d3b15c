"""Days of the CleverTap project's time zone, the unit of CleverTap's `from`/`to` and of our
partitions."""

from datetime import date, timedelta

from dagster import DailyPartitionsDefinition

from clevertap_assets.days import local_today
from clevertap_assets.settings import PipelineSettings


def daily_partitions(
    settings: PipelineSettings, today: date | None = None
) -> DailyPartitionsDefinition:
    """One partition per local day from CLEVERTAP_START_DATE, today included.

    `end_offset=1` makes today's in-progress day a partition, so the schedule can keep it
    fresh. Without a start date the partitions begin with the history window
    (CLEVERTAP_HISTORY_DAYS) as of when the definitions load, so the earliest day moves
    forward with every reload; a long-lived deployment sets the date once to keep its
    older days addressable for backfills.
    """
    today = today or local_today(settings.timezone)
    start = settings.start_date or today - timedelta(days=settings.history_days - 1)
    return DailyPartitionsDefinition(
        start_date=start.isoformat(), timezone=settings.timezone, end_offset=1
    )


def recent_range(settings: PipelineSettings, days: int | None = None) -> str:
    """`FIRST...LAST` for the last `days` local days, today included (default: the history
    window): what `dagster asset materialize --partition-range` takes. Computed when run,
    so a README command never names days that have left the moving window."""
    count = min(days or settings.history_days, settings.history_days)
    today = local_today(settings.timezone)
    return f"{today - timedelta(days=count - 1)}...{today}"

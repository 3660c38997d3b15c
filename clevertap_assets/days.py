"""Day arithmetic in the CleverTap project's time zone: the unit of CleverTap's `from`/`to`,
of our partitions and of every comparison of rows per day. It imports nothing of the
project, so settings, assets and destinations can all use it without a cycle."""

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo


def local_today(timezone: str) -> date:
    return datetime.now(ZoneInfo(timezone)).date()


def days_between(first_day: date, last_day: date) -> Iterator[date]:
    """Inclusive, like CleverTap's `from`/`to`."""
    for offset in range((last_day - first_day).days + 1):
        yield first_day + timedelta(days=offset)


def day_bounds(first_day: date, last_day: date) -> tuple[datetime, datetime]:
    """Whole local days as naive local times, start inclusive, end exclusive."""
    start = datetime.combine(first_day, datetime.min.time())
    return start, datetime.combine(last_day + timedelta(days=1), datetime.min.time())


def day_ranges(first_day: date, last_day: date, parts: int) -> list[tuple[date, date]]:
    """The inclusive window cut into at most `parts` consecutive ranges of whole days, as even
    as days allow, earliest first: each range is read through its own cursor."""
    days = (last_day - first_day).days + 1
    parts = max(1, min(parts, days))
    ranges = []
    start = first_day
    for index in range(parts):
        length = days // parts + (1 if index < days % parts else 0)
        ranges.append((start, start + timedelta(days=length - 1)))
        start += timedelta(days=length)
    return ranges

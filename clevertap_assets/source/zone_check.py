"""Whether the records outside a window's days say `CLEVERTAP_TIMEZONE` is not the project's.

CleverTap reads `from` and `to` as days of the project's own zone, which no answer names. With
epoch `ts` and another zone configured, the hours at the window's edges fall on days the run
did not ask for, and asking for those days returns CleverTap's days, not these records: they
would never be loaded. A few strays are normal (a late record, a clock off); a share above
`MAX_OUTSIDE_SHARE` fails the event, and how far the strays reach past the window's ends says
which offset the project's zone has.
"""

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl

MAX_OUTSIDE_SHARE = 0.01
_OFFSET_STEP_SECONDS = 15 * 60  # every zone's offset is a whole number of quarter hours


class TimezoneMismatchError(ValueError):
    """Too many records outside the requested days: the configured zone is not the project's."""


@dataclass(frozen=True)
class OutsideReach:
    """How far records outside a window lie from it: the most seconds before its start and
    after its end (0 when none)."""

    before_seconds: float = 0.0
    after_seconds: float = 0.0

    def widest(self, other: "OutsideReach") -> "OutsideReach":
        return OutsideReach(
            max(self.before_seconds, other.before_seconds),
            max(self.after_seconds, other.after_seconds),
        )


def outside_reach(event_time: pl.Series, window: tuple[datetime, datetime]) -> OutsideReach:
    """The reach of the local times outside `window` (start inclusive, end exclusive)."""
    start, end = window
    earliest = event_time.filter(event_time < start).min()
    latest = event_time.filter(event_time >= end).max()
    return OutsideReach(
        (start - earliest).total_seconds() if isinstance(earliest, datetime) else 0.0,
        (latest - end).total_seconds() + 1 if isinstance(latest, datetime) else 0.0,
    )


def zone_mismatch(
    event_name: str,
    days: tuple[date, date],
    received: int,
    outside: int,
    reach: OutsideReach,
    timezone: str,
) -> str | None:
    """What to tell the user of a window whose share of records outside its days is above
    the limit; None below it."""
    if not received or outside / received <= MAX_OUTSIDE_SHARE:
        return None
    first_day, last_day = days
    configured = ZoneInfo(timezone).utcoffset(datetime.combine(first_day, datetime.min.time()))
    assert configured is not None
    if reach.before_seconds >= reach.after_seconds:
        implied = configured + _whole_steps(reach.before_seconds)
        side = f"up to {_duration(reach.before_seconds)} before the first day began"
    else:
        implied = configured - _whole_steps(reach.after_seconds)
        side = f"up to {_duration(reach.after_seconds)} after the last day ended"
    return (
        f"{outside} of {received} records of event {event_name!r} ({first_day}..{last_day}) "
        f"lie outside the requested days in CLEVERTAP_TIMEZONE={timezone!r} "
        f"(UTC{_offset(configured)}): their ts put them {side}, as if the CleverTap project's "
        f"time zone were UTC{_offset(implied)}. CleverTap reads days in the project's own zone, "
        "so these records would never be loaded: set CLEVERTAP_TIMEZONE to the project's time "
        "zone (Settings > Project in the CleverTap dashboard)"
    )


def _whole_steps(seconds: float) -> timedelta:
    return timedelta(seconds=math.ceil(seconds / _OFFSET_STEP_SECONDS) * _OFFSET_STEP_SECONDS)


def _duration(seconds: float) -> str:
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _offset(offset: timedelta) -> str:
    minutes = round(offset.total_seconds() / 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"

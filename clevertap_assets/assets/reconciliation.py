"""Rows per day in an event table against CleverTap's own counts: the one comparison behind
the `row_count_matches_clevertap` check, whose verdicts `reconciliation_sensor` acts on.

Only full days are compared: today's count moves while events arrive. A full day can still
move too (a device that was offline sends late events), so a day that differs is counted
again after the load: a count that changed meanwhile marks the day as settling, told apart
from a gap, which is a difference CleverTap's count confirms.
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta

from clevertap_assets.days import days_between

RECONCILED_DAYS = 7
"""Full days compared per event: the last this many the run loaded (or that were loaded)."""

GAPS = "differences"
"""Check metadata: the days whose rows differ from a count CleverTap confirmed."""
SETTLING = "settling"
"""Check metadata: the days whose count changed while the check ran."""


@dataclass(frozen=True)
class DayCounts:
    warehouse: int
    clevertap: int


@dataclass(frozen=True)
class Comparison:
    """What one event's comparison found, by day."""

    days: list[date]
    gaps: dict[date, DayCounts]
    settling: dict[date, DayCounts]

    def metadata(self, today: date) -> dict[str, object]:
        return {
            "days_compared": _span(self.days),
            "today_not_compared": f"{today} (its count moves while events arrive)",
            GAPS: {day.isoformat(): asdict(counts) for day, counts in self.gaps.items()},
            SETTLING: {day.isoformat(): asdict(counts) for day, counts in self.settling.items()},
        }

    def description(self) -> str:
        said = [f"compared {_span(self.days)}"]
        if self.gaps:
            said.append(f"{len(self.gaps)} day(s) differ from CleverTap's count")
        if self.settling:
            said.append(
                f"{len(self.settling)} day(s) still settling: CleverTap's count changed "
                "during the check (late events); compared again next time"
            )
        return "; ".join(said)


def compared_days(
    today: date, history_days: int, loaded: Sequence[date], limit: int = RECONCILED_DAYS
) -> list[date]:
    """The last `limit` full days among those `loaded`, inside the history window: a day the
    run did not load is not the run's to judge, and today is never full."""
    window_start = today - timedelta(days=history_days - 1)
    full = sorted({day for day in loaded if window_start <= day < today})
    return full[-limit:]


def recent_full_days(today: date, limit: int = RECONCILED_DAYS) -> list[date]:
    return list(days_between(today - timedelta(days=limit), today - timedelta(days=1)))


def compare(
    days: Sequence[date],
    rows: Mapping[date, int],
    counted: Mapping[date, int],
    recounted: Mapping[date, int],
) -> Comparison:
    """`recounted` holds a second count of each day that differed at the first: a day whose
    rows match either count is in order, one whose count moved is settling, and one whose
    count held is a gap."""
    gaps, settling = {}, {}
    for day in days:
        if rows[day] == counted[day]:
            continue
        again = recounted[day]
        if rows[day] == again:
            continue
        if again == counted[day]:
            gaps[day] = DayCounts(rows[day], again)
        else:
            settling[day] = DayCounts(rows[day], again)
    return Comparison(list(days), gaps, settling)


def _span(days: Sequence[date]) -> str:
    if not days:
        return "no full day"
    return f"{days[0]}" if len(days) == 1 else f"{len(days)} days, {days[0]} to {days[-1]}"

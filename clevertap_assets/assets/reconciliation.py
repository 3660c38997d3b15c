"""Rows per day in an event table against CleverTap's own counts: the one comparison behind
both the `row_count_matches_clevertap` check and `reconciliation_sensor`."""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date

from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.source.client import CleverTapResource

RECONCILED_DAYS = 7


@dataclass(frozen=True)
class DayCounts:
    warehouse: int
    clevertap: int


def clevertap_counts(
    clevertap: CleverTapResource, event_days: Sequence[tuple[str, date]]
) -> dict[tuple[str, date], int]:
    """CleverTap's count of each (event, day), asked side by side, as many at once as the
    account's request slots allow: each count is a round trip of a second or so."""
    with ThreadPoolExecutor(clevertap.max_concurrent_requests) as counting:
        counts = counting.map(
            lambda pair: clevertap.count_events(pair[0], pair[1], pair[1]), event_days
        )
        return dict(zip(event_days, counts, strict=True))


def differing_days(
    clevertap: CleverTapResource,
    warehouse_stats: EventTableStats,
    schema: str,
    table: str,
    event_name: str,
    days: Sequence[date],
) -> dict[date, DayCounts]:
    """The days (ascending, non-empty) whose rows differ from CleverTap's count, with both.

    The days are counted side by side, as many at once as the account's request slots for
    the counts API allow: each count is a round trip of a second or so."""
    rows = warehouse_stats.daily_row_counts(schema, table, days[0], days[-1])
    with ThreadPoolExecutor(clevertap.max_concurrent_requests) as counting:
        counts = counting.map(lambda day: clevertap.count_events(event_name, day, day), days)
        expected = dict(zip(days, counts, strict=True))
    return {
        day: DayCounts(warehouse=rows[day], clevertap=expected[day])
        for day in days
        if expected[day] != rows[day]
    }

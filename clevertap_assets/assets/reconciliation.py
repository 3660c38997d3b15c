"""Rows per day in an event table against CleverTap's own counts: the one comparison behind
both the `row_count_matches_clevertap` check and `reconciliation_sensor`."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.source.client import CleverTapResource

RECONCILED_DAYS = 7


@dataclass(frozen=True)
class DayCounts:
    warehouse: int
    clevertap: int


def differing_days(
    clevertap: CleverTapResource,
    warehouse_stats: EventTableStats,
    schema: str,
    table: str,
    event_name: str,
    days: Sequence[date],
) -> dict[date, DayCounts]:
    """The days (ascending, non-empty) whose rows differ from CleverTap's count, with both."""
    rows = warehouse_stats.daily_row_counts(schema, table, days[0], days[-1])
    return {
        day: DayCounts(warehouse=rows[day], clevertap=expected)
        for day in days
        if (expected := clevertap.count_events(event_name, day, day)) != rows[day]
    }

"""Which days a reconciliation compares, and how it tells a settling day from a gap."""

from datetime import date, timedelta

from clevertap_assets.assets.reconciliation import DayCounts, compare, compared_days

TODAY = date(2026, 12, 7)


def days_before(*offsets: int) -> list[date]:
    return [TODAY - timedelta(days=offset) for offset in offsets]


def test_today_is_never_compared_even_when_the_run_loaded_it():
    assert compared_days(TODAY, 30, days_before(2, 1, 0)) == days_before(2, 1)


def test_a_run_of_today_alone_compares_nothing_rather_than_days_it_did_not_load():
    """A run started before midnight that loaded its today: the day it ran into is not its."""
    assert compared_days(TODAY, 30, [TODAY]) == []


def test_only_the_last_loaded_days_inside_the_history_window_are_compared():
    loaded = days_before(*range(40, 0, -1))
    assert compared_days(TODAY, 30, loaded) == days_before(7, 6, 5, 4, 3, 2, 1)
    assert compared_days(TODAY, 3, loaded) == days_before(2, 1)


def test_a_count_that_moved_is_settling_and_a_count_that_held_is_a_gap():
    settled, moving, gap, caught_up = days_before(4, 3, 2, 1)
    days = [settled, moving, gap, caught_up]
    rows = {settled: 10, moving: 10, gap: 10, caught_up: 12}
    counted = {settled: 10, moving: 11, gap: 11, caught_up: 11}
    again = {moving: 13, gap: 11, caught_up: 12}
    found = compare(days, rows, counted, again)
    assert found.gaps == {gap: DayCounts(warehouse=10, clevertap=11)}
    assert found.settling == {moving: DayCounts(warehouse=10, clevertap=13)}
    metadata = found.metadata(TODAY)
    assert metadata["days_compared"] == f"4 days, {settled} to {caught_up}"
    assert metadata["today_not_compared"] == f"{TODAY} (its count moves while events arrive)"
    assert "1 day(s) differ" in found.description()
    assert "1 day(s) still settling" in found.description()

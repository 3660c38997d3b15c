"""Daily partitions in the project's time zone: where they start, and that today is one."""

from datetime import date, timedelta

import pytest

from clevertap_assets.assets.partitions import daily_partitions
from clevertap_assets.days import day_ranges, days_between, local_today
from clevertap_assets_tests.harness import make_pipeline

TODAY = date(2026, 11, 27)


def first_key(settings, today: date) -> str:
    return daily_partitions(settings, today).get_first_partition_key()


def test_without_a_start_date_the_history_window_moves_with_today(tmp_path, emulator):
    settings = make_pipeline(tmp_path, emulator, history_days=30).settings
    assert first_key(settings, TODAY) == "2026-10-29"
    assert first_key(settings, TODAY + timedelta(days=3)) == "2026-11-01"


def test_todays_in_progress_day_is_the_last_partition(tmp_path, emulator):
    settings = make_pipeline(tmp_path, emulator).settings
    last = daily_partitions(settings).get_last_partition_key()
    assert last == local_today(settings.timezone).isoformat()


def test_a_start_date_keeps_every_day_since_addressable(tmp_path, emulator):
    settings = make_pipeline(tmp_path, emulator, start_date=date(2026, 1, 1)).settings
    assert first_key(settings, TODAY) == "2026-01-01"
    assert first_key(settings, TODAY + timedelta(days=90)) == "2026-01-01"


def test_days_between_is_inclusive_like_clevertaps_from_and_to():
    assert list(days_between(TODAY, TODAY)) == [TODAY]
    assert len(list(days_between(date(2026, 10, 29), TODAY))) == 30
    assert list(days_between(TODAY, TODAY - timedelta(days=1))) == []


@pytest.mark.parametrize("days,parts,lengths", [(29, 3, [10, 10, 9]), (2, 3, [1, 1]), (1, 3, [1])])
def test_day_ranges_cover_the_window_once_in_at_most_parts_ranges(days, parts, lengths):
    last = TODAY + timedelta(days=days - 1)
    ranges = day_ranges(TODAY, last, parts)
    assert [(end - start).days + 1 for start, end in ranges] == lengths
    covered = [day for start, end in ranges for day in days_between(start, end)]
    assert covered == list(days_between(TODAY, last))

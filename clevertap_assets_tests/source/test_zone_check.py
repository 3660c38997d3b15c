"""The time zone check's threshold and what its message says, from local times alone."""

from datetime import date, datetime

import polars as pl

from clevertap_assets.days import day_bounds
from clevertap_assets.source.zone_check import outside_reach, zone_mismatch

DAY = date(2024, 3, 1)
WINDOW = day_bounds(DAY, DAY)


def test_a_stray_record_or_two_in_a_hundred_is_no_mismatch_and_more_is() -> None:
    reach = outside_reach(pl.Series([datetime(2024, 2, 29, 23, 50)]), WINDOW)
    assert zone_mismatch("Charged", (DAY, DAY), 100, 1, reach, "UTC") is None
    message = zone_mismatch("Charged", (DAY, DAY), 100, 2, reach, "UTC")
    assert message is not None
    assert message.startswith(
        "2 of 100 records of event 'Charged' (2024-03-01..2024-03-01) lie outside the requested "
        "days in CLEVERTAP_TIMEZONE='UTC' (UTC+00:00): their ts put them up to 0h10m before the "
        "first day began, as if the CleverTap project's time zone were UTC+00:15."
    )
    assert message.endswith(
        "set CLEVERTAP_TIMEZONE to the project's time zone (Settings > "
        "Project in the CleverTap dashboard)"
    )


def test_records_after_the_window_imply_a_zone_behind_the_configured_one() -> None:
    times = pl.Series([datetime(2024, 3, 1, 12), datetime(2024, 3, 2, 4, 59, 59)])
    reach = outside_reach(times, WINDOW)
    message = zone_mismatch("Charged", (DAY, DAY), 2, 1, reach, "Europe/Berlin")
    assert message is not None
    assert "(UTC+01:00): their ts put them up to 5h00m after the last day ended" in message
    assert "as if the CleverTap project's time zone were UTC-04:00" in message

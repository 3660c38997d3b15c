"""The column map's cases, run alike on every destination (issue 25): colliding keys first
seen in another order by a load on a wiped instance, and by two overlapping loads.

`CT Source` is the emulator's own key; `@ct'\\source ✓` (its snake case reads the same, and
its quote, backslash and non-ASCII character test every destination's literals) appears from
today on, where it sorts first, so a run that names keys afresh today gives it the plain
column. Each destination's test loads through `colliding_pipeline` and asserts with
`assert_each_key_in_its_column` what it reads back from its warehouse.
"""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import date, timedelta
from pathlib import Path

from dagster import ExecuteInProcessResult

from clevertap_assets.days import local_today
from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.emulator.config import InFlightGate
from clevertap_assets_tests.harness import Pipeline, make_pipeline

AT_KEY = "@ct'\\source ✓"
AT_VALUE = "at"
PLAIN_COLUMN = "event_props__ct_source"
SOURCES = {"Mobile", "API", "Web"}
"""The emulator's `CT Source` values."""

Load = Callable[[Pipeline, date, date], ExecuteInProcessResult]
"""A headless load of some days on the destination under test, on a fresh (ephemeral)
Dagster instance each time."""


def colliding_pipeline(
    tmp_path: Path, make_emulator, gate: InFlightGate | None = None, **settings: object
) -> Pipeline:
    emulator = make_emulator(
        events=["Charged"],
        extra_event_props={AT_KEY: AT_VALUE},
        extra_event_props_from=local_today("UTC"),
        gate=gate,
    )
    return make_pipeline(tmp_path, emulator, events=["Charged"], **settings)


def load_then_load_on_a_wiped_instance(pipeline: Pipeline, load: Load) -> tuple[date, date]:
    """Two days with `CT Source` alone; then today, on a new instance, where `@ct_source`
    is seen first. The days loaded."""
    today = local_today(pipeline.settings.timezone)
    first = today - timedelta(days=2)
    assert load(pipeline, first, today - timedelta(days=1)).success
    assert load(pipeline, today, today).success
    return first, today


def overlapping_loads(pipeline: Pipeline, load: Load, gate: InFlightGate) -> tuple[date, date]:
    """Yesterday (`CT Source` alone) and today (`@ct_source` first) loaded at once, in two
    threads with their own instances and connections. The emulator's gate (count 2) holds
    each run's first request until both are reading, so both name the keys before either
    load claims a column. The days loaded."""
    today = local_today(pipeline.settings.timezone)
    days = (today - timedelta(days=1), today)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda day: load(pipeline, day, day), days))
    assert gate.filled
    assert [result.success for result in results] == [True, True]
    return days


class ClaimRendezvous:
    """Holds each load's claim (the statement, or BigQuery's script, that inserts into the
    state table) until the other load's claim is there too, or `seconds` pass, so the two
    claims overlap whatever the threads' timing. Loads that serialise their claims meet here
    in turn: the second is still waiting for the first's hold, so the first goes on after the
    wait, and the second finds the meeting over. Loads that did not would both be let go
    here, each claiming from the map as it was before either, and one column would get two
    owners."""

    def __init__(self, seconds: float = 5) -> None:
        self._barrier = threading.Barrier(2, timeout=seconds)

    def meet(self, sql: str) -> None:
        """Called with every statement a load sends; waits at a claim."""
        if " AS claim " in sql:
            with suppress(threading.BrokenBarrierError):
                self._barrier.wait()


def assert_each_key_in_its_column(
    held: dict[str, set[tuple[date, object]]], today: date
) -> tuple[str, str]:
    """`held` is each `event_props__ct_source*` column's distinct (day, value) pairs: one
    column holds `@ct_source`'s value on today and nothing before, another the `CT Source`
    values on every day. Those two columns' names, `CT Source`'s first."""
    (at_column,) = [name for name, pairs in held.items() if (today, AT_VALUE) in pairs]
    (source_column,) = [name for name in held if name != at_column]
    assert {(day == today, value) for day, value in held[at_column]} == {
        (False, None),
        (True, AT_VALUE),
    }
    assert {value for _, value in held[source_column]} <= SOURCES
    assert {day == today for day, _ in held[source_column]} == {False, True}
    return source_column, at_column


def assert_stored(stats: EventTableStats, schema: str, source: str, at: str) -> None:
    """The map the runs read (`column_keys` of the destination's stats resource) gives each of
    the two columns (as the loads name them, before a destination's case) its key path,
    every character of it kept."""
    stored = stats.column_keys(schema, "charged")
    assert stored[source] == ["event_props", "CT Source"]
    assert stored[at] == ["event_props", AT_KEY]

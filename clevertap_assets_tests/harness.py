"""A pipeline under test: settings, the emulator it reads, and headless loads of days.

Shared by the tests of every destination, so each asserts the same user-visible outcome
(rows per event and day equal the emulator's truth) against its own warehouse.
"""

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
from dagster import (
    AssetExecutionContext,
    DailyPartitionsDefinition,
    ExecuteInProcessResult,
    asset,
    materialize,
)

from clevertap_assets.batch.settings import SPOOL_DIR_ENV
from clevertap_assets.days import days_between, local_today
from clevertap_assets.destinations.registry import warehouse_for
from clevertap_assets.destinations.settings import Warehouse
from clevertap_assets.destinations.stats import DayLoad
from clevertap_assets.emulator import CleverTapEmulator
from clevertap_assets.headless import load_days
from clevertap_assets.settings import PipelineSettings, load_settings
from clevertap_assets.source.client import CleverTapResource

EVENTS = ("App Launched", "Product Viewed", "Charged")


def write_events_csv(path: Path, events: Sequence[str]) -> Path:
    quoted = "".join(f'"{name.replace(chr(34), chr(34) * 2)}",Custom\n' for name in events)
    path.write_text("Event Name,Event Type\n" + quoted, encoding="utf-8")
    return path


def load_command(*args: str) -> list[str]:
    """`clevertap-assets load ...`, the README's headless load, from this interpreter's venv."""
    return [str(Path(sys.executable).parent / "clevertap-assets"), "load", *args]


def fast_clevertap(emulator: CleverTapEmulator, **overrides: object) -> CleverTapResource:
    """The production resource with test-sized pauses, so retries cost milliseconds."""
    values = dict(
        account_id=emulator.config.account_id,
        passcode=emulator.config.passcode,
        api_url=emulator.url,
        backoff_seconds=0.01,
        max_backoff_seconds=0.05,
        throttle_wait_seconds=0.01,
        max_wait_seconds=5,
        timeout_seconds=5,
    )
    return CleverTapResource(**{**values, **overrides})


@dataclass
class Pipeline:
    settings: PipelineSettings
    emulator: CleverTapEmulator
    duckdb_path: str
    """Its DuckDB file, `DUCKDB_PATH` in the environment its processes get."""

    @property
    def warehouse(self) -> Warehouse:
        """The destination's settings as the definitions read them: from the environment,
        as a user sets them (`DUCKDB_PATH` by `make_pipeline`, the others by each test)."""
        return warehouse_for(self.settings)

    def load(self, first_day: date, last_day: date, **resources: object) -> ExecuteInProcessResult:
        return load_days(
            self.settings,
            first_day,
            last_day,
            resources={"clevertap": fast_clevertap(self.emulator), **resources},
        )

    def truth(self, event_name: str, first_day: date, last_day: date) -> dict[date, int]:
        return {
            day: self.emulator.true_count(event_name, day)
            for day in days_between(first_day, last_day)
        }


def recent_days(settings: PipelineSettings, count: int) -> tuple[date, date]:
    """The last `count` days of the history window, today included."""
    today = local_today(settings.timezone)
    return today - timedelta(days=count - 1), today


def make_pipeline(
    tmp_path: Path,
    emulator: CleverTapEmulator,
    events: Sequence[str] = EVENTS,
    **settings: object,
) -> Pipeline:
    csv = write_events_csv(tmp_path / "events.csv", events)
    values = {
        "events_csv": csv,
        "api_url": emulator.url,
        "timezone": emulator.config.timezone,
        "history_days": 7,
        **settings,
    }
    # The definitions read it as a user's variable; conftest restores it after the test.
    duckdb_path = os.environ["DUCKDB_PATH"] = str(tmp_path / "warehouse.duckdb")
    return Pipeline(load_settings(**values), emulator, duckdb_path)


def daily_rows(pipeline: Pipeline, table: str) -> dict[date, int]:
    """Rows per day of an event table in the pipeline's DuckDB file (opened read-only)."""
    with duckdb.connect(pipeline.duckdb_path, read_only=True) as connection:
        rows = connection.execute(
            f'SELECT CAST(event_time AS DATE), count(*) FROM "clevertap"."{table}" GROUP BY 1'
        ).fetchall()
    return dict(rows)


def rows_loaded_between(
    loads: Mapping[date, DayLoad], started: datetime, finished: datetime
) -> dict[date, int]:
    """The rows of the days whose newest load fell between two instants: comparing a naive
    `loaded_at` with them fails, as a time zone aware one is the contract."""
    return {day: load.rows for day, load in loads.items() if started <= load.loaded_at <= finished}


def partition_metadata(result: ExecuteInProcessResult, event_slug: str) -> dict[date, dict]:
    """Each day's materialization metadata of one event (the last part of its key)."""
    return {
        date.fromisoformat(event.partition): {
            key: value.value for key, value in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
        if event.asset_key.path[-1] == event_slug
    }


def assert_partitions_describe_their_days(
    result: ExecuteInProcessResult, event_slug: str, truth: dict[date, int], table_name: str
) -> None:
    """Each day's materialization has that day's rows; the standard keys name the table and
    its rows after the load (every day of the range loaded here)."""
    by_day = partition_metadata(result, event_slug)
    assert set(by_day) == set(truth)
    assert {day: m["dagster/partition_row_count"] for day, m in by_day.items()} == truth
    assert {m["dagster/row_count"] for m in by_day.values()} == {sum(truth.values())}
    assert {m["dagster/table_name"] for m in by_day.values()} == {table_name}


def assert_frame_outputs_replace_their_partition(
    resources: dict[str, object], metadata: dict[str, str], read_back: Callable[[], list[tuple]]
) -> None:
    """A polars asset on an event IO manager replaces its window as event batches do: a rerun
    does not duplicate, another day stays, a new column is added. `read_back` returns
    (day, rows, non-null currencies) per day of the written table."""
    days = DailyPartitionsDefinition(start_date="2024-01-01")

    @asset(partitions_def=days, io_manager_key="io_manager", metadata=metadata)
    def orders(context: AssetExecutionContext) -> pl.DataFrame:
        start = context.partition_time_window.start.replace(tzinfo=None)
        frame = pl.DataFrame({"event_time": [start, start], "amount": [1, 2]})
        if context.partition_key == "2024-01-03":
            frame = frame.with_columns(currency=pl.lit("EUR"))
        return frame

    for day in ("2024-01-02", "2024-01-02", "2024-01-03"):
        assert materialize([orders], partition_key=day, resources=resources).success
    assert read_back() == [(date(2024, 1, 2), 2, 0), (date(2024, 1, 3), 2, 2)]


def pipeline_env(pipeline: Pipeline, home: Path, tmp_path: Path) -> dict[str, str]:
    """The environment a Dagster process (CLI, run worker, daemon) of this pipeline gets."""
    settings = pipeline.settings
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CLEVERTAP_ACCOUNT_ID": pipeline.emulator.config.account_id,
        "CLEVERTAP_PASSCODE": pipeline.emulator.config.passcode,
        "CLEVERTAP_API_URL": pipeline.emulator.url,
        "CLEVERTAP_EVENTS_CSV": str(settings.events_csv),
        "CLEVERTAP_TIMEZONE": settings.timezone,
        "CLEVERTAP_HISTORY_DAYS": str(settings.history_days),
        "DUCKDB_PATH": pipeline.duckdb_path,
        "WEBHOOK_INBOX_PATH": str(tmp_path / "inbox.sqlite3"),
        SPOOL_DIR_ENV: str(tmp_path / "spools"),
    }

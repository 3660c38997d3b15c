"""The spool: pages in any order and of any types become one deduplicated, consistently typed
batch file (real Parquet files and a real DuckDB)."""

import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import polars as pl

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import SPOOL_DIR_ENV, EventSpool, remove_stale_spools
from clevertap_assets.source.normalise import NormaliseOptions, normalise_page
from clevertap_assets_tests.harness import make_pipeline, recent_days

OPTIONS = NormaliseOptions(
    event_name="Charged",
    timezone="UTC",
    auto_mapping=True,
    max_record_bytes=1_000_000,
    max_row_bytes=1_000_000,
)


def record(day: int, minute: int, **event_props: object) -> dict:
    return {
        "ts": int(f"202610{day:02d}10{minute:02d}00"),
        "profile": {"identity": f"user-{day}-{minute}"},
        "event_props": event_props,
    }


def spooled(*pages: list[dict]) -> pl.DataFrame:
    with EventSpool(event_name="Charged") as spool:
        for page in pages:
            spool.add(normalise_page(page, OPTIONS), len(page))
        batch = spool.finish(loaded_at=datetime.now(UTC))
    frame = pl.read_parquet(batch.path)
    batch.discard()
    return frame.sort("ts")


def test_a_type_that_drifts_between_pages_is_kept_as_text():
    frame = spooled(
        [record(1, 1, Fare=5149, Paid=True)],
        [record(1, 2, Fare=True, Paid="$D_1793584340")],
        [record(1, 3, Fare="free", Paid=1.5)],
    )
    assert frame["event_props__fare"].to_list() == ["5149", "true", "free"]
    assert frame["event_props__paid"].to_list() == ["true", "2026-11-02 01:52:20", "1.5"]


def test_numbers_meet_in_double_and_a_column_missing_from_a_page_is_null():
    frame = spooled([record(1, 1, Amount=10)], [record(1, 2, Amount=2.5, Coupon="X")])
    assert frame.schema["event_props__amount"] == pl.Float64
    assert frame["event_props__amount"].to_list() == [10.0, 2.5]
    assert frame["event_props__coupon"].to_list() == [None, "X"]


def test_pages_that_each_touch_every_day_dedupe_to_one_copy_per_record():
    days = range(1, 11)
    page = [record(day, minute, Amount=minute) for day in days for minute in range(3)]
    reordered = list(reversed(page))
    frame = spooled(page, reordered, page[:7])
    assert frame.height == len(page)
    assert frame["_record_id"].n_unique() == len(page)
    per_day = frame.group_by(pl.col("event_time").dt.date()).len().sort("event_time")
    assert dict(per_day.iter_rows()) == {date(2026, 10, day): 3 for day in days}


def test_columns_keep_the_kinds_destinations_map():
    with EventSpool(event_name="Charged") as spool:
        spool.add(normalise_page([record(1, 1, Amount=1, Items=[{"a": 1}])], OPTIONS), 1)
        batch = spool.finish(loaded_at=datetime.now(UTC))
    columns = batch.columns()
    batch.discard()
    assert columns["ts"] == Kind.BIGINT
    assert columns["event_time"] == Kind.TIMESTAMP
    assert columns["event_time_utc"] == columns["_loaded_at"] == Kind.TIMESTAMPTZ
    assert columns["event_props__amount"] == Kind.BIGINT
    assert columns["event_props__items"] == Kind.JSON


def test_a_list_in_one_page_and_text_in_another_is_text_not_json():
    with EventSpool(event_name="Charged") as spool:
        for minute, items in enumerate(([{"a": 1}], "none")):
            spool.add(normalise_page([record(1, minute, Items=items)], OPTIONS), 1)
        batch = spool.finish(loaded_at=datetime.now(UTC))
    columns = batch.columns()
    values = pl.read_parquet(batch.path).sort("ts")["event_props__items"].to_list()
    batch.discard()
    assert columns["event_props__items"] == Kind.TEXT
    assert values == ['[{"a":1}]', "none"]


def test_a_load_that_fails_before_the_io_manager_writes_leaves_no_folder(
    tmp_path, emulator, monkeypatch
):
    """The warehouse refuses the load before our type handler runs (Dagster's delete of the
    window fails on a table of that name made by someone else): the spool was complete and
    handed over, and its folder still goes with the failed step."""
    monkeypatch.setenv(SPOOL_DIR_ENV, str(tmp_path / "spools"))
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    with duckdb.connect(pipeline.settings.duckdb_path) as connection:
        connection.execute("CREATE SCHEMA clevertap; CREATE TABLE clevertap.charged (x INTEGER)")
    first, last = recent_days(pipeline.settings, 2)
    result = pipeline.load(first, last)
    assert not result.success
    assert "event_time" in str(result.get_step_failure_events()[0].event_specific_data.error)
    assert list((tmp_path / "spools").glob("clevertap_*")) == []


def test_folders_of_dead_processes_go_and_live_ones_stay(tmp_path, monkeypatch):
    """A real process makes a spool and is killed; the next spool removes its folder only."""
    monkeypatch.setenv(SPOOL_DIR_ENV, str(tmp_path))
    script = "from clevertap_assets.batch.spool import EventSpool; print(EventSpool('x').directory)"
    dead = Path(
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ},
        ).stdout.strip()
    )
    assert dead.exists()
    alive = EventSpool("y").directory  # the next spool on the host
    assert alive.exists() and not dead.exists()
    assert remove_stale_spools(tmp_path) == []
    assert alive.exists()

"""DuckDB's stats resource, the one the event checks read: its counts against known tables;
DataFrame inputs and outputs on the event IO manager.

The event load path itself is covered end to end in `assets/test_events` (DuckDB is the
default).
"""

from datetime import UTC, date, datetime, timedelta

import duckdb
import polars as pl
import pytest
from dagster import AssetIn, AssetKey, asset, materialize

from clevertap_assets.assets.partitions import daily_partitions
from clevertap_assets.definitions import build_definitions
from clevertap_assets.destinations.column_map import COLUMN_MAP_TABLE
from clevertap_assets.destinations.duckdb.client import CONNECTION_CONFIG
from clevertap_assets.destinations.duckdb.io_manager import DuckDBEventIOManager
from clevertap_assets.destinations.duckdb.stats import DuckDBEventStats
from clevertap_assets_tests.harness import (
    assert_frame_outputs_replace_their_partition,
    daily_rows,
    make_pipeline,
    recent_days,
    rows_loaded_between,
)


def test_duplicate_count_sees_copies_and_a_rerun_removes_them(tmp_path, make_emulator):
    pipeline = make_pipeline(tmp_path, make_emulator(duplicate_share=0.3), events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert pipeline.load(first, last).success
    stats = DuckDBEventStats(database=pipeline.duckdb_path)
    assert stats.duplicate_record_ids("clevertap", "charged", first, last) == 0

    with duckdb.connect(pipeline.duckdb_path, config=CONNECTION_CONFIG) as connection:
        connection.execute(
            "INSERT INTO clevertap.charged SELECT * FROM clevertap.charged "
            "WHERE CAST(event_time AS DATE) = ? LIMIT 3",
            [last],
        )
        connection.execute(
            "INSERT INTO clevertap.charged SELECT * FROM clevertap.charged "
            "WHERE CAST(event_time AS DATE) = ? LIMIT 1",
            [last],
        )
    assert stats.duplicate_record_ids("clevertap", "charged", first, last) == 4
    truth = pipeline.truth("Charged", first, last)
    assert stats.daily_row_counts("clevertap", "charged", first, last) == {
        first: truth[first],
        last: truth[last] + 4,
    }

    started = datetime.now(UTC)
    assert pipeline.load(last, last).success
    finished = datetime.now(UTC)
    assert stats.duplicate_record_ids("clevertap", "charged", first, last) == 0
    assert stats.daily_row_counts("clevertap", "charged", first, last) == truth
    loads = stats.daily_loads("clevertap", "charged", first, last)
    assert {day: load.rows for day, load in loads.items()} == truth
    assert rows_loaded_between(loads, started, finished) == {last: truth[last]}  # its newest


def test_the_duplicate_check_reads_only_the_days_it_is_given(tmp_path, make_emulator):
    """Its cost follows the run's days, not the table: copies on another day are not read
    (they were that day's run's to find)."""
    pipeline = make_pipeline(tmp_path, make_emulator(), events=["Charged"])
    first, last = recent_days(pipeline.settings, 3)
    assert pipeline.load(first, last).success
    with duckdb.connect(pipeline.duckdb_path, config=CONNECTION_CONFIG) as connection:
        connection.execute(
            "INSERT INTO clevertap.charged SELECT * FROM clevertap.charged "
            "WHERE CAST(event_time AS DATE) = ? LIMIT 2",
            [first],
        )
    stats = DuckDBEventStats(database=pipeline.duckdb_path)
    assert stats.duplicate_record_ids("clevertap", "charged", first + timedelta(days=1), last) == 0
    assert stats.duplicate_record_ids("clevertap", "charged", first, first) == 2


def test_a_missing_table_has_no_rows_and_no_duplicates(tmp_path):
    stats = DuckDBEventStats(database=str(tmp_path / "empty.duckdb"))
    day = date(2026, 1, 1)
    assert stats.daily_row_counts("clevertap", "charged", day, day) == {day: 0}
    assert stats.daily_loads("clevertap", "charged", day, day) == {}
    assert stats.duplicate_record_ids("clevertap", "charged", day, day) == 0


@pytest.mark.slow
def test_a_wide_event_loads_where_the_memory_cap_alone_would_fail(tmp_path, make_emulator):
    """300 properties: DuckDB's insert needs more than the 128 MB cap for that width."""
    wide = {f"Property {index}": f"value {index}" for index in range(300)}
    emulator = make_emulator(records_per_day=10_000, duplicate_share=0.0, extra_event_props=wide)
    pipeline = make_pipeline(tmp_path, emulator, events=["Product Viewed"])
    first, last = recent_days(pipeline.settings, 2)
    result = pipeline.load(first, last)
    assert result.success
    stats = DuckDBEventStats(database=pipeline.duckdb_path)
    counts = stats.daily_row_counts("clevertap", "product_viewed", first, last)
    assert counts == pipeline.truth("Product Viewed", first, last)
    with duckdb.connect(pipeline.duckdb_path, config=CONNECTION_CONFIG) as connection:
        (limit,) = connection.execute("SELECT current_setting('memory_limit')").fetchone()
    assert limit == "61.0 MiB"  # 64 MB: the wide insert's cap was not left behind


def test_a_downstream_asset_reads_a_day_of_a_digit_led_table_as_a_frame(tmp_path, make_emulator):
    pipeline = make_pipeline(tmp_path, make_emulator(), events=["Charged"], table_prefix="2024")
    first, last = recent_days(pipeline.settings, 2)
    assert pipeline.load(first, last).success
    definitions = build_definitions(pipeline.settings)
    charged = AssetKey(["clevertap", "charged"])

    @asset(partitions_def=daily_partitions(pipeline.settings), ins={"charged": AssetIn(charged)})
    def charged_per_currency(charged: pl.DataFrame) -> None:
        assert charged.height == pipeline.truth("Charged", first, first)[first]
        assert charged["event_time"].dt.date().unique().to_list() == [first]
        assert "event_props__currency" in charged.columns

    result = materialize(
        [*definitions.assets, charged_per_currency],
        selection=[charged_per_currency.key],
        partition_key=first.isoformat(),
        resources=dict(definitions.resources),
    )
    assert result.success
    (materialization,) = [
        e
        for e in pipeline.load(last, last).get_asset_materialization_events()
        if e.asset_key == charged
    ]
    query = materialization.materialization.metadata["Query"].value
    assert 'FROM "clevertap"."2024_charged" WHERE' in query


def test_a_table_prefix_changed_only_in_case_keeps_loading_the_same_table(tmp_path, make_emulator):
    """DuckDB matches identifiers without regard to case, quoted ones too
    (https://duckdb.org/docs/stable/sql/dialect/keywords_and_identifiers.html): after
    TABLE_PREFIX=ho becomes HO, `HO_charged` is the table `ho_charged`, so the next load
    replaces its days there, and the checks count that table (the whole history: 3 days)."""
    emulator = make_emulator(duplicate_share=0.2)
    lower = make_pipeline(tmp_path, emulator, events=["Charged"], table_prefix="ho", history_days=3)
    first, last = recent_days(lower.settings, 3)
    assert lower.load(first, last - timedelta(days=1)).success

    upper = make_pipeline(tmp_path, emulator, events=["Charged"], table_prefix="HO", history_days=3)
    result = upper.load(first + timedelta(days=1), last)
    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "row_count_matches_clevertap": True,
        "no_duplicate_record_ids": True,
    }
    with duckdb.connect(upper.duckdb_path, read_only=True) as connection:
        tables = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'clevertap'"
        ).fetchall()
    assert set(tables) == {("ho_charged",), (COLUMN_MAP_TABLE,)}
    assert daily_rows(upper, "HO_charged") == upper.truth("Charged", first, last)


def test_dataframe_outputs_replace_their_partition_and_add_columns(tmp_path):
    """The shared window replacement, for a polars output."""
    database = str(tmp_path / "frames.duckdb")

    def read_back() -> list[tuple]:
        with duckdb.connect(database, read_only=True) as connection:
            return connection.execute(
                "SELECT CAST(event_time AS DATE), count(*), count(currency) "
                'FROM "reports"."orders" GROUP BY 1 ORDER BY 1'
            ).fetchall()

    assert_frame_outputs_replace_their_partition(
        {
            "io_manager": DuckDBEventIOManager(
                database=database, connection_config=CONNECTION_CONFIG
            )
        },
        {"schema": "reports", "table": "orders", "partition_expr": "event_time"},
        read_back,
    )


@pytest.mark.slow
def test_a_60_mb_record_loads_where_the_memory_cap_alone_would_fail(tmp_path, make_emulator):
    """One record a day with a 60 MB property (the README accepts up to 128 MiB): every
    day loads its truth, the large value whole, and a connection with the 64 MB cap opens the
    file after the load (no WAL of large values left to replay)."""
    pipeline = make_pipeline(tmp_path, make_emulator(), events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    size = 60 * 1024 * 1024
    pipeline.emulator.set_data(oversize_records={("Charged", day): size for day in (first, last)})
    result = pipeline.load(first, last)
    assert result.success
    stats = DuckDBEventStats(database=pipeline.duckdb_path)
    assert stats.daily_row_counts("clevertap", "charged", first, last) == pipeline.truth(
        "Charged", first, last
    )
    with duckdb.connect(pipeline.duckdb_path, read_only=True) as connection:
        lengths = connection.execute(
            'SELECT length(event_props__large_blob) FROM "clevertap"."charged" '
            "WHERE event_props__large_blob IS NOT NULL"
        ).fetchall()
    assert lengths == [(size,), (size,)]
    with duckdb.connect(pipeline.duckdb_path, config=CONNECTION_CONFIG) as connection:
        (limit,) = connection.execute("SELECT current_setting('memory_limit')").fetchone()
    assert limit == "61.0 MiB"

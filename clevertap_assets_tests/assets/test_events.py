"""Event assets end to end: the emulator over HTTP, the real asset code, a DuckDB file."""

import os
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from datetime import date, timedelta

import duckdb
import orjson
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, instance_for_test, materialize

from clevertap_assets.assets import refusals
from clevertap_assets.assets.events import build_event_assets
from clevertap_assets.assets.pipeline_events import pipeline_facts
from clevertap_assets.batch.settings import SPOOL_DIR_ENV
from clevertap_assets.days import local_today
from clevertap_assets.definitions import build_definitions
from clevertap_assets.destinations.column_map import COLUMN_MAP_TABLE
from clevertap_assets.headless import load_days
from clevertap_assets.keys import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from clevertap_assets.naming import event_slugs
from clevertap_assets_tests.harness import (
    EVENTS,
    daily_rows,
    fast_clevertap,
    make_pipeline,
    recent_days,
)


def query(pipeline, sql: str) -> list[tuple]:
    with duckdb.connect(pipeline.duckdb_path, read_only=True) as connection:
        return connection.execute(sql).fetchall()


def columns(pipeline, table: str) -> dict[str, str]:
    return dict(
        query(
            pipeline,
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_name = '{table}'",
        )
    )


def materialization_metadata(result, key: AssetKey) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key][:1]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_three_days_of_three_events_equal_the_truth_despite_faults(tmp_path, make_emulator):
    emulator = make_emulator(
        duplicate_share=0.2,
        server_error_every=7,
        drop_every=11,
        page_in_progress=True,
        records_per_day=300,
    )
    pipeline = make_pipeline(tmp_path, emulator)
    first, last = recent_days(pipeline.settings, 3)
    result = pipeline.load(first, last)
    assert result.success
    for event, table in zip(EVENTS, ("app_launched", "product_viewed", "charged"), strict=True):
        assert daily_rows(pipeline, table) == pipeline.truth(event, first, last)
    metadata = materialization_metadata(result, AssetKey(["clevertap", "charged"]))
    assert metadata["window_duplicates_dropped"] > 0
    assert metadata["api_retries"] > 0
    assert metadata["window_rows_written"] == sum(pipeline.truth("Charged", first, last).values())
    assert metadata["table"] == "charged"


def test_each_partition_of_a_range_run_describes_its_own_day(tmp_path, make_emulator):
    """A single-run backfill is one Output for many days: each day's materialization still
    carries that day's rows and dropped copies, and the window's totals stay as `window_*`."""
    emulator = make_emulator(duplicate_share=0.3, records_per_day=60)
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    first, last = recent_days(pipeline.settings, 4)
    result = pipeline.load(first, last)
    assert result.success
    truth = pipeline.truth("Charged", first, last)
    by_day = {
        date.fromisoformat(e.partition): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }
    assert {day: m["rows_written"] for day, m in by_day.items()} == truth
    assert {day: m["dagster/partition_row_count"] for day, m in by_day.items()} == truth
    assert len({m["rows_written"] for m in by_day.values()}) > 1  # not one flat line
    assert {m["records_skipped"] for m in by_day.values()} == {0}
    copies = {day: m["duplicates_dropped"] for day, m in by_day.items()}
    window = by_day[first]
    assert sum(copies.values()) == window["window_duplicates_dropped"] > 0
    assert window["window_rows_written"] == sum(truth.values())
    assert window["dagster/row_count"] == sum(truth.values())
    assert window["dagster/table_name"].endswith("warehouse.duckdb.clevertap.charged")
    columns = {column.name for column in window["dagster/column_schema"].columns}
    assert {"_record_id", "event_time", "event_props__amount"} <= columns
    # The preview fits the UI: each day's row, then a few rows' time and event properties,
    # every line short enough not to wrap (a frame of all columns did).
    preview = window["preview"]
    for day, rows in truth.items():
        assert f"| {day} | {rows} | {copies[day]} | 0 |" in preview
    assert "| event_time | amount |" in preview
    assert max(len(line) for line in preview.splitlines()) <= 120


def test_each_days_own_figures_lead_its_stored_metadata(tmp_path, make_emulator):
    """In the order the UI lists a partition's metadata (the stored materialization's): the
    day's own figures, then the run's and the table's totals, then the preview and maps."""
    emulator = make_emulator(duplicate_share=0.3)
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    charged = AssetKey(["clevertap", "charged"])
    with instance_for_test() as instance:
        clevertap = fast_clevertap(emulator)
        assert load_days(
            pipeline.settings, first, last, {"clevertap": clevertap}, instance=instance
        ).success
        records_filter = AssetRecordsFilter(asset_key=charged, asset_partitions=[first.isoformat()])
        (record,) = instance.fetch_materializations(records_filter, limit=1).records
    metadata = record.asset_materialization.metadata
    keys = list(metadata)
    assert keys[:4] == [
        "rows_written",
        "duplicates_dropped",
        "records_skipped",
        "dagster/partition_row_count",
    ]
    rows = pipeline.truth("Charged", first, first)[first]
    assert metadata["rows_written"].value == metadata["dagster/partition_row_count"].value == rows
    assert metadata["window_rows_written"].value > rows  # the run's two days
    assert keys.index("window_rows_written") < keys.index("dagster/row_count")
    assert keys[-3:] == ["preview", "dagster/column_schema", "column_keys"]


_RUN_IN_ITS_OWN_PROCESS = textwrap.dedent(
    """
    import os
    import sys
    from datetime import date

    from dagster import DagsterInstance

    from clevertap_assets.headless import load_days
    from clevertap_assets.settings import load_settings
    from clevertap_assets.source.client import CleverTapResource

    url, account, passcode, csv, duckdb_path, timezone, first, last = sys.argv[1:]
    os.environ["DUCKDB_PATH"] = duckdb_path
    settings = load_settings(events_csv=csv, api_url=url, timezone=timezone, history_days=7)
    clevertap = CleverTapResource(account_id=account, passcode=passcode, api_url=url, batch_size=40)
    print("ready", flush=True)
    sys.stdin.readline()  # every run starts reading together
    with DagsterInstance.get() as instance:
        result = load_days(
            settings,
            date.fromisoformat(first),
            date.fromisoformat(last),
            {"clevertap": clevertap},
            instance=instance,
        )
    sys.exit(0 if result.success else 1)
    """
)


@pytest.mark.topology
def test_runs_in_separate_pid_namespaces_with_separate_disks_read_an_account_three_at_a_time(
    tmp_path, make_emulator
):
    """Three headless runs of three events at once, each in its own PID namespace
    (`unshare --pid --fork --mount-proc`, as containers) with its own spool and temporary
    folders (as pods' disks), the Dagster instance their only shared state: the emulator,
    which refuses nothing itself here so that an excess would show rather than be retried
    away, never holds more than CleverTap's three requests, and every warehouse equals the
    truth once per record. The instance's pool holds the account for one reader at a time."""
    events = list(EVENTS)
    emulator = make_emulator(
        events=events, max_concurrent=None, delay_seconds=0.05, records_per_day=200
    )  # 40 records a page: each event's window is some fifteen requests, so the runs overlap
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "concurrency:\n  pools:\n    default_limit: 1\n    granularity: run\n"
        "telemetry:\n  enabled: false\n"
    )
    with DagsterInstance.from_config(str(home)) as instance:
        instance.upgrade()  # once, before several processes open the SQLite files at once
    pipelines, runs = [], []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        pipeline = make_pipeline(tmp_path / name, emulator, events=events)
        first, last = recent_days(pipeline.settings, 6)
        config = emulator.config
        environment = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            SPOOL_DIR_ENV: str(tmp_path / name / "spool"),
            "TMPDIR": str(tmp_path / name),
        }
        runs.append(
            subprocess.Popen(
                [
                    "unshare", "--pid", "--fork", "--mount-proc",
                    sys.executable, "-c", _RUN_IN_ITS_OWN_PROCESS,
                    emulator.url, config.account_id, config.passcode,
                    str(pipeline.settings.events_csv), pipeline.duckdb_path,
                    config.timezone, first.isoformat(), last.isoformat(),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=environment,
            )
        )  # fmt: skip
        pipelines.append(pipeline)
    assert [run.stdout.readline() for run in runs] == ["ready\n"] * 3
    for run in runs:
        run.stdin.write("go\n")
        run.stdin.flush()
    assert [run.wait(timeout=600) for run in runs] == [0, 0, 0]
    assert emulator.stats.requests["open"] == 3 * len(events)  # one cursor per event and run
    assert emulator.stats.max_in_flight == 3
    assert emulator.stats.rate_limited == 0
    for pipeline in pipelines:
        for event in events:
            table = pipeline.settings.event_slugs[event]
            assert daily_rows(pipeline, table) == pipeline.truth(event, first, last)
            (dupes,) = query(
                pipeline, f'SELECT count(*) - count(DISTINCT _record_id) FROM "clevertap"."{table}"'
            )[0]
            assert dupes == 0


def test_reruns_and_overlapping_backfills_keep_each_record_once(tmp_path, make_emulator):
    pipeline = make_pipeline(tmp_path, make_emulator(duplicate_share=0.3))
    first, last = recent_days(pipeline.settings, 4)
    assert pipeline.load(first, last - timedelta(days=1)).success
    assert pipeline.load(first + timedelta(days=1), last).success
    assert pipeline.load(first, last).success
    for event, table in zip(EVENTS, ("app_launched", "product_viewed", "charged"), strict=True):
        assert daily_rows(pipeline, table) == pipeline.truth(event, first, last)
        (dupes,) = query(
            pipeline, f'SELECT count(*) - count(DISTINCT _record_id) FROM "clevertap"."{table}"'
        )[0]
        assert dupes == 0


def test_a_failed_run_leaves_the_loaded_days_as_they_were(tmp_path, make_emulator):
    emulator = make_emulator()
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert pipeline.load(first, last).success
    before = query(pipeline, 'SELECT _record_id FROM "clevertap"."charged" ORDER BY 1')
    emulator.add_records("Charged", last, 5)
    emulator.set_faults(server_error_every=1)
    assert not pipeline.load(first, last).success
    assert query(pipeline, 'SELECT _record_id FROM "clevertap"."charged" ORDER BY 1') == before


def test_table_prefix_and_hostile_event_names_get_their_own_quoted_tables(tmp_path, make_emulator):
    hostile = 'x"; drop table y; --'
    events = ["App Launched", hostile]
    pipeline = make_pipeline(
        tmp_path, make_emulator(events=events), events=events, table_prefix="ct"
    )
    first, last = recent_days(pipeline.settings, 1)
    assert pipeline.load(first, last).success
    tables = {
        name for (name,) in query(pipeline, "SELECT table_name FROM information_schema.tables")
    }
    assert tables == {"ct_app_launched", "ct_x_drop_table_y", COLUMN_MAP_TABLE}
    assert daily_rows(pipeline, "ct_x_drop_table_y") == pipeline.truth(hostile, first, last)
    (name,) = query(pipeline, 'SELECT DISTINCT event_name FROM "clevertap"."ct_x_drop_table_y"')[0]
    assert name == hostile


def test_each_clevertap_account_exports_in_its_own_pool(tmp_path, make_emulator):
    """CleverTap's limit of 3 exports is per account: the pool is the account's, and never
    carries the passcode."""
    emulator = make_emulator()
    pipeline = make_pipeline(tmp_path, emulator, account_id="W9R-486-4W5Z")
    reader = build_event_assets(pipeline_facts(pipeline.settings))
    pools = {reader.op.pool}
    assert pools == {"clevertap_api/W9R-486-4W5Z"}
    assert not any(emulator.config.passcode in pool for pool in pools)


def test_event_names_in_any_script_and_alike_in_case_each_load_into_their_own_table(
    tmp_path, make_emulator
):
    """Names of in1/sg1/mec1 projects, and two names differing only in case: readable,
    unique tables, the same whatever else the CSV holds, each equal to the emulator's truth."""
    events = ["Charged", "charged", "購入", "खरीदारी", "شراء", "Ünïcødé Évènt ✓", "\u200b"]
    pipeline = make_pipeline(tmp_path, make_emulator(events=events), events=events)
    slugs = pipeline.settings.event_slugs
    assert slugs["Charged"] == "charged"
    assert [slugs[n].rsplit("_", 1)[0] for n in events[1:]] == [
        "charged",
        "gouru",
        "khridari",
        "shr",
        "unicode_event_v",
        "event",
    ]
    assert len(set(slugs.values())) == len(events)
    assert event_slugs(["購入", "Charged"])["購入"] == slugs["購入"]  # order, company: no matter
    first, last = recent_days(pipeline.settings, 2)
    assert pipeline.load(first, last).success
    for name in events:
        assert daily_rows(pipeline, slugs[name]) == pipeline.truth(name, first, last)


def test_new_property_adds_a_column_and_drift_widens_it(tmp_path, make_emulator):
    pipeline = make_pipeline(tmp_path, make_emulator(), events=["Product Viewed"])
    first, last = recent_days(pipeline.settings, 2)
    assert pipeline.load(first, first).success
    assert "event_props__coupon" not in columns(pipeline, "product_viewed")

    # The same project later: a new property from `last` on, then its type drifts.
    with_coupon = make_emulator(extra_event_props={"Coupon": 10}, extra_event_props_from=last)
    assert replace(pipeline, emulator=with_coupon).load(last, last).success
    assert columns(pipeline, "product_viewed")["event_props__coupon"] == "BIGINT"
    drifted = make_emulator(extra_event_props={"Coupon": "SPRING10"}, extra_event_props_from=first)
    assert replace(pipeline, emulator=drifted).load(first, first).success

    assert columns(pipeline, "product_viewed")["event_props__coupon"] == "VARCHAR"
    values = query(
        pipeline,
        'SELECT DISTINCT event_props__coupon FROM "clevertap"."product_viewed" ORDER BY 1',
    )
    assert values == [("10",), ("SPRING10",)]
    assert daily_rows(pipeline, "product_viewed") == {
        first: drifted.true_count("Product Viewed", first),
        last: with_coupon.true_count("Product Viewed", last),
    }


def test_json_mode_keeps_sections_as_json_and_the_schema_fixed(tmp_path, make_emulator):
    pipeline = make_pipeline(tmp_path, make_emulator(), events=["Charged"], auto_mapping=False)
    first, last = recent_days(pipeline.settings, 2)
    assert pipeline.load(first, last).success
    assert columns(pipeline, "charged") == {
        "_record_id": "VARCHAR",
        "event_name": "VARCHAR",
        "ts": "BIGINT",
        "event_time": "TIMESTAMP",
        "event_time_utc": "TIMESTAMP WITH TIME ZONE",
        "profile": "JSON",
        "event_props": "JSON",
        "session_props": "JSON",
        "_loaded_at": "TIMESTAMP WITH TIME ZONE",
    }
    assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", first, last)
    (items,) = query(pipeline, 'SELECT event_props FROM "clevertap"."charged" LIMIT 1')[0]
    assert isinstance(orjson.loads(items)["Items"], list)


@pytest.mark.parametrize(
    ("limits", "first_size", "last_size"),
    [
        ({"max_record_bytes": 200_000, "max_row_bytes": 100_000}, 250_000, 150_000),
        # The default limits, 128 MiB per record and 100 MiB per row, at full size.
        ({}, 129 * 1024 * 1024, 101 * 1024 * 1024),
    ],
    ids=["configured-limits", "default-limits"],
)
def test_oversize_records_and_rows_are_skipped_and_counted(
    tmp_path, make_emulator, limits, first_size, last_size
):
    last = local_today("UTC")
    first = last - timedelta(days=1)
    oversize = {("Charged", first): first_size, ("Charged", last): last_size}
    emulator = make_emulator(events=["Charged"], oversize_records=oversize, duplicate_share=0)
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], **limits)
    result = pipeline.load(first, last)
    assert result.success
    metadata = materialization_metadata(result, AssetKey(["clevertap", "charged"]))
    assert (metadata["records_over_size_limit"], metadata["rows_over_size_limit"]) == (1, 1)
    assert metadata["window_records_skipped"] == 2
    truth = pipeline.truth("Charged", first, last)
    written = {day: count - 1 for day, count in truth.items()}
    assert daily_rows(pipeline, "charged") == written
    # Each day's materialization says what that day lost: the record over the record limit
    # on the first day, the row over the row limit on the last.
    by_day = {
        date.fromisoformat(e.partition): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }
    assert {day: (m["rows_written"], m["records_skipped"]) for day, m in by_day.items()} == {
        day: (rows, 1) for day, rows in written.items()
    }


def test_an_expired_cursor_is_reopened_and_the_window_read_again(tmp_path, make_emulator):
    emulator = make_emulator(events=["App Launched"], cursor_expiry_pages=2, records_per_day=200)
    pipeline = make_pipeline(tmp_path, emulator, events=["App Launched"])
    first, last = recent_days(pipeline.settings, 3)
    small_pages = fast_clevertap(emulator, batch_size=50)
    result = pipeline.load(first, last, clevertap=small_pages)
    assert result.success
    assert emulator.stats.faults["cursor_expired"] == 1
    # Three days, three cursors: one expired, and the whole window was opened again.
    assert emulator.stats.requests["open"] == 2 * 3
    assert daily_rows(pipeline, "app_launched") == pipeline.truth("App Launched", first, last)


def test_non_exportable_event_is_skipped_and_the_others_load(tmp_path, make_emulator):
    events = ["Notification Sent", "App Launched"]
    pipeline = make_pipeline(tmp_path, make_emulator(events=events), events=events)
    first, last = recent_days(pipeline.settings, 1)
    result = pipeline.load(first, last)
    assert result.success
    assert daily_rows(pipeline, "app_launched") == pipeline.truth("App Launched", first, last)
    tables = {
        name for (name,) in query(pipeline, "SELECT table_name FROM information_schema.tables")
    }
    assert tables == {"app_launched", COLUMN_MAP_TABLE}
    refused = [
        m
        for m in result.asset_materializations_for_node("clevertap_events")
        if refusals.REFUSED in m.metadata
    ]
    assert [(m.asset_key.path[-1], m.partition) for m in refused] == [
        ("notification_sent", first.isoformat())
    ]
    assert refused[0].metadata[refusals.REFUSED].value == refusals.REFUSAL_TEXT


def load_range(pipeline, emulator, instance, first: date, last: date) -> None:
    """One range run of the pipeline's definitions on `instance`."""
    definitions = build_definitions(pipeline.settings)
    result = materialize(
        definitions.assets or [],
        tags={
            ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
        },
        instance=instance,
        resources={**(definitions.resources or {}), "clevertap": fast_clevertap(emulator)},
    )
    assert result.success


def test_colliding_property_keys_each_keep_their_values_across_runs(tmp_path, make_emulator):
    """`CT Source` (the emulator's own) and, from a later day, `ct_source` and `ct-source`:
    three columns, each value where its key put it, the names recorded and kept by later runs."""
    today = local_today("UTC")
    emulator = make_emulator(
        events=["Charged"],
        extra_event_props={"ct_source": "snake", "ct-source": "kebab"},
        extra_event_props_from=today - timedelta(days=1),
    )
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    key = AssetKey(["clevertap", "charged"])
    with instance_for_test() as instance:
        for first, last in ((today - timedelta(days=3), today), (today, today)):
            load_range(pipeline, emulator, instance, first, last)
        latest = instance.get_latest_materialization_event(key).asset_materialization
        recorded = latest.metadata["column_keys"].value
    by_key = {tuple(path): column for column, path in recorded.items()}
    plain = by_key[("event_props", "CT Source")]
    web = by_key[("event_props", "ct_source")]
    api = by_key[("event_props", "ct-source")]
    assert plain == "event_props__ct_source"
    assert web.startswith("event_props__ct_source_") and api.startswith("event_props__ct_source_")
    values = query(
        pipeline,
        f"SELECT CAST(event_time AS DATE) >= current_date - 1, {plain}, {web}, {api}, count(*) "
        "FROM clevertap.charged GROUP BY ALL",
    )
    assert {late for late, *_ in values} == {True, False}
    for late, source, web_value, api_value, _ in values:
        assert source in ("Mobile", "API", "Web")
        assert (web_value, api_value) == (("snake", "kebab") if late else (None, None))
    assert daily_rows(pipeline, "charged") == pipeline.truth(
        "Charged", today - timedelta(days=3), today
    )


def test_a_wiped_instance_keeps_each_colliding_key_in_its_column(tmp_path, make_emulator):
    """`CT Source` alone first; after the instance is wiped, a run whose first-seen spelling
    is `@ct_source` (it sorts first on the day both appear) still finds `CT Source` in the
    plain column and puts `@ct_source` beside it: the map is kept with the tables."""
    today = local_today("UTC")
    emulator = make_emulator(
        events=["Charged"], extra_event_props={"@ct_source": "at"}, extra_event_props_from=today
    )
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    first = today - timedelta(days=2)
    with instance_for_test() as instance:
        load_range(pipeline, emulator, instance, first, today - timedelta(days=1))
    with instance_for_test() as wiped:
        load_range(pipeline, emulator, wiped, today, today)
    plain = "event_props__ct_source"
    (at,) = [name for name in columns(pipeline, "charged") if name.startswith(plain + "_")]
    values = query(
        pipeline,
        f"SELECT CAST(event_time AS DATE) = current_date, {plain}, {at}, count(*) "
        "FROM clevertap.charged GROUP BY ALL",
    )
    assert {late for late, *_ in values} == {True, False}
    for late, source, at_value, _ in values:
        assert source in ("Mobile", "API", "Web")
        assert at_value == ("at" if late else None)
    stored = query(
        pipeline,
        "SELECT column_name, key_path FROM clevertap._clevertap_columns "
        f"WHERE table_name = 'charged' AND column_name IN ('{plain}', '{at}')",
    )
    assert {column: orjson.loads(path) for column, path in stored} == {
        plain: ["event_props", "CT Source"],
        at: ["event_props", "@ct_source"],
    }
    assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", first, today)


def test_a_table_loaded_before_its_map_was_stored_is_named_from_the_instance_once(
    tmp_path, make_emulator
):
    """A table whose map is only in the instance (loaded before its destination stored one;
    emptied here): the next run names its keys from the instance's record, so `CT Source`
    keeps the plain column though `@ct_source` is seen first, and that load stores the map."""
    today = local_today("UTC")
    emulator = make_emulator(
        events=["Charged"], extra_event_props={"@ct_source": "at"}, extra_event_props_from=today
    )
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    plain = "event_props__ct_source"
    with instance_for_test() as instance:
        load_range(
            pipeline, emulator, instance, today - timedelta(days=1), today - timedelta(days=1)
        )
        with duckdb.connect(pipeline.duckdb_path) as connection:
            connection.execute(f"DELETE FROM clevertap.{COLUMN_MAP_TABLE}")
        load_range(pipeline, emulator, instance, today, today)
    values = query(pipeline, f"SELECT DISTINCT {plain} FROM clevertap.charged")
    assert {value for (value,) in values} <= {"Mobile", "API", "Web"}
    stored = query(pipeline, f"SELECT column_name, key_path FROM clevertap.{COLUMN_MAP_TABLE}")
    by_path = {tuple(orjson.loads(path)): column for column, path in stored}
    assert by_path[("event_props", "CT Source")] == plain
    assert by_path[("event_props", "@ct_source")].startswith(plain + "_")


def test_unreadable_counts_make_the_reconciliation_a_warning_not_a_failed_load(
    tmp_path, make_emulator
):
    """The counts API never gives a final answer: the days load, and the check warns why."""
    emulator = make_emulator(events=["Charged"], counts_partial=True, counts_partial_polls=10**6)
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    result = pipeline.load(first, last)
    assert result.success
    assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", first, last)
    (evaluation,) = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "row_count_matches_clevertap"
    ]
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    reason = evaluation.metadata["counts_unavailable"].value
    assert "still partial" in reason and "Charged" in reason


def test_building_the_definitions_says_nothing(tmp_path, emulator):
    """The demo's and `dagster dev`'s output starts with what the user needs, not a
    BetaWarning per event."""
    pipeline = make_pipeline(tmp_path, emulator)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_definitions(pipeline.settings).resolve_all_asset_keys()
    assert [str(w.message) for w in caught] == []


def failed_load(pipeline, first: date, last: date, **resources: object) -> str:
    """The one step failure's message of a load that must fail."""
    result = pipeline.load(first, last, **resources)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    return str(failure.event_specific_data.error)


def tables(pipeline) -> set[str]:
    """The warehouse's tables; none before its file exists."""
    if not os.path.exists(pipeline.duckdb_path):
        return set()
    return {name for (name,) in query(pipeline, "SELECT table_name FROM information_schema.tables")}


APP_FIELDS = ("os_version", "app_version", "make", "model")


@pytest.mark.parametrize("app_fields", [True, False])
def test_device_and_app_fields_load_as_profile_columns_unless_turned_off(
    tmp_path, make_emulator, app_fields
):
    """CleverTap sends OS version, make, model and app version in `profile` only when asked
    (`app=true`): by default they are columns holding CleverTap's values; turned off, none."""
    emulator = make_emulator(records_per_day=30)
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], app_fields=app_fields)
    day, _ = recent_days(pipeline.settings, 1)
    assert pipeline.load(day, day).success
    found = {c for c in columns(pipeline, "charged") if c.removeprefix("profile__") in APP_FIELDS}
    if not app_fields:
        assert found == set()
        return
    assert found == {f"profile__{name}" for name in APP_FIELDS}
    selected = ", ".join(f"profile__{name}" for name in APP_FIELDS)
    loaded = query(pipeline, f'SELECT profile__object_id, {selected} FROM "clevertap"."charged"')
    truth = {
        (r["profile"]["objectId"], *(r["profile"][name] or None for name in APP_FIELDS))
        for r in emulator.true_records("Charged", day, app=True, events=False)
    }
    assert {tuple(v or None for v in row) for row in loaded} == truth


def test_an_endless_cursor_chain_fails_its_event_and_the_others_load(tmp_path, make_emulator):
    """A chain past twice CleverTap's count stops with one message naming the event and its
    days; the run's other events load their truth, and the endless event's table is not made."""
    emulator = make_emulator(endless_cursor_events=frozenset({"Charged"}))
    pipeline = make_pipeline(tmp_path, emulator)
    first, last = recent_days(pipeline.settings, 2)
    clevertap = fast_clevertap(emulator, count_margin_records=100)
    message = failed_load(pipeline, first, last, clevertap=clevertap)
    assert f"CleverTap's cursor chain for event 'Charged' ({first}..{last}) sent " in message
    assert "count_margin_records=100" in message
    assert "1 of 3 events were not loaded" in message
    for event, table in (("App Launched", "app_launched"), ("Product Viewed", "product_viewed")):
        assert daily_rows(pipeline, table) == pipeline.truth(event, first, last)
    assert "charged" not in tables(pipeline)


def test_a_time_zone_other_than_the_projects_fails_the_event_with_the_setting_named(
    tmp_path, make_emulator
):
    """A project in IST sending epoch `ts`, read as UTC: the first 5.5 hours of CleverTap's
    day lie before the requested UTC day and would never be loaded. The event fails with one
    message naming CLEVERTAP_TIMEZONE and the offset the `ts` values imply; nothing is
    written. With the project's zone configured, every record loads."""
    emulator = make_emulator(timezone="Asia/Kolkata", ts_format="epoch", records_per_day=96)
    for name in ("utc", "ist"):
        (tmp_path / name).mkdir()
    wrong = make_pipeline(tmp_path / "utc", emulator, events=["Charged"], timezone="UTC")
    day = local_today("Asia/Kolkata") - timedelta(days=1)
    message = failed_load(wrong, day, day)
    assert f"records of event 'Charged' ({day}..{day}) lie outside the requested days" in message
    assert "CLEVERTAP_TIMEZONE='UTC' (UTC+00:00)" in message
    assert "as if the CleverTap project's time zone were UTC+05:30" in message
    assert "charged" not in tables(wrong)
    right = make_pipeline(tmp_path / "ist", emulator, events=["Charged"])
    assert right.load(day, day).success
    assert daily_rows(right, "charged") == right.truth("Charged", day, day)


def test_numbers_past_64_bits_and_a_double_load_with_their_exact_digits(tmp_path, make_emulator):
    """An integer wider than 64 bits and `1e400` in every record: the window loads its
    truth, and the columns hold the digits CleverTap sent, as text."""
    wide = {
        "Order Id": orjson.Fragment(b"123456789012345678901234567890"),
        "Huge": orjson.Fragment(b"1e400"),
    }
    emulator = make_emulator(extra_event_props=wide)
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert pipeline.load(first, last).success
    assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", first, last)
    assert columns(pipeline, "charged")["event_props__order_id"] == "VARCHAR"
    assert query(
        pipeline,
        'SELECT DISTINCT event_props__order_id, event_props__huge FROM "clevertap"."charged"',
    ) == [("123456789012345678901234567890", "1e400")]

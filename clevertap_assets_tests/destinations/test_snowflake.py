"""Snowflake end to end: the emulator over HTTP, the real asset code and IO manager, fakesnow.

fakesnow answers the Snowflake Python connector (and `write_pandas`) from an in-memory
DuckDB, so the same statements production sends run here; outcomes are asserted by
querying the fake warehouse directly.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partialmethod

import duckdb
import orjson
import pandas as pd
import pytest
import snowflake.connector
from dagster import AssetIn, DailyPartitionsDefinition, asset, build_resources, materialize

from clevertap_assets.batch.spool import EventBatch
from clevertap_assets.destinations.column_map import COLUMN_MAP_TABLE
from clevertap_assets.destinations.snowflake import dialect as snowflake_dialect
from clevertap_assets.destinations.snowflake import load as snowflake_load
from clevertap_assets.destinations.snowflake.check import check_snowflake_destination
from clevertap_assets.destinations.snowflake.io_manager import SnowflakeEventIOManager
from clevertap_assets.destinations.snowflake.resources import build_snowflake_resources
from clevertap_assets.destinations.snowflake.settings import SnowflakeSettings
from clevertap_assets.settings import SettingsError
from clevertap_assets_tests.fake_snowflake import (
    DATABASE,
    ENV,
    MAX_IDENTIFIER_CHARACTERS,
    PASSWORD,
    fakesnow,
    load,
    query,
)
from clevertap_assets_tests.harness import (
    EVENTS,
    assert_partitions_describe_their_days,
    make_pipeline,
    recent_days,
    rows_loaded_between,
)
from clevertap_assets_tests.sql_grammar import parsed

TABLES = ("APP_LAUNCHED", "PRODUCT_VIEWED", "CHARGED")
LONG_KEY = "Very Long Property " * 16 + "End"
"""A property whose column name is cut to Snowflake's 255 characters."""


def daily_rows(table: str, schema: str = "CLEVERTAP") -> dict:
    return dict(
        query(f'SELECT CAST(EVENT_TIME AS DATE), COUNT(*) FROM "{schema}"."{table}" GROUP BY 1')
    )


def columns(table: str) -> dict[str, str]:
    return dict(
        query(
            "SELECT COLUMN_NAME, DATA_TYPE FROM ANALYTICS.INFORMATION_SCHEMA.COLUMNS "
            "WHERE TABLE_SCHEMA = 'CLEVERTAP' AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (table,),
        )
    )


def long_columns() -> list[str]:
    """The `CHARGED` columns of `LONG_KEY`."""
    return [c for c in columns("CHARGED") if c.startswith("EVENT_PROPS__VERY")]


def snowflake_pipeline(tmp_path, emulator, **settings):
    return make_pipeline(tmp_path, emulator, destination="snowflake", **settings)


def test_three_days_of_three_events_equal_the_truth_with_duckdbs_columns(
    tmp_path, make_emulator, fake_snowflake, capfd
):
    emulator = make_emulator(
        duplicate_share=0.2, server_error_every=7, drop_every=11, records_per_day=300
    )
    pipeline = snowflake_pipeline(tmp_path, emulator)
    first, last = recent_days(pipeline.settings, 3)
    started = datetime.now(UTC)
    result = load(pipeline, first, last)
    finished = datetime.now(UTC)
    assert result.success
    with build_resources(build_snowflake_resources(pipeline.warehouse)) as resources:
        stats = resources.warehouse_stats
        for event, table in zip(EVENTS, TABLES, strict=True):
            truth = pipeline.truth(event, first, last)
            assert daily_rows(table) == truth
            assert stats.daily_row_counts("clevertap", table.lower(), first, last) == truth
            loads = stats.daily_loads("clevertap", table.lower(), first, last)
            assert rows_loaded_between(loads, started, finished) == truth
            assert stats.duplicate_record_ids("clevertap", table.lower(), first, last) == 0
        assert stats.daily_row_counts("clevertap", "no_such_table", first, first) == {first: 0}

    charged = columns("CHARGED")
    assert charged["EVENT_TIME"] == "TIMESTAMP_NTZ"
    assert charged["EVENT_TIME_UTC"] == charged["_LOADED_AT"] == "TIMESTAMP_TZ"
    assert "VARIANT" in charged.values()  # Items, a list, stays JSON
    on_duckdb = make_pipeline(tmp_path, emulator)
    assert on_duckdb.load(first, last).success
    with duckdb.connect(on_duckdb.duckdb_path, read_only=True) as connection:
        duckdb_columns = connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'charged'"
        ).fetchall()
    assert {name.upper() for (name,) in duckdb_columns} == set(charged)

    logged = capfd.readouterr()
    assert PASSWORD not in logged.out + logged.err + repr(result.all_events)


def test_reruns_and_overlapping_backfills_keep_each_record_once(
    tmp_path, make_emulator, fake_snowflake, monkeypatch
):
    # Small chunks, so every load stages its batch as many Parquet files.
    monkeypatch.setattr(EventBatch, "iter_arrow", partialmethod(EventBatch.iter_arrow, 25))
    monkeypatch.setattr(snowflake_load, "STAGE_CHUNK_ROWS", 25)
    pipeline = snowflake_pipeline(tmp_path, make_emulator(duplicate_share=0.3))
    first, last = recent_days(pipeline.settings, 4)
    assert load(pipeline, first, last - timedelta(days=1)).success
    assert load(pipeline, first + timedelta(days=1), last).success
    assert load(pipeline, first, last).success
    for event, table in zip(EVENTS, TABLES, strict=True):
        assert daily_rows(table) == pipeline.truth(event, first, last)
        assert query(
            f'SELECT COUNT(*) - COUNT(DISTINCT _RECORD_ID) FROM "CLEVERTAP"."{table}"'
        ) == [(0,)]


def test_a_load_over_the_chunk_size_is_one_write_pandas_call_with_exactly_the_data(
    tmp_path, make_emulator, fake_snowflake, monkeypatch
):
    """One `write_pandas` with `chunk_size` PUTs a file per chunk to one stage and runs one
    COPY (snowflake-connector-python's pandas_tools.write_pandas: the PUT loop, then a single
    `COPY INTO`); fakesnow replaces the whole call, so the calls are counted here."""
    monkeypatch.setattr(snowflake_load, "STAGE_CHUNK_ROWS", 25)
    calls: list[tuple[int, int]] = []
    with monkeypatch.context() as patch:
        write_pandas = snowflake_load.pandas_tools.write_pandas

        def counted(connection, frame, **kwargs):
            calls.append((len(frame), kwargs["chunk_size"]))
            return write_pandas(connection, frame, **kwargs)

        patch.setattr(snowflake_load.pandas_tools, "write_pandas", counted)
        pipeline = snowflake_pipeline(
            tmp_path, make_emulator(records_per_day=40), events=["Charged"]
        )
        first, last = recent_days(pipeline.settings, 2)
        result = load(pipeline, first, last)
    assert result.success
    truth = pipeline.truth("Charged", first, last)
    assert calls == [(sum(truth.values()), 25)] and sum(truth.values()) > 25
    assert daily_rows("CHARGED") == truth


def test_each_partition_carries_its_days_rows_and_the_tables(
    tmp_path, make_emulator, fake_snowflake
):
    pipeline = snowflake_pipeline(tmp_path, make_emulator(records_per_day=30), events=["Charged"])
    first, last = recent_days(pipeline.settings, 3)
    result = load(pipeline, first, last)
    assert result.success
    truth = pipeline.truth("Charged", first, last)
    assert_partitions_describe_their_days(result, "charged", truth, f"{DATABASE}.CLEVERTAP.CHARGED")


@pytest.mark.parametrize("fault", ["api", "staging", "insert"])
def test_a_failed_load_leaves_the_loaded_days_as_they_were(
    tmp_path, make_emulator, fake_snowflake, monkeypatch, capfd, fault
):
    emulator = make_emulator()
    pipeline = snowflake_pipeline(tmp_path, emulator, events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    before = query('SELECT _RECORD_ID FROM "CLEVERTAP"."CHARGED" ORDER BY 1')
    emulator.add_records("Charged", last, 5)
    if fault == "api":
        emulator.set_faults(server_error_every=1)
    elif fault == "staging":  # the load stops while the batch is read for staging
        monkeypatch.setattr(EventBatch, "iter_arrow", _first_chunk_then_fail(EventBatch.iter_arrow))
    else:  # the INSERT fails after the window's DELETE, inside the transaction
        monkeypatch.setattr(snowflake_dialect, "insert_expression", lambda *_: "NO_SUCH")
    assert not load(pipeline, first, last).success
    assert query('SELECT _RECORD_ID FROM "CLEVERTAP"."CHARGED" ORDER BY 1') == before
    logged = capfd.readouterr()
    assert PASSWORD not in logged.out + logged.err


def _first_chunk_then_fail(iter_arrow):
    def chunks(batch, *args, **kwargs):
        yield next(iter_arrow(batch, *args, **kwargs))
        raise ConnectionError("connection to Snowflake lost")

    return chunks


def test_table_prefix_and_hostile_event_names(tmp_path, make_emulator, fake_snowflake):
    hostile = 'x"; drop table y; --'
    events = ["App Launched", hostile]
    emulator = make_emulator(events=events)
    pipeline = snowflake_pipeline(tmp_path, emulator, events=events, table_prefix="ct")
    first, last = recent_days(pipeline.settings, 1)
    assert load(pipeline, first, last).success
    tables = query(
        "SELECT TABLE_NAME FROM ANALYTICS.INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = 'CLEVERTAP'"
    )
    assert {name for (name,) in tables} == {
        "CT_APP_LAUNCHED",
        "CT_X_DROP_TABLE_Y",
        COLUMN_MAP_TABLE.upper(),
    }
    assert daily_rows("CT_X_DROP_TABLE_Y") == pipeline.truth(hostile, first, last)
    assert query('SELECT DISTINCT EVENT_NAME FROM "CLEVERTAP"."CT_X_DROP_TABLE_Y"') == [(hostile,)]


def test_new_property_adds_a_column_and_drift_widens_it(tmp_path, make_emulator, fake_snowflake):
    pipeline = snowflake_pipeline(tmp_path, make_emulator(), events=["Product Viewed"])
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, first).success
    assert "EVENT_PROPS__COUPON" not in columns("PRODUCT_VIEWED")

    with_coupon = make_emulator(extra_event_props={"Coupon": 10}, extra_event_props_from=last)
    assert load(replace(pipeline, emulator=with_coupon), last, last).success
    assert columns("PRODUCT_VIEWED")["EVENT_PROPS__COUPON"] == "NUMBER"
    drifted = make_emulator(extra_event_props={"Coupon": "SPRING10"}, extra_event_props_from=first)
    assert load(replace(pipeline, emulator=drifted), first, first).success

    assert columns("PRODUCT_VIEWED")["EVENT_PROPS__COUPON"] == "TEXT"
    values = query(
        'SELECT DISTINCT EVENT_PROPS__COUPON FROM "CLEVERTAP"."PRODUCT_VIEWED" ORDER BY 1'
    )
    assert values == [("10",), ("SPRING10",)]
    assert daily_rows("PRODUCT_VIEWED") == {
        first: drifted.true_count("Product Viewed", first),
        last: with_coupon.true_count("Product Viewed", last),
    }


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch, fake_snowflake) -> list[str]:
    """Every statement the connector is asked to run, run as before."""
    sent: list[str] = []
    execute = fakesnow.cursor.FakeSnowflakeCursor.execute

    def recorded(self, command, *args, **kwargs):
        sent.append(command)
        return execute(self, command, *args, **kwargs)

    monkeypatch.setattr(fakesnow.cursor.FakeSnowflakeCursor, "execute", recorded)
    return sent


def test_widening_to_text_keeps_microseconds_and_json_quotes_in_snowflakes_sql(
    tmp_path, make_emulator, statements
):
    """fakesnow's `::VARCHAR` keeps both; Snowflake's drops a timestamp's fraction (default
    output format) and a VARIANT string's quotes, so the SQL itself is checked, parsed as
    Snowflake SQL (https://docs.snowflake.com/en/sql-reference/functions/to_json,
    https://docs.snowflake.com/en/sql-reference/functions/to_char)."""
    pipeline = snowflake_pipeline(tmp_path, make_emulator(), events=["Product Viewed"])
    first, last = recent_days(pipeline.settings, 2)
    typed = make_emulator(extra_event_props={"Coupon": "$D_1700000000", "Tags": ["a", "b"]})
    assert load(replace(pipeline, emulator=typed), first, first).success
    assert columns("PRODUCT_VIEWED")["EVENT_PROPS__COUPON"] == "TIMESTAMP_NTZ"
    assert columns("PRODUCT_VIEWED")["EVENT_PROPS__TAGS"] == "VARIANT"
    drifted = make_emulator(extra_event_props={"Coupon": "SPRING10", "Tags": "solo"})
    statements.clear()
    assert load(replace(pipeline, emulator=drifted), last, last).success

    updates = [
        parsed(sql, "snowflake")
        for sql in statements
        if sql.startswith("UPDATE") and "$WIDENING" in sql
    ]
    conversions = {
        update.expressions[0].this.name: update.expressions[0].expression.sql("snowflake")
        for update in updates
    }
    assert conversions == {
        "EVENT_PROPS__COUPON$WIDENING": (
            "TO_CHAR(\"EVENT_PROPS__COUPON\", 'YYYY-MM-DD HH24:MI:SS.FF6')"
        ),
        "EVENT_PROPS__TAGS$WIDENING": 'TO_JSON("EVENT_PROPS__TAGS")',
    }
    for sql in statements:
        if sql.startswith(("CREATE", "ALTER")):
            parsed(sql, "snowflake")
    assert columns("PRODUCT_VIEWED")["EVENT_PROPS__TAGS"] == "TEXT"
    values = query(
        'SELECT EVENT_PROPS__COUPON, EVENT_PROPS__TAGS FROM "CLEVERTAP"."PRODUCT_VIEWED" '
        "WHERE CAST(EVENT_TIME AS DATE) = %s LIMIT 1",
        (first.isoformat(),),
    )
    ((coupon, tags),) = values
    # fakesnow ignores TO_VARCHAR's format (DuckDB has none), hence the SQL check above.
    assert (coupon[:19], tags) == ("2023-11-14 22:13:20", '["a","b"]')


WIDENING_STEPS = (
    'ALTER TABLE "CLEVERTAP"."CHARGED" ADD COLUMN "TS$WIDENING" VARCHAR(134217728)',
    'UPDATE "CLEVERTAP"."CHARGED" SET "TS$WIDENING" = "TS"::VARCHAR(134217728)',
    'ALTER TABLE "CLEVERTAP"."CHARGED" DROP COLUMN "TS"',
)


@pytest.mark.parametrize(
    ("steps_done", "ts_type"),
    [(2, "NUMBER"), (3, "TEXT")],
    ids=["killed-before-drop", "killed-before-rename"],
)
def test_a_widening_cut_short_is_repaired_by_the_next_load(
    tmp_path, make_emulator, fake_snowflake, steps_done, ts_type
):
    """Before the drop the original still holds every value and the copy is dropped; after
    it, the copy holds every value and gets the original's name back."""
    pipeline = snowflake_pipeline(tmp_path, make_emulator(), events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    for statement in WIDENING_STEPS[:steps_done]:
        query(statement)
    assert load(pipeline, last, last).success
    assert "TS$WIDENING" not in columns("CHARGED")
    assert columns("CHARGED")["TS"] == ts_type
    assert query('SELECT COUNT(*) FROM "CLEVERTAP"."CHARGED" WHERE "TS" IS NULL') == [(0,)]
    assert daily_rows("CHARGED") == pipeline.truth("Charged", first, last)


def test_json_mode_keeps_sections_as_variant_and_the_schema_fixed(
    tmp_path, make_emulator, fake_snowflake
):
    pipeline = snowflake_pipeline(tmp_path, make_emulator(), events=["Charged"], auto_mapping=False)
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    assert columns("CHARGED") == {
        "_RECORD_ID": "TEXT",
        "EVENT_NAME": "TEXT",
        "TS": "NUMBER",
        "EVENT_TIME": "TIMESTAMP_NTZ",
        "EVENT_TIME_UTC": "TIMESTAMP_TZ",
        "PROFILE": "VARIANT",
        "EVENT_PROPS": "VARIANT",
        "SESSION_PROPS": "VARIANT",
        "_LOADED_AT": "TIMESTAMP_TZ",
    }
    assert daily_rows("CHARGED") == pipeline.truth("Charged", first, last)
    ((props,),) = query('SELECT EVENT_PROPS FROM "CLEVERTAP"."CHARGED" LIMIT 1')
    assert isinstance(orjson.loads(props)["Items"], list)


def test_dataframe_assets_replace_partitions_and_read_lower_case_columns(fake_snowflake):
    """Dagster's pandas path still works on this IO manager: write, rerun, read back."""
    days = DailyPartitionsDefinition(start_date="2024-01-01")

    @asset(
        partitions_def=days,
        io_manager_key="warehouse_io_manager",
        metadata={"schema": "clevertap", "table": "orders", "partition_expr": "event_time"},
    )
    def orders(context) -> pd.DataFrame:
        start = context.partition_time_window.start.replace(tzinfo=None)
        return pd.DataFrame({"event_time": [start, start], "amount": [1, 2]})

    @asset(partitions_def=days, ins={"orders": AssetIn()})
    def total(orders: pd.DataFrame) -> None:
        assert list(orders.columns) == ["event_time", "amount"]
        assert orders["amount"].sum() == 3

    resources = {
        "warehouse_io_manager": SnowflakeEventIOManager(
            database=DATABASE, account="fake-account", user="loader", password=PASSWORD
        ),
        "io_manager": SnowflakeEventIOManager(
            database=DATABASE, account="fake-account", user="loader", password=PASSWORD
        ),
    }
    for _ in range(2):
        assert materialize([orders, total], partition_key="2024-01-02", resources=resources).success
    assert query('SELECT COUNT(*) FROM "CLEVERTAP"."ORDERS"') == [(2,)]


def test_connection_check_reports_and_creates_the_schema(
    tmp_path, make_emulator, fake_snowflake, monkeypatch
):
    monkeypatch.setenv("SNOWFLAKE_SCHEMA", "events_raw")
    pipeline = snowflake_pipeline(tmp_path, make_emulator())
    line = check_snowflake_destination(pipeline.warehouse)
    assert line.startswith("Snowflake OK")
    assert "ANALYTICS.EVENTS_RAW created" in line
    assert PASSWORD not in line
    assert "ANALYTICS.EVENTS_RAW present" in check_snowflake_destination(pipeline.warehouse)


def test_the_settings_model_reads_its_prefix_and_never_shows_the_password(fake_snowflake):
    settings = SnowflakeSettings.from_env()
    assert settings.database == DATABASE.lower() and settings.role == "clevertap_loader"
    assert PASSWORD not in repr(settings) + str(settings) + str(settings.model_dump())
    fields = settings.resource_fields()
    assert set(fields) == {"account", "user", "password", "database", "warehouse", "role"}
    assert PASSWORD not in repr(fields) and fields["password"].env_var_name == "SNOWFLAKE_PASSWORD"


def test_missing_settings_are_named_in_one_message(tmp_path, make_emulator, monkeypatch):
    for name in (*ENV, "SNOWFLAKE_PRIVATE_KEY", "SNOWFLAKE_PRIVATE_KEY_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SNOWFLAKE_USER", "loader")
    pipeline = snowflake_pipeline(tmp_path, make_emulator())
    with pytest.raises(SettingsError) as error:
        build_snowflake_resources(pipeline.warehouse)
    message = str(error.value)
    for name in ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_DATABASE", "SNOWFLAKE_PASSWORD"):
        assert name in message
    assert "SNOWFLAKE_USER" not in message
    assert "SNOWFLAKE_PRIVATE_KEY_PATH" in message

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY_PATH", "/keys/rsa_key.p8")
    with pytest.raises(SettingsError, match="only one of"):
        build_snowflake_resources(pipeline.warehouse)


def test_resources_show_variable_names_not_secrets(tmp_path, make_emulator, fake_snowflake):
    resources = build_snowflake_resources(snowflake_pipeline(tmp_path, make_emulator()).warehouse)
    assert PASSWORD not in repr(resources)
    assert "SNOWFLAKE_PASSWORD" in repr(resources["warehouse_io_manager"])


def test_a_long_property_name_is_one_column_within_snowflakes_255_characters(
    tmp_path, make_emulator, fake_snowflake
):
    """https://docs.snowflake.com/en/sql-reference/identifiers-syntax: at most 255 characters;
    DuckDB under fakesnow has no limit, so the length is asserted here."""
    pipeline = snowflake_pipeline(
        tmp_path, make_emulator(extra_event_props={LONG_KEY: 7}), events=["Charged"]
    )
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    assert load(pipeline, first, last).success
    (long_column,) = long_columns()
    assert len(long_column) == 255
    assert query(f'SELECT DISTINCT "{long_column}" FROM "CLEVERTAP"."CHARGED"') == [(7,)]
    assert daily_rows("CHARGED") == pipeline.truth("Charged", first, last)


def test_a_long_property_that_drifts_is_widened_within_255_characters(
    tmp_path, make_emulator, fake_snowflake
):
    """The widening's copy of a 255-character column is named within the limit too
    (https://docs.snowflake.com/en/sql-reference/identifiers-syntax), refused over it by the
    strict fake, so the drift is widened once and the column keeps its name."""
    numbers = make_emulator(extra_event_props={LONG_KEY: 7})
    pipeline = snowflake_pipeline(tmp_path, numbers, events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, first).success
    (long_column,) = long_columns()
    drifted = make_emulator(extra_event_props={LONG_KEY: "seven"})
    assert load(replace(pipeline, emulator=drifted), last, last).success

    assert long_columns() == [long_column]
    assert columns("CHARGED")[long_column] == "TEXT"
    values = query(f'SELECT DISTINCT "{long_column}" FROM "CLEVERTAP"."CHARGED" ORDER BY 1')
    assert values == [("7",), ("seven",)]
    assert daily_rows("CHARGED") == {
        first: numbers.true_count("Charged", first),
        last: drifted.true_count("Charged", last),
    }


def test_a_widening_of_a_long_column_cut_short_is_repaired_by_the_next_load(
    tmp_path, make_emulator, fake_snowflake
):
    """A run killed after the drop leaves the copy under its hashed name; the next load
    finds its original among the batch's columns and gives the copy that name back."""
    emulator = make_emulator(extra_event_props={LONG_KEY: 7})
    pipeline = snowflake_pipeline(tmp_path, emulator, events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    (long_column,) = long_columns()
    copy = snowflake_load.widening_column(long_column)
    assert len(copy) <= MAX_IDENTIFIER_CHARACTERS
    target = '"CLEVERTAP"."CHARGED"'
    query(f'ALTER TABLE {target} ADD COLUMN "{copy}" VARCHAR(134217728)')
    query(f'UPDATE {target} SET "{copy}" = "{long_column}"::VARCHAR(134217728)')
    query(f'ALTER TABLE {target} DROP COLUMN "{long_column}"')

    assert load(pipeline, last, last).success
    assert copy not in columns("CHARGED")
    assert columns("CHARGED")[long_column] == "TEXT"
    assert query(f'SELECT COUNT(*) FROM {target} WHERE "{long_column}" IS NULL') == [(0,)]
    assert daily_rows("CHARGED") == pipeline.truth("Charged", first, last)


def test_a_table_name_at_snowflakes_limit_still_gets_its_staging_table(
    tmp_path, make_emulator, fake_snowflake
):
    """The temporary staging table is named after its target within 255 characters
    (https://docs.snowflake.com/en/sql-reference/identifiers-syntax); the longest prefix the
    settings take (the webhook table's name the longest) leaves `$STAGING` no room."""
    prefix = "p" * (MAX_IDENTIFIER_CHARACTERS - len("_webhook_events"))
    pipeline = snowflake_pipeline(
        tmp_path, make_emulator(), events=["Charged"], table_prefix=prefix
    )
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    table = f"{prefix}_charged".upper()
    assert len(table + snowflake_load.STAGING_SUFFIX) > MAX_IDENTIFIER_CHARACTERS
    assert daily_rows(table) == pipeline.truth("Charged", first, last)


def test_event_time_utc_is_written_in_utc_whatever_the_accounts_time_zone(
    tmp_path, make_emulator, fake_snowflake
):
    """Every session of the fake starts in Snowflake's default TIMEZONE, America/Los_Angeles
    (https://docs.snowflake.com/en/sql-reference/parameters#timezone), and a `TIMESTAMP_TZ`
    staged without an offset takes its session's
    (https://docs.snowflake.com/en/sql-reference/data-types-datetime#timestamp-ltz-timestamp-ntz-timestamp-tz):
    every write of the load runs in UTC, so `event_time_utc` keeps +00:00 and its date is
    UTC's."""
    pipeline = snowflake_pipeline(tmp_path, make_emulator(), events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    assert fake_snowflake.write_zones["CHARGED"] == {"UTC"}
    assert daily_rows("CHARGED") == pipeline.truth("Charged", first, last)


def test_a_programmatic_access_token_logs_in_in_place_of_a_password(
    tmp_path, make_emulator, fake_snowflake, monkeypatch
):
    """A service user cannot log in with a password; a programmatic access token goes where
    the password would (https://docs.snowflake.com/en/user-guide/programmatic-access-tokens).
    `SNOWFLAKE_TOKEN` reaches the connector as the password, resolved inside the run from its
    variable, and is never shown; it does not go with another way to authenticate."""
    token = "pat-5ecr3t-never-shown"
    monkeypatch.delenv("SNOWFLAKE_PASSWORD")
    monkeypatch.setenv("SNOWFLAKE_TOKEN", token)
    logins: list[dict] = []
    connect = snowflake.connector.connect

    def recorded(*args, **kwargs):
        logins.append(kwargs)
        return connect(*args, **kwargs)

    pipeline = snowflake_pipeline(tmp_path, make_emulator(), events=["Charged"])
    resources = build_snowflake_resources(pipeline.warehouse)
    assert token not in repr(resources)
    assert "SNOWFLAKE_TOKEN" in repr(resources["warehouse_io_manager"])
    first, last = recent_days(pipeline.settings, 2)
    # Undone before `fake_snowflake` ends its patch, which it would otherwise outlive.
    with monkeypatch.context() as patch:
        patch.setattr(snowflake.connector, "connect", recorded)
        result = load(pipeline, first, last)
    assert result.success
    assert token not in "".join(repr(event) for event in result.all_events)
    assert logins and all(login.get("password") == token for login in logins)
    assert daily_rows("CHARGED") == pipeline.truth("Charged", first, last)

    monkeypatch.setenv("SNOWFLAKE_PASSWORD", PASSWORD)
    with pytest.raises(SettingsError, match=r"only one of .*SNOWFLAKE_TOKEN"):
        build_snowflake_resources(pipeline.warehouse)

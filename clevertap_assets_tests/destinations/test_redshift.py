"""Redshift end to end against a throwaway PostgreSQL set up as a provisioned cluster behaves
where PostgreSQL can (SERIALIZABLE, SUPER, JSON_PARSE: `postgres_server.REDSHIFT_LIKE`): the
emulator over HTTP, the real asset code, our Redshift IO manager with its production SQL."""

from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import boto3
import orjson
import psycopg
import psycopg.sql
import pyarrow as pa
import pytest
from dagster import AssetKey, EnvVar
from dagster._core.storage.db_io_manager import TableSlice

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.destinations.column_map import COLUMN_MAP_TABLE
from clevertap_assets.destinations.common import DestinationError
from clevertap_assets.destinations.redshift import load as redshift_load
from clevertap_assets.destinations.redshift.check import check_redshift_destination
from clevertap_assets.destinations.redshift.dialect import (
    MAX_JSON_BYTES,
    MAX_SUPER_BYTES,
    MAX_VARCHAR_BYTES,
    RedshiftDialect,
)
from clevertap_assets.destinations.redshift.io_manager import (
    EventBatchRedshiftTypeHandler,
    PolarsRedshiftTypeHandler,
    RedshiftEventIOManager,
)
from clevertap_assets.destinations.redshift.load import RedshiftWindowLoad
from clevertap_assets.destinations.redshift.resources import build_redshift_resources
from clevertap_assets.destinations.redshift.settings import RedshiftSettings
from clevertap_assets.destinations.redshift.stats import RedshiftEventStats
from clevertap_assets.destinations.window import frame_batch, replace_window
from clevertap_assets.settings import SettingsError
from clevertap_assets_tests.harness import (
    EVENTS,
    assert_partitions_describe_their_days,
    make_pipeline,
    recent_days,
    rows_loaded_between,
)
from clevertap_assets_tests.postgres_server import postgres_server  # noqa: F401
from clevertap_assets_tests.s3_server import s3_server  # noqa: F401

TABLES = ("app_launched", "product_viewed", "charged")


def materialization_metadata(result, key: AssetKey) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == key][:1]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_three_days_of_three_events_equal_the_truth_despite_faults(
    tmp_path, make_emulator, warehouse
):
    emulator = make_emulator(
        duplicate_share=0.2, server_error_every=7, drop_every=11, records_per_day=300
    )
    pipeline = make_pipeline(tmp_path, emulator, destination="redshift")
    first, last = recent_days(pipeline.settings, 3)
    result = pipeline.load(first, last, **warehouse.resources())
    assert result.success
    for event, table in zip(EVENTS, TABLES, strict=True):
        assert warehouse.daily_rows(table) == pipeline.truth(event, first, last)
    metadata = materialization_metadata(result, AssetKey(["clevertap", "charged"]))
    assert metadata["window_duplicates_dropped"] > 0
    assert metadata["window_rows_written"] == sum(pipeline.truth("Charged", first, last).values())
    assert metadata["destination_table"] == "clevertap.charged"
    columns = warehouse.columns("charged")
    assert columns["_record_id"] == f"character varying({MAX_VARCHAR_BYTES})"
    assert columns["event_time"] == "timestamp without time zone"
    assert columns["event_time_utc"] == columns["_loaded_at"] == "timestamp with time zone"
    assert "jsonb" in columns.values()  # Charged's Items list
    duplicate_checks = [
        check.passed
        for check in result.get_asset_check_evaluations()
        if check.check_name == "no_duplicate_record_ids"
    ]
    assert duplicate_checks == [True, True, True]


def test_each_partition_carries_its_days_rows_and_the_tables(tmp_path, make_emulator, warehouse):
    emulator = make_emulator(records_per_day=30)
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], destination="redshift")
    first, last = recent_days(pipeline.settings, 3)
    result = pipeline.load(first, last, **warehouse.resources())
    assert result.success
    truth = pipeline.truth("Charged", first, last)
    table_name = f"{warehouse.database}.clevertap.charged"
    assert_partitions_describe_their_days(result, "charged", truth, table_name)


def test_stats_resource_counts_equal_the_truth(tmp_path, make_emulator, warehouse):
    pipeline = make_pipeline(
        tmp_path, make_emulator(duplicate_share=0.3), events=["Charged"], destination="redshift"
    )
    first, last = recent_days(pipeline.settings, 3)
    started = datetime.now(UTC)
    assert pipeline.load(first + timedelta(days=1), last, **warehouse.resources()).success
    finished = datetime.now(UTC)
    stats = RedshiftEventStats(connection=warehouse.connection())
    truth = pipeline.truth("Charged", first + timedelta(days=1), last)
    loads = stats.daily_loads("clevertap", "charged", first, last)
    assert rows_loaded_between(loads, started, finished) == truth
    assert stats.daily_row_counts("clevertap", "charged", first, last) == {**truth, first: 0}
    assert stats.duplicate_record_ids("clevertap", "charged", first, last) == 0
    assert stats.daily_row_counts("clevertap", "missing", first, first) == {first: 0}
    assert stats.duplicate_record_ids("clevertap", "missing", first, last) == 0


def test_reruns_and_overlapping_backfills_keep_each_record_once(tmp_path, make_emulator, warehouse):
    pipeline = make_pipeline(tmp_path, make_emulator(duplicate_share=0.3), destination="redshift")
    first, last = recent_days(pipeline.settings, 4)
    resources = warehouse.resources()
    assert pipeline.load(first, last - timedelta(days=1), **resources).success
    assert pipeline.load(first + timedelta(days=1), last, **resources).success
    assert pipeline.load(first, last, **resources).success
    for event, table in zip(EVENTS, TABLES, strict=True):
        assert warehouse.daily_rows(table) == pipeline.truth(event, first, last)
        ((dupes,),) = warehouse.query(
            f'SELECT count(*) - count(DISTINCT _record_id) FROM "clevertap"."{table}"'
        )
        assert dupes == 0


def test_a_failed_read_leaves_the_loaded_days_as_they_were(tmp_path, make_emulator, warehouse):
    emulator = make_emulator()
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], destination="redshift")
    first, last = recent_days(pipeline.settings, 2)
    assert pipeline.load(first, last, **warehouse.resources()).success
    before = warehouse.query('SELECT _record_id FROM "clevertap"."charged" ORDER BY 1')
    emulator.add_records("Charged", last, 5)
    emulator.set_faults(server_error_every=1)
    assert not pipeline.load(first, last, **warehouse.resources()).success
    assert warehouse.query('SELECT _record_id FROM "clevertap"."charged" ORDER BY 1') == before


def test_a_load_killed_after_the_delete_and_schema_change_rolls_back(
    tmp_path, make_emulator, warehouse, monkeypatch
):
    """The delete, a widening and a first INSERT have run when the load dies: none stays."""
    emulator = make_emulator(extra_event_props={"Coupon": 10})
    pipeline = make_pipeline(tmp_path, emulator, events=["Product Viewed"], destination="redshift")
    first, last = recent_days(pipeline.settings, 2)
    assert pipeline.load(first, last, **warehouse.resources()).success
    read_back = (
        'SELECT _record_id, event_props__coupon FROM "clevertap"."product_viewed" ORDER BY 1'
    )
    before, columns_before = warehouse.query(read_back), warehouse.columns("product_viewed")
    assert columns_before["event_props__coupon"] == "bigint"

    statements: list[str] = []
    execute = psycopg.Connection.execute

    def dies_at_the_second_insert(self, query, *args, **kwargs):
        if COLUMN_MAP_TABLE not in str(query):  # the column claim's own transaction
            statements.append(str(query).split(" ", 1)[0])
        if statements.count("INSERT") == 2:
            raise RuntimeError("worker killed")
        return execute(self, query, *args, **kwargs)

    drifted = make_emulator(extra_event_props={"Coupon": "X"})
    with monkeypatch.context() as patch:
        patch.setattr(redshift_load, "DEFAULT_INSERT_ROWS", 5)
        patch.setattr(psycopg.Connection, "execute", dies_at_the_second_insert)
        result = replace(pipeline, emulator=drifted).load(first, last, **warehouse.resources())
    assert not result.success
    assert {"DELETE", "ALTER", "UPDATE"} <= set(statements[: statements.index("INSERT")])
    assert warehouse.query(read_back) == before
    assert warehouse.columns("product_viewed") == columns_before


def test_table_prefix_and_hostile_event_names_get_their_own_quoted_tables(
    tmp_path, make_emulator, warehouse, monkeypatch
):
    monkeypatch.setenv("REDSHIFT_SCHEMA", "ct_schema")
    hostile = 'x"; drop table y; --'
    events = ["App Launched", hostile]
    pipeline = make_pipeline(
        tmp_path,
        make_emulator(events=events),
        events=events,
        table_prefix="ct",
        destination="redshift",
    )
    first, last = recent_days(pipeline.settings, 1)
    assert pipeline.load(first, last, **warehouse.resources()).success
    tables = warehouse.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'ct_schema'"
    )
    assert {name for (name,) in tables} == {
        "ct_app_launched",
        "ct_x_drop_table_y",
        COLUMN_MAP_TABLE,
    }
    assert warehouse.daily_rows("ct_x_drop_table_y", "ct_schema") == pipeline.truth(
        hostile, first, last
    )
    ((name,),) = warehouse.query('SELECT DISTINCT event_name FROM "ct_schema"."ct_x_drop_table_y"')
    assert name == hostile


def test_new_property_adds_a_column_and_drift_widens_it(tmp_path, make_emulator, warehouse):
    pipeline = make_pipeline(
        tmp_path, make_emulator(), events=["Product Viewed"], destination="redshift"
    )
    first, last = recent_days(pipeline.settings, 3)
    middle = first + timedelta(days=1)
    resources = warehouse.resources()
    assert pipeline.load(first, first, **resources).success
    assert "event_props__coupon" not in warehouse.columns("product_viewed")

    # The same project later: a new property, then its type drifts to double, then to text.
    stages = [(last, 10, "bigint"), (middle, 2.5, "double precision"), (first, "SPRING10", None)]
    emulators = {}
    for day, value, expected in stages:
        emulators[day] = make_emulator(
            extra_event_props={"Coupon": value}, extra_event_props_from=day
        )
        assert replace(pipeline, emulator=emulators[day]).load(day, day, **resources).success
        column = warehouse.columns("product_viewed")["event_props__coupon"]
        assert column == (expected or f"character varying({MAX_VARCHAR_BYTES})")

    values = warehouse.query(
        'SELECT DISTINCT event_props__coupon FROM "clevertap"."product_viewed" ORDER BY 1'
    )
    assert values == [("10",), ("2.5",), ("SPRING10",)]
    assert warehouse.daily_rows("product_viewed") == {
        day: emulators[day].true_count("Product Viewed", day) for day in (first, middle, last)
    }


def test_json_mode_keeps_sections_as_native_json_and_reads_back_as_text(
    tmp_path, make_emulator, warehouse
):
    pipeline = make_pipeline(
        tmp_path, make_emulator(), events=["Charged"], auto_mapping=False, destination="redshift"
    )
    first, last = recent_days(pipeline.settings, 2)
    assert pipeline.load(first, last, **warehouse.resources()).success
    text = f"character varying({MAX_VARCHAR_BYTES})"
    assert warehouse.columns("charged") == {
        "_record_id": text,
        "event_name": text,
        "ts": "bigint",
        "event_time": "timestamp without time zone",
        "event_time_utc": "timestamp with time zone",
        "profile": "jsonb",
        "event_props": "jsonb",
        "session_props": "jsonb",
        "_loaded_at": "timestamp with time zone",
    }
    assert warehouse.daily_rows("charged") == pipeline.truth("Charged", first, last)
    ((kind,),) = warehouse.query(
        """SELECT DISTINCT jsonb_typeof(event_props -> 'Items') FROM "clevertap"."charged" """
    )
    assert kind == "array"

    handler = PolarsRedshiftTypeHandler(RedshiftDialect())
    with warehouse.connection().connect() as connection:
        frame = handler.load_input(None, TableSlice("charged", "clevertap"), connection)
    assert frame.height == sum(pipeline.truth("Charged", first, last).values())
    assert isinstance(orjson.loads(frame["event_props"][0])["Items"], list)

    with warehouse.connection().connect() as connection:
        batch = EventBatchRedshiftTypeHandler(RedshiftDialect()).load_input(
            None, TableSlice("charged", "clevertap"), connection
        )
    try:
        assert batch.rows == frame.height
        assert batch.columns()["event_props"] == Kind.JSON
        assert batch.preview(1)["_record_id"].to_list() != []
    finally:
        batch.discard()


def load_limits(warehouse) -> dict:
    """One window of text and JSON at and over Redshift's limits into `clevertap.limits`:
    short text with a NUL, text of twice VARCHAR's bytes, JSON of twice 65,535 bytes and
    JSON over SUPER's 16 MB; the load's metadata."""
    long_text = "é" * MAX_VARCHAR_BYTES  # 2 bytes each: twice the limit
    long_json = "[" + "1," * MAX_JSON_BYTES + "1]"  # twice JSON_PARSE's default limit
    too_long_json = '["' + "x" * MAX_SUPER_BYTES + '"]'
    batch = pa.RecordBatch.from_pydict(
        {
            "note": ["short\x00ok", long_text, None, None],
            "items": ["[1]", long_json, None, too_long_json],
        }
    )
    batch = frame_batch("limits", pa.Table.from_batches([batch]))
    batch = replace(batch, json_columns=frozenset({"items"}))
    assert batch.columns() == {"note": Kind.TEXT, "items": Kind.JSON}
    table_slice = TableSlice("limits", "clevertap")
    with warehouse.connection().connect() as connection:
        connection.execute("CREATE SCHEMA clevertap")
        connection.commit()
        metadata = replace_window(
            RedshiftWindowLoad(connection, RedshiftDialect()), table_slice, batch
        )
        connection.commit()
    batch.discard()
    assert metadata["dagster/row_count"] == 4
    return metadata


def limits_rows(warehouse) -> list[tuple]:
    return warehouse.query(
        'SELECT note, octet_length(note), jsonb_array_length(items) FROM "clevertap"."limits" '
        "ORDER BY 2, 3"
    )


def test_over_long_text_is_truncated_and_json_kept_up_to_16_mb_once_opted_in(warehouse):
    """VARCHAR holds 65,535 bytes; with `enable_large_strings_opt_in` a SUPER string and
    JSON_PARSE's input hold 16,000,000
    (https://docs.aws.amazon.com/redshift/latest/dg/r_enable_large_strings_opt_in.html,
    https://docs.aws.amazon.com/redshift/latest/dg/limitations-super.html)."""
    warehouse.opt_in_to_large_strings()
    metadata = load_limits(warehouse)
    assert (metadata["text_values_truncated"], metadata["json_values_nulled"]) == (1, 1)
    rows = limits_rows(warehouse)
    assert rows[0] == ("shortok", 7, 1)
    assert rows[1][1:] == (MAX_VARCHAR_BYTES - 1, MAX_JSON_BYTES + 1)  # text cut, JSON whole
    assert rows[2:] == [(None, None, None), (None, None, None)]


def test_json_over_65535_bytes_is_null_and_named_where_the_cluster_did_not_opt_in(warehouse):
    """Without `enable_large_strings_opt_in`, JSON_PARSE refuses input over 65,535 bytes
    (https://docs.aws.amazon.com/redshift/latest/dg/r_enable_large_strings_opt_in.html), as
    the shim does: the load stores such JSON as NULL and counts it rather than failing on
    every retry, and the rest of the window is loaded."""
    metadata = load_limits(warehouse)
    assert (metadata["text_values_truncated"], metadata["json_values_nulled"]) == (1, 2)
    rows = limits_rows(warehouse)
    assert rows[0] == ("shortok", 7, 1)
    assert rows[1][1:] == (MAX_VARCHAR_BYTES - 1, None)


def test_the_settings_model_reads_its_prefix_and_never_shows_the_password(monkeypatch):
    monkeypatch.setenv("REDSHIFT_HOST", "cluster.example")
    monkeypatch.setenv("REDSHIFT_DATABASE", "dev")
    monkeypatch.setenv("REDSHIFT_USER", "loader")
    monkeypatch.setenv("REDSHIFT_PASSWORD", "pw-never-shown")
    settings = RedshiftSettings.from_env()
    assert settings.connection_fields() == {
        "host": "cluster.example",
        "port": 5439,
        "database": "dev",
        "user": "loader",
        "sslmode": "require",
        "iam_cluster_id": "",
        "iam_workgroup": "",
    }
    assert "pw-never-shown" not in repr(settings) + str(settings) + str(settings.model_dump())


def test_missing_settings_name_every_variable(tmp_path, emulator, monkeypatch):
    for name in ("REDSHIFT_HOST", "REDSHIFT_DATABASE", "REDSHIFT_USER", "REDSHIFT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    destination = make_pipeline(tmp_path, emulator, destination="redshift").warehouse
    with pytest.raises(SettingsError) as caught:
        build_redshift_resources(destination)
    for name in ("REDSHIFT_HOST", "REDSHIFT_DATABASE", "REDSHIFT_USER", "REDSHIFT_PASSWORD"):
        assert name in str(caught.value)
    monkeypatch.setenv("REDSHIFT_HOST", "h")
    monkeypatch.setenv("REDSHIFT_DATABASE", "d")
    monkeypatch.setenv("REDSHIFT_USER", "u")
    monkeypatch.setenv("REDSHIFT_PASSWORD", "p")
    monkeypatch.setenv("REDSHIFT_PORT", "54x9")
    with pytest.raises(SettingsError, match="REDSHIFT_PORT='54x9'"):
        build_redshift_resources(destination)


def test_connection_check_and_builder_keep_the_password_secret(tmp_path, emulator, warehouse):
    destination = make_pipeline(tmp_path, emulator, destination="redshift").warehouse
    password = warehouse.server.password
    resources = build_redshift_resources(destination)
    assert password not in repr(resources)
    assert password not in repr(warehouse.connection())

    ready = (
        f"Redshift OK: postgres@127.0.0.1:{warehouse.server.port}/{warehouse.database}, "
        "schema 'clevertap' ready"
    )
    # A cluster that did not opt in to large strings is named with the setting.
    assert check_redshift_destination(destination) == (
        f"{ready}; JSON values over 65,535 bytes will be stored as NULL: "
        "Redshift's JSON_PARSE takes at most 65,535 bytes unless the cluster sets "
        "enable_large_strings_opt_in (in its parameter group, or the workgroup's "
        "configuration; a provisioned cluster needs a reboot)"
    )
    warehouse.opt_in_to_large_strings()
    assert check_redshift_destination(destination) == ready
    assert warehouse.query(
        "SELECT 1 FROM information_schema.schemata WHERE schema_name = 'clevertap'"
    )

    wrong = "not-" + password
    with pytest.raises(DestinationError) as caught:
        warehouse.connection(wrong).connect()
    assert "password authentication failed" in str(caught.value)
    assert wrong not in str(caught.value) and password not in str(caught.value)


def test_the_password_never_reaches_logs_or_metadata(tmp_path, make_emulator, warehouse, capfd):
    pipeline = make_pipeline(tmp_path, make_emulator(), events=["Charged"], destination="redshift")
    first, last = recent_days(pipeline.settings, 1)
    result = pipeline.load(first, last, **warehouse.resources())
    assert result.success
    password = warehouse.server.password
    for event in result.all_events:
        assert password not in repr(event)
    captured = capfd.readouterr()
    assert password not in captured.out + captured.err


def test_a_long_property_name_maps_to_one_column_that_later_loads_find(
    tmp_path, make_emulator, warehouse
):
    """A name over the limit is cut with a hash of the whole name, so the next load finds its
    column instead of adding it again. PostgreSQL keeps 63 bytes of a name, Redshift 127
    (https://www.postgresql.org/docs/15/sql-syntax-lexical.html#SQL-SYNTAX-IDENTIFIERS,
    https://docs.aws.amazon.com/redshift/latest/dg/r_names.html): the limit is PostgreSQL's."""
    long_key = "A Very Long Property Name " * 6
    pipeline = make_pipeline(
        tmp_path,
        make_emulator(extra_event_props={long_key: 7}),
        events=["Charged"],
        destination="redshift",
    )
    first, last = recent_days(pipeline.settings, 2)
    connection = warehouse.connection(EnvVar("REDSHIFT_PASSWORD"))
    resources = {
        **warehouse.resources(),
        "warehouse_io_manager": RedshiftEventIOManager(
            connection=connection, max_identifier_bytes=63
        ),
    }
    assert pipeline.load(first, last, **resources).success
    assert pipeline.load(first, last, **resources).success
    long_columns = [c for c in warehouse.columns("charged") if c.startswith("event_props__a_very")]
    assert len(long_columns) == 1 and len(long_columns[0]) == 63
    assert warehouse.query(f'SELECT DISTINCT "{long_columns[0]}" FROM "clevertap"."charged"') == [
        (7,)
    ]
    assert warehouse.daily_rows("charged") == pipeline.truth("Charged", first, last)


@pytest.fixture
def redshift_api(s3_server, warehouse, monkeypatch):  # noqa: F811
    """AWS's Redshift API as moto's server answers it over HTTP (a provisioned cluster
    `analytics` created there), and what the cluster does with temporary credentials it
    issues: the user `IAM:<user>` may log in with that password until it expires
    (https://docs.aws.amazon.com/redshift/latest/APIReference/API_GetClusterCredentials.html),
    done on PostgreSQL when the answer arrives. The passwords issued, in order."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_REDSHIFT", s3_server.endpoint)
    session = boto3.session.Session()
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    redshift = session.client("redshift")
    with suppress(redshift.exceptions.ClusterAlreadyExistsFault):
        redshift.create_cluster(
            ClusterIdentifier="analytics",
            NodeType="ra3.xlplus",
            MasterUsername="admin",
            MasterUserPassword="Admin-pass-1",
        )
    issued: list[str] = []

    def cluster_sets_the_password(parsed, **_):
        if "DbPassword" not in parsed:  # the API refused the call
            return
        issued.append(parsed["DbPassword"])
        conninfo = warehouse.server.conninfo(warehouse.database)
        with psycopg.connect(conninfo, autocommit=True) as admin:
            role = psycopg.sql.Identifier(parsed["DbUser"])
            exists = admin.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (parsed["DbUser"],)
            ).fetchone()
            verb = "ALTER" if exists else "CREATE"
            admin.execute(
                psycopg.sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                    psycopg.sql.SQL(verb), role, psycopg.sql.Literal(parsed["DbPassword"])
                )
            )
            admin.execute(
                psycopg.sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                    psycopg.sql.Identifier(warehouse.database), role
                )
            )

    session.events.register("after-call.redshift.GetClusterCredentials", cluster_sets_the_password)
    return issued


def test_iam_authentication_logs_in_with_temporary_credentials_never_shown(
    tmp_path, make_emulator, warehouse, redshift_api, monkeypatch
):
    """AWS recommends temporary credentials from IAM over a stored password
    (https://docs.aws.amazon.com/redshift/latest/mgmt/generating-user-credentials.html): with
    `REDSHIFT_IAM_CLUSTER_ID` and no password, every connection asks GetClusterCredentials
    (boto3's own credentials) and logs in as `IAM:<user>`; the temporary password appears
    nowhere in the run's events. A cluster the API does not know is one error naming the
    setting."""
    monkeypatch.delenv("REDSHIFT_PASSWORD")
    monkeypatch.setenv("REDSHIFT_USER", "loader")
    monkeypatch.setenv("REDSHIFT_IAM_CLUSTER_ID", "analytics")
    pipeline = make_pipeline(tmp_path, make_emulator(), events=["Charged"], destination="redshift")
    first, last = recent_days(pipeline.settings, 2)
    result = pipeline.load(first, last, **build_redshift_resources(pipeline.warehouse))
    assert result.success
    assert warehouse.daily_rows("charged") == pipeline.truth("Charged", first, last)
    owners = "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'clevertap'"
    assert warehouse.query(owners) == [("IAM:loader",)]
    told = "".join(repr(event) for event in result.all_events)
    assert redshift_api and not any(password in told for password in redshift_api)

    monkeypatch.setenv("REDSHIFT_IAM_CLUSTER_ID", "no-such-cluster")
    with pytest.raises(DestinationError, match="REDSHIFT_IAM_CLUSTER_ID=no-such-cluster"):
        check_redshift_destination(pipeline.warehouse)
    monkeypatch.setenv("REDSHIFT_PASSWORD", "p")
    with pytest.raises(SettingsError, match=r"only one of .*REDSHIFT_IAM_CLUSTER_ID"):
        build_redshift_resources(pipeline.warehouse)

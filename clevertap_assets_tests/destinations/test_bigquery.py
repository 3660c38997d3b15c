"""BigQuery end to end: the CleverTap emulator over HTTP, the real asset code, bqemulator.

Outcomes are asserted by querying the emulated warehouse directly, as a user would.
"""

import base64
import io
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey
from dagster._core.storage.db_io_manager import TablePartitionDimension, TableSlice
from google.api_core.exceptions import BadRequest
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import bigquery
from google.oauth2 import service_account
from sqlglot import exp

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.spool import EventBatch
from clevertap_assets.destinations.bigquery.check import check_bigquery_destination
from clevertap_assets.destinations.bigquery.io_manager import (
    BigQueryEventIOManager,
    EventBatchBigQueryTypeHandler,
)
from clevertap_assets.destinations.bigquery.load import BigQueryWindowLoad
from clevertap_assets.destinations.bigquery.resources import build_bigquery_resources
from clevertap_assets.destinations.bigquery.settings import BigQuerySettings
from clevertap_assets.destinations.bigquery.stats import BigQueryEventStats
from clevertap_assets.destinations.column_map import COLUMN_MAP_TABLE
from clevertap_assets.destinations.window import replace_window
from clevertap_assets.naming import slug
from clevertap_assets.settings import SettingsError
from clevertap_assets_tests.bigquery_emulator import (
    BigQueryEmulator,
    bigquery_emulator_fixture,  # noqa: F401 (the `bigquery_emulator` fixture)
)
from clevertap_assets_tests.harness import (
    EVENTS,
    Pipeline,
    assert_frame_outputs_replace_their_partition,
    assert_partitions_describe_their_days,
    make_pipeline,
    recent_days,
    rows_loaded_between,
)
from clevertap_assets_tests.sql_grammar import parsed

pytestmark = pytest.mark.usefixtures("bigquery_env")

TABLES = ("app_launched", "product_viewed", "charged")
STANDARD = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


MAX_TABLE_NAME_BYTES = 1024
"""https://cloud.google.com/bigquery/docs/tables#table_naming: up to 1,024 UTF-8 bytes."""


@dataclass
class StrictBigQuery:
    """What bqemulator accepts and BigQuery refuses, refused here before a request is sent:
    table names over 1,024 bytes, and a query of a table whose owner set
    `require_partition_filter` without a filter on its partitioning column
    (https://cloud.google.com/bigquery/docs/managing-partitioned-tables#require-filter;
    bqemulator stores no such flag, so a test sets it here, by table name). Every query is
    parsed as BigQuery SQL; a MERGE into such a table filters it in its ON or WHEN
    conditions."""

    require_filter: dict[str, str] = field(default_factory=dict)
    """Table name to its partitioning column, for tables that require a partition filter."""

    def check_name(self, table_id: str) -> None:
        name = table_id.rsplit(".", 1)[-1]
        if len(name.encode()) > MAX_TABLE_NAME_BYTES:
            raise BadRequest(f"Invalid table ID {name[:40]}...: over 1024 bytes")

    def check_query(self, sql: str) -> None:
        tree = parsed(sql, "bigquery")
        for table in tree.find_all(exp.Table):
            self.check_name(table.name)
            column = self.require_filter.get(table.name)
            if column and not _filtered(table, column):
                raise BadRequest(
                    f"Cannot query over table '{table.name}' without a filter over column(s) "
                    f"'{column}' that can be used for partition elimination"
                )


def _filtered(table: exp.Table, column: str) -> bool:
    """Whether the statement that reads `table` filters it on `column` (a CREATE's target
    is written, not read)."""
    create = table.find_ancestor(exp.Create)
    if create is not None and create.this.find(exp.Table) is table:
        return True
    scope = table.find_ancestor(exp.Select, exp.Delete, exp.Merge)
    if isinstance(scope, exp.Merge):
        conditions = [scope.args.get("on"), *scope.find_all(exp.When)]
    else:
        conditions = [scope.args.get("where")] if scope is not None else []
    return any(
        reference.name == column
        for condition in conditions
        if condition is not None
        for reference in condition.find_all(exp.Column)
    )


@pytest.fixture(autouse=True)
def strict_bigquery(monkeypatch: pytest.MonkeyPatch) -> StrictBigQuery:
    """Every test's client as strict as `StrictBigQuery`."""
    strict = StrictBigQuery()
    run_query, create_table = bigquery.Client.query, bigquery.Client.create_table
    get_table = bigquery.Client.get_table

    def checked_query(self, query, *args, **kwargs):
        strict.check_query(query)
        return run_query(self, query, *args, **kwargs)

    def checked_create(self, table, *args, **kwargs):
        strict.check_name(table if isinstance(table, str) else table.table_id)
        return create_table(self, table, *args, **kwargs)

    def as_bigquery_keeps_it(self, reference, *args, **kwargs):
        table = get_table(self, reference, *args, **kwargs)
        column = strict.require_filter.get(table.table_id)
        if column:  # as BigQuery describes it: bqemulator keeps neither
            table.time_partitioning = bigquery.TimePartitioning(field=column)
            table.require_partition_filter = True
        return table

    monkeypatch.setattr(bigquery.Client, "query", checked_query)
    monkeypatch.setattr(bigquery.Client, "create_table", checked_create)
    monkeypatch.setattr(bigquery.Client, "get_table", as_bigquery_keeps_it)
    return strict


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, strict_bigquery: StrictBigQuery) -> list[str]:
    """Every query the client is asked to run, run as before."""
    queries: list[str] = []
    run_query = bigquery.Client.query

    def recorded(self, query, *args, **kwargs):
        queries.append(query)
        return run_query(self, query, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "query", recorded)
    return queries


def bigquery_pipeline(tmp_path, emulator, bq: BigQueryEmulator, **settings) -> Pipeline:
    """A pipeline loading into the test's dataset of `bq` (`bigquery_env`)."""
    return make_pipeline(tmp_path, emulator, destination="bigquery", **settings)


def load(pipeline: Pipeline, first, last):
    return pipeline.load(first, last, **build_bigquery_resources(pipeline.warehouse))


def name(bq: BigQueryEmulator, pipeline: Pipeline, table: str) -> str:
    return f"`{bq.project}.{pipeline.warehouse.schema}.{table}`"


def daily_rows(bq: BigQueryEmulator, pipeline: Pipeline, table: str) -> dict:
    return dict(
        bq.query(f"SELECT DATE(event_time), COUNT(*) FROM {name(bq, pipeline, table)} GROUP BY 1")
    )


def record_ids(bq: BigQueryEmulator, pipeline: Pipeline, table: str) -> list[tuple]:
    return bq.query(f"SELECT _record_id FROM {name(bq, pipeline, table)} ORDER BY 1")


def duplicates(bq: BigQueryEmulator, pipeline: Pipeline, table: str) -> int:
    sql = f"SELECT COUNT(*) - COUNT(DISTINCT _record_id) FROM {name(bq, pipeline, table)}"
    return bq.query(sql)[0][0]


def columns(bq: BigQueryEmulator, pipeline: Pipeline, table: str) -> dict[str, str]:
    """Standard SQL type names (the API may answer with the legacy ones)."""
    schema = bq.client().get_table(f"{bq.project}.{pipeline.warehouse.schema}.{table}")
    return {field.name: STANDARD.get(field.field_type, field.field_type) for field in schema.schema}


def tables(bq: BigQueryEmulator, pipeline: Pipeline) -> set[str]:
    dataset = f"{bq.project}.{pipeline.warehouse.schema}"
    return {table.table_id for table in bq.client().list_tables(dataset)}


def test_three_days_of_three_events_equal_the_truth_despite_faults(
    tmp_path, make_emulator, bigquery_emulator
):
    bq = bigquery_emulator
    emulator = make_emulator(
        duplicate_share=0.2, server_error_every=7, drop_every=11, records_per_day=200
    )
    pipeline = bigquery_pipeline(tmp_path, emulator, bq)
    first, last = recent_days(pipeline.settings, 3)
    started = datetime.now(UTC)
    result = load(pipeline, first, last)
    finished = datetime.now(UTC)
    assert result.success
    stats = BigQueryEventStats(project=bq.project)
    schema = pipeline.warehouse.schema
    for event, table in zip(EVENTS, TABLES, strict=True):
        truth = pipeline.truth(event, first, last)
        assert daily_rows(bq, pipeline, table) == truth
        assert stats.daily_row_counts(schema, table, first, last) == truth
        loads = stats.daily_loads(schema, table, first, last)
        assert rows_loaded_between(loads, started, finished) == truth
        assert stats.duplicate_record_ids(schema, table, first, last) == 0
    assert tables(bq, pipeline) == {*TABLES, COLUMN_MAP_TABLE}  # no staging table left behind
    kinds = columns(bq, pipeline, "charged")
    assert (kinds["event_time"], kinds["event_time_utc"], kinds["_loaded_at"]) == (
        "DATETIME",
        "TIMESTAMP",
        "TIMESTAMP",
    )
    table = bq.client().get_table(f"{bq.project}.{schema}.charged")
    assert table.time_partitioning.field == "event_time"
    assert stats.daily_row_counts(schema, "never_loaded", first, last) == dict.fromkeys(truth, 0)
    duplicate_checks = [
        check.passed
        for check in result.get_asset_check_evaluations()
        if check.check_name == "no_duplicate_record_ids"
    ]
    assert duplicate_checks == [True] * 3


def test_each_partition_carries_its_days_rows_and_the_tables(
    tmp_path, make_emulator, bigquery_emulator
):
    bq = bigquery_emulator
    pipeline = bigquery_pipeline(
        tmp_path, make_emulator(records_per_day=30), bq, events=["Charged"]
    )
    first, last = recent_days(pipeline.settings, 3)
    result = load(pipeline, first, last)
    assert result.success
    truth = pipeline.truth("Charged", first, last)
    table_name = f"{bq.project}.{pipeline.warehouse.schema}.charged"
    assert_partitions_describe_their_days(result, "charged", truth, table_name)


def test_reruns_and_overlapping_backfills_keep_each_record_once(
    tmp_path, make_emulator, bigquery_emulator
):
    bq = bigquery_emulator
    pipeline = bigquery_pipeline(tmp_path, make_emulator(duplicate_share=0.3), bq)
    first, last = recent_days(pipeline.settings, 4)
    assert load(pipeline, first, last - timedelta(days=1)).success
    assert load(pipeline, first + timedelta(days=1), last).success
    assert load(pipeline, first, last).success
    for event, table in zip(EVENTS, TABLES, strict=True):
        assert daily_rows(bq, pipeline, table) == pipeline.truth(event, first, last)
        assert duplicates(bq, pipeline, table) == 0


def test_a_failed_read_leaves_the_loaded_days_as_they_were(
    tmp_path, make_emulator, bigquery_emulator
):
    bq = bigquery_emulator
    emulator = make_emulator()
    pipeline = bigquery_pipeline(tmp_path, emulator, bq, events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    before = record_ids(bq, pipeline, "charged")
    emulator.add_records("Charged", last, 5)
    emulator.set_faults(server_error_every=1)
    assert not load(pipeline, first, last).success
    assert record_ids(bq, pipeline, "charged") == before


def test_a_merge_that_fails_in_bigquery_leaves_the_previous_rows(
    tmp_path, make_emulator, bigquery_emulator, monkeypatch
):
    """The staged file reaches BigQuery, the MERGE starts deleting and inserting, and one row's
    JSON does not parse: the statement fails as a whole and the window keeps its rows."""
    bq = bigquery_emulator
    emulator = make_emulator()
    pipeline = bigquery_pipeline(tmp_path, emulator, bq, events=["Charged"], auto_mapping=False)
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    before = record_ids(bq, pipeline, "charged")
    emulator.add_records("Charged", last, 5)

    upload = bigquery.Client.load_table_from_file

    def upload_with_a_broken_row(self, source, destination, *args, **kwargs):
        rows = pq.read_table(source)
        broken = rows["event_props"].to_pylist()
        broken[-1] = "{not json"
        rows = rows.set_column(
            rows.schema.get_field_index("event_props"), "event_props", pa.array(broken)
        )
        buffer = io.BytesIO()
        pq.write_table(rows, buffer)
        buffer.seek(0)
        return upload(self, buffer, destination, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "load_table_from_file", upload_with_a_broken_row)
    result = load(pipeline, first, last)
    assert not result.success
    assert record_ids(bq, pipeline, "charged") == before
    assert tables(bq, pipeline) == {"charged", COLUMN_MAP_TABLE}  # no staging table either


def test_table_prefix_and_hostile_event_names_get_their_own_tables(
    tmp_path, make_emulator, bigquery_emulator
):
    bq = bigquery_emulator
    hostile = 'x"; drop table y; --'
    events = ["App Launched", hostile]
    pipeline = bigquery_pipeline(
        tmp_path, make_emulator(events=events), bq, events=events, table_prefix="ct"
    )
    first, last = recent_days(pipeline.settings, 1)
    assert load(pipeline, first, last).success
    assert tables(bq, pipeline) == {"ct_app_launched", "ct_x_drop_table_y", COLUMN_MAP_TABLE}
    assert daily_rows(bq, pipeline, "ct_x_drop_table_y") == pipeline.truth(hostile, first, last)
    sql = f"SELECT DISTINCT event_name FROM {name(bq, pipeline, 'ct_x_drop_table_y')}"
    assert bq.query(sql) == [(hostile,)]


def test_new_property_adds_a_column_and_drift_widens_it(tmp_path, make_emulator, bigquery_emulator):
    bq = bigquery_emulator
    pipeline = bigquery_pipeline(tmp_path, make_emulator(), bq, events=["Product Viewed"])
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, first).success
    assert "event_props__coupon" not in columns(bq, pipeline, "product_viewed")

    # The same project later: a new property from `last` on, then its type drifts.
    with_coupon = make_emulator(extra_event_props={"Coupon": 10}, extra_event_props_from=last)
    assert load(replace(pipeline, emulator=with_coupon), last, last).success
    assert columns(bq, pipeline, "product_viewed")["event_props__coupon"] == "INT64"
    drifted = make_emulator(extra_event_props={"Coupon": "SPRING10"}, extra_event_props_from=first)
    assert load(replace(pipeline, emulator=drifted), first, first).success

    assert columns(bq, pipeline, "product_viewed")["event_props__coupon"] == "STRING"
    sql = (
        "SELECT DISTINCT event_props__coupon FROM "
        f"{name(bq, pipeline, 'product_viewed')} ORDER BY 1"
    )
    assert bq.query(sql) == [("10",), ("SPRING10",)]
    assert daily_rows(bq, pipeline, "product_viewed") == {
        first: drifted.true_count("Product Viewed", first),
        last: with_coupon.true_count("Product Viewed", last),
    }


def test_json_mode_keeps_sections_as_native_json(tmp_path, make_emulator, bigquery_emulator):
    bq = bigquery_emulator
    pipeline = bigquery_pipeline(
        tmp_path, make_emulator(), bq, events=["Charged"], auto_mapping=False
    )
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    assert columns(bq, pipeline, "charged") == {
        "_record_id": "STRING",
        "event_name": "STRING",
        "ts": "INT64",
        "event_time": "DATETIME",
        "event_time_utc": "TIMESTAMP",
        "profile": "JSON",
        "event_props": "JSON",
        "session_props": "JSON",
        "_loaded_at": "TIMESTAMP",
    }
    assert daily_rows(bq, pipeline, "charged") == pipeline.truth("Charged", first, last)
    sql = (
        "SELECT JSON_TYPE(event_props.Items), TO_JSON_STRING(event_props) "
        f"FROM {name(bq, pipeline, 'charged')} LIMIT 1"
    )
    ((items_type, props),) = bq.query(sql)
    assert items_type == "array"
    assert isinstance(orjson.loads(props)["Items"], list)


def test_the_settings_model_reads_its_variables_and_never_shows_the_key(monkeypatch):
    key = base64.b64encode(orjson.dumps({"private_key": "PRIVATE-KEY-3f1a"})).decode()
    monkeypatch.setenv("BIGQUERY_GCP_CREDENTIALS", key)
    monkeypatch.setenv("BIGQUERY_LOCATION", "EU")
    settings = BigQuerySettings.from_env("events")
    assert (settings.location_or_none, settings.key_file) == ("EU", "")
    assert settings.gcp_credentials.get_secret_value() == key
    assert key not in repr(settings) + str(settings) + str(settings.model_dump())


def test_missing_settings_give_one_clear_error(
    tmp_path, make_emulator, bigquery_emulator, monkeypatch
):
    pipeline = bigquery_pipeline(tmp_path, make_emulator(), bigquery_emulator)
    monkeypatch.delenv("BIGQUERY_PROJECT")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(SettingsError) as error:
        build_bigquery_resources(pipeline.warehouse)
    message = str(error.value)
    assert "BIGQUERY_PROJECT is not set" in message
    assert "GOOGLE_APPLICATION_CREDENTIALS=" in message and "no such file" in message


def test_the_service_account_key_never_shows(
    tmp_path, make_emulator, bigquery_emulator, monkeypatch, capfd
):
    secret = "PRIVATE-KEY-b7c41e"
    key = base64.b64encode(orjson.dumps({"type": "service_account", "private_key": secret}))
    monkeypatch.setenv("BIGQUERY_GCP_CREDENTIALS", key.decode())
    # The emulator takes no real key; the product still decodes and hands it to Google's auth.
    keys_seen = []
    monkeypatch.setattr(
        service_account.Credentials,
        "from_service_account_info",
        lambda info: keys_seen.append(info) or AnonymousCredentials(),
    )
    bq = bigquery_emulator
    pipeline = bigquery_pipeline(tmp_path, make_emulator(), bq, events=["Charged"])
    first, last = recent_days(pipeline.settings, 1)
    resources = build_bigquery_resources(pipeline.warehouse)
    result = pipeline.load(first, last, **resources)
    assert result.success
    assert daily_rows(bq, pipeline, "charged") == pipeline.truth("Charged", first, last)
    assert keys_seen and keys_seen[0]["private_key"] == secret
    shown = [
        capfd.readouterr(),
        repr(resources),
        [str(event) for event in result.all_events],
        pipeline.settings.model_dump(),
        repr(pipeline.warehouse),
        pipeline.warehouse.settings.model_dump(),
    ]
    assert secret not in str(shown)
    assert key.decode()[:40] not in str(shown)
    metadata = [
        m.materialization.metadata
        for m in result.get_asset_materialization_events()
        if m.asset_key == AssetKey(["clevertap", "charged"])
    ]
    assert metadata and secret not in str(metadata)


def test_the_connection_check_creates_the_dataset_and_names_the_problem(
    tmp_path, make_emulator, bigquery_emulator, monkeypatch
):
    pipeline = bigquery_pipeline(tmp_path, make_emulator(), bigquery_emulator)
    dataset = pipeline.warehouse.schema
    assert "created" in check_bigquery_destination(pipeline.warehouse)
    assert dataset in check_bigquery_destination(pipeline.warehouse)
    assert "present" in check_bigquery_destination(pipeline.warehouse)

    def no_credentials(*_, **__):
        raise DefaultCredentialsError("none found")

    monkeypatch.setattr("google.auth.default", no_credentials)
    with pytest.raises(ConnectionError, match="no usable Google credentials"):
        check_bigquery_destination(pipeline.warehouse)


def test_a_downstream_asset_can_read_an_event_table_back_as_a_batch(
    tmp_path, make_emulator, bigquery_emulator
):
    bq = bigquery_emulator
    pipeline = bigquery_pipeline(
        tmp_path, make_emulator(), bq, events=["Charged"], auto_mapping=False
    )
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    table_slice = TableSlice(table="charged", schema=pipeline.warehouse.schema, database=bq.project)
    batch = EventBatchBigQueryTypeHandler().load_input(None, table_slice, bq.client())
    try:
        assert batch.rows == sum(pipeline.truth("Charged", first, last).values())
        assert batch.json_columns == {"profile", "event_props", "session_props"}
        assert batch.columns()["event_time"] == Kind.TIMESTAMP
    finally:
        batch.discard()


BIGQUERY_CODECS = {"ZSTD", "SNAPPY"}
"""Of the codecs BigQuery's Parquet loads list (GZip, LZO, Snappy, ZSTD), the two we write;
LZ4 is refused (https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-parquet)."""
BIGQUERY_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
"""https://cloud.google.com/bigquery/docs/schemas#column_names (no flexible names in Parquet)."""


def largest_row(batch: pa.RecordBatch) -> int:
    """Bytes of the largest row: text at its length, any other value at 8 bytes."""
    sizes = pa.array([0] * batch.num_rows, pa.int64())
    for column in batch.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            size = pc.fill_null(pc.binary_length(column), 0)
        else:
            size = pa.array([8] * batch.num_rows, pa.int64())
        sizes = pc.add(sizes, pc.cast(size, pa.int64()))
    return pc.max(sizes).as_py() or 0


@pytest.fixture
def handed_to_bigquery(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every file a load job receives, checked as BigQuery's Parquet loading page asks: its
    codecs, its column names, its largest row. The upload itself goes on unchanged."""
    received: list[dict] = []
    upload = bigquery.Client.load_table_from_file

    def checked_upload(self, file_obj, *args, **kwargs):
        parquet = pq.ParquetFile(file_obj.name)
        metadata = parquet.metadata
        row_bytes = max((largest_row(batch) for batch in parquet.iter_batches()), default=0)
        received.append(
            {
                "codecs": {
                    metadata.row_group(g).column(c).compression
                    for g in range(metadata.num_row_groups)
                    for c in range(metadata.num_columns)
                },
                "columns": parquet.schema_arrow.names,
                "max_row_bytes": row_bytes,
            }
        )
        return upload(self, file_obj, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "load_table_from_file", checked_upload)
    return received


def test_the_files_handed_to_bigquery_are_what_its_parquet_loads_take(
    tmp_path, make_emulator, bigquery_emulator, handed_to_bigquery
):
    """A 350-character property name becomes a 300-character column with a hash, the same
    column at every load; codecs and rows as BigQuery takes them."""
    bq = bigquery_emulator
    long_key = "Very Long Property " * 18 + "End"
    emulator = make_emulator(extra_event_props={long_key: 7})
    pipeline = bigquery_pipeline(tmp_path, emulator, bq, events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success
    assert load(pipeline, first, last).success  # a rerun finds the same column

    long_columns = [
        c for c in columns(bq, pipeline, "charged") if c.startswith("event_props__very")
    ]
    assert len(long_columns) == 1 and len(long_columns[0]) == 300
    sql = f"SELECT DISTINCT `{long_columns[0]}` FROM {name(bq, pipeline, 'charged')}"
    assert bq.query(sql) == [(7,)]
    assert daily_rows(bq, pipeline, "charged") == pipeline.truth("Charged", first, last)
    assert len(handed_to_bigquery) == 2
    for file in handed_to_bigquery:
        assert file["codecs"] <= BIGQUERY_CODECS
        assert all(BIGQUERY_COLUMN.match(column) for column in file["columns"])
        assert 0 < file["max_row_bytes"] <= pipeline.warehouse.row_limit_bytes == 50 * 2**20


def test_first_loads_at_the_same_moment_create_one_dataset_and_one_table(
    tmp_path, make_emulator, bigquery_emulator
):
    """Runs that find neither dataset nor table, started together (one per event, and a second
    one of Charged over an overlapping day), each create them: every run succeeds, exactly."""
    bq = bigquery_emulator
    events = ["App Launched", "Product Viewed", "Charged"]
    emulator = make_emulator()
    pipeline = bigquery_pipeline(tmp_path, emulator, bq, events=events)
    first, last = recent_days(pipeline.settings, 2)
    runs = [(event, first, last) for event in events] + [("Charged", last, last)]

    def run(event_and_days) -> bool:
        event, day_from, day_to = event_and_days
        folder = tmp_path / f"{slug(event)}_{day_from}"
        folder.mkdir()
        one_event = make_pipeline(folder, emulator, events=[event], destination="bigquery")
        return load(one_event, day_from, day_to).success

    with ThreadPoolExecutor(len(runs)) as overlapping:
        assert list(overlapping.map(run, runs)) == [True] * len(runs)
    assert tables(bq, pipeline) == {*map(slug, events), COLUMN_MAP_TABLE}
    for event in events:
        assert daily_rows(bq, pipeline, slug(event)) == pipeline.truth(event, first, last)
        assert duplicates(bq, pipeline, slug(event)) == 0


def test_the_webhook_table_is_clustered_on_its_range_so_a_merge_reads_only_its_range(
    tmp_path, bigquery_emulator
):
    """Its partition key is text (`_inbox_range`), which BigQuery cannot partition on: the
    table is clustered on it instead, and a range's MERGE replaces only that range."""
    bq = bigquery_emulator
    dataset = bq.new_dataset()
    client = bq.client()
    client.create_dataset(f"{bq.project}.{dataset}")

    def load_range(key: str, ids: list[int]) -> None:
        folder = tmp_path / key
        folder.mkdir(exist_ok=True)
        path = folder / "batch.parquet"
        pq.write_table(pa.table({"_inbox_range": [key] * len(ids), "inbox_id": ids}), path)
        table_slice = TableSlice(
            table="webhook_events",
            schema=dataset,
            database=bq.project,
            partition_dimensions=[
                TablePartitionDimension(partition_expr="_inbox_range", partitions=[key])
            ],
        )
        batch = EventBatch("webhook_events", path, len(ids))
        replace_window(BigQueryWindowLoad(client), table_slice, batch)

    load_range("1-2", [1, 2])
    load_range("3-4", [3, 4])
    load_range("1-2", [1, 2])  # a rerun of the first range
    table = client.get_table(f"{bq.project}.{dataset}.webhook_events")
    assert table.clustering_fields == ["_inbox_range"]
    rows = bq.query(f"SELECT inbox_id FROM `{bq.project}.{dataset}.webhook_events` ORDER BY 1")
    assert rows == [(1,), (2,), (3,), (4,)]


def test_widening_keeps_the_owners_clustering_labels_descriptions_and_policy_tags(
    tmp_path, make_emulator, bigquery_emulator, monkeypatch, sent
):
    """A user clusters the table, labels it, describes columns and tags one with a policy; a
    widening rewrites the table and keeps all of it
    (without CLUSTER BY, BigQuery refuses to replace a clustered table outright), checked in
    the DDL parsed as BigQuery SQL."""
    bq = bigquery_emulator
    pipeline = bigquery_pipeline(tmp_path, make_emulator(), bq, events=["Product Viewed"])
    first, last = recent_days(pipeline.settings, 2)
    with_coupon = make_emulator(extra_event_props={"Coupon": 10})
    assert load(replace(pipeline, emulator=with_coupon), first, first).success
    table_id = f"{bq.project}.{pipeline.warehouse.schema}.product_viewed"
    table = bq.client().get_table(table_id)
    table.clustering_fields = ["event_name"]
    table.labels = {"owner": "growth"}
    table.description = "CleverTap's Product Viewed, 'as loaded'"
    tag = "projects/p/locations/us/taxonomies/1/policyTags/2"
    table.schema = [
        annotated(field, "The coupon code", [tag])
        if field.name == "event_props__coupon"
        else annotated(field, "CleverTap's event name", [])
        if field.name == "event_name"
        else field
        for field in table.schema
    ]
    bq.client().update_table(table, ["clustering_fields", "labels", "description", "schema"])

    # As BigQuery returns the table: with the policy tag bqemulator does not keep.
    get_table, update_table = bigquery.Client.get_table, bigquery.Client.update_table
    updates: list[list[bigquery.SchemaField]] = []

    def as_bigquery_returns_it(self, reference, *args, **kwargs):
        table = get_table(self, reference, *args, **kwargs)
        if table.table_id == "product_viewed" and not updates:
            table.schema = [
                annotated(field, field.description, [tag])
                if field.name == "event_props__coupon"
                else field
                for field in table.schema
            ]
        return table

    def recorded_update(self, table, fields, *args, **kwargs):
        if "schema" in fields:
            updates.append(list(table.schema))
        return update_table(self, table, fields, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "get_table", as_bigquery_returns_it)
    monkeypatch.setattr(bigquery.Client, "update_table", recorded_update)
    drifted = make_emulator(extra_event_props={"Coupon": "SPRING10"})
    assert load(replace(pipeline, emulator=drifted), last, last).success

    (rewrite,) = [sql for sql in sent if sql.startswith("CREATE OR REPLACE TABLE")]
    ddl = parsed(rewrite, "bigquery")
    assert ddl.find(exp.ClusterProperty).sql("bigquery") == "CLUSTER BY `event_name`"
    assert "labels=[('owner', 'growth')]" in ddl.sql("bigquery")
    partitioning = ddl.find(exp.PartitionedByProperty).sql("bigquery")
    assert partitioning == "PARTITION BY DATETIME_TRUNC(`event_time`, DAY)"
    table = bq.client().get_table(table_id)
    assert columns(bq, pipeline, "product_viewed")["event_props__coupon"] == "STRING"
    # bqemulator keeps no partitioning, clustering or labels from DDL: the SQL checks above.
    assert table.description == "CleverTap's Product Viewed, 'as loaded'"
    # Column descriptions and policy tags, which no DDL carries, are put back after it.
    fields = {field.name: field for field in table.schema}
    assert fields["event_props__coupon"].description == "The coupon code"
    assert fields["event_name"].description == "CleverTap's event name"
    # bqemulator drops policy tags from every schema it stores, so what the rewrite sends them
    # back with is checked in the update request (tables.patch, schema.fields[].policyTags:
    # https://cloud.google.com/bigquery/docs/column-level-security#set_policy).
    (restored,) = [fields for fields in updates if "policyTags" in str(fields)]
    assert {field.name: field.to_api_repr().get("policyTags") for field in restored}[
        "event_props__coupon"
    ] == {"names": [tag]}
    assert daily_rows(bq, pipeline, "product_viewed") == {
        first: with_coupon.true_count("Product Viewed", first),
        last: drifted.true_count("Product Viewed", last),
    }


def annotated(field: bigquery.SchemaField, description: str, tags: list[str]):
    """`field` with what a table's owner sets on a column in the console."""
    spelled = {**field.to_api_repr(), "description": description}
    if tags:
        spelled["policyTags"] = {"names": tags}
    return bigquery.SchemaField.from_api_repr(spelled)


def test_dataframe_outputs_replace_their_partition_and_add_columns(bigquery_emulator):
    """The shared window replacement (one MERGE), for a polars output."""
    bq = bigquery_emulator
    dataset = bq.new_dataset()
    assert_frame_outputs_replace_their_partition(
        {"io_manager": BigQueryEventIOManager(project=bq.project, dataset=dataset)},
        {"table": "orders", "partition_expr": "event_time"},
        lambda: bq.query(
            "SELECT DATE(event_time), COUNT(*), COUNT(currency) "
            f"FROM `{bq.project}.{dataset}.orders` GROUP BY 1 ORDER BY 1"
        ),
    )


def test_a_table_that_requires_a_partition_filter_keeps_loading_widening_and_checking(
    tmp_path, make_emulator, bigquery_emulator, strict_bigquery
):
    """The owner sets `require_partition_filter`; every statement the next loads and the
    duplicate check send filters on `event_time`, so a load with a widening and a re-run
    both succeed with exactly the truth, and the check reads the run's days
    (https://cloud.google.com/bigquery/docs/managing-partitioned-tables#require-filter)."""
    bq = bigquery_emulator
    numbers = make_emulator(extra_event_props={"Coupon": 10})
    pipeline = bigquery_pipeline(tmp_path, numbers, bq, events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, first).success
    strict_bigquery.require_filter["charged"] = "event_time"

    drifted = make_emulator(extra_event_props={"Coupon": "SPRING10"})
    result = load(replace(pipeline, emulator=drifted), last, last)
    assert result.success
    assert load(replace(pipeline, emulator=drifted), last, last).success
    assert columns(bq, pipeline, "charged")["event_props__coupon"] == "STRING"
    strict_bigquery.require_filter.clear()  # the test's own reads below
    truth = {
        first: numbers.true_count("Charged", first),
        last: drifted.true_count("Charged", last),
    }
    assert daily_rows(bq, pipeline, "charged") == truth
    strict_bigquery.require_filter["charged"] = "event_time"
    stats = BigQueryEventStats(project=bq.project)
    schema = pipeline.warehouse.schema
    assert stats.duplicate_record_ids(schema, "charged", first, last) == 0
    assert stats.daily_row_counts(schema, "charged", first, last) == truth


def test_a_merge_that_loses_to_a_concurrent_one_is_run_again(
    tmp_path, make_emulator, bigquery_emulator, monkeypatch
):
    """BigQuery fails a mutating DML statement that conflicts with a concurrent one once its
    own retries are spent
    (https://cloud.google.com/bigquery/docs/data-manipulation-language#dml_statement_conflicts);
    the first two MERGEs here meet one (bqemulator runs them one at a time, so the conflict
    is BigQuery's answer, given before the statement runs), and the load runs it again."""
    bq = bigquery_emulator
    pipeline = bigquery_pipeline(tmp_path, make_emulator(), bq, events=["Charged"])
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, first).success
    merges: list[str] = []
    run_query = bigquery.Client.query

    def concurrent_first(self, query, *args, **kwargs):
        if query.startswith("MERGE"):
            merges.append(query)
            if len(merges) <= 2:
                table = query.split()[1]
                raise BadRequest(
                    f"Could not serialize access to table {table} due to concurrent update"
                )
        return run_query(self, query, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "query", concurrent_first)
    assert load(pipeline, first, last).success
    assert len(merges) == 3
    assert daily_rows(bq, pipeline, "charged") == pipeline.truth("Charged", first, last)
    assert duplicates(bq, pipeline, "charged") == 0
    assert tables(bq, pipeline) == {"charged", COLUMN_MAP_TABLE}


def test_json_numbers_are_never_rounded_in_the_merge(
    tmp_path, make_emulator, bigquery_emulator, sent
):
    """BigQuery's `PARSE_JSON` rounds a number INT64, UINT64 and FLOAT64 cannot hold only
    when told to (`wide_number_mode => 'round'`) and refuses it otherwise
    (https://cloud.google.com/bigquery/docs/reference/standard-sql/json_functions#parse_json).
    bqemulator keeps JSON as text and rounds nothing, so the MERGE is checked as BigQuery
    SQL: what is stored comes from an exact parse, or else is the exact text as a JSON
    string; a round-mode parse only tests that the text is JSON. (The CleverTap emulator
    cannot send a number wider than 64 bits, so the load itself carries ordinary ones.)"""
    bq = bigquery_emulator
    emulator = make_emulator()
    pipeline = bigquery_pipeline(tmp_path, emulator, bq, events=["Charged"], auto_mapping=False)
    first, last = recent_days(pipeline.settings, 2)
    assert load(pipeline, first, last).success

    (merge,) = [parsed(sql, "bigquery") for sql in sent if sql.startswith("MERGE")]
    modes = [
        literal
        for literal in merge.find_all(exp.Literal)
        if literal.is_string and literal.name in ("round", "exact")
    ]
    assert {literal.name for literal in modes} == {"round", "exact"}
    for literal in modes:
        if literal.name == "round":
            assert literal.find_ancestor(exp.Is) is not None, merge.sql("bigquery")
    assert daily_rows(bq, pipeline, "charged") == pipeline.truth("Charged", first, last)
    sql = f"SELECT JSON_TYPE(event_props.Items) FROM {name(bq, pipeline, 'charged')} LIMIT 1"
    assert bq.query(sql) == [("array",)]

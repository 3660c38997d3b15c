"""Redshift's bulk path (`REDSHIFT_S3_STAGING_URI`): Parquet to S3, `COPY ... FORMAT AS
PARQUET` into a staging table, then the window's DELETE and an INSERT from it, in one
transaction.

What is real here and what is not:

- S3 is moto's server in its own process, over HTTP, through boto3 as in production: the
  Parquet objects really are uploaded, read back by the COPY below, and deleted.
- PostgreSQL (the Redshift double, `postgres_server.REDSHIFT_LIKE`) has no COPY from S3, so
  only that one statement is emulated (`emulated_copy`): it is parsed as Redshift SQL, the
  object it names is fetched from the S3 server, checked as Redshift's COPY from Parquet
  checks it (the staging table has exactly the file's columns, matched by position; each
  Parquet type is one that loads into the column's type; only parameters columnar COPY takes)
  and its rows are loaded into the staging table by position. Everything else, the staging
  table, the DELETE and the INSERT ... SELECT with JSON_PARSE over VARBYTE, runs for real.
- The SQL is checked against Redshift's documented grammar by parsing it with sqlglot's
  `redshift` dialect; the statements sqlglot has no grammar for (LOCK) against the synopsis
  on AWS's page.

The pages the checks follow: COPY from columnar formats (positional mapping, equal column
counts, parameters; https://docs.aws.amazon.com/redshift/latest/dg/copy-usage_notes-copy-from-columnar.html),
column mapping (https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-column-mapping.html),
IAM_ROLE (https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-authorization.html),
SUPER from Parquet and SERIALIZETOJSON, which is why JSON goes through VARBYTE
(https://docs.aws.amazon.com/redshift/latest/dg/ingest-super.html#copy_json-from-parquet-orc),
and the staging-table merge in one transaction
(https://docs.aws.amazon.com/redshift/latest/dg/merge-replacing-existing-rows.html).

Not verifiable here: that a real cluster's COPY reads these files (Spectrum's Parquet reader,
the IAM role's trust and bucket policy, the bucket's region)."""

import re
from dataclasses import replace
from datetime import date
from uuid import uuid4

import boto3
import boto3.s3.transfer
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sqlglot import exp

from clevertap_assets.destinations.redshift.resources import build_redshift_resources
from clevertap_assets.destinations.redshift.staging import (
    PARQUET_COMPRESSION,
)
from clevertap_assets.settings import SettingsError
from clevertap_assets_tests.harness import EVENTS, make_pipeline, recent_days
from clevertap_assets_tests.postgres_server import postgres_server  # noqa: F401
from clevertap_assets_tests.redshift_s3_copy import (
    ROLE,
    staged_resources,
)
from clevertap_assets_tests.s3_server import S3Server, s3_server  # noqa: F401
from clevertap_assets_tests.sql_grammar import parsed

TABLES = ("app_launched", "product_viewed", "charged")
LOCK_SYNOPSIS = re.compile(r'^LOCK (TABLE )?"[^"]+"\."[^"]+"$')
"""`LOCK [ TABLE ] table_name [, ...]` (https://docs.aws.amazon.com/redshift/latest/dg/r_LOCK.html);
sqlglot has no grammar for LOCK."""


def days_in(table: pa.Table) -> dict[date, int]:
    days = pc.cast(table.column("event_time"), pa.date32())
    counts = pc.value_counts(days)
    return {entry["values"].as_py(): entry["counts"].as_py() for entry in counts}


def test_s3_staged_loads_equal_the_truth_and_leave_no_objects(
    tmp_path,
    make_emulator,
    warehouse,
    s3_server,  # noqa: F811
    bucket,
    recorder,
):
    pipeline = make_pipeline(tmp_path, make_emulator(duplicate_share=0.2), destination="redshift")
    first, last = recent_days(pipeline.settings, 3)
    resources = staged_resources(warehouse, bucket)
    result = pipeline.load(first, last, **resources)
    assert result.success
    assert not any(s3_server.secret_key in repr(event) for event in result.all_events)
    loaded = {table: warehouse.daily_rows(table) for table in TABLES}
    for event, table in zip(EVENTS, TABLES, strict=True):
        assert loaded[table] == pipeline.truth(event, first, last)
        assert warehouse.query(
            f'SELECT count(*) - count(DISTINCT _record_id) FROM "clevertap"."{table}"'
        ) == [(0,)]
    # JSON arrived through VARBYTE and JSON_PARSE as JSON, not as a string.
    ((kind,),) = warehouse.query(
        """SELECT DISTINCT jsonb_typeof(event_props__items) FROM "clevertap"."charged" """
    )
    assert kind == "array"

    # One Parquet object per load, Snappy throughout, columns named as the table's, and the
    # rows per local day the truth's; none left in the bucket.
    assert len(recorder.copied) == len(EVENTS)
    for copied in recorder.copied:
        assert copied.key.startswith("loads/clevertap.")
        assert copied.codecs == {PARQUET_COMPRESSION.upper()}
        table = copied.key.split("/")[1].removeprefix("clevertap.")
        assert set(copied.table.column_names) <= set(warehouse.columns(table))
        assert days_in(copied.table) == loaded[table]
    assert s3_server.keys(bucket) == []
    assert not any(s.startswith("INSERT INTO") and " VALUES " in s for s in recorder.statements)

    # A rerun replaces the same days through S3 again: nothing changes, nothing is left.
    assert pipeline.load(first, last, **resources).success
    assert {table: warehouse.daily_rows(table) for table in TABLES} == loaded
    assert s3_server.keys(bucket) == []


def test_a_failed_copy_leaves_the_loaded_days_and_removes_its_object(
    tmp_path,
    make_emulator,
    warehouse,
    s3_server,  # noqa: F811
    bucket,
    recorder,
):
    emulator = make_emulator()
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], destination="redshift")
    first, last = recent_days(pipeline.settings, 2)
    resources = staged_resources(warehouse, bucket)
    assert pipeline.load(first, last, **resources).success
    before = warehouse.query('SELECT _record_id FROM "clevertap"."charged" ORDER BY 1')
    emulator.add_records("Charged", last, 5)
    recorder.fail_copies = True
    assert not pipeline.load(first, last, **resources).success
    assert warehouse.query('SELECT _record_id FROM "clevertap"."charged" ORDER BY 1') == before
    assert s3_server.keys(bucket) == []


def test_a_bucket_that_refuses_the_upload_fails_the_load_with_one_clear_error(
    tmp_path,
    make_emulator,
    warehouse,
    s3_server,  # noqa: F811
    bucket,
    recorder,
):
    pipeline = make_pipeline(tmp_path, make_emulator(), events=["Charged"], destination="redshift")
    first, last = recent_days(pipeline.settings, 2)
    assert pipeline.load(first, last, **staged_resources(warehouse, bucket)).success
    before = warehouse.query('SELECT _record_id FROM "clevertap"."charged" ORDER BY 1')
    missing = f"missing-{uuid4().hex[:12]}"
    result = pipeline.load(first, last, **staged_resources(warehouse, missing))
    assert not result.success
    told = "".join(repr(event) for event in result.all_events)
    assert f"could not upload the rows to s3://{missing}/loads/clevertap.charged/" in told
    assert f"REDSHIFT_S3_STAGING_URI=s3://{missing}/loads/" in told and "NoSuchBucket" in told
    assert s3_server.secret_key not in told
    assert warehouse.query('SELECT _record_id FROM "clevertap"."charged" ORDER BY 1') == before
    assert len(recorder.copied) == 1  # the second load never reached its COPY


def test_every_statement_of_both_paths_is_redshift_sql(
    tmp_path,
    make_emulator,
    warehouse,
    s3_server,  # noqa: F811
    bucket,
    recorder,
):
    """Create, widen, lock, delete, insert (both paths), copy, drop, the catalog reads: each
    parsed by sqlglot's redshift dialect, LOCK by its synopsis."""
    pipeline = make_pipeline(
        tmp_path, make_emulator(), events=["Product Viewed"], destination="redshift"
    )
    first, last = recent_days(pipeline.settings, 2)
    inserting = warehouse.resources()
    staging = staged_resources(warehouse, bucket)
    assert pipeline.load(first, first, **inserting).success
    with_coupon = make_emulator(extra_event_props={"Coupon": 10})
    assert replace(pipeline, emulator=with_coupon).load(last, last, **staging).success
    drifted = make_emulator(extra_event_props={"Coupon": "SPRING10"})
    assert replace(pipeline, emulator=drifted).load(first, first, **inserting).success
    assert replace(pipeline, emulator=drifted).load(last, last, **staging).success
    assert warehouse.daily_rows("product_viewed") == {
        first: drifted.true_count("Product Viewed", first),
        last: drifted.true_count("Product Viewed", last),
    }

    kinds = set()
    for sql in recorder.statements:
        if sql.startswith("LOCK"):
            assert LOCK_SYNOPSIS.match(sql), sql
            kinds.add("LOCK")
            continue
        tree = parsed(sql, "redshift")
        kinds.add(type(tree).__name__)
        if isinstance(tree, exp.Create) and tree.args["kind"] == "TABLE":
            for column in tree.find_all(exp.ColumnDef):
                assert column.name == column.name.lower()
    assert {"Create", "Alter", "Update", "LOCK", "Delete", "Insert", "Copy", "Drop"} <= kinds


def test_staging_settings_name_what_is_wrong(tmp_path, emulator, warehouse, monkeypatch):
    destination = make_pipeline(tmp_path, emulator, destination="redshift").warehouse
    resources = build_redshift_resources(destination)
    assert resources["warehouse_io_manager"].s3_staging is None

    cases = {
        ("", ROLE): "REDSHIFT_IAM_ROLE is set but REDSHIFT_S3_STAGING_URI is not",
        ("s3://b", ROLE): "REDSHIFT_S3_STAGING_URI='s3://b' is not s3://<bucket>",
        ("https://bucket/x", ROLE): "is not s3://<bucket>[/<prefix>]",
        ("s3://my-bucket/loads", ""): "REDSHIFT_IAM_ROLE is not set",
        ("s3://my-bucket/loads", "my-role"): "REDSHIFT_IAM_ROLE='my-role' is not an IAM role ARN",
    }
    for (uri, role), message in cases.items():
        monkeypatch.setenv("REDSHIFT_S3_STAGING_URI", uri)
        monkeypatch.setenv("REDSHIFT_IAM_ROLE", role)
        with pytest.raises(SettingsError, match=re.escape(message)):
            build_redshift_resources(destination)

    monkeypatch.setenv("REDSHIFT_S3_STAGING_URI", "s3://my-bucket/loads")
    monkeypatch.setenv("REDSHIFT_IAM_ROLE", f"{ROLE},{ROLE}-chained")
    staging = build_redshift_resources(destination)["warehouse_io_manager"].s3_staging
    assert (staging.bucket, staging.iam_role) == ("my-bucket", f"{ROLE},{ROLE}-chained")
    key = staging.object_key("clevertap", "charged")
    assert re.fullmatch(r"loads/clevertap\.charged/[0-9a-f]{32}\.parquet", key)
    monkeypatch.setenv("REDSHIFT_IAM_ROLE", "default")
    staging = build_redshift_resources(destination)["warehouse_io_manager"].s3_staging
    copy = parsed(staging.copy_statement(key), "redshift")
    assert copy.args["credentials"].args["iam_role"].sql("redshift") == "default"
    assert warehouse.server.password not in repr(build_redshift_resources(destination))


def test_readers_are_not_locked_out_while_the_rows_go_up_to_s3(
    tmp_path,
    make_emulator,
    warehouse,
    s3_server,  # noqa: F811
    bucket,
    recorder,
    monkeypatch,
):
    """`LOCK` takes ACCESS EXCLUSIVE, which makes every reader of the table wait until the
    transaction ends (https://docs.aws.amazon.com/redshift/latest/dg/r_LOCK.html): the
    Parquet file and its upload come before it, so a reader in the middle of an upload reads
    the previous rows instead of waiting (a reader that waits past `lock_timeout` fails)."""
    pipeline = make_pipeline(tmp_path, make_emulator(), events=["Charged"], destination="redshift")
    first, last = recent_days(pipeline.settings, 2)
    resources = staged_resources(warehouse, bucket)
    assert pipeline.load(first, first, **resources).success
    before = warehouse.query('SELECT count(*) FROM "clevertap"."charged"')
    read_during_upload: list[object] = []
    upload = boto3.s3.transfer.S3Transfer.upload_file

    def reading_meanwhile(self, *args, **kwargs):
        conninfo = warehouse.server.conninfo(warehouse.database)
        with psycopg.connect(conninfo, autocommit=True) as reader:
            reader.execute("SET lock_timeout = '2s'")
            try:
                read_during_upload.append(
                    reader.execute('SELECT count(*) FROM "clevertap"."charged"').fetchall()
                )
            except psycopg.errors.LockNotAvailable as waited:
                read_during_upload.append(str(waited).strip())
        return upload(self, *args, **kwargs)

    monkeypatch.setattr(boto3.s3.transfer.S3Transfer, "upload_file", reading_meanwhile)
    assert pipeline.load(first, last, **resources).success
    assert read_during_upload == [before]
    assert warehouse.daily_rows("charged") == pipeline.truth("Charged", first, last)
    assert s3_server.keys(bucket) == []
    lock, delete = (
        next(i for i, s in enumerate(recorder.statements) if s.startswith(word))
        for word in ("LOCK", "DELETE")
    )
    assert lock < delete


def test_json_over_copys_4_mb_row_is_stored_as_null_counted_and_named(
    tmp_path,
    make_emulator,
    warehouse,
    s3_server,  # noqa: F811
    bucket,
    recorder,
    capsys,
):
    """A cluster that opted in to large strings parses JSON up to 16,000,000 bytes, but COPY
    reads rows of at most 4 MB (`MAX_COPY_ROW_BYTES`): a record whose event properties are 5
    MB of JSON, among normal ones, keeps its row with those properties NULL, counted and
    named once, rather than failing the window's COPY on every run."""
    warehouse.opt_in_to_large_strings()
    emulator = make_emulator(events=["Charged"], duplicate_share=0)
    pipeline = make_pipeline(
        tmp_path, emulator, events=["Charged"], destination="redshift", auto_mapping=False
    )
    first, last = recent_days(pipeline.settings, 2)
    emulator.set_data(oversize_records={("Charged", last): 5 * 2**20})
    result = pipeline.load(first, last, **staged_resources(warehouse, bucket))
    assert result.success
    assert warehouse.daily_rows("charged") == pipeline.truth("Charged", first, last)
    # Only the properties that made the row too large are NULL; its profile is kept.
    assert warehouse.query(
        'SELECT count(*), count(profile) FROM "clevertap"."charged" WHERE event_props IS NULL'
    ) == [(1, 1)]
    (event,) = result.get_asset_materialization_events()[:1]
    assert event.materialization.metadata["json_values_nulled_for_copy"].value == 1
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "COPY" in line]
    assert "4,194,304 bytes" in warning and "REDSHIFT_S3_STAGING_URI" in warning
    assert s3_server.keys(bucket) == []

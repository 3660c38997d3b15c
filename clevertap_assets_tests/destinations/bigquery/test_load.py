"""The column map stored with BigQuery's tables (`_clevertap_columns`): colliding keys keep
their columns across a wiped instance and between two loads at once (`column_map_cases`), on
bqemulator.

What bqemulator cannot show: it runs a script's statements without yielding to another job,
so two claims never overlap there, and its transactions read other jobs' uncommitted rows
(no snapshot isolation). BigQuery cancels one of two transactions that update the same rows
(https://cloud.google.com/bigquery/docs/transactions#transaction_concurrency); that answer
is given here by the client (`test_a_claim_cancelled_for_a_concurrent_one_is_run_again`),
with the concurrent claim committed first, as BigQuery's winner would have."""

import os
from datetime import date

import pytest
from google.api_core.exceptions import BadRequest
from google.cloud import bigquery

from clevertap_assets.days import local_today
from clevertap_assets.destinations.bigquery.resources import build_bigquery_resources
from clevertap_assets.destinations.bigquery.stats import BigQueryEventStats
from clevertap_assets.destinations.column_map import COLUMN_MAP_TABLE
from clevertap_assets.emulator.config import InFlightGate
from clevertap_assets_tests import column_map_cases as cases
from clevertap_assets_tests.bigquery_emulator import BigQueryEmulator
from clevertap_assets_tests.harness import Pipeline

pytestmark = pytest.mark.usefixtures("bigquery_env")


def load(pipeline: Pipeline, first: date, last: date):
    return pipeline.load(first, last, **build_bigquery_resources(pipeline.warehouse))


def held_values(bq: BigQueryEmulator, pipeline: Pipeline) -> dict[str, set[tuple[date, object]]]:
    """Each `event_props__ct_source*` column of `charged` and its distinct (day, value)."""
    table = f"{bq.project}.{pipeline.warehouse.schema}.charged"
    names = [
        f.name for f in bq.client().get_table(table).schema if f.name.startswith(cases.PLAIN_COLUMN)
    ]
    return {
        name: set(bq.query(f"SELECT DISTINCT DATE(event_time), `{name}` FROM `{table}`"))
        for name in names
    }


def test_a_wiped_instance_keeps_each_colliding_key_in_its_column(
    tmp_path, make_emulator, bigquery_emulator
):
    """The second load's instance knows nothing and sees `@ct'\\source ✓` first; the map
    stored with the tables (its key path a query parameter, every character kept) keeps
    `CT Source` in the plain column."""
    dataset = os.environ["BIGQUERY_DATASET"]  # the test's own (`bigquery_env`)
    pipeline = cases.colliding_pipeline(tmp_path, make_emulator, destination="bigquery")
    first, today = cases.load_then_load_on_a_wiped_instance(pipeline, load)
    source, at = cases.assert_each_key_in_its_column(
        held_values(bigquery_emulator, pipeline), today
    )
    assert source == cases.PLAIN_COLUMN
    cases.assert_stored(BigQueryEventStats(project=bigquery_emulator.project), dataset, source, at)
    table = f"{bigquery_emulator.project}.{dataset}.charged"
    rows = bigquery_emulator.query(f"SELECT DATE(event_time), COUNT(*) FROM `{table}` GROUP BY 1")
    assert dict(rows) == pipeline.truth("Charged", first, today)


def test_overlapping_loads_seeing_colliding_keys_in_either_order_keep_each_in_its_column(
    tmp_path, make_emulator, bigquery_emulator, monkeypatch
):
    """Both runs name the keys before either claims a column, and their claim scripts are
    sent together (`ClaimRendezvous`): the first claim to commit owns the plain column, and
    the other load moves its batch to the stored names."""
    rendezvous = cases.ClaimRendezvous()
    run_query = bigquery.Client.query

    def meeting(self, query, *args, **kwargs):
        rendezvous.meet(query)
        return run_query(self, query, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "query", meeting)
    gate = InFlightGate(count=2, timeout_seconds=120)
    pipeline = cases.colliding_pipeline(tmp_path, make_emulator, gate=gate, destination="bigquery")
    _, today = cases.overlapping_loads(pipeline, load, gate)
    cases.assert_each_key_in_its_column(held_values(bigquery_emulator, pipeline), today)


def test_a_claim_cancelled_for_a_concurrent_one_is_run_again(
    tmp_path, make_emulator, bigquery_emulator, monkeypatch
):
    """Today's run names `@ct'\\source ✓` first. Its claim meets a concurrent one that gives
    the plain column to `CT Source`: BigQuery cancels this transaction, the load runs the
    claim again, reads the winner's column and moves its own key to the hashed one."""
    dataset = os.environ["BIGQUERY_DATASET"]  # the test's own (`bigquery_env`)
    pipeline = cases.colliding_pipeline(tmp_path, make_emulator, destination="bigquery")
    today = local_today(pipeline.settings.timezone)
    state = f"`{bigquery_emulator.project}.{dataset}.{COLUMN_MAP_TABLE}`"
    winner = (
        f"CREATE SCHEMA IF NOT EXISTS `{bigquery_emulator.project}.{dataset}`;\n"
        f"CREATE TABLE {state} (table_name STRING, column_name STRING, key_path STRING);\n"
        f"INSERT INTO {state} VALUES ('charged', '{cases.PLAIN_COLUMN}', "
        """'["event_props","CT Source"]')"""
    )
    claims: list[str] = []
    run_query = bigquery.Client.query

    def concurrent_first(self, query, *args, **kwargs):
        if " AS claim " in query:
            claims.append(query)
            if len(claims) == 1:
                bigquery_emulator.query(winner)
                raise BadRequest(
                    f"Transaction is aborted due to concurrent update against table {state}"
                )
        return run_query(self, query, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "query", concurrent_first)
    assert load(pipeline, today, today).success
    assert len(claims) >= 2
    held = held_values(bigquery_emulator, pipeline)
    at = next(name for name, pairs in held.items() if (today, cases.AT_VALUE) in pairs)
    assert at != cases.PLAIN_COLUMN
    assert {value for _, value in held[cases.PLAIN_COLUMN]} <= cases.SOURCES

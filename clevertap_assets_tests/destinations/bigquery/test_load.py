"""The column map stored with BigQuery's tables (`_clevertap_columns`): colliding keys keep
their columns across a wiped instance and between two loads at once (`column_map_cases`), on
bqemulator with BigQuery's conflicts between transactions (`bqemulator_launcher`)."""

from datetime import date

import pytest

from clevertap_assets.destinations.bigquery.resources import build_bigquery_resources
from clevertap_assets.destinations.bigquery.stats import BigQueryEventStats
from clevertap_assets.emulator.config import InFlightGate
from clevertap_assets_tests import column_map_cases as cases
from clevertap_assets_tests.bigquery_emulator import BigQueryEmulator
from clevertap_assets_tests.harness import Pipeline

pytestmark = pytest.mark.usefixtures("bigquery_env")


def load(pipeline: Pipeline, first: date, last: date):
    return pipeline.load(first, last, **build_bigquery_resources(pipeline.settings))


def held_values(bq: BigQueryEmulator, pipeline: Pipeline) -> dict[str, set[tuple[date, object]]]:
    """Each `event_props__ct_source*` column of `charged` and its distinct (day, value)."""
    table = f"{bq.project}.{pipeline.settings.warehouse_schema}.charged"
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
    dataset = bigquery_emulator.new_dataset()
    pipeline = cases.colliding_pipeline(
        tmp_path, make_emulator, destination="bigquery", bigquery_dataset=dataset
    )
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
    tmp_path, make_emulator, bigquery_emulator
):
    """Both runs name the keys before either claims a column: the claims' transactions
    conflict on the lock row, the cancelled one runs again and reads the other's columns,
    and its load moves its batch to the stored names."""
    gate = InFlightGate(count=2, timeout_seconds=120)
    dataset = bigquery_emulator.new_dataset()
    pipeline = cases.colliding_pipeline(
        tmp_path, make_emulator, gate=gate, destination="bigquery", bigquery_dataset=dataset
    )
    _, today = cases.overlapping_loads(pipeline, load, gate)
    cases.assert_each_key_in_its_column(held_values(bigquery_emulator, pipeline), today)

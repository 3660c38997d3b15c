"""The column map stored with Redshift's tables (`_clevertap_columns`): colliding keys keep
their columns across a wiped instance and between two loads at once (`column_map_cases`), on
the PostgreSQL double (SERIALIZABLE, as provisioned clusters run), through the multi-row
INSERTs and through S3 and COPY alike."""

from datetime import date

import psycopg
import pytest

from clevertap_assets.destinations.redshift.stats import RedshiftEventStats
from clevertap_assets.emulator.config import InFlightGate
from clevertap_assets_tests import column_map_cases as cases
from clevertap_assets_tests.redshift_s3_copy import staged_resources
from clevertap_assets_tests.redshift_warehouse import Warehouse

PATHS = ("insert", "s3_copy")


def resources_for(path: str, warehouse: Warehouse, request: pytest.FixtureRequest) -> dict:
    """The INSERT path's resources, or the S3 staging path's (COPY emulated, `recorder`)."""
    if path == "insert":
        return warehouse.resources()
    request.getfixturevalue("recorder")
    return staged_resources(warehouse, request.getfixturevalue("bucket"))


def held_values(warehouse: Warehouse) -> dict[str, set[tuple[date, object]]]:
    """Each `event_props__ct_source*` column of `charged` and its distinct (day, value)."""
    names = [
        name
        for (name,) in warehouse.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'clevertap' AND table_name = 'charged'"
        )
        if name.startswith(cases.PLAIN_COLUMN)
    ]
    return {
        name: set(
            warehouse.query(
                f'SELECT DISTINCT CAST(event_time AS DATE), "{name}" FROM clevertap.charged'
            )
        )
        for name in names
    }


@pytest.mark.parametrize("path", PATHS)
def test_a_wiped_instance_keeps_each_colliding_key_in_its_column(
    tmp_path, make_emulator, warehouse, request, path
):
    """The second load's instance knows nothing and sees `@ct'\\source ✓` first; the map
    stored with the tables keeps `CT Source` in the plain column."""
    resources = resources_for(path, warehouse, request)
    pipeline = cases.colliding_pipeline(tmp_path, make_emulator, destination="redshift")

    def load(pipeline, first, last):
        return pipeline.load(first, last, **resources)

    first, today = cases.load_then_load_on_a_wiped_instance(pipeline, load)
    source, at = cases.assert_each_key_in_its_column(held_values(warehouse), today)
    assert source == cases.PLAIN_COLUMN
    cases.assert_stored(
        RedshiftEventStats(connection=warehouse.connection()), "clevertap", source, at
    )
    assert warehouse.daily_rows("charged") == pipeline.truth("Charged", first, today)


@pytest.mark.parametrize("isolation", ["serializable", "snapshot"])
@pytest.mark.parametrize("path", PATHS)
def test_overlapping_loads_seeing_colliding_keys_in_either_order_keep_each_in_its_column(
    tmp_path, make_emulator, warehouse, request, monkeypatch, path, isolation
):
    """Both runs name the keys before either claims a column, and their claims overlap
    (`ClaimRendezvous`): the first claim to commit owns the plain column, and the other load
    moves its batch to the stored names before it uploads or inserts. Under snapshot
    isolation two claims that only insert would not conflict: the state table's LOCK is
    what orders them."""
    if isolation == "snapshot":
        warehouse.use_snapshot_isolation()
    resources = resources_for(path, warehouse, request)
    rendezvous = cases.ClaimRendezvous()
    execute = psycopg.Connection.execute

    def meeting(self, query, *args, **kwargs):
        rendezvous.meet(str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", meeting)
    gate = InFlightGate(count=2, timeout_seconds=120)
    pipeline = cases.colliding_pipeline(tmp_path, make_emulator, gate=gate, destination="redshift")

    def load(pipeline, first, last):
        return pipeline.load(first, last, **resources)

    _, today = cases.overlapping_loads(pipeline, load, gate)
    cases.assert_each_key_in_its_column(held_values(warehouse), today)

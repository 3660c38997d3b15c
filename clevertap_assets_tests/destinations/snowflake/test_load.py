"""The column map stored with Snowflake's tables (`_CLEVERTAP_COLUMNS`): colliding keys keep
their columns across a wiped instance and between two loads at once (`column_map_cases`),
on fakesnow with Snowflake's table locks (`fake_snowflake.TableLocks`)."""

from datetime import date

from dagster import build_resources

from clevertap_assets.destinations.snowflake.resources import build_snowflake_resources
from clevertap_assets.emulator.config import InFlightGate
from clevertap_assets_tests import column_map_cases as cases
from clevertap_assets_tests.fake_snowflake import fakesnow, load, query


def held_values() -> dict[str, set[tuple[date, object]]]:
    """Each `EVENT_PROPS__CT_SOURCE*` column of `CHARGED` and its distinct (day, value)."""
    names = [
        name
        for (name,) in query(
            "SELECT COLUMN_NAME FROM ANALYTICS.INFORMATION_SCHEMA.COLUMNS WHERE "
            "TABLE_SCHEMA = 'CLEVERTAP' AND TABLE_NAME = 'CHARGED' "
            "AND COLUMN_NAME LIKE 'EVENT_PROPS__CT_SOURCE%'"
        )
    ]
    return {
        name: set(
            query(f'SELECT DISTINCT CAST(EVENT_TIME AS DATE), "{name}" FROM "CLEVERTAP"."CHARGED"')
        )
        for name in names
    }


def test_a_wiped_instance_keeps_each_colliding_key_in_its_column(
    tmp_path, make_emulator, fake_snowflake
):
    """The second load's instance knows nothing and sees `@ct'\\source ✓` first; the map
    stored with the tables (quotes, backslash and all, as the runs read it back) keeps
    `CT Source` in the plain column."""
    pipeline = cases.colliding_pipeline(tmp_path, make_emulator, destination="snowflake")
    first, today = cases.load_then_load_on_a_wiped_instance(pipeline, load)
    source, at = cases.assert_each_key_in_its_column(held_values(), today)
    assert source == cases.PLAIN_COLUMN.upper()
    with build_resources(build_snowflake_resources(pipeline.warehouse)) as resources:
        cases.assert_stored(resources.warehouse_stats, "clevertap", cases.PLAIN_COLUMN, at.lower())
    assert dict(
        query('SELECT CAST(EVENT_TIME AS DATE), COUNT(*) FROM "CLEVERTAP"."CHARGED" GROUP BY 1')
    ) == pipeline.truth("Charged", first, today)


def test_overlapping_loads_seeing_colliding_keys_in_either_order_keep_each_in_its_column(
    tmp_path, make_emulator, fake_snowflake, monkeypatch
):
    """Both runs name the keys before either claims a column, and their claims overlap
    (`ClaimRendezvous`): the first claim to commit owns the plain column, and the other load
    moves its batch to the stored names."""
    rendezvous = cases.ClaimRendezvous()
    execute = fakesnow.cursor.FakeSnowflakeCursor.execute

    def meeting(self, command, *args, **kwargs):
        rendezvous.meet(command)
        return execute(self, command, *args, **kwargs)

    monkeypatch.setattr(fakesnow.cursor.FakeSnowflakeCursor, "execute", meeting)
    gate = InFlightGate(count=2, timeout_seconds=120)
    pipeline = cases.colliding_pipeline(tmp_path, make_emulator, gate=gate, destination="snowflake")
    # fakesnow creates a connection's schema on connect, unguarded: two first connections at
    # once race there (Snowflake itself creates nothing on connect).
    query("CREATE SCHEMA IF NOT EXISTS ANALYTICS.CLEVERTAP")
    _, today = cases.overlapping_loads(pipeline, load, gate)
    cases.assert_each_key_in_its_column(held_values(), today)

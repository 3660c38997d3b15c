"""Redshift loads as Dagster runs them in production, overlapping in separate processes:
`clevertap-assets load` runs started at once, against a database as strict as a
provisioned cluster where PostgreSQL can be (`postgres_server.REDSHIFT_LIKE`), with the
emulator over HTTP, and a mixed-case prefix and schema as users type them.

Each run executes its steps in its own process (the in-process executor): one run per event
meets the others exactly as the steps of one multiprocess run do, at a third of the process
starts, which matters on a two-core machine."""

import os
import subprocess
import threading
from datetime import date, timedelta
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from dagster._core.storage.db_io_manager import TableSlice

from clevertap_assets.days import days_between, local_today
from clevertap_assets.destinations.column_map import COLUMN_MAP_TABLE
from clevertap_assets.destinations.redshift.client import RedshiftConnection, RedshiftDbClient
from clevertap_assets.naming import slug
from clevertap_assets_tests.harness import load_command, write_events_csv
from clevertap_assets_tests.postgres_server import PostgresServer, postgres_server  # noqa: F401

EVENTS = ("App Launched", "Product Viewed", "Charged", "Added To Cart")
PREFIX, SCHEMA = "CT", "CleverTap_Raw"
"""Redshift folds quoted names to lower case unless `enable_case_sensitive_identifier` is on,
and it is off by default
(https://docs.aws.amazon.com/redshift/latest/dg/r_enable_case_sensitive_identifier.html)."""
RUN_SECONDS = 600


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:  # noqa: F811
    return postgres_server.create_redshift_database(f"t_{uuid4().hex[:12]}")


def environment(tmp_path: Path, emulator, server: PostgresServer, database: str) -> dict:
    """What a user sets for DESTINATION=redshift, pointing at the emulator and the database."""
    csv = write_events_csv(tmp_path / "events.csv", EVENTS)
    return {
        **os.environ,
        "CLEVERTAP_EVENTS_CSV": str(csv),
        "CLEVERTAP_API_URL": emulator.url,
        "CLEVERTAP_ACCOUNT_ID": emulator.config.account_id,
        "CLEVERTAP_PASSCODE": emulator.config.passcode,
        "CLEVERTAP_TIMEZONE": emulator.config.timezone,
        "CLEVERTAP_HISTORY_DAYS": "7",
        "DESTINATION": "redshift",
        "TABLE_PREFIX": PREFIX,
        "REDSHIFT_SCHEMA": SCHEMA,
        "REDSHIFT_HOST": server.host,
        "REDSHIFT_PORT": str(server.port),
        "REDSHIFT_DATABASE": database,
        "REDSHIFT_USER": server.user,
        "REDSHIFT_PASSWORD": server.password,
        "REDSHIFT_SSLMODE": "disable",
    }


def start_run(
    tmp_path: Path, env: dict[str, str], events: tuple[str, ...], first: date, last: date
) -> subprocess.Popen:
    """One `clevertap-assets load` run of the last days up to `last` (today), in its own
    process and instance, so the runs overlap as runs of separate deployments would."""
    home = tmp_path / f"dagster_home_{uuid4().hex[:8]}"
    home.mkdir()
    assert last == local_today(env["CLEVERTAP_TIMEZONE"])
    days = [f"--days={(last - first).days + 1}"]
    return subprocess.Popen(
        load_command(*days, *(f"--event={event}" for event in events)),
        env={**env, "DAGSTER_HOME": str(home)},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def succeeded(run: subprocess.Popen) -> str:
    output, _ = run.communicate(timeout=RUN_SECONDS)
    assert run.returncode == 0, output[-5000:]
    return output


def query(server: PostgresServer, database: str, sql: str) -> list[tuple]:
    with psycopg.connect(server.conninfo(database)) as connection:
        return connection.execute(sql).fetchall()


def daily_rows(server: PostgresServer, database: str, table: str) -> dict[date, int]:
    return dict(
        query(
            server,
            database,
            f'SELECT CAST(event_time AS DATE), count(*) FROM "clevertap_raw"."{table}" GROUP BY 1',
        )
    )


@pytest.mark.timeout(1200)
def test_first_load_of_four_events_beside_an_overlapping_load_is_exact_and_a_rerun_changes_nothing(
    tmp_path,
    make_emulator,
    postgres_server,  # noqa: F811
    database,
):
    """Into an empty database at once: four events over three days, one run each (they create
    the schema at the same moment), and a second run of Charged over the last two days (it
    creates the Charged table beside the first, and both replace the same days). Then all of
    it again at once, into existing tables: nothing changes."""
    server = postgres_server
    emulator = make_emulator(events=list(EVENTS), records_per_day=40, duplicate_share=0.2)
    env = environment(tmp_path, emulator, server, database)
    last = local_today(emulator.config.timezone)
    first = last - timedelta(days=2)

    def load_beside_an_overlapping_load() -> None:
        runs = [start_run(tmp_path, env, (event,), first, last) for event in EVENTS]
        runs.append(start_run(tmp_path, env, ("Charged",), first + timedelta(days=1), last))
        for run in runs:
            succeeded(run)

    load_beside_an_overlapping_load()

    tables = query(
        server,
        database,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 2",
    )
    assert tables == sorted(
        [("clevertap_raw", COLUMN_MAP_TABLE)]
        + [("clevertap_raw", f"ct_{slug(event)}") for event in EVENTS],
        key=lambda row: row[1],
    )

    def contents() -> dict[str, tuple]:
        return {
            event: (
                daily_rows(server, database, f"ct_{slug(event)}"),
                query(
                    server,
                    database,
                    f'SELECT count(*) - count(DISTINCT _record_id) FROM "clevertap_raw"."ct_{slug(event)}"',
                ),
            )
            for event in EVENTS
        }

    loaded = contents()
    for event in EVENTS:
        truth = {day: emulator.true_count(event, day) for day in days_between(first, last)}
        assert loaded[event] == (truth, [(0,)])

    load_beside_an_overlapping_load()  # now into existing tables: LOCK, DELETE, INSERT
    assert contents() == loaded


def test_schemas_created_by_two_loads_at_the_same_moment_are_one_schema(
    postgres_server,  # noqa: F811
    database,
):
    """CREATE SCHEMA IF NOT EXISTS still races in the catalog: a load whose CREATE waits on
    another's uncommitted one fails on a duplicate key once that commits
    (pg_namespace_nspname_index), and must find the schema there instead of failing."""
    server = postgres_server
    other_load = psycopg.connect(server.conninfo(database))
    other_load.execute('CREATE SCHEMA IF NOT EXISTS "clevertap_raw"')  # not yet committed
    connection = RedshiftConnection(
        host=server.host,
        port=server.port,
        database=database,
        user=server.user,
        password=server.password,
        sslmode="disable",
    )
    client = RedshiftDbClient(connection)
    outcome: list[BaseException | None] = []

    def ensure() -> None:
        try:
            with client.connect(None, TableSlice("t", "clevertap_raw")) as session:
                client.ensure_schema_exists(None, TableSlice("t", "clevertap_raw"), session)
            outcome.append(None)
        except BaseException as error:  # reported below
            outcome.append(error)

    racing = threading.Thread(target=ensure)
    racing.start()
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    while not query(server, database, waiting)[0][0]:
        racing.join(0.05)
    other_load.commit()
    other_load.close()
    racing.join(30)
    assert outcome == [None]
    assert query(
        server,
        database,
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'clevertap_raw'",
    ) == [(1,)]

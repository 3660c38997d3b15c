"""DuckDB's file lock across runs: no run fails on it, and overlapping loads agree on the
columns of colliding keys.

DuckDB allows one writing process per file, or many reading ones
(https://duckdb.org/docs/stable/connect/concurrency). Each run is a process of its own (a
run worker), so a run's checks and a load of another run meet on the file. These tests run
real runs in processes of their own against a DuckDB file that another process is writing to.
"""

import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    JobDefinition,
    define_asset_job,
    execute_job,
    instance_for_test,
    reconstructable,
)
from dagster._core.instance.ref import InstanceRef

from clevertap_assets.days import local_today
from clevertap_assets.definitions import build_definitions
from clevertap_assets.destinations.duckdb.lock import DuckDBLockTimeout
from clevertap_assets.destinations.duckdb.stats import DuckDBEventStats
from clevertap_assets.emulator import InFlightGate
from clevertap_assets.keys import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from clevertap_assets.settings import load_settings
from clevertap_assets_tests.column_map_cases import assert_each_key_in_its_column
from clevertap_assets_tests.harness import Pipeline, daily_rows, recent_days, write_events_csv

pytestmark = pytest.mark.topology

CHARGED = AssetKey(["clevertap", "charged"])
CHECKS = [
    AssetCheckKey(CHARGED, "no_duplicate_record_ids"),
    AssetCheckKey(CHARGED, "row_count_matches_clevertap"),
]


def load_job() -> JobDefinition:
    """Materialize on `charged`: the asset and its checks, as the run worker builds them."""
    return _job("load_charged", AssetSelection.assets(CHARGED))


def checks_job() -> JobDefinition:
    """ "Execute all" on the checks tab: the two checks alone."""
    return _job("check_charged", AssetSelection.checks(*CHECKS))


def _job(name: str, selection: AssetSelection) -> JobDefinition:
    """A job of the definitions, with their executor, as the run worker builds it."""
    definitions = build_definitions(load_settings())
    job = define_asset_job(name, selection=selection)
    return Definitions.merge(definitions, Definitions(jobs=[job])).resolve_job_def(name)


@pytest.fixture
def pipeline(tmp_path, emulator, monkeypatch) -> Pipeline:
    return pipeline_in_environment(tmp_path, emulator, monkeypatch)


def pipeline_in_environment(tmp_path, emulator, monkeypatch) -> Pipeline:
    """Settings in the environment, so the executor's step processes build the same ones."""
    monkeypatch.setattr("clevertap_assets.settings.load_dotenv", lambda **_: False)
    environment = {
        "CLEVERTAP_EVENTS_CSV": str(write_events_csv(tmp_path / "events.csv", ["Charged"])),
        "CLEVERTAP_API_URL": emulator.url,
        "CLEVERTAP_ACCOUNT_ID": emulator.config.account_id,
        "CLEVERTAP_PASSCODE": emulator.config.passcode,
        "CLEVERTAP_TIMEZONE": emulator.config.timezone,
        "CLEVERTAP_HISTORY_DAYS": "7",
        "DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Pipeline(load_settings(), emulator, environment["DUCKDB_PATH"])


@dataclass
class RunOutcome:
    success: bool
    failures: dict[str, str]
    """Each failed step's error."""
    checks: dict[str, bool]
    """Each check's verdict."""


def run_workers(count: int) -> ProcessPoolExecutor:
    """Run workers as production has them, a process per run: two runs driven from threads
    of one process deadlocked in `logging` (one run's log manager reconfigures logging while
    the other's handler emits), and the test hung."""
    return ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"))


def run_in_processes(
    instance_ref: InstanceRef, first: date, last: date, with_asset: bool
) -> RunOutcome:
    """One run: the asset and its two checks, or the checks alone ("Execute all" on the
    checks tab)."""
    tags = {ASSET_PARTITION_RANGE_START_TAG: first.isoformat()}
    tags[ASSET_PARTITION_RANGE_END_TAG] = last.isoformat()
    with (
        DagsterInstance.from_ref(instance_ref) as instance,
        execute_job(
            reconstructable(load_job if with_asset else checks_job),
            instance=instance,
            tags=tags if with_asset else {},
        ) as result,
    ):
        return RunOutcome(
            success=result.success,
            failures={
                event.step_key: event.event_specific_data.error.to_string()
                for event in result.all_events
                if event.is_step_failure
            },
            checks={
                event.event_specific_data.check_name: event.event_specific_data.passed
                for event in result.all_events
                if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
            },
        )


def hold_write_lock(path: str, ready, release) -> None:
    """Another writing process: what a load of another run looks like to the file."""
    with duckdb.connect(path) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS held (x INTEGER)")
        ready.set()
        release.wait(120)


@contextmanager
def writer_holding(path: str) -> Iterator[tuple[multiprocessing.Process, Callable[[], None]]]:
    """A process holding the file's write lock until `release()` is called."""
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    writer = context.Process(target=hold_write_lock, args=(path, ready, release))
    writer.start()
    try:
        assert ready.wait(60), "the writing process never opened the file"
        yield writer, release.set
    finally:
        release.set()
        writer.join(60)


def wait_for_step_starts(instance: DagsterInstance, count: int) -> None:
    """Until `count` steps have started, i.e. have tried to open the file."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        starts = [
            event
            for run in instance.get_runs()
            for event in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
        ]
        if len(starts) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} steps never started")


def test_checks_wait_for_a_load_in_another_process_and_pass(pipeline):
    first, last = recent_days(pipeline.settings, 7)
    assert pipeline.load(first, last).success
    with (
        instance_for_test() as instance,
        writer_holding(pipeline.duckdb_path) as (_, release),
        run_workers(1) as runner,
    ):
        run = runner.submit(run_in_processes, instance.get_ref(), first, last, False)
        wait_for_step_starts(instance, 1)
        time.sleep(1)  # the checks' step is now trying to open the file
        release()
        outcome = run.result(timeout=240)
    assert outcome.failures == {}
    assert outcome.success
    assert outcome.checks == {"no_duplicate_record_ids": True, "row_count_matches_clevertap": True}


def test_a_load_and_its_checks_run_green_beside_another_runs_checks(pipeline):
    """Two runs at once, as a backfill and "Execute all" on the checks tab do: the load and
    its checks in one process, the checks again in another, all against one file."""
    first, last = recent_days(pipeline.settings, 7)
    assert pipeline.load(first, last).success
    with instance_for_test() as instance, run_workers(2) as launcher:
        runs = [
            launcher.submit(run_in_processes, instance.get_ref(), first, last, with_asset)
            for with_asset in (True, False)
        ]
        outcomes = [run.result(timeout=240) for run in runs]
    assert [outcome.failures for outcome in outcomes] == [{}, {}]
    assert all(outcome.success for outcome in outcomes)
    assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", first, last)
    stats = DuckDBEventStats(database=pipeline.duckdb_path)
    assert stats.duplicate_record_ids("clevertap", "charged", first, last) == 0


def test_overlapping_runs_seeing_colliding_keys_in_either_order_keep_each_in_its_column(
    tmp_path, make_emulator, monkeypatch
):
    """Two runs at once on an empty pipeline: one sees only `CT Source`, the other first
    `@ct_source` (it sorts first on the day both appear). The account's pool lets two readers
    in and the emulator holds each run's first request until both are reading, so both name
    the keys before either load commits; the first to commit owns the plain column and the
    other moves its batch to the stored names, so each property's values stay in one column
    of their own."""
    today = local_today("UTC")
    yesterday = today - timedelta(days=1)
    gate = InFlightGate(count=2, timeout_seconds=120)
    emulator = make_emulator(
        events=["Charged"],
        extra_event_props={"@ct_source": "at"},
        extra_event_props_from=today,
        gate=gate,
    )  # one day a run: one cursor, whose requests follow one another
    pipeline = pipeline_in_environment(tmp_path, emulator, monkeypatch)
    two_readers = {"concurrency": {"pools": {"default_limit": 2}}}
    with instance_for_test(overrides=two_readers) as instance, run_workers(2) as launcher:
        runs = [
            launcher.submit(run_in_processes, instance.get_ref(), day, day, True)
            for day in (yesterday, today)
        ]
        outcomes = [run.result(timeout=240) for run in runs]
    assert gate.filled
    assert [outcome.failures for outcome in outcomes] == [{}, {}]
    with duckdb.connect(pipeline.duckdb_path, read_only=True) as connection:
        names = [
            name
            for (name,) in connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'charged' "
                "AND starts_with(column_name, 'event_props__ct_source')"
            ).fetchall()
        ]
        held = {
            name: set(
                connection.execute(
                    f"SELECT DISTINCT CAST(event_time AS DATE), {name} FROM clevertap.charged"
                ).fetchall()
            )
            for name in names
        }
    assert_each_key_in_its_column(held, today)
    assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", yesterday, today)


def test_a_reader_gives_up_after_its_wait_with_a_message_naming_the_file_and_holder(pipeline):
    first, last = recent_days(pipeline.settings, 1)
    assert pipeline.load(first, last).success
    path = pipeline.duckdb_path
    stats = DuckDBEventStats(database=path, lock_timeout_seconds=1)
    with writer_holding(path) as (writer, _), pytest.raises(DuckDBLockTimeout) as gave_up:
        stats.duplicate_record_ids("clevertap", "charged", first, last)
    assert str(gave_up.value).startswith(
        f"DuckDB file {path!r} was still locked by process {writer.pid} ("
    )
    assert "after waiting 1 s to open it for reading" in str(gave_up.value)
    assert stats.duplicate_record_ids("clevertap", "charged", first, last) == 0

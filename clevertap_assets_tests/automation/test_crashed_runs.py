"""Runs whose worker is killed (`kill -9` of the process group: an OOM kill, a lost node).

The run is a real headless process (`clevertap-assets load`, `dagster asset materialize`) in a
PID namespace and session of its own, as in another container, on a persistent instance; the
test kills its whole process group mid-read, then lets the schedule, the sensor or the next
headless run go on as they would, and checks the warehouse against the emulator's truth. Only
the instance is shared: a run is judged by its heartbeat there, never by a process id.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
    materialize,
)

from clevertap_assets.assets.pipeline_events import pipeline_facts
from clevertap_assets.automation.sensors import webhook_result
from clevertap_assets.batch.settings import SPOOL_DIR_ENV
from clevertap_assets.days import local_today
from clevertap_assets.definitions import build_definitions, build_webhook_definitions
from clevertap_assets.emulator import CleverTapEmulator
from clevertap_assets.headless import load_days
from clevertap_assets.keys import clevertap_pool
from clevertap_assets.liveness import SILENCE_SECONDS_ENV, last_signs_of_life
from clevertap_assets.resources import build_resources
from clevertap_assets.webhooks.inbox import WebhookInbox
from clevertap_assets_tests.daemon import apply_partition_requests, execute, run_range, tick
from clevertap_assets_tests.harness import daily_rows, make_pipeline, pipeline_env

# Each test kills real runs in PID namespaces of their own, as in containers.
pytestmark = pytest.mark.topology

REPOSITORY = Path(__file__).resolve().parents[2]
MODULE = "clevertap_assets.definitions"
STARTED_TIMEOUT_SECONDS = 120


@pytest.fixture
def dagster_home(tmp_path: Path) -> Iterator[Path]:
    """A persistent instance with the project's dagster.yaml (one reader per account)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPOSITORY / "dagster.yaml", home / "dagster.yaml")
    yield home


SILENCE_SECONDS = "4"
"""`CLEVERTAP_RUN_SILENCE_SECONDS` of every process here: a killed run is judged dead soon."""


@contextmanager
def headless_process(env: dict[str, str], *command: str) -> Iterator[subprocess.Popen]:
    """A headless run in a PID namespace and a session of its own, as in another container."""
    process = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", *command],
        env={**env, SILENCE_SECONDS_ENV: SILENCE_SECONDS},
        cwd=env["DAGSTER_HOME"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert process.stderr is not None
        process.stderr.close()


def materialize_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dagster", "asset", "materialize", "-m", MODULE, *args]


def load_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "clevertap-assets"), "load", *args]


def wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + STARTED_TIMEOUT_SECONDS
    while not condition():
        if process is not None:
            assert process.poll() is None, f"the run ended before {what}: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"no {what} after {STARTED_TIMEOUT_SECONDS} s"
        time.sleep(0.2)


def beating_run(instance: DagsterInstance) -> DagsterRun | None:
    """The started run once it beats its heartbeat (each test starts one at a time; a
    headless run names no asset selection)."""
    records = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    signs = last_signs_of_life(instance, records)
    beating = [r.dagster_run for r in records if signs[r.dagster_run.run_id] > r.start_time]
    return beating[0] if beating else None


def kill_process_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def spool_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spools").glob("clevertap_*"))


def test_a_killed_run_is_failed_and_the_schedule_requests_its_days_again(
    tmp_path, make_emulator, dagster_home, monkeypatch
):
    """A live run in another PID namespace is left alone by the tick; killed, its heartbeat
    goes silent, the tick fails it, frees the account's reader and asks for its days."""
    emulator: CleverTapEmulator = make_emulator(events=["Charged"])
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], history_days=3)
    definitions = build_definitions(pipeline.settings)
    today = local_today(pipeline.settings.timezone)
    first = today - timedelta(days=2)
    key = AssetKey(["clevertap", "charged"])
    env = pipeline_env(pipeline, dagster_home, tmp_path)
    pool = clevertap_pool(emulator.config.account_id)
    monkeypatch.setenv(SILENCE_SECONDS_ENV, SILENCE_SECONDS)
    # the export opens, then its pages never come
    emulator.set_faults(page_in_progress=True, page_in_progress_polls=None)

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        with headless_process(env, *load_command("--days", "3")) as process:
            wait_for(lambda: beating_run(instance) is not None, "beating run", process)
            wait_for(lambda: bool(spool_folders(tmp_path)), "spool folder", process)
            killed = beating_run(instance)
            assert killed is not None
            time.sleep(2 * float(SILENCE_SECONDS))  # alive all along: beating, not judged
            tick(definitions, instance, pipeline.settings.timezone)
            assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.STARTED
            kill_process_group(process)
        (holder,) = instance.event_log_storage.get_concurrency_info(pool).claimed_slots
        assert holder.run_id == killed.run_id
        (leaked,) = spool_folders(tmp_path)

        emulator.set_faults(page_in_progress=False)
        requests: list = []

        def tick_fails_it() -> bool:
            requests[:] = tick(definitions, instance, "UTC")
            return instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE

        wait_for(tick_fails_it, "the killed run failed by a tick", None)
        (request,) = requests
        assert run_range(request) == ({key}, first.isoformat(), today.isoformat())
        assert not instance.event_log_storage.get_concurrency_info(pool).claimed_slots

        monkeypatch.setenv(SPOOL_DIR_ENV, env[SPOOL_DIR_ENV])
        assert execute(pipeline, definitions, request, instance).success
    assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", first, today)
    assert not leaked.exists()
    assert spool_folders(tmp_path) == []


def test_after_kill_9_of_headless_runs_the_next_one_takes_the_account_without_a_daemon(
    tmp_path, make_emulator, dagster_home, monkeypatch
):
    """Two `dagster asset materialize` runs killed while one holds the account's reader and
    the other waits for it, no daemon anywhere: the next headless run finds the holder silent,
    takes the reader and loads exactly."""
    emulator: CleverTapEmulator = make_emulator(events=["Charged"])
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], history_days=3)
    day = local_today(pipeline.settings.timezone)
    key = AssetKey(["clevertap", "charged"])
    env = pipeline_env(pipeline, dagster_home, tmp_path)
    pool = clevertap_pool(emulator.config.account_id)
    monkeypatch.setenv(SILENCE_SECONDS_ENV, SILENCE_SECONDS)
    emulator.set_faults(page_in_progress=True, page_in_progress_polls=None)
    selection = ["--select", key.to_user_string(), "--partition", day.isoformat()]

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        with (
            headless_process(env, *materialize_command(*selection)) as holder,
            headless_process(env, *materialize_command(*selection)) as waiter,
        ):
            info = instance.event_log_storage.get_concurrency_info
            wait_for(lambda: len(info(pool).pending_steps) == 2, "holder and waiter", holder)
            assert len(info(pool).claimed_slots) == 1
            kill_process_group(holder)
            kill_process_group(waiter)
        assert len(info(pool).claimed_slots) == 1

        emulator.set_faults(page_in_progress=False)
        result = load_days(pipeline.settings, day, day, instance=instance)
        assert result.success
        assert not info(pool).claimed_slots
        # Both killed runs are failed: the holder for its slot, and the waiter for its place
        # in the pool's queue, which would otherwise be assigned the freed slot and keep it.
        dead = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
        assert len(dead) == 2
        assert not info(pool).pending_steps
    assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", day, day)


def test_a_webhook_load_killed_mid_run_is_loaded_again_exactly_once(
    tmp_path, make_emulator, dagster_home, monkeypatch
):
    emulator = make_emulator(events=["Charged"])
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    env = pipeline_env(pipeline, dagster_home, tmp_path)
    inbox = WebhookInbox(env["WEBHOOK_INBOX_PATH"])
    definitions = build_webhook_definitions(pipeline_facts(pipeline.settings), inbox.path)
    (webhook_asset,) = definitions.assets or []
    payloads = 300
    for n in range(payloads):
        profiles = [{"objectId": f"device-{n}-{i}", "event_properties": {"n": n}} for i in (0, 1)]
        inbox.append(json.dumps({"targetId": 7, "profiles": profiles}).encode(), datetime.now(UTC))

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        first = webhook_result(instance, webhook_asset, inbox)
        (request,) = first.run_requests
        apply_partition_requests(instance, first)
        selection = ["--select", webhook_asset.key.to_user_string()]
        command = materialize_command(*selection, "--partition", request.partition_key)
        # The warehouse file's write lock, held here, keeps the run waiting in its load
        # (beating) until it is killed: it never finishes before the kill on a fast machine.
        with (
            duckdb.connect(pipeline.duckdb_path),
            headless_process(env, *command) as process,
        ):
            wait_for(lambda: beating_run(instance) is not None, "beating run", process)
            killed = beating_run(instance)
            kill_process_group(process)
        assert killed is not None
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.STARTED

        monkeypatch.setenv(SILENCE_SECONDS_ENV, SILENCE_SECONDS)
        requests: list = []
        wait_for(
            lambda: bool(
                requests.extend(webhook_result(instance, webhook_asset, inbox).run_requests)
                or requests
            ),
            "the range asked again",
            None,
        )
        assert [r.partition_key for r in requests] == [request.partition_key]
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
        loaded = materialize(
            [webhook_asset],
            partition_key=request.partition_key,
            instance=instance,
            resources={
                **(definitions.resources or {}),
                **build_resources(pipeline.settings, pipeline.warehouse),
            },
        )
        assert loaded.success
        assert webhook_result(instance, webhook_asset, inbox).run_requests == []

    with duckdb.connect(pipeline.duckdb_path, read_only=True) as connection:
        rows, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT (inbox_id, profile_index)) "
            "FROM clevertap.webhook_events"
        ).fetchone()
    assert rows == distinct == 2 * payloads

"""Runs whose worker is killed (`kill -9` of the process group: an OOM kill, a lost node).

The run is a real `dagster asset materialize` process in its own session on a persistent
instance; the test kills its whole process group mid-read, then lets the schedule or the sensor
evaluate as the daemon would, runs what they request and checks the warehouse against the
emulator's truth, and that the killed run's spool folder is gone after the next run.
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

from clevertap_assets.automation.runs import run_worker
from clevertap_assets.automation.sensors import webhook_result
from clevertap_assets.batch.spool import SPOOL_DIR_ENV
from clevertap_assets.days import local_today
from clevertap_assets.definitions import build_definitions, build_webhook_definitions
from clevertap_assets.emulator.server import CleverTapEmulator
from clevertap_assets.keys import clevertap_pool
from clevertap_assets.resources import build_resources
from clevertap_assets.webhooks.inbox import WebhookInbox
from clevertap_assets_tests.daemon import apply_partition_requests, execute, run_range, tick
from clevertap_assets_tests.harness import daily_rows, make_pipeline, pipeline_env

REPOSITORY = Path(__file__).resolve().parents[2]
STARTED_TIMEOUT_SECONDS = 120


@pytest.fixture
def dagster_home(tmp_path: Path) -> Iterator[Path]:
    """A persistent instance with the project's dagster.yaml (pools of 3, claimed per step)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPOSITORY / "dagster.yaml", home / "dagster.yaml")
    yield home


@contextmanager
def materialize_process(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen]:
    """`dagster asset materialize` in a session of its own, as a run worker is."""
    command = [sys.executable, "-m", "dagster", "asset", "materialize"]
    command += ["-m", "clevertap_assets.definitions", *args]
    process = subprocess.Popen(
        command,
        env=env,
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


def wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTED_TIMEOUT_SECONDS
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"no {what} after {STARTED_TIMEOUT_SECONDS} s"
        time.sleep(0.2)


def started_run(instance: DagsterInstance, key: AssetKey) -> DagsterRun | None:
    """The started run of `key` once its worker's pid is recorded."""
    runs = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    return next(
        (
            run
            for run in runs
            if key in (run.asset_selection or ()) and run_worker(instance, run.run_id)
        ),
        None,
    )


def kill_process_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def spool_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spools").glob("clevertap_*"))


def test_a_killed_run_is_failed_and_the_schedule_requests_its_days_again(
    tmp_path, make_emulator, dagster_home, monkeypatch
):
    emulator: CleverTapEmulator = make_emulator(events=["Charged"])
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], history_days=3)
    definitions = build_definitions(pipeline.settings)
    today = local_today(pipeline.settings.timezone)
    first = today - timedelta(days=2)
    key = AssetKey(["clevertap", "charged"])
    env = pipeline_env(pipeline, dagster_home, tmp_path)
    pool = clevertap_pool(emulator.config.account_id)
    emulator.set_faults(page_in_progress=True)  # the export opens, then its pages never come

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        partition_range = f"{first.isoformat()}...{today.isoformat()}"
        selection = ["--select", key.to_user_string(), "--partition-range", partition_range]
        with materialize_process(env, *selection) as process:
            wait_for(lambda: started_run(instance, key) is not None, "started run", process)
            wait_for(lambda: bool(spool_folders(tmp_path)), "spool folder", process)
            killed = started_run(instance, key)
            kill_process_group(process)
        assert killed is not None
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.STARTED
        assert instance.event_log_storage.get_concurrency_info(pool).claimed_slots
        (leaked,) = spool_folders(tmp_path)

        emulator.set_faults(page_in_progress=False)
        (request,) = tick(definitions, instance, pipeline.settings.timezone)
        assert run_range(request) == (key, first.isoformat(), today.isoformat())
        failed = instance.get_run_by_id(killed.run_id)
        assert failed.status == DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info(pool).claimed_slots

        monkeypatch.setenv(SPOOL_DIR_ENV, env[SPOOL_DIR_ENV])
        assert execute(pipeline, definitions, request, instance).success
    assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", first, today)
    assert not leaked.exists()
    assert spool_folders(tmp_path) == []


def test_a_webhook_load_killed_mid_run_is_loaded_again_exactly_once(
    tmp_path, make_emulator, dagster_home
):
    emulator = make_emulator(events=["Charged"])
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    env = pipeline_env(pipeline, dagster_home, tmp_path)
    inbox = WebhookInbox(env["WEBHOOK_INBOX_PATH"])
    definitions = build_webhook_definitions(pipeline.settings, inbox.path)
    (webhook_asset,) = definitions.assets or []
    payloads = 300
    for n in range(payloads):
        profiles = [{"objectId": f"device-{n}-{i}", "event_properties": {"n": n}} for i in (0, 1)]
        inbox.append(json.dumps({"targetId": 7, "profiles": profiles}).encode(), datetime.now(UTC))

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        first = webhook_result(instance, pipeline.settings, webhook_asset, inbox)
        (request,) = first.run_requests
        apply_partition_requests(instance, first)
        selection = ["--select", webhook_asset.key.to_user_string()]
        with materialize_process(env, *selection, "--partition", request.partition_key) as process:
            wait_for(
                lambda: started_run(instance, webhook_asset.key) is not None, "started run", process
            )
            killed = started_run(instance, webhook_asset.key)
            kill_process_group(process)
        assert killed is not None
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.STARTED

        again = webhook_result(instance, pipeline.settings, webhook_asset, inbox)
        assert [r.partition_key for r in again.run_requests] == [request.partition_key]
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
        loaded = materialize(
            [webhook_asset],
            partition_key=request.partition_key,
            instance=instance,
            resources={**(definitions.resources or {}), **build_resources(pipeline.settings)},
        )
        assert loaded.success
        assert webhook_result(instance, pipeline.settings, webhook_asset, inbox).run_requests == []

    with duckdb.connect(pipeline.settings.duckdb_path, read_only=True) as connection:
        rows, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT (inbox_id, profile_index)) "
            "FROM clevertap.webhook_events"
        ).fetchone()
    assert rows == distinct == 2 * payloads

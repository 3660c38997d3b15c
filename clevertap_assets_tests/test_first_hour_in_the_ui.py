"""The README's first hour in the Dagster UI, in a real browser.

The README's laptop steps (`cp .env.example .env`, `clevertap-assets emulator`, `dagster dev`,
then "Materialize..." a range of days of one event and "Execute all" on its checks) run in a
copy of the repository's files, only the emulator's port differing from `.env.example`. Debian's
headless Chromium, driven by Playwright (`executable_path`, no browser download), clicks as a
person would. The test fails if a run goes red, a day's rows differ from the emulator's truth,
or a partition's metadata does not describe its own day; screenshots and the processes' logs
are kept in a temporary folder named in the message.
"""

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from clevertap_assets.days import days_between, local_today
from clevertap_assets.emulator import CleverTapEmulator, EmulatorConfig
from clevertap_assets.settings import read_event_names
from clevertap_assets_tests.deployment import BIN, FINISHED, Service, free_port

# Starts `dagster dev` and drives Chromium through its UI.
pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium")
EVENT, ASSET_PATH = "Charged", ("clevertap", "charged")
DAYS = 14
UI_TIMEOUT_MS = 240_000
"""Generous: on a loaded 2-core machine the code location alone is slow to load."""
RUNS_SECONDS = 900.0

RUNS = "{ runsOrError { ... on Runs { results { runId status } } } }"
MATERIALIZATIONS = """
query ($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetMaterializations(limit: 100) {
    partition runId metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }
"""
CHECKS = """
query ($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode {
  assetChecksOrError { ... on AssetChecks { checks {
    name executionForLatestMaterialization { runId status evaluation { success } } } } } } } }
"""


@dataclass
class FirstHour:
    """`clevertap-assets emulator` and `dagster dev`, started as the README says."""

    work: Path
    url: str
    services: list[Service]
    env: dict[str, str]

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=60
        )
        response.raise_for_status()
        document = response.json()
        assert "errors" not in document, document["errors"]
        return document["data"]

    def runs(self) -> dict[str, str]:
        return {r["runId"]: r["status"] for r in self.graphql(RUNS)["runsOrError"]["results"]}

    def wait_until_serving(self) -> None:
        """`dagster dev` answers once its webserver is up (the code location may still load)."""
        deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            self._assert_running()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/server_info", timeout=10).is_success:
                    return
            time.sleep(1)
        raise AssertionError(f"dagster dev did not answer at {self.url}\n{self.logs()}")

    def wait_for_runs(self, at_least: int) -> dict[str, str]:
        """Every run, once there are `at_least` and none is queued or running."""
        deadline = time.monotonic() + RUNS_SECONDS
        while time.monotonic() < deadline:
            self._assert_running()
            runs = self.runs()
            if len(runs) >= at_least and set(runs.values()) <= FINISHED:
                return runs
            time.sleep(3)
        raise AssertionError(f"runs still unfinished after {RUNS_SECONDS:.0f} s: {self.runs()}")

    def _assert_running(self) -> None:
        for service in self.services:
            assert service.process.poll() is None, f"{service.name} exited\n{self.logs()}"

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} ---\n{s.tail()}" for s in self.services)


@pytest.fixture
def first_hour(tmp_path: Path) -> Iterator[FirstHour]:
    work = tmp_path / "clevertap_assets"
    work.mkdir()
    for name in ("events.csv", "dagster.yaml", "workspace.yaml"):
        shutil.copy(REPO / name, work / name)
    emulator_port, ui_port = free_port(), free_port()
    example = (REPO / ".env.example").read_text()
    readme_url = "CLEVERTAP_API_URL=http://127.0.0.1:8765"
    assert readme_url in example
    (work / ".env").write_text(
        example.replace(readme_url, f"CLEVERTAP_API_URL=http://127.0.0.1:{emulator_port}")
    )
    # Only `.env` configures the pipeline, as on a laptop: nothing leaks in from the test run.
    settings = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    env = {k: v for k, v in os.environ.items() if k not in settings and k != "DAGSTER_HOME"}
    logs = tmp_path / "logs"
    logs.mkdir()
    services = [
        _start(
            "emulator",
            ["clevertap-assets", "emulator", "--port", str(emulator_port)],
            env,
            work,
            logs,
        ),
        _start(
            "dagster-dev",
            ["dagster", "dev", "-h", "127.0.0.1", "-p", str(ui_port)],
            env,
            work,
            logs,
        ),
    ]
    try:
        first_hour = FirstHour(work, f"http://127.0.0.1:{ui_port}", services, env)
        first_hour.wait_until_serving()
        yield first_hour
    finally:
        for service in reversed(services):
            service.stop()


def _start(name: str, argv: list[str], env: dict[str, str], cwd: Path, logs: Path) -> Service:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / argv[0]), *argv[1:]],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Service(name, process, log)


@pytest.mark.timeout(1500)  # dagster dev, two runs' step processes and a browser, on 2 cores
def test_materialize_a_range_and_execute_the_checks_from_the_ui(first_hour: FirstHour) -> None:
    assert CHROMIUM, "Debian's chromium is not installed (bin/test installs it)"
    typed = _readme_range(first_hour)
    first, last = (date.fromisoformat(day) for day in typed.split("..."))
    assert (first, last) == (local_today("UTC") - timedelta(days=DAYS - 1), local_today("UTC"))
    shots = Path(tempfile.mkdtemp(prefix="clevertap-ui-"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        try:
            _materialize_range(page, first_hour.url, typed)
            runs = first_hour.wait_for_runs(at_least=2)  # 14 days: two runs of 7
            assert set(runs.values()) == {"SUCCESS"}, runs
            check_run = _execute_all_checks(page, first_hour.url)
            runs = first_hour.wait_for_runs(at_least=3)
            assert set(runs.values()) == {"SUCCESS"}, runs
            _read_the_preview(page, first_hour.url)
        except BaseException:
            page.screenshot(path=shots / "failure.png", full_page=True)
            with contextlib.suppress(Exception):  # the runs list, red or stuck
                page.goto(f"{first_hour.url}/runs")
                page.get_by_text("Created at").wait_for(timeout=60_000)
                page.screenshot(path=shots / "runs.png", full_page=True)
            (shots / "logs.txt").write_text(first_hour.logs())
            print(f"screenshots and logs of the failed UI test: {shots}")
            raise
        finally:
            browser.close()
    shutil.rmtree(shots)

    checks = first_hour.graphql(CHECKS, path=list(ASSET_PATH))["assetNodeOrError"]
    executions = {
        c["name"]: c["executionForLatestMaterialization"]
        for c in checks["assetChecksOrError"]["checks"]
    }
    assert {name: e["runId"][:8] for name, e in executions.items()} == {
        "no_duplicate_record_ids": check_run,
        "row_count_matches_clevertap": check_run,
        "freshness_check": check_run,
    }
    assert all(
        e["status"] == "SUCCEEDED" and e["evaluation"]["success"] for e in executions.values()
    )

    # The data is exact: rows per local day equal the emulator's distinct records.
    truth = _truth(first_hour.work, first, last)
    with duckdb.connect(str(first_hour.work / "warehouse.duckdb"), read_only=True) as connection:
        rows = dict(
            connection.execute(
                'SELECT CAST(event_time AS DATE), count(*) FROM "clevertap"."charged" GROUP BY 1'
            ).fetchall()
        )
    assert rows == truth

    # Each partition's materialization describes its own day.
    asset = first_hour.graphql(MATERIALIZATIONS, path=list(ASSET_PATH))["assetOrError"]
    by_day = {
        date.fromisoformat(m["partition"]): {
            e["label"]: e.get("intValue") for e in m["metadataEntries"]
        }
        for m in asset["assetMaterializations"]
    }
    assert {d: m["dagster/partition_row_count"] for d, m in by_day.items()} == truth
    assert {d: m["rows_written"] for d, m in by_day.items()} == truth
    assert {d: m["records_skipped"] for d, m in by_day.items()} == dict.fromkeys(truth, 0)
    # In the order the UI lists them, the day's own figures come first.
    day_figures = ["rows_written", "duplicates_dropped", "records_skipped"]
    for m in asset["assetMaterializations"]:
        labels = [e["label"] for e in m["metadataEntries"]]
        assert labels[:4] == [*day_figures, "dagster/partition_row_count"], labels
    # Dagster's `dagster/row_count` is the table's rows (TableMetadataSet) after each run: the
    # first run's 7 days (whichever week the queue ran first), then the whole table.
    first_week = sum(rows for d, rows in truth.items() if d < first + timedelta(days=7))
    weeks = {first_week, sum(truth.values()) - first_week}
    after_first, after_both = sorted({m["dagster/row_count"] for m in by_day.values()})
    assert (after_first in weeks, after_both) == (True, sum(truth.values()))


def _readme_range(first_hour: FirstHour) -> str:
    """What the README has the user type: `clevertap-assets partition-range --days 14`, run
    where `dagster dev` runs, reading the same `.env`."""
    printed = subprocess.run(
        [str(BIN / "clevertap-assets"), "partition-range", "--days", str(DAYS)],
        cwd=first_hour.work,
        env=first_hour.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return printed.stdout.strip()


def _materialize_range(page: Page, url: str, typed: str) -> None:
    """The asset's page, "Materialize...", the custom range typed as `[first...last]`, and
    "Launch backfill" (runs of at most 7 days: the assets' backfill policy)."""
    page.goto(f"{url}/assets/{'/'.join(ASSET_PATH)}")
    materialize = page.get_by_role("button", name="Materialize…")
    materialize.wait_for()
    _dismiss_the_welcome_dialog(page)
    materialize.click()
    dialog = page.get_by_role("dialog")
    partitions = dialog.get_by_placeholder("No matching partitions")
    partitions.fill(f"[{typed}]")
    partitions.press("Enter")
    dialog.get_by_text(f"{DAYS} partitions", exact=True).wait_for()
    dialog.get_by_role("button", name="Launch backfill").click()
    dialog.wait_for(state="detached")


def _execute_all_checks(page: Page, url: str) -> str:
    """The Checks tab's "Execute all"; returns the launched run's short id from the toast."""
    page.goto(f"{url}/assets/{'/'.join(ASSET_PATH)}?view=checks")
    execute_all = page.get_by_role("button", name="Execute all")
    execute_all.wait_for()
    _dismiss_the_welcome_dialog(page)
    execute_all.click()
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    return re.search(r"[0-9a-f]{8}", toast.inner_text()).group(0)


def _read_the_preview(page: Page, url: str) -> None:
    """The latest materialization's preview renders as tables with whole headers."""
    page.goto(f"{url}/assets/{'/'.join(ASSET_PATH)}?view=events")
    page.get_by_text("Each day of this run:").wait_for()
    for header in ("day", "rows", "duplicates dropped", "skipped", "event_time", "amount"):
        page.get_by_role("columnheader", name=header, exact=True).first.wait_for()


def _dismiss_the_welcome_dialog(page: Page) -> None:
    """A fresh browser profile gets "Join the Dagster community" once; "Skip" closes it."""
    page.wait_for_timeout(2000)
    skip = page.get_by_role("button", name="Skip")
    if skip.is_visible():
        skip.click()


def _truth(work: Path, first: date, last: date) -> dict[date, int]:
    """The emulator is deterministic: the same configuration as `clevertap-assets emulator`
    (the project's events and time zone, seed 0) states the same distinct records."""
    emulator = CleverTapEmulator(
        EmulatorConfig(timezone="UTC", events=read_event_names(work / "events.csv"))
    )
    return {day: emulator.true_count(EVENT, day) for day in days_between(first, last)}

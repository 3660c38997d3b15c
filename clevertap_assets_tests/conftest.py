"""Shared pytest fixtures. Each block is owned by one module's tests; add new blocks below."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# --- CleverTap emulator fixtures (owner: clevertap_assets/emulator/) -------------------
from clevertap_assets.emulator import CleverTapEmulator, EmulatorConfig


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., CleverTapEmulator]]:
    """Start emulators with any `EmulatorConfig` fields, on 127.0.0.1 and a free port; all
    are stopped after the test. `make_emulator(records_per_day=5, throttle_every=2)`."""
    started: list[CleverTapEmulator] = []

    def make(**config: object) -> CleverTapEmulator:
        emulator = CleverTapEmulator(EmulatorConfig(host="127.0.0.1", port=0, **config))
        started.append(emulator)
        emulator.start()
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., CleverTapEmulator]) -> CleverTapEmulator:
    """A fresh emulator with default settings (demo account, UTC, 40 records a day)."""
    return make_emulator()


# --- end of CleverTap emulator fixtures ---------------------------------------------------


# --- The spool directory (owner: clevertap_assets/batch/spool.py) ------------------------
from clevertap_assets.batch.settings import SPOOL_DIR_ENV  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def session_spool_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests' runs spool under the session's temporary folder instead of the machine's
    `<temp>/clevertap_assets`, so a session leaves no spool folders behind there and tests
    never meet another session's. A test that sets the variable wins."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SPOOL_DIR_ENV, str(tmp_path_factory.mktemp("spools")))
        yield


# --- end of the spool directory ----------------------------------------------------------


# --- The DuckDB file (owner: clevertap_assets/destinations/duckdb/settings.py) -----------
@pytest.fixture(autouse=True)
def duckdb_file_per_test(tmp_path: Path) -> Iterator[None]:
    """Each test's DuckDB warehouse is `warehouse.duckdb` in its own `tmp_path`, named by
    `DUCKDB_PATH` as a user names it, instead of a file in the working folder; whatever a
    test sets it to (`harness.make_pipeline` does) is undone after it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
        yield


# --- end of the DuckDB file --------------------------------------------------------------


# --- Test selection (owner: bin/test --fast) ---------------------------------------------
SLOW_FIXTURE_MARKERS = {
    "postgres_server": "postgres",
    "fake_snowflake": "warehouse_emulator",
    "bigquery_emulator": "warehouse_emulator",
    "s3_server": "warehouse_emulator",
    "pid_namespace": "topology",
}
"""Fixtures that start a server or need root, and the marker (pyproject.toml) a test that
uses one carries: a test reaching one through any chain of fixtures leaves the fast subset."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in sorted(SLOW_FIXTURE_MARKERS.keys() & set(item.fixturenames)):
            item.add_marker(SLOW_FIXTURE_MARKERS[fixture])


# --- end of test selection ---------------------------------------------------------------

"""The spool: pages in any order and of any types become one deduplicated, consistently typed
batch file (real Parquet files and a real DuckDB); a folder goes only once nobody holds it."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import polars as pl
import psutil
import pytest

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.batch.settings import SPOOL_DIR_ENV
from clevertap_assets.batch.spool import (
    _CREATION_LOCK,
    EventSpool,
    remove_stale_spools,
)
from clevertap_assets.source.normalise import NormaliseOptions, normalise_page
from clevertap_assets_tests.harness import make_pipeline, recent_days

OPTIONS = NormaliseOptions(
    event_name="Charged",
    timezone="UTC",
    auto_mapping=True,
    max_record_bytes=1_000_000,
    max_row_bytes=1_000_000,
)


def record(day: int, minute: int, **event_props: object) -> dict:
    return {
        "ts": int(f"202610{day:02d}10{minute:02d}00"),
        "profile": {"identity": f"user-{day}-{minute}"},
        "event_props": event_props,
    }


def spooled(*pages: list[dict]) -> pl.DataFrame:
    with EventSpool(event_name="Charged") as spool:
        for page in pages:
            spool.add(normalise_page(page, OPTIONS), len(page))
        batch = spool.finish(loaded_at=datetime.now(UTC))
    frame = pl.read_parquet(batch.path)
    batch.discard()
    return frame.sort("ts")


def test_a_type_that_drifts_between_pages_is_kept_as_text():
    frame = spooled(
        [record(1, 1, Fare=5149, Paid=True)],
        [record(1, 2, Fare=True, Paid="$D_1793584340")],
        [record(1, 3, Fare="free", Paid=1.5)],
    )
    assert frame["event_props__fare"].to_list() == ["5149", "true", "free"]
    assert frame["event_props__paid"].to_list() == ["true", "2026-11-02 01:52:20", "1.5"]


def test_numbers_meet_in_double_and_a_column_missing_from_a_page_is_null():
    frame = spooled([record(1, 1, Amount=10)], [record(1, 2, Amount=2.5, Coupon="X")])
    assert frame.schema["event_props__amount"] == pl.Float64
    assert frame["event_props__amount"].to_list() == [10.0, 2.5]
    assert frame["event_props__coupon"].to_list() == [None, "X"]


def test_pages_that_each_touch_every_day_dedupe_to_one_copy_per_record():
    days = range(1, 11)
    page = [record(day, minute, Amount=minute) for day in days for minute in range(3)]
    reordered = list(reversed(page))
    frame = spooled(page, reordered, page[:7])
    assert frame.height == len(page)
    assert frame["_record_id"].n_unique() == len(page)
    per_day = frame.group_by(pl.col("event_time").dt.date()).len().sort("event_time")
    assert dict(per_day.iter_rows()) == {date(2026, 10, day): 3 for day in days}


def test_columns_keep_the_kinds_destinations_map():
    with EventSpool(event_name="Charged") as spool:
        spool.add(normalise_page([record(1, 1, Amount=1, Items=[{"a": 1}])], OPTIONS), 1)
        batch = spool.finish(loaded_at=datetime.now(UTC))
    columns = batch.columns()
    batch.discard()
    assert columns["ts"] == Kind.BIGINT
    assert columns["event_time"] == Kind.TIMESTAMP
    assert columns["event_time_utc"] == columns["_loaded_at"] == Kind.TIMESTAMPTZ
    assert columns["event_props__amount"] == Kind.BIGINT
    assert columns["event_props__items"] == Kind.JSON


def test_a_list_in_one_page_and_text_in_another_is_text_not_json():
    with EventSpool(event_name="Charged") as spool:
        for minute, items in enumerate(([{"a": 1}], "none")):
            spool.add(normalise_page([record(1, minute, Items=items)], OPTIONS), 1)
        batch = spool.finish(loaded_at=datetime.now(UTC))
    columns = batch.columns()
    values = pl.read_parquet(batch.path).sort("ts")["event_props__items"].to_list()
    batch.discard()
    assert columns["event_props__items"] == Kind.TEXT
    assert values == ['[{"a":1}]', "none"]


def test_a_load_that_fails_before_the_io_manager_writes_leaves_no_folder(
    tmp_path, emulator, monkeypatch
):
    """The warehouse refuses the load before our type handler runs (Dagster's delete of the
    window fails on a table of that name made by someone else): the spool was complete and
    handed over, and its folder still goes with the failed step."""
    monkeypatch.setenv(SPOOL_DIR_ENV, str(tmp_path / "spools"))
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    with duckdb.connect(pipeline.duckdb_path) as connection:
        connection.execute("CREATE SCHEMA clevertap; CREATE TABLE clevertap.charged (x INTEGER)")
    first, last = recent_days(pipeline.settings, 2)
    result = pipeline.load(first, last)
    assert not result.success
    assert "event_time" in str(result.get_step_failure_events()[0].event_specific_data.error)
    assert list((tmp_path / "spools").glob("clevertap_*")) == []


def test_folders_of_dead_processes_go_and_live_ones_stay(tmp_path, monkeypatch):
    """A real process makes a spool and is killed; the next spool removes its folder only."""
    monkeypatch.setenv(SPOOL_DIR_ENV, str(tmp_path))
    script = "from clevertap_assets.batch.spool import EventSpool; print(EventSpool('x').directory)"
    dead = Path(
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ},
        ).stdout.strip()
    )
    assert dead.exists()
    alive = EventSpool("y").directory  # the next spool on the host
    assert alive.exists() and not dead.exists()
    assert remove_stale_spools(tmp_path) == []
    assert alive.exists()


def test_removing_a_folder_gives_it_up(tmp_path, monkeypatch):
    """A discarded batch, a failed read and an empty window each close their folder's lock."""
    monkeypatch.setenv(SPOOL_DIR_ENV, str(tmp_path))
    spooled([record(1, 1)])
    with pytest.raises(RuntimeError), EventSpool("Charged"):
        raise RuntimeError("the read failed")
    EventSpool("Charged").finish(loaded_at=datetime.now(UTC))
    assert list(tmp_path.glob("clevertap_*")) == []
    assert [link for link in _open_files() if link.startswith(str(tmp_path))] == []


def _open_files() -> list[str]:
    """What this process has open (a descriptor closed while they are listed is left out)."""
    links = []
    for descriptor in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            links.append(os.readlink(descriptor))
    return links


OWNER = """
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from clevertap_assets.batch.spool import EventSpool
from clevertap_assets.source.normalise import NormaliseOptions, normalise_page


def wait_for(path):
    while not path.exists():
        time.sleep(0.02)


def announce(path, text):
    path.with_suffix(".part").write_text(text)
    path.with_suffix(".part").rename(path)


folder, go_on = Path(sys.argv[1]), Path(sys.argv[2])
if len(sys.argv) > 3:  # stop between making the folder and locking it
    made, lock = Path(sys.argv[3]), Path(sys.argv[4])
    make = tempfile.mkdtemp

    def pausing(*args, **kwargs):
        directory = make(*args, **kwargs)
        announce(made, directory)
        wait_for(lock)
        return directory

    tempfile.mkdtemp = pausing
spool = EventSpool("Charged")
announce(folder, str(spool.directory))
wait_for(go_on)
options = NormaliseOptions("Charged", "UTC", True, 1_000_000, 1_000_000)
page = [{"ts": 20261001100000, "profile": {"identity": "u"}, "event_props": {}}]
spool.add(normalise_page(page, options), 1)
print(spool.finish(datetime.now(UTC)).rows)
"""
"""A spool's owner: it says where its folder is, waits to be told to go on, then spools a
page there and prints the batch's rows; given two more files, it says which folder it made
and waits for the second before locking it."""

WAIT_SECONDS = 60


@pytest.fixture
def pid_namespace() -> None:
    unshare = ["unshare", "--pid", "--fork", "--mount-proc", "true"]
    if subprocess.run(unshare, capture_output=True).returncode:
        pytest.skip("unshare --pid needs root here")


@pytest.fixture
def owners(tmp_path: Path, pid_namespace: None) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start spool owners, each in a PID namespace of its own, as a code server in another
    container: under `tmp_path`, shared; killed with their namespace at the end."""
    started: list[subprocess.Popen] = []
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())

    def start(*files: Path) -> subprocess.Popen:
        # Its pid, high in its namespace, names no process in ours: as between containers.
        shell = f'echo {pid_max - 1000} > /proc/sys/kernel/ns_last_pid && "$@"'
        command = [sys.executable, "-c", OWNER, *map(str, files)]
        owner = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", shell, "sh", *command],
            env={**os.environ, SPOOL_DIR_ENV: str(tmp_path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(owner)
        return owner

    yield start
    for owner in started:
        if owner.poll() is None:
            _kill(owner)


def test_a_live_spool_owned_in_another_pid_namespace_is_kept(tmp_path, owners):
    """Another container's cleanup keeps a live run's folder, though the owner's pid names no
    process here: removing it would fail that run on its missing Parquet pages."""
    folder_file, go_on = tmp_path / "folder", tmp_path / "go_on"
    owner = owners(folder_file, go_on)
    folder = Path(_announced(folder_file, owner))
    assert remove_stale_spools(tmp_path) == []
    assert folder.exists()
    go_on.touch()
    out, err = owner.communicate(timeout=WAIT_SECONDS)
    assert (owner.returncode, out.strip()) == (0, "1"), err


def test_the_folder_of_a_killed_owner_goes_with_the_next_cleanup(tmp_path, owners):
    folder_file = tmp_path / "folder"
    owner = owners(folder_file, tmp_path / "go_on")
    folder = Path(_announced(folder_file, owner))
    _kill(owner)
    assert remove_stale_spools(tmp_path) == [folder]
    assert not folder.exists()


def test_a_folder_made_moments_ago_is_kept_by_a_racing_cleanup(tmp_path, owners):
    """The owner stops between `mkdtemp` and its lock while a cleanup runs: the cleanup waits
    for it (or, were it to go on, must leave the folder), and the owner spools into it."""
    folder_file, go_on, made, lock = (
        tmp_path / name for name in ("folder", "go_on", "made", "lock")
    )
    owner = owners(folder_file, go_on, made, lock)
    folder = Path(_announced(made, owner))
    with ThreadPoolExecutor(1) as pool:
        cleanup = pool.submit(remove_stale_spools, tmp_path)
        creation_lock = tmp_path / _CREATION_LOCK
        _wait_until(lambda: cleanup.done() or _waited_on(creation_lock), "the racing cleanup")
        lock.touch()
        assert cleanup.result(timeout=WAIT_SECONDS) == []
    assert Path(_announced(folder_file, owner)) == folder
    assert remove_stale_spools(tmp_path) == []
    go_on.touch()
    out, err = owner.communicate(timeout=WAIT_SECONDS)
    assert (owner.returncode, out.strip()) == (0, "1"), err


def _announced(path: Path, owner: subprocess.Popen) -> str:
    _wait_until(lambda: path.exists() or owner.poll() is not None, path.name)
    assert path.exists(), owner.communicate()[1]
    return path.read_text()


def _kill(owner: subprocess.Popen) -> None:
    """`kill -9` of the owner's namespace, returning once no process of it holds a file."""
    namespace = psutil.Process(owner.pid).children(recursive=True)
    os.killpg(owner.pid, signal.SIGKILL)
    owner.wait(timeout=WAIT_SECONDS)
    _wait_until(lambda: all(map(_exited, namespace)), "the owner's exit")


def _exited(process: psutil.Process) -> bool:
    """Gone, or a zombie: the kernel closes a process's files before it becomes one."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _waited_on(path: Path) -> bool:
    """Some process waits for a `flock` of this file (a `->` line of /proc/locks)."""
    stat = path.stat()
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    lines = Path("/proc/locks").read_text().splitlines()
    return any("->" in line and f" {inode} " in line for line in lines)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)

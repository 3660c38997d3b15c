"""Pages parsed in worker processes: the records of every page the client reads over HTTP,
parsed in another process, named on the caller's side, equal the in-process normalisation."""

import os
import subprocess
import sys
from datetime import date, datetime, timedelta

import orjson
import polars as pl
import psutil
import pytest
from polars.testing import assert_frame_equal

from clevertap_assets.batch.parse_processes import (
    UnreadablePageError,
    parse_pool,
    parse_raw_page,
    spool_raw_page,
    start_workers,
)
from clevertap_assets.naming import ColumnNames
from clevertap_assets.source.normalise import NormaliseOptions, column_names, normalise_page
from clevertap_assets_tests.harness import fast_clevertap

DAY = date(2024, 3, 1)
OPTIONS = NormaliseOptions(
    event_name="Charged",
    timezone="UTC",
    auto_mapping=True,
    max_record_bytes=128 << 20,
    max_row_bytes=100 << 20,
)
WHOLE_DAY = (datetime(2024, 3, 1), datetime(2024, 3, 2))


def worker_pid(_: int) -> int:
    return os.getpid()


def test_pages_parsed_in_workers_equal_the_in_process_normalisation(make_emulator) -> None:
    """Two workers, pages of drifting types: each page's columns come back from another
    process, and once named they are the in-process frame, row for row and type for type."""
    emulator = make_emulator(events=["Charged"], records_per_day=120, duplicate_share=0.2)
    with fast_clevertap(emulator, batch_size=25) as clevertap:
        raws = list(clevertap.iter_raw_pages("Charged", DAY, DAY))
    assert len(raws) > 2
    in_process, from_workers = ColumnNames(), ColumnNames()
    with parse_pool(2) as pool:
        assert os.getpid() not in set(pool.map(worker_pid, range(4)))
        parsed = list(
            pool.map(parse_raw_page, raws, [OPTIONS] * len(raws), [WHOLE_DAY] * len(raws))
        )
    for raw, result in zip(raws, parsed, strict=True):
        expected = normalise_page(orjson.loads(raw), OPTIONS, in_process)
        named = result.page.named(from_workers)
        assert_frame_equal(named.frame, expected.frame)
        assert named.json_columns == expected.json_columns
        assert result.received == len(orjson.loads(raw))
        assert result.outside_window == 0
    assert from_workers.record() == in_process.record()


def test_records_outside_the_window_are_counted_and_left_out() -> None:
    records = [
        {"ts": 20240301120000, "event_props": {"Amount": 1}},
        {"ts": 20240302000000, "event_props": {"Amount": 2}},
    ]
    result = parse_raw_page(orjson.dumps(records), OPTIONS, WHOLE_DAY)
    assert (result.received, result.outside_window, result.page.frame.height) == (2, 1, 1)
    assert result.page.frame["event_time"].to_list() == [datetime(2024, 3, 1, 12)]


def test_a_page_no_reader_takes_fails_with_the_event_named() -> None:
    """Text CleverTap's envelope passes (msgspec reads past it) but that is not JSON records:
    `NaN` (https://www.rfc-editor.org/rfc/rfc8259#section-6), on either reading path."""
    for raw in (b'[{"ts": 20240301120000, "x": NaN}]', b'[{"ts": 1e400, "x": NaN}]'):
        with pytest.raises(UnreadablePageError, match=r"'Charged' records that is not readable"):
            parse_raw_page(raw, OPTIONS, WHOLE_DAY)


def test_a_window_is_split_nowhere_else_than_at_its_bounds() -> None:
    last_instant = WHOLE_DAY[1] - timedelta(seconds=1)
    records = [{"ts": int(f"{last_instant:%Y%m%d%H%M%S}")}]
    assert parse_raw_page(orjson.dumps(records), OPTIONS, WHOLE_DAY).outside_window == 0


POOL_OWNER = """
from clevertap_assets.batch.parse_processes import parse_pool
pool = parse_pool(2)
print(sorted(pool.map(abs, [-1, -2, -3])), flush=True)
input()  # held open until the test kills this process
"""


def test_workers_and_their_forkserver_exit_when_the_owner_is_killed() -> None:
    """A step killed with SIGKILL (out of memory, a terminated run) runs no clean-up: its
    parse workers, the forkserver and multiprocessing's resource tracker must still go,
    not wait forever on a queue nobody will write to."""
    owner = subprocess.Popen(
        [sys.executable, "-c", POOL_OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None and owner.stdout.readline().strip() == "[1, 2, 3]"
    helpers = psutil.Process(owner.pid).children(recursive=True)
    assert len(helpers) >= 3  # the forkserver, two workers (and the resource tracker)
    owner.kill()
    owner.wait()
    _, alive = psutil.wait_procs(helpers, timeout=30)
    assert alive == [], [" ".join(p.cmdline()) for p in alive]


def test_started_workers_are_running_before_the_first_page() -> None:
    """The asset starts the workers while its cursors open, so the first page is parsed by a
    worker already running instead of waiting for the forkserver's imports and a fork."""
    pool = parse_pool(2)
    try:
        start_workers(pool, 2)
        (forkserver,) = [
            child
            for child in psutil.Process().children()
            if "multiprocessing.forkserver" in " ".join(child.cmdline())
        ]
        workers = {
            worker.pid
            for worker in forkserver.children()
            if worker.status() != psutil.STATUS_ZOMBIE  # a worker of an earlier pool, exiting
        }
        assert len(workers) == 2
        assert {pool.submit(worker_pid, n).result() for n in range(8)} <= workers
    finally:
        pool.shutdown()


STEP_MAIN = """
import os
from pathlib import Path

import dagster  # what the `dagster` command's script imports, as a run's steps' main

with Path(os.environ["MAIN_RUNS"]).open("a") as runs:
    runs.write(__name__ + "\\n")

from clevertap_assets.batch.parse_processes import parse_pool, start_workers

# No `if __name__ == "__main__":` guard, as in a user's script that loads days.
with parse_pool(2) as pool:
    start_workers(pool, 2)
    print(set(pool.map(eval, ["'dagster' in __import__('sys').modules"] * 4)), flush=True)
"""


@pytest.mark.parametrize("started_as", ["script", "module"])
def test_workers_never_run_the_steps_main(tmp_path, started_as: str) -> None:
    """multiprocessing runs the parent's `__main__` again in every worker it starts; in a
    run's step that is the `dagster` command, which would import all of Dagster into each
    worker, and a script without a main guard would load again inside every worker. The
    parse workers run this package's functions only, and never that main."""
    (tmp_path / "step_main.py").write_text(STEP_MAIN, encoding="utf-8")
    runs = tmp_path / "main_runs.txt"
    command = [sys.executable, "step_main.py"]
    if started_as == "module":
        command = [sys.executable, "-m", "step_main"]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "MAIN_RUNS": str(runs)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "{False}"  # no worker imported Dagster
    assert runs.read_text(encoding="utf-8").split() == ["__main__"]


def test_a_worker_writes_the_page_into_the_spool_and_sends_back_only_its_files(
    make_emulator, tmp_path
) -> None:
    """A page spooled by a worker, its files read back and named, is the in-process page
    split by local day; nothing but the files' description crosses back."""
    emulator = make_emulator(events=["Charged"], records_per_day=60, duplicate_share=0.2)
    with fast_clevertap(emulator, batch_size=200) as clevertap:
        raw = max(clevertap.iter_raw_pages("Charged", DAY, DAY + timedelta(days=1)), key=len)
    two_days = (WHOLE_DAY[0], WHOLE_DAY[1] + timedelta(days=1))
    with parse_pool(1) as pool:
        spooled = pool.submit(spool_raw_page, raw, OPTIONS, two_days, tmp_path, 7).result()
    names = ColumnNames()
    expected = normalise_page(orjson.loads(raw), OPTIONS, ColumnNames())
    renames = column_names(spooled.files.schema, names)
    assert set(spooled.files.files) == {DAY, DAY + timedelta(days=1)}
    for day, (path, rows) in spooled.files.files.items():
        assert path.parent == tmp_path and path.name == f"{day.isoformat()}_000007.parquet"
        written = pl.read_parquet(path).rename(renames)
        assert_frame_equal(written, expected.frame.filter(pl.col("event_time").dt.date() == day))
        assert rows == written.height
    assert spooled.received == len(orjson.loads(raw)) == expected.frame.height

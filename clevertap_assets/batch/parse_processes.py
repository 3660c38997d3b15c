"""Pages are parsed and normalised in worker processes, not on the asset's threads.

Turning a page of JSON into columns is per-record Python that holds the GIL, so on threads it
would bound the whole read to one core. Each page's raw records go to a small pool of processes
that write the page's Parquet files into the run's spool folder; only the files' description
comes back, its columns named by key path (naming is the asset's shared state, see
`normalise.column_names`).

The workers import this module, polars and orjson, not Dagster, and are forked from a
`forkserver` (`parse_server`): forking the step's own process, with Dagster's and polars'
threads running, is unsafe. A worker exits when the process that started its pool is gone, even
killed with SIGKILL; multiprocessing alone would leave the workers and the forkserver waiting.
"""

import gc
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import polars as pl

from clevertap_assets.batch.page_files import PageFiles, write_page_files
from clevertap_assets.processes import process_alive, start_time
from clevertap_assets.source.normalise import (
    NormalisedPage,
    NormaliseOptions,
    load_records,
    normalise_parsed,
    parse_page,
)
from clevertap_assets.source.zone_check import OutsideReach, outside_reach

OWNER_CHECK_SECONDS = 1.0


class UnreadablePageError(ValueError):
    """A page whose records are not JSON a record can be read from (raised in a worker, and
    pickled back whole, so it keeps only its message)."""


@dataclass(frozen=True)
class ParsedWindowPage:
    """One page parsed: its records in the window, as columns."""

    page: NormalisedPage
    received: int
    outside_window: int
    outside: OutsideReach


@dataclass(frozen=True)
class SpooledWindowPage:
    """One page as a worker returns it: its records in the window, written to the spool."""

    files: PageFiles
    received: int
    outside_window: int
    outside: OutsideReach


def parse_pool(workers: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    # By name: importing `parse_server` here would change this process's multiprocessing.
    context.set_forkserver_preload(["clevertap_assets.batch.parse_server"])
    owner = os.getpid()
    return ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(owner, start_time(owner)),
    )


def start_workers(pool: ProcessPoolExecutor, workers: int) -> None:
    """Start the pool's workers now, not with the first page, so their start (the forkserver's
    imports, then a fork each) overlaps the cursors' wait on CleverTap for the first pages."""
    for _ in range(workers):
        pool.submit(os.getpid)


def _start_worker(owner: int, owner_started: float) -> None:
    """The cyclic collector is off (see `parse_raw_page`), and the worker watches its owner."""
    gc.disable()
    threading.Thread(
        target=_exit_with_owner, args=(owner, owner_started), name="owner-watch", daemon=True
    ).start()


def _exit_with_owner(owner: int, owner_started: float) -> None:
    while process_alive(owner, owner_started):
        time.sleep(OWNER_CHECK_SECONDS)
    os._exit(1)


def parse_raw_page(
    raw: bytes, options: NormaliseOptions, window: tuple[datetime, datetime]
) -> ParsedWindowPage:
    """A page's JSON array of records, parsed once, as columns; records outside the window's
    local days are counted, with how far they lie from it (see `zone_check`), and dropped.

    Runs in a worker, whose cyclic collector is off (`parse_pool`): a page's many thousand
    fresh, acyclic dicts and lists would only make the collector re-scan them."""
    try:
        records = load_records(raw)
    except ValueError as exc:
        raise UnreadablePageError(
            f"CleverTap sent a page of {options.event_name!r} records that is not readable "
            f"JSON ({exc}); the window was not loaded"
        ) from None
    page = normalise_parsed(parse_page(records, options), options)
    in_window = page.frame.filter(pl.col("event_time").is_between(*window, closed="left"))
    return ParsedWindowPage(
        page=replace(page, frame=in_window),
        received=len(records),
        outside_window=page.frame.height - in_window.height,
        outside=outside_reach(page.frame["event_time"], window),
    )


def spool_raw_page(
    raw: bytes,
    options: NormaliseOptions,
    window: tuple[datetime, datetime],
    directory: Path,
    number: int,
) -> SpooledWindowPage:
    """What a worker does with a page: `parse_raw_page`, then its files in the spool folder
    (`write_page_files`), so the rows never travel back to the asset's process."""
    parsed = parse_raw_page(raw, options, window)
    files = write_page_files(parsed.page, directory, number)
    return SpooledWindowPage(files, parsed.received, parsed.outside_window, parsed.outside)

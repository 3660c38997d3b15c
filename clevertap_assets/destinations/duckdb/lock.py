"""Opening the warehouse file when DuckDB's file lock allows it.

DuckDB lets one process write a database file, or several processes read it, never both
(https://duckdb.org/docs/stable/connect/concurrency): opening a file another process holds
fails at once with "Could not set lock on file ... Conflicting lock is held". Dagster runs
steps in separate processes, so a load and the two checks of a run, or two overlapping runs,
meet on the file. Readers therefore open it read-only (they share it with each other), and
every opener waits for the lock, bounded, with one clear message when it gives up.
"""

import random
import re
import time
from collections.abc import Mapping

import duckdb

from clevertap_assets.destinations.common import DestinationError

LOCK_TIMEOUT_SECONDS = 300.0
"""How long an opener waits for the lock: a load holds it for seconds (3M rows load in about
10 s), a check for less; five minutes means something else holds the file."""
_FIRST_PAUSE_SECONDS = 0.05
_MAX_PAUSE_SECONDS = 1.0
_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


class DuckDBLockTimeout(DestinationError):
    """The file stayed locked by another process for longer than the wait allows."""


def connect_when_unlocked(
    database: str,
    *,
    read_only: bool,
    config: Mapping[str, object],
    timeout_seconds: float = LOCK_TIMEOUT_SECONDS,
) -> duckdb.DuckDBPyConnection:
    """`duckdb.connect`, retried while another process holds the file's lock.

    Pauses grow from 50 ms to 1 s with jitter, so the steps of one run that wait on the same
    load do not retry in lockstep. Any other error (a missing file for a reader, a bad
    config) is raised at once.
    """
    deadline = time.monotonic() + timeout_seconds
    pause = _FIRST_PAUSE_SECONDS
    while True:
        try:
            return duckdb.connect(database, read_only=read_only, config=dict(config))
        except duckdb.IOException as error:
            if not is_lock_conflict(error):
                raise
            if time.monotonic() + pause > deadline:
                message = _gave_up(database, read_only, timeout_seconds, error)
                raise DuckDBLockTimeout(message) from None
        time.sleep(pause * random.uniform(0.5, 1.0))
        pause = min(pause * 2, _MAX_PAUSE_SECONDS)


def is_lock_conflict(error: BaseException) -> bool:
    return "Could not set lock" in str(error) or "Conflicting lock" in str(error)


def _gave_up(database: str, read_only: bool, timeout_seconds: float, error: Exception) -> str:
    holder = _HOLDER.search(str(error))
    by = f"process {holder['pid']} ({holder['program']})" if holder else "another process"
    purpose = "reading" if read_only else "writing"
    return (
        f"DuckDB file {database!r} was still locked by {by} after waiting "
        f"{timeout_seconds:g} s to open it for {purpose}. DuckDB allows one writing process "
        "per file: let that run finish or close that process (a DuckDB shell or notebook "
        "holding the file also counts), then re-execute."
    )

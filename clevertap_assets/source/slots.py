"""CleverTap's limit of 3 export requests in flight per account, held across processes.

Dagster runs each step in its own process, and overlapping runs are more processes still; the
instance pool bounds how many export steps run at once, not how many requests each one sends.
A semaphore only sees its own process. So every request also holds one of `limit` lock files
in a directory shared by every process of the machine that reads the account: an exclusive
`flock` on a file is refused to any other open file description, whether it belongs to another
thread of this process or to another process, and the kernel releases it when the holder
closes it or dies, so a crashed step never leaks a slot.
(https://man7.org/linux/man-pages/man2/flock.2.html)
"""

import fcntl
import hashlib
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_POLL_SECONDS = (0.002, 0.02)
"""How long a waiter sleeps between tries, drawn at random so waiters do not move in step: a
request takes tens to hundreds of milliseconds, so this adds little to the wait."""

_in_process: dict[tuple[str, str], threading.BoundedSemaphore] = {}
_in_process_lock = threading.Lock()


def default_slots_root() -> Path:
    """Shared by every process of this OS user on the machine, whatever its working dir."""
    return Path(tempfile.gettempdir()) / "clevertap-request-slots"


def account_slots_dir(root: Path, base_url: str, account_id: str) -> Path:
    """One directory per account and host, named by a digest so no name rules apply."""
    digest = hashlib.sha256(f"{base_url}\n{account_id}".encode()).hexdigest()[:24]
    return root / digest


def _semaphore(base_url: str, account_id: str, limit: int) -> threading.BoundedSemaphore:
    """Threads of one process queue here first, so they wait without polling the files."""
    key = (base_url, account_id)
    with _in_process_lock:
        if key not in _in_process:
            _in_process[key] = threading.BoundedSemaphore(limit)
        return _in_process[key]


def _try_files(directory: Path, limit: int) -> int | None:
    """The descriptor of a free slot file, locked; None when all `limit` are held."""
    for index in random.sample(range(limit), limit):
        fd = os.open(directory / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return fd
    return None


@contextmanager
def request_slot(root: Path, base_url: str, account_id: str, limit: int) -> Iterator[None]:
    """Hold one of the account's `limit` slots for the duration of one request.

    Processes that set different limits share the first slots, so the largest limit in use
    bounds the account.
    """
    directory = account_slots_dir(root, base_url, account_id)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _semaphore(base_url, account_id, limit):
        fd = _try_files(directory, limit)
        while fd is None:
            time.sleep(random.uniform(*_POLL_SECONDS))
            fd = _try_files(directory, limit)
        try:
            yield
        finally:
            os.close(fd)  # closing the description releases its lock

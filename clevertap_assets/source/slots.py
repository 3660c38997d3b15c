"""CleverTap's limit of 3 export requests in flight per account, held across processes.

Dagster runs each step in its own process, and overlapping runs are more processes still; the
instance pool bounds how many export steps run at once, not how many requests each one sends.
A semaphore only sees its own process. So every request also holds one of `limit` lock files
in a directory shared by every process of the machine that reads the account: an exclusive
`flock` on a file is refused to any other open file description, whether it belongs to another
thread of this process or to another process, and the kernel releases it when the holder
closes it or dies, so a crashed step never leaks a slot.
(https://man7.org/linux/man-pages/man2/flock.2.html)

The files live under the directory the project owns for its spools (`CLEVERTAP_SPOOL_DIR`),
`limit` per account and host and nothing per run. A host or account no longer read (a region
moved, an emulator's port in tests) would still leave its folder forever, so the first request
of each process removes the folders of other accounts idle for `IDLE_SECONDS`. Removing a lock
file that another process may be about to lock is safe only with a check on both sides: the
remover unlinks a file while holding its lock, and a taker that got a lock verifies that the
path still names the file it locked (else it locked an unlinked file and tries again).
"""

import fcntl
import hashlib
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clevertap_assets.batch.spool import spool_root

_POLL_SECONDS = (0.002, 0.02)
"""How long a waiter sleeps between tries, drawn at random so waiters do not move in step: a
request takes tens to hundreds of milliseconds, so this adds little to the wait."""

IDLE_SECONDS = 24 * 3600
"""An account folder none of whose slots was taken for this long (and none held) is removed."""
_ACCOUNT_DIR = re.compile(r"^[0-9a-f]{24}$")

_in_process: dict[tuple[str, str], threading.BoundedSemaphore] = {}
_in_process_lock = threading.Lock()
_swept: set[Path] = set()


def default_slots_root() -> Path:
    """Shared by every process of the host that uses the same spool directory."""
    return spool_root() / "request_slots"


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
        fd = _try_lock(directory / f"slot-{index}.lock")
        if fd is not None:
            return fd
    return None


def _try_lock(path: Path) -> int | None:
    """The file at `path` opened and locked, or None while another holds it. A file removed
    between our open and our lock is a lock on nothing: open the new one at that path."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except (FileExistsError, FileNotFoundError):  # the folder went while we made or used it
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def remove_idle_accounts(root: Path, keep: Path, now: float | None = None) -> list[Path]:
    """Remove the account folders under `root` (but `keep`) whose slot files are all free and
    older than `IDLE_SECONDS`; return them. Each file is unlinked while locked (see above)."""
    limit = (time.time() if now is None else now) - IDLE_SECONDS
    removed = []
    for directory in root.glob("*"):
        if directory == keep or not _ACCOUNT_DIR.match(directory.name):
            continue
        if _remove_if_idle(directory, limit):
            removed.append(directory)
    return removed


def _remove_if_idle(directory: Path, older_than: float) -> bool:
    held: list[int] = []
    try:
        files = list(directory.glob("slot-*.lock"))
        for path in files:
            fd = os.open(path, os.O_RDWR)
            held.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_mtime > older_than:
                return False
        for path in files:
            path.unlink()
        directory.rmdir()
    except OSError:  # held (BlockingIOError), or changed under us: left for a later sweep
        return False
    finally:
        for fd in held:
            os.close(fd)
    return True


def _sweep_once(root: Path, keep: Path) -> None:
    """Remove idle account folders on a process's first request under `root`."""
    with _in_process_lock:
        if root in _swept:
            return
        _swept.add(root)
    remove_idle_accounts(root, keep)


@contextmanager
def request_slot(root: Path, base_url: str, account_id: str, limit: int) -> Iterator[None]:
    """Hold one of the account's `limit` slots for the duration of one request.

    Processes that set different limits share the first slots, so the largest limit in use
    bounds the account.
    """
    directory = account_slots_dir(root, base_url, account_id)
    _sweep_once(root, directory)
    with _semaphore(base_url, account_id, limit):
        fd = _try_files(directory, limit)
        while fd is None:
            time.sleep(random.uniform(*_POLL_SECONDS))
            fd = _try_files(directory, limit)
        os.utime(fd)  # the file's mtime says when the account last used it
        try:
            yield
        finally:
            os.close(fd)  # closing the description releases its lock

"""The per-account request limit across processes: threads of several processes, each with
its own resource, against one emulator that counts the requests it holds at once."""

import fcntl
import os
import subprocess
import sys
import textwrap
import time
from datetime import date

from clevertap_assets.batch.spool import SPOOL_DIR_ENV
from clevertap_assets.source.slots import (
    IDLE_SECONDS,
    account_slots_dir,
    remove_idle_accounts,
    request_slot,
)

DAY = date(2024, 3, 1)
EVENTS = ["App Launched", "Product Viewed", "Charged"]

_READER = textwrap.dedent(
    """
    import sys, threading
    from datetime import date

    from clevertap_assets.source.client import CleverTapResource

    url, account, passcode, slots = sys.argv[1:5]
    totals = {}

    def read(event):
        client = CleverTapResource(
            account_id=account, passcode=passcode, api_url=url, batch_size=7,
            request_slots_dir=slots or None, backoff_seconds=0.01, max_backoff_seconds=0.05,
        )
        with client:
            pages = client.iter_event_pages(event, date(2024, 3, 1), date(2024, 3, 1))
            totals[event] = sum(len(page) for page in pages)

    threads = [threading.Thread(target=read, args=(e,)) for e in sys.argv[5:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(sorted(totals.items()))
    """
)


def test_three_processes_of_three_threads_never_hold_more_than_three_requests(
    make_emulator, tmp_path
) -> None:
    """Nine readers in three processes. The emulator refuses nothing here (no limit of its
    own), so a fourth request in flight would show in its count instead of being hidden by
    a 429 and a retry; the count also reaching 3 shows the slots are used, not serialised."""
    emulator = make_emulator(max_concurrent=None, delay_seconds=0.03, duplicate_share=0.0)
    config = emulator.config
    args = [emulator.url, config.account_id, config.passcode, str(tmp_path)]
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", _READER, *args, *EVENTS], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [reader.communicate(timeout=120)[0] for reader in readers]
    assert [reader.returncode for reader in readers] == [0, 0, 0]
    truth = sorted((event, emulator.true_count(event, DAY)) for event in EVENTS)
    assert outputs == [f"{truth}\n"] * 3
    assert emulator.stats.max_in_flight == 3
    assert emulator.stats.rate_limited == 0


def test_a_slot_is_refused_to_another_open_of_the_same_file_and_freed_on_release(
    tmp_path,
) -> None:
    """The kernel's lock is per open file description, so a second thread or process cannot
    take a held slot; closing it (also what a crash does) frees it at once."""
    with request_slot(tmp_path, "http://x", "A", limit=1):
        (slot,) = account_slots_dir(tmp_path, "http://x", "A").iterdir()
        fd = os.open(slot, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                taken = True
            except BlockingIOError:
                taken = False
            assert not taken
        finally:
            os.close(fd)
    fd = os.open(slot, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again: does not raise
    finally:
        os.close(fd)


def test_accounts_and_hosts_have_their_own_slots(tmp_path) -> None:
    dirs = {
        account_slots_dir(tmp_path, url, account)
        for url in ("http://a", "http://b")
        for account in ("A", "B")
    }
    assert len(dirs) == 4


def _age(directory, seconds: float) -> None:
    for path in directory.iterdir():
        os.utime(path, (time.time() - seconds, time.time() - seconds))


def test_slot_files_live_in_the_spool_directory_one_per_account_and_slot(
    make_emulator, tmp_path
) -> None:
    """Two runs of three reading processes with the default folder: the lock files are the
    account's three slots under CLEVERTAP_SPOOL_DIR, the same files for every run, nothing in
    the temp directory; the folder of an account idle for a day is gone after the next run."""
    emulator = make_emulator(duplicate_share=0.0)
    config = emulator.config
    spools, temp = tmp_path / "spools", tmp_path / "temp"
    temp.mkdir()
    idle = account_slots_dir(spools / "request_slots", "http://old-region", config.account_id)
    with request_slot(spools / "request_slots", "http://old-region", config.account_id, 3):
        pass
    _age(idle, IDLE_SECONDS + 60)
    env = {**os.environ, SPOOL_DIR_ENV: str(spools), "TMPDIR": str(temp)}
    args = [emulator.url, config.account_id, config.passcode, ""]
    for _ in range(2):
        readers = [
            subprocess.Popen(
                [sys.executable, "-c", _READER, *args, *EVENTS], env=env, stdout=subprocess.PIPE
            )
            for _ in range(3)
        ]
        assert [reader.communicate(timeout=120)[1] for reader in readers] == [None] * 3
        assert [reader.returncode for reader in readers] == [0, 0, 0]
    account = account_slots_dir(spools / "request_slots", emulator.url, config.account_id)
    files = {p.relative_to(spools) for p in spools.rglob("*") if p.is_file()}
    assert files and files <= {account.relative_to(spools) / f"slot-{i}.lock" for i in range(3)}
    assert list(temp.iterdir()) == []


def test_only_accounts_idle_and_free_are_removed(tmp_path) -> None:
    for account in "ABC":
        with request_slot(tmp_path, "http://x", account, limit=1):
            pass
    idle, recent, held = (account_slots_dir(tmp_path, "http://x", a) for a in "ABC")
    _age(idle, IDLE_SECONDS + 60)
    _age(held, IDLE_SECONDS + 60)
    fd = os.open(next(held.iterdir()), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (tmp_path / "not-an-account").mkdir()
        assert remove_idle_accounts(tmp_path, keep=tmp_path / "none") == [idle]
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [recent.name, held.name, "not-an-account"]
    )
    with request_slot(tmp_path, "http://x", "A", limit=1):  # the account comes back
        assert [p.name for p in idle.iterdir()] == ["slot-0.lock"]


_TAKER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from clevertap_assets.source.slots import request_slot

    root, marker, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    for _ in range(rounds):
        with request_slot(root, "http://x", "A", limit=1):
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # FileExistsError: two holders
            os.unlink(marker)
    """
)

_SWEEPER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from clevertap_assets.source.slots import remove_idle_accounts

    root, stop = Path(sys.argv[1]), Path(sys.argv[2])
    removed = 0
    while not stop.exists():
        removed += len(remove_idle_accounts(root, keep=root / "none", now=time.time() + 1e9))
    print(removed)
    """
)


def test_removing_an_account_while_processes_take_its_slot_never_gives_it_twice(
    tmp_path,
) -> None:
    """Three processes take the account's single slot in turns while another removes the
    account's folder whenever it is free: each holder creates one marker file exclusively, so
    two holders at once (a lock taken on a file already unlinked) fail their process."""
    root, marker, stop = tmp_path / "slots", tmp_path / "held", tmp_path / "stop"
    sweeper = subprocess.Popen(
        [sys.executable, "-c", _SWEEPER, str(root), str(stop)], stdout=subprocess.PIPE, text=True
    )
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", _TAKER, str(root), str(marker), "2000"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    errors = [taker.communicate(timeout=300)[1] for taker in takers]
    stop.touch()
    removed = int(sweeper.communicate(timeout=60)[0])
    assert errors == ["", "", ""]
    assert removed > 0  # the folder really was removed under the takers

"""The per-account request limit across processes: threads of several processes, each with
its own resource, against one emulator that counts the requests it holds at once."""

import fcntl
import os
import subprocess
import sys
import textwrap
from datetime import date

from clevertap_assets.source.slots import account_slots_dir, request_slot

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
            request_slots_dir=slots, backoff_seconds=0.01, max_backoff_seconds=0.05,
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

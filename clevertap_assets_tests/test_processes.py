"""Whether the owner of a parse pool is still alive."""

import os
import signal
import subprocess
import time

from clevertap_assets.processes import process_alive


def test_a_killed_process_not_yet_reaped_is_dead():
    """A zombie keeps its pid and creation time until its parent reaps it; its work is over."""
    child = subprocess.Popen(["sleep", "30"])
    started = time.time()
    try:
        assert process_alive(child.pid, started)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _is_zombie(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _is_zombie(child.pid)
        assert not process_alive(child.pid, started)
    finally:
        child.kill()
        child.wait()


def _is_zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"

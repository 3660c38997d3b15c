"""Is the process that owns something (a parse pool's workers) still alive?

A pid alone is not enough: after a crash the system can give the same pid to an unrelated
process. A process is only the owner if it exists and was created no later than the moment
the owner was known to be running (the pool's start), so a reused pid reads as dead. A pid
names a process only within its PID namespace (a container's pids mean nothing in another's):
judge only processes of the caller's own, as a pool's workers do their parent.
"""

import psutil

CLOCK_SLACK_SECONDS = 1.0
"""Process creation times come from the kernel's boot clock in jiffies, event times from the
wall clock: allow this much disagreement before a pid counts as reused."""


def process_alive(pid: int, known_running_at: float) -> bool:
    """True when `pid` exists and is the process that was running at `known_running_at`
    (seconds since the epoch); False for a pid that is gone or was reused since."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # killed and not yet reaped: its work is over all the same
        created = process.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True  # it exists, owned by someone else: not ours to judge
    return created <= known_running_at + CLOCK_SLACK_SECONDS


def start_time(pid: int) -> float:
    """When a live process was created (seconds since the epoch)."""
    return psutil.Process(pid).create_time()

"""Benchmark: one scheduled tick of every event of `events.csv`, through the daemon.

    .venv/bin/python bench/bench_tick.py [--days 2] [--records-per-day 2000] [--latency-ms 1000]

What a production tick costs: a `dagster-daemon` (run queue, run launcher) and the code
location it starts, on a fresh SQLite instance with the project's `dagster.yaml`, against the
emulator in a process of its own holding every request `--latency-ms` (CleverTap's API FAQ: a
request "may take one or more seconds"). The tick's run is queued as the schedule queues it
(`dagster job launch` of the ingestion job with the partition-range and priority tags) and
the benchmark reports:

- `wall s`: from queueing the run to its end, against the API-limit time, the Get Events
  requests the run sent divided by CleverTap's 3 concurrent slots, times the latency;
- `run CPU s`: CPU of the run worker's process tree (sampled every 200 ms with psutil,
  processes that appear under it included);
- `peak PSS MB`: the run worker's process tree;
- the share of the read during which 3 requests were in flight (the emulator's count).

The benchmark process imports none of the pipeline; the emulator's CPU is not counted.
"""

import argparse
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SLOTS = 3


def serve(latency_ms: float, records_per_day: int, port_file: Path) -> None:
    """The emulator, in this process (`--role serve`), until killed."""
    from clevertap_assets.emulator import CleverTapEmulator, EmulatorConfig
    from clevertap_assets.settings import read_event_names

    config = EmulatorConfig(
        host="127.0.0.1",
        port=0,
        events=read_event_names(REPO / "events.csv"),
        records_per_day=records_per_day,
        delay_seconds=latency_ms / 1000,
        duplicate_share=0.0,
    )
    emulator = CleverTapEmulator(config)
    emulator.start()
    port_file.write_text(emulator.url)
    stats_file = port_file.with_suffix(".stats")
    while True:
        time.sleep(0.5)
        changes = list(emulator.stats.in_flight_changes)
        stats_file.write_text(
            json.dumps({"requests": dict(emulator.stats.requests), "changes": changes})
        )


def full_slot_share(changes: list[tuple[float, int]]) -> float:
    """The share of the time from the first request to the last answer with 3 in flight."""
    if len(changes) < 2:
        return 0.0
    full = sum(
        later - moment
        for (moment, count), (later, _) in itertools.pairwise(changes)
        if count >= SLOTS
    )
    return full / (changes[-1][0] - changes[0][0])


def run_worker_tree(daemon: psutil.Process) -> list[psutil.Process]:
    """The run worker (the code server's `spawn_main` child, as Dagster's default run launcher
    starts it) and everything under it: parse workers, their forkserver, log tails."""
    for process in daemon.children(recursive=True):
        try:
            if "spawn_main" in " ".join(process.cmdline()):
                return [process, *process.children(recursive=True)]
        except psutil.Error:
            continue
    return []


def pss_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except psutil.Error:
            continue
    return total / 2**20


def measure(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench_tick_"))
    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    url_file = workdir / "emulator.url"
    emulator = subprocess.Popen(
        [sys.executable, __file__, "--role", "serve", "--latency-ms", str(args.latency_ms),
         "--records-per-day", str(args.records_per_day), "--port-file", str(url_file)]
    )  # fmt: skip
    while not url_file.exists():
        time.sleep(0.1)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CLEVERTAP_API_URL": url_file.read_text(),
        "CLEVERTAP_ACCOUNT_ID": "DEMO-ACCOUNT",
        "CLEVERTAP_PASSCODE": "demo-passcode",
        "CLEVERTAP_EVENTS_CSV": str(REPO / "events.csv"),
        "DUCKDB_PATH": str(workdir / "warehouse.duckdb"),
        "CLEVERTAP_SPOOL_DIR": str(workdir / "spool"),
        "WEBHOOK_INBOX_PATH": str(workdir / "inbox.sqlite3"),
    }
    subprocess.run([BIN / "dagster", "instance", "migrate"], env=env, check=True, cwd=REPO)
    daemon = subprocess.Popen(
        [BIN / "dagster-daemon", "run", "-w", str(REPO / "workspace.yaml")],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(args.settle_seconds)  # the daemon and its code location up, as in production
        today = date.today()
        tags = {
            "dagster/asset_partition_range_start": (
                today - timedelta(days=args.days - 1)
            ).isoformat(),
            "dagster/asset_partition_range_end": today.isoformat(),
            "dagster/priority": "10",
        }
        queued_at = time.monotonic()
        launched = subprocess.run(
            [BIN / "dagster", "job", "launch", "-w", str(REPO / "workspace.yaml"),
             "-j", "clevertap_ingestion", "--tags", json.dumps(tags)],
            env=env, cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert launched.returncode == 0, launched.stderr
        status = _status(home)
        cpu: dict[int, float] = {}
        peak = 0.0
        supervisor = psutil.Process(daemon.pid)
        while status not in ("SUCCESS", "FAILURE", "CANCELED"):
            tree = run_worker_tree(supervisor)
            for process in tree:
                try:
                    times = process.cpu_times()
                    cpu[process.pid] = times.user + times.system
                except psutil.Error:
                    continue
            peak = max(peak, pss_mb(tree))
            time.sleep(0.2)
            status = _status(home)
        wall = time.monotonic() - queued_at
        stats = json.loads(url_file.with_suffix(".stats").read_text())
    finally:
        daemon.terminate()
        daemon.wait(60)
        emulator.terminate()
        emulator.wait(30)
    requests = sum(stats["requests"].get(kind, 0) for kind in ("open", "page"))
    api_limit = requests / SLOTS * args.latency_ms / 1000
    result = {
        "status": status,
        "wall_s": round(wall, 1),
        "api_limit_s": round(api_limit, 1),
        "run_cpu_s": round(sum(cpu.values()), 1),
        "peak_pss_mb": round(peak),
        "get_events_requests": requests,
        "full_slots_share": round(full_slot_share(stats["changes"]), 3),
    }
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def _status(home: Path) -> str:
    """The status of the instance's one run, read from its SQLite file: the benchmark
    process imports nothing of Dagster, whose start would cost a core."""
    path = home / "history" / "runs.db"
    if not path.exists():
        return "NONE"
    with sqlite3.connect(path, timeout=30) as connection:
        row = connection.execute("SELECT status FROM runs").fetchone()
    return row[0] if row else "NONE"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--records-per-day", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=1000)
    parser.add_argument("--settle-seconds", type=float, default=20)
    parser.add_argument("--role", choices=("parent", "serve"), default="parent")
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "serve":
        serve(args.latency_ms, args.records_per_day, Path(args.port_file))
        return 0
    print(json.dumps(measure(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

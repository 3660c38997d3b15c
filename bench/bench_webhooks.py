"""Can the webhook loader keep up with the receiver? Both measured on this machine.

1. The receiver: `clevertap-assets webhook` in its own process, CleverTap-shaped payloads
   (2 profiles each) posted by concurrent clients for a while; its rate is acknowledged
   payloads (HTTP 200, stored and fsynced) per second.
2. The loader: the inbox the receiver filled (topped up to `--payloads`), drained the way
   the daemon does it. Each round
   evaluates `webhook_inbox_sensor`'s logic, then runs every requested range as a real run
   worker (`dagster asset materialize` in its own process) into DuckDB. Its sustained rate is
   the payloads one tick can take (`ENTRIES_PER_RANGE`) over the longer of the tick interval
   and the run's own duration: ranges of later ticks do not wait for earlier runs, but a run
   slower than the tick would make them pile up.

    .venv/bin/python bench/bench_webhooks.py [--seconds 20] [--clients 16]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
from dagster import AddDynamicPartitionsRequest, DagsterInstance

from clevertap_assets.assets.pipeline_events import pipeline_facts
from clevertap_assets.automation.sensors import (
    ENTRIES_PER_RANGE,
    WEBHOOK_INTERVAL_SECONDS,
    webhook_result,
)
from clevertap_assets.definitions import build_webhook_definitions
from clevertap_assets.settings import load_settings
from clevertap_assets.webhooks.inbox import WebhookInbox

MATERIALIZE = [sys.executable, "-m", "dagster", "asset", "materialize"]
MATERIALIZE += ["-m", "clevertap_assets.definitions"]
SECRET = "bench-secret"
HEADER = "X-Webhook-Secret"


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def payload(n: int) -> bytes:
    profiles = [
        {
            "objectId": f"device-{n}-{i}",
            "Identity": f"user-{n}",
            "profileData": {"plan": "gold", "score": n % 97},
            "event_properties": {"Campaign": f"c{n % 13}", "CT Source": "Webhook", "n": n},
        }
        for i in range(2)
    ]
    return orjson.dumps({"targetId": 1000 + n % 5, "key_values": {"k": "v"}, "profiles": profiles})


def measure_receiver(env: dict[str, str], seconds: float, clients: int) -> tuple[int, float]:
    port = free_port()
    command = [sys.executable, "-m", "clevertap_assets.cli", "webhook", "--port", str(port)]
    receiver = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/webhooks/clevertap"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        stop = time.monotonic() + seconds
        counter = iter(range(10**9))

        def post_until_stop(_: int) -> int:
            accepted = 0
            with httpx.Client(headers={HEADER: SECRET}, timeout=10) as client:
                while time.monotonic() < stop:
                    answer = client.post(url, content=payload(next(counter)))
                    accepted += answer.status_code == 200
            return accepted

        started = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            accepted = sum(pool.map(post_until_stop, range(clients)))
        return accepted, accepted / (time.monotonic() - started)
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)


def measure_loader(env: dict[str, str]) -> list[tuple[int, float]]:
    """(payloads, seconds) of each range's run, drained as the daemon would."""
    os.environ.update(env)
    settings = load_settings()
    inbox = WebhookInbox(env["WEBHOOK_INBOX_PATH"])
    definitions = build_webhook_definitions(pipeline_facts(settings), inbox.path)
    (asset,) = definitions.assets or []
    runs = []
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        while True:
            result = webhook_result(instance, asset, inbox)
            for request in result.dynamic_partitions_requests or []:  # as the daemon does
                if isinstance(request, AddDynamicPartitionsRequest):
                    instance.add_dynamic_partitions(
                        request.partitions_def_name, request.partition_keys
                    )
                else:
                    for key in request.partition_keys:
                        instance.delete_dynamic_partition(request.partitions_def_name, key)
            if not result.run_requests:
                return runs
            for request in result.run_requests:
                first, _, last = request.partition_key.partition("-")
                started = time.monotonic()
                selection = [asset.key.to_user_string(), "--partition", request.partition_key]
                subprocess.run(
                    [*MATERIALIZE, "--select", *selection],
                    env=env,
                    cwd=env["DAGSTER_HOME"],
                    check=True,
                    capture_output=True,
                )
                runs.append((int(last) - int(first) + 1, time.monotonic() - started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--payloads", type=int, default=20_000, help="inbox size the loader drains (topped up)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_webhooks_") as scratch:
        home = Path(scratch) / "dagster_home"
        home.mkdir()
        (Path(scratch) / "events.csv").write_text("Event Name\nCharged\n", encoding="utf-8")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "WEBHOOK_INBOX_PATH": str(Path(scratch) / "inbox.sqlite3"),
            "WEBHOOK_SECRET": SECRET,
            "CLEVERTAP_EVENTS_CSV": str(Path(scratch) / "events.csv"),
            "CLEVERTAP_ACCOUNT_ID": "BENCH",
            "CLEVERTAP_PASSCODE": "unused",
            "DUCKDB_PATH": str(Path(scratch) / "warehouse.duckdb"),
        }
        accepted, receiver_rate = measure_receiver(env, args.seconds, args.clients)
        print(f"receiver: {accepted:,} payloads acknowledged, {receiver_rate:,.0f} payloads/s")
        inbox = WebhookInbox(env["WEBHOOK_INBOX_PATH"])
        for n in range(accepted, args.payloads):  # the same payloads, stored without HTTP
            inbox.append(payload(n))
        runs = measure_loader(env)
        payloads = sum(n for n, _ in runs)
        seconds = sum(s for _, s in runs)
        slowest = max(s for _, s in runs)
        per_tick = ENTRIES_PER_RANGE / max(WEBHOOK_INTERVAL_SECONDS, slowest)
        print(
            f"loader: {payloads:,} payloads in {len(runs)} runs, {seconds:.1f} s of runs "
            f"(slowest {slowest:.1f} s), back to back {payloads / seconds:,.0f} payloads/s; "
            f"sustained at one range of up to {ENTRIES_PER_RANGE:,} per "
            f"{WEBHOOK_INTERVAL_SECONDS} s tick: {per_tick:,.0f} payloads/s"
        )


if __name__ == "__main__":
    main()

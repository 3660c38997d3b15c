"""Redshift's S3 staging, the part this machine can run: rows written as the staging Parquet
file (`staging.write_parquet`, chunk by chunk) and uploaded with boto3 to moto's S3 server (in a thread of the parent process).

Each size runs in a fresh process that generates Charged-like rows in 10,000-row chunks
(never all at once) and reports its seconds and peak RSS (`ru_maxrss`) above what it held
before the first chunk: flat memory means that figure does not grow with the rows. The COPY
itself, and so the speed-up over INSERTs, needs a cluster.

    .venv/bin/python bench/bench_redshift_staging.py                 # 100,000 to 1,600,000 rows
    .venv/bin/python bench/bench_redshift_staging.py --sizes 50000
"""

import argparse
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow as pa
from moto.server import ThreadedMotoServer

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.destinations.redshift.staging import write_parquet

CHUNK_ROWS = 10_000
KINDS = {
    "_record_id": Kind.TEXT,
    "event_name": Kind.TEXT,
    "ts": Kind.BIGINT,
    "event_time": Kind.TIMESTAMP,
    "event_time_utc": Kind.TIMESTAMPTZ,
    "profile__identity": Kind.TEXT,
    "event_props__amount": Kind.DOUBLE,
    "event_props__items": Kind.JSON,
    "_loaded_at": Kind.TIMESTAMPTZ,
}


def chunks(rows: int) -> Iterator[pa.RecordBatch]:
    start = 1_700_000_000_000_000
    for offset in range(0, rows, CHUNK_ROWS):
        n = min(CHUNK_ROWS, rows - offset)
        ids = range(offset, offset + n)
        times = pa.array([start + i * 1_000_000 for i in ids], pa.timestamp("us"))
        yield pa.RecordBatch.from_pydict(
            {
                "_record_id": [f"{i:064x}" for i in ids],
                "event_name": ["Charged"] * n,
                "ts": [20231114221320 + i for i in ids],
                "event_time": times,
                "event_time_utc": times.cast(pa.timestamp("us", tz="UTC")),
                "profile__identity": [f"user-{i % 5000}" for i in ids],
                "event_props__amount": [i * 0.25 for i in ids],
                "event_props__items": [
                    f'[{{"name":"item {i}","price":{i % 97},"qty":{i % 5}}}]' for i in ids
                ],
                "_loaded_at": times.cast(pa.timestamp("us", tz="UTC")),
            }
        )


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(rows: int, bucket: str) -> dict:
    s3 = boto3.client("s3")
    before = peak_mib()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.parquet"
        started = time.perf_counter()
        written = write_parquet(path, KINDS, chunks(rows))
        wrote = time.perf_counter() - started
        size = path.stat().st_size
        started = time.perf_counter()
        s3.upload_file(str(path), bucket, f"bench/{rows}.parquet")
        uploaded = time.perf_counter() - started
    s3.delete_object(Bucket=bucket, Key=f"bench/{rows}.parquet")
    assert written == rows
    return {
        "rows": rows,
        "write_s": wrote,
        "upload_s": uploaded,
        "mb": size / 1e6,
        "bytes_per_row": size / rows,
        "peak_rss_above_start_mib": peak_mib() - before,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,400000,1600000")
    parser.add_argument("--child", type=int)
    parser.add_argument("--bucket")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.bucket)))
        return
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(
        "rows       write s  upload s  rows/s (write+upload)  MB     B/row  peak RSS above start MiB"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(env)
    bucket = "bench"
    boto3.client("s3").create_bucket(Bucket=bucket)
    try:
        for rows in (int(size) for size in args.sizes.split(",")):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(rows), "--bucket", bucket],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout)
            rate = r["rows"] / (r["write_s"] + r["upload_s"])
            print(
                f"{r['rows']:<10,} {r['write_s']:<8.2f} {r['upload_s']:<9.2f} {rate:<22,.0f} "
                f"{r['mb']:<6.1f} {r['bytes_per_row']:<6.1f} {r['peak_rss_above_start_mib']:.0f}"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()

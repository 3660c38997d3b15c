"""Benchmark: what the duplicate check reads on a large table, for a tick's days against the
whole table.

    .venv/bin/python bench/bench_checks.py [--rows 100000000] [--days 365] [--run-days 2]

Builds an event table of `--rows` rows spread evenly over `--days` local days (appended a day
after another, as the loads append them) in a DuckDB file under `bench/results/`, then asks
`no_duplicate_record_ids`'s SQL (`destinations.stats.DUPLICATE_RECORD_IDS`) over the last
`--run-days` days (a tick) and over every day (what the check read before it was bounded by
the run's days). For each it prints the rows and row groups DuckDB's profiler says the scan
read, and the wall time of the project's own `DuckDBEventStats.duplicate_record_ids` (the
median of three, the file's pages in the OS cache after the first), or its error.
"""

import argparse
import json
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb

from clevertap_assets.destinations.duckdb.stats import DuckDBEventStats
from clevertap_assets.destinations.stats import DUPLICATE_RECORD_IDS

RESULTS = Path(__file__).resolve().parent / "results"
LAST_DAY = date(2026, 12, 6)


def build(path: Path, rows: int, days: int) -> None:
    """`_record_id` is a 32-hex digest like the loader's; `event_time` steps evenly through
    each day."""
    per_day = rows // days
    first = LAST_DAY - timedelta(days=days - 1)
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE SCHEMA clevertap")
        connection.execute(
            "CREATE TABLE clevertap.charged (_record_id VARCHAR, event_time TIMESTAMP, "
            "event_props__amount DOUBLE)"
        )
        connection.execute(
            "INSERT INTO clevertap.charged SELECT md5(CAST(i AS VARCHAR)), "
            "CAST($first AS TIMESTAMP) + to_microseconds((i // $per_day) * 86400000000 "
            "+ (i % $per_day) * 86400000000 // $per_day),"
            " i % 1000 FROM range($rows) AS r(i) ORDER BY i",
            {"first": first, "per_day": per_day, "rows": per_day * days},
        )
        connection.execute("CHECKPOINT")


def scanned(path: Path, first_day: date, last_day: date) -> tuple[int, int, int]:
    """Rows scanned, row groups scanned, row groups in the table, from DuckDB's profiler."""
    profile = path.with_suffix(".profile.json")
    sql = DUPLICATE_RECORD_IDS.format(
        table="clevertap.charged", first_day="$first_day", end_day="$end_day"
    )
    with duckdb.connect(str(path), read_only=True) as connection:
        connection.execute("PRAGMA enable_profiling='json'")
        connection.execute(f"PRAGMA profiling_output='{profile}'")
        connection.execute(
            sql, {"first_day": first_day, "end_day": last_day + timedelta(days=1)}
        ).fetchall()
        connection.execute("PRAGMA disable_profiling")
    scan = _table_scan(json.loads(profile.read_text()))
    return scan["rows_scanned"], scan["row_groups_scanned"], scan["total_row_groups_to_scan"]


def _table_scan(node: dict) -> dict:
    for child in node.get("operator", node.get("children", [])):
        if child.get("type") == "TABLE_SCAN":
            return child
        if (found := _table_scan(child)) is not None:
            return found
    return None


def seconds(path: Path, first_day: date, last_day: date) -> str:
    """The median wall time, or why the project's check could not answer."""
    stats = DuckDBEventStats(database=str(path))
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        try:
            stats.duplicate_record_ids("clevertap", "charged", first_day, last_day)
        except duckdb.OutOfMemoryException:
            return "failed: out of memory under the project's DuckDB cap"
        timings.append(time.perf_counter() - started)
    return f"{statistics.median(timings):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--run-days", type=int, default=2)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=RESULTS) as folder:
        path = Path(folder) / "checks.duckdb"
        started = time.perf_counter()
        build(path, args.rows, args.days)
        print(
            f"built {args.rows:,} rows over {args.days} days in {time.perf_counter() - started:.0f} s"
        )
        first_day = LAST_DAY - timedelta(days=args.days - 1)
        print("| days read | rows scanned | row groups scanned | median s |")
        print("|---|---:|---:|---:|")
        for label, first in (
            (f"the run's {args.run_days}", LAST_DAY - timedelta(days=args.run_days - 1)),
            (f"all {args.days} (the whole table)", first_day),
        ):
            rows, groups, total = scanned(path, first, LAST_DAY)
            took = seconds(path, first, LAST_DAY)
            print(f"| {label} | {rows:,} | {groups:,} of {total:,} | {took} |")


if __name__ == "__main__":
    main()

"""CPU per record of each stage of the read path, one page after another on one thread.

    .venv/bin/python bench/bench_stages.py [--per-day 5000] [--days 10]

The emulator renders the pages in this process before the clock starts; each stage is timed
with `time.process_time()` (the CPU of every thread of the process, so polars' and DuckDB's
own threads count), which a loaded machine inflates far less than wall time. The stages are
the asset's, in its order: the client's read of the answer's envelope (msgspec), then what a
parse worker does (`spool_raw_page`): orjson's parse of the records, `parse_page` (canonical
JSON, SHA-256 and the columns), `normalise_parsed` (time columns, size limits), the page's
Parquet files split by local day; then, back in the asset's process, naming the columns and
recording the page in the spool, its deduplication (`EventSpool.finish`), and DuckDB's load of
the batch. Here all run on one thread; in a run the worker stages are spread over the parse
processes.
"""

import argparse
import gc
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import orjson

from clevertap_assets.batch.page_files import write_page_files
from clevertap_assets.batch.spool import EventSpool
from clevertap_assets.emulator import CleverTapEmulator, EmulatorConfig
from clevertap_assets.naming import ColumnNames
from clevertap_assets.source.client import _ANSWER
from clevertap_assets.source.normalise import (
    NormaliseOptions,
    column_names,
    normalise_parsed,
    parse_page,
)

EVENT = "Charged"
PAGE = 5000


def rendered_pages(per_day: int, days: int) -> list[bytes]:
    """Every page of the window as our client asks for it (no app fields, no summaries)."""
    emulator = CleverTapEmulator(EmulatorConfig(records_per_day=per_day))
    first = date(2026, 1, 1)
    params = {"batch_size": str(PAGE), "app": "false", "events": "false", "profile": "true"}
    window = {"event_name": EVENT, "from": int(f"{first:%Y%m%d}")}
    window["to"] = int(f"{first + timedelta(days=days - 1):%Y%m%d}")
    export = emulator._create_export(params, window)
    pages = []
    for start in range(0, export.total, PAGE):
        records = emulator._render(export, start, min(export.total, start + PAGE))
        pages.append(b'{"status":"success","next_cursor":"c","records":' + records + b"}")
    return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-day", type=int, default=5000)
    parser.add_argument("--days", type=int, default=10)
    args = parser.parse_args()
    pages = rendered_pages(args.per_day, args.days)
    options = NormaliseOptions(
        event_name=EVENT,
        timezone="UTC",
        auto_mapping=True,
        max_record_bytes=128 << 20,
        max_row_bytes=100 << 20,
    )
    cpu: dict[str, float] = {}

    def timed(stage: str, work: Callable[..., Any], *args: Any) -> Any:
        started = time.process_time()
        result = work(*args)
        cpu[stage] = cpu.get(stage, 0.0) + time.process_time() - started
        return result

    def record_ids(records: list[dict]) -> list[str]:
        return [
            hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()
            for record in records
        ]

    records_seen = 0
    names = ColumnNames()
    gc.disable()  # as in the parse workers
    with EventSpool(event_name=EVENT) as spool:
        for body in pages:
            raw = bytes(timed("client: envelope (msgspec)", _ANSWER.decode, body)["records"])
            records = timed("worker: orjson parse of the records", orjson.loads, raw)
            records_seen += len(records)
            timed("  of which canonical JSON + SHA-256", record_ids, records)
            parsed = timed("worker: parse_page, ids and columns", parse_page, records, options)
            page = timed("worker: normalise_parsed", normalise_parsed, parsed, options)
            number = spool.next_page_number()
            files = timed("worker: files by day", write_page_files, page, spool.directory, number)
            renames = timed("asset: name the columns", column_names, files.schema, names)
            timed("asset: record the page", spool.add_files, files, len(records), 0, renames)
            del records, parsed, page, files
        batch = timed("dedupe (EventSpool.finish)", spool.finish, datetime.now(UTC))
    with duckdb.connect() as connection:
        load = f"CREATE TABLE t AS SELECT * FROM read_parquet('{batch.path}')"
        timed("DuckDB load of the batch", connection.execute, load)
    batch.discard()
    gc.enable()
    print(f"{records_seen:,} records of {EVENT!r}, {len(pages)} pages; CPU per record:")
    for stage, seconds in cpu.items():
        print(f"  {stage:40} {seconds / records_seen * 1e6:6.1f} us")
    total = sum(s for stage, s in cpu.items() if not stage.startswith("  "))
    print(f"  {'total':40} {total / records_seen * 1e6:6.1f} us")


if __name__ == "__main__":
    main()

"""Benchmark: a single-run backfill of one event over 30 days, emulator to DuckDB.

    .venv/bin/python bench/bench_backfill.py [--sizes 10000,100000] [--days 30] [--profile]

Each size runs in two fresh processes: the emulator, with every page pre-rendered before the
clock starts (so the server is not what is measured, and its memory and CPU are not ours), and
the pipeline, which runs the real asset through `load_days` into a new DuckDB file and reports
its own peak RSS. The parent only starts them and prints the table; it imports none of the
pipeline, so its numbers cannot leak into the children's.
"""

import argparse
import cProfile
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parent never imports dagster; only the pipeline process does
    from dagster import ExecuteInProcessResult

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DEFAULT_EVENT = "Charged"
PRERENDER_CACHE_BYTES = 64 << 30  # no eviction: every page of the window stays rendered
WARM_PASS_MAX_SHARE = 0.2  # a second prerender pass slower than this means pages were evicted
TARGET_RECORDS_PER_SECOND = 100_000
TARGET_PEAK_RSS_MB = 400
TARGET_MEMORY_RATIO = 1.25


@dataclass(frozen=True)
class Served:
    """What the emulator process reports once its pages are rendered."""

    url: str
    account_id: str
    passcode: str
    expected_rows: int
    prerender_seconds: float
    warm_pass_seconds: float


@dataclass(frozen=True)
class Measured:
    """One pipeline run, as its own process saw it."""

    records: int
    rows_written: int
    bytes_received: int
    api_pages: int
    step_seconds: float
    read_seconds: float
    dedupe_seconds: float
    peak_rss_mb: float
    before_run_rss_mb: float
    success: bool


# --- the emulator process -----------------------------------------------------------------


def serve(records_per_day: int, days: int, event: str) -> None:
    """Render the whole window, report, then serve until stdin closes (the parent's signal)."""
    from clevertap_assets.days import days_between, local_today
    from clevertap_assets.emulator.server import CleverTapEmulator, EmulatorConfig

    config = EmulatorConfig(
        prerender=True, prerender_cache_bytes=PRERENDER_CACHE_BYTES, records_per_day=records_per_day
    )
    emulator = CleverTapEmulator(config)
    last = local_today(config.timezone)
    first = last - timedelta(days=days - 1)
    # The client asks for profiles without app fields or event summaries: the same pages.
    flags = {"app": False, "events": False, "profile": True}
    started = time.monotonic()
    emulator.prerender(event, first, last, **flags)
    rendered = time.monotonic() - started
    started = time.monotonic()
    emulator.prerender(event, first, last, **flags)
    warm = time.monotonic() - started
    served = Served(
        url=emulator.start(),
        account_id=config.account_id,
        passcode=config.passcode,
        expected_rows=sum(emulator.true_count(event, day) for day in days_between(first, last)),
        prerender_seconds=round(rendered, 1),
        warm_pass_seconds=round(warm, 2),
    )
    print(json.dumps(asdict(served)), flush=True)
    sys.stdin.read()
    emulator.stop()


# --- the pipeline process -----------------------------------------------------------------


def run_pipeline(
    served: Served, days: int, event: str, workdir: Path, profile: Path | None, rss_timeline: Path
) -> None:
    """The real asset, resources and IO manager; only the CleverTap account points elsewhere."""
    from dagster import BetaWarning

    from clevertap_assets.days import local_today
    from clevertap_assets.headless import load_days
    from clevertap_assets.settings import load_settings
    from clevertap_assets.source.client import CleverTapResource

    warnings.filterwarnings("ignore", category=BetaWarning)
    csv = workdir / "events.csv"
    csv.write_text(f'Event Name,Event Type\n"{event}",Custom\n', encoding="utf-8")
    settings = load_settings(
        events_csv=csv,
        api_url=served.url,
        destination="duckdb",
        duckdb_path=str(workdir / "warehouse.duckdb"),
        timezone="UTC",
        history_days=days,
    )
    clevertap = CleverTapResource(
        account_id=served.account_id, passcode=served.passcode, api_url=served.url
    )
    last = local_today(settings.timezone)
    first = last - timedelta(days=days - 1)
    profiler = _start_profiler() if profile else None
    sampler = RssSampler(rss_timeline)
    sampler.start()
    result = load_days(settings, first, last, {"clevertap": clevertap}, log_level="WARNING")
    sampler.stop()
    if profiler is not None and profile is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    print(json.dumps(asdict(_measure(result, sampler.first_mb))), flush=True)


class RssSampler(threading.Thread):
    """RSS every 100 ms into a TSV, to see which phase of the step holds the memory."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.first_mb = _rss_mb()
        self._stopped = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        with self.path.open("w", encoding="utf-8") as out:
            out.write("seconds\trss_mb\n")
            while not self._stopped.wait(0.1):
                out.write(f"{time.monotonic() - started:.1f}\t{_rss_mb():.0f}\n")

    def stop(self) -> None:
        self._stopped.set()
        self.join()


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text(encoding="ascii")
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def _start_profiler() -> cProfile.Profile:
    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _measure(result: "ExecuteInProcessResult", before_run_mb: float) -> Measured:
    """The asset step's own duration (read, spool, dedupe and the load into DuckDB) from
    Dagster's step event; the asset's metadata splits off the read and the dedupe, and the
    rest of the step is the IO manager's load."""
    if not result.success:
        failures = [
            str(event.event_specific_data) for event in result.all_events if event.is_failure
        ]
        raise SystemExit("the backfill failed: " + "; ".join(failures))
    # One materialization per day of the window, all carrying the run's metadata.
    materialization = result.get_asset_materialization_events()[0]
    metadata = {k: v.value for k, v in materialization.materialization.metadata.items()}
    (step,) = [
        event
        for event in result.get_step_success_events()
        if event.step_key == materialization.step_key
    ]
    return Measured(
        records=metadata["records_received"],
        rows_written=metadata["rows_written"],
        bytes_received=metadata["bytes_received"],
        api_pages=metadata["api_pages"],
        step_seconds=step.event_specific_data.duration_ms / 1000,
        read_seconds=metadata["seconds"] - metadata["dedupe_seconds"],
        dedupe_seconds=metadata["dedupe_seconds"],
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        before_run_rss_mb=before_run_mb,
        success=result.success,
    )


# --- the parent ---------------------------------------------------------------------------


def _child(role: str, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), f"--role={role}", *args]


def bench_size(records_per_day: int, days: int, event: str, profile: bool) -> Measured:
    """One size: a fresh emulator, warmed, then a fresh pipeline process against it."""
    common = (f"--days={days}", f"--event={event}")
    with subprocess.Popen(
        _child("serve", f"--sizes={records_per_day}", *common),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as emulator:
        try:
            served = Served(**json.loads(emulator.stdout.readline()))
            print(
                f"  emulator: {served.expected_rows:,} distinct records rendered in "
                f"{served.prerender_seconds}s (warm pass {served.warm_pass_seconds}s)",
                flush=True,
            )
            if served.warm_pass_seconds > WARM_PASS_MAX_SHARE * served.prerender_seconds:
                print("  warning: the warm pass re-rendered pages; the cache is too small")
            measured = _run_child(served, records_per_day, days, event, common, profile)
        finally:
            emulator.stdin.close()
            emulator.wait(timeout=30)
    if measured.rows_written != served.expected_rows:
        print(
            f"  warning: {measured.rows_written:,} rows written, {served.expected_rows:,} expected"
        )
    return measured


def _run_child(
    served: Served,
    records_per_day: int,
    days: int,
    event: str,
    common: Sequence[str],
    profile: bool,
) -> Measured:
    with tempfile.TemporaryDirectory(prefix="bench_backfill_") as workdir:
        RESULTS.mkdir(parents=True, exist_ok=True)
        extra = [
            f"--workdir={workdir}",
            f"--served={json.dumps(asdict(served))}",
            f"--rss-to={RESULTS / f'rss_{records_per_day}.tsv'}",
        ]
        if profile:
            extra.append(f"--profile-to={RESULTS / f'profile_{records_per_day}.pstats'}")
        output = subprocess.run(
            _child("run", *common, *extra), capture_output=True, text=True, cwd=REPO, check=False
        )
    if output.returncode != 0:
        sys.stderr.write(output.stderr[-4000:])
        raise SystemExit(f"pipeline process failed for {records_per_day} records a day")
    return Measured(**json.loads(output.stdout.strip().splitlines()[-1]))


def print_table(results: dict[int, Measured]) -> None:
    header = ("per day", "records", "rows", "step s", "read s", "dedupe s", "load s")
    header += ("records/s", "RSS before", "peak RSS MB")
    print("\n" + " | ".join(f"{h:>11}" for h in header))
    for per_day, m in results.items():
        load = m.step_seconds - m.read_seconds - m.dedupe_seconds
        cells = (
            f"{per_day:,}",
            f"{m.records:,}",
            f"{m.rows_written:,}",
            f"{m.step_seconds:.1f}",
            f"{m.read_seconds:.1f}",
            f"{m.dedupe_seconds:.1f}",
            f"{load:.1f}",
            f"{m.records / m.step_seconds:,.0f}",
            f"{m.before_run_rss_mb:.0f}",
            f"{m.peak_rss_mb:.0f}",
        )
        print(" | ".join(f"{c:>11}" for c in cells))
    sizes = sorted(results)
    if len(sizes) > 1:
        small, large = results[sizes[0]], results[sizes[-1]]
        print(
            f"\nmemory ratio {sizes[-1] // sizes[0]}x records: "
            f"{large.peak_rss_mb / small.peak_rss_mb:.2f}x peak RSS "
            f"(target <= {TARGET_MEMORY_RATIO}x)"
        )
    print(
        f"targets: >= {TARGET_RECORDS_PER_SECOND:,} records/s for the asset step, "
        f"peak RSS < {TARGET_PEAK_RSS_MB} MB"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="records a day, comma-separated")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--event", default=DEFAULT_EVENT)
    parser.add_argument(
        "--profile", action="store_true", help=f"cProfile each pipeline run into {RESULTS}"
    )
    parser.add_argument("--role", choices=("parent", "serve", "run"), default="parent")
    parser.add_argument("--served", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    parser.add_argument("--rss-to", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.role == "serve":
        serve(sizes[0], args.days, args.event)
        return 0
    if args.role == "run":
        profile = Path(args.profile_to) if args.profile_to else None
        served = Served(**json.loads(args.served))
        run_pipeline(served, args.days, args.event, Path(args.workdir), profile, Path(args.rss_to))
        return 0
    results: dict[int, Measured] = {}
    for per_day in sizes:
        print(f"{per_day:,} records a day x {args.days} days of {args.event!r}:", flush=True)
        results[per_day] = bench_size(per_day, args.days, args.event, args.profile)
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

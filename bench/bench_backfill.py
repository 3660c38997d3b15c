"""Benchmark: a single-run backfill of one event over 30 days, emulator to DuckDB.

    .venv/bin/python bench/bench_backfill.py [--sizes 10000,100000] [--days 30] [--profile]
        [--latency-ms 250] [--cursors 1,3] [--repeat 3] [--quickhouse PYTHON]

Each size runs in two fresh processes: the emulator, with every page pre-rendered before the
clock starts (so the server is not what is measured, and its memory and CPU are not ours), and
the pipeline, which runs the real asset through `load_days` into a new DuckDB file and reports
its own peak RSS. The parent only starts them and prints the table; it imports none of the
pipeline, so its numbers cannot leak into the children's.

`--cursors 1,3 --repeat 3` alternates runs of each contender against one emulator (one
cursor is the read path before issue 14) and prints their medians; `--quickhouse PYTHON`
adds quickhouse's CleverTap source into CSV, run by that interpreter (a venv with
`pip install quickhouse==0.21`), as a contender.
"""

import argparse
import cProfile
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:  # the parent never imports dagster; only the pipeline process does
    from dagster import ExecuteInProcessResult

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DEFAULT_EVENT = "Charged"
PRERENDER_CACHE_BYTES = 64 << 30  # no eviction: every page of the window stays rendered
WARM_PASS_MAX_SHARE = 0.2  # a second prerender pass slower than this means pages were evicted
TARGET_PEAK_RSS_MB = 400
TARGET_MEMORY_RATIO = 1.1
QUICKHOUSE = "quickhouse"


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
    """The pipeline's processes together (its parse workers included), sampled every 100 ms."""
    before_run_rss_mb: float
    success: bool
    main_peak_rss_mb: float = 0.0
    """The pipeline's own process alone (`ru_maxrss`)."""
    peak_pss_mb: float = 0.0
    """The whole process tree's proportional set size (shared pages split between the
    processes sharing them), sampled from outside every 500 ms: what the run costs the
    machine, and the figure held against the target."""
    process_seconds: float = 0.0
    max_in_flight: int = 0
    load_average: float = 0.0


# --- the emulator process -----------------------------------------------------------------


def serve(records_per_day: int, days: int, event: str, latency: float, cursors: list[int]) -> None:
    """Render every page the contenders will ask for, report, then answer "stats" lines with
    the requests seen since the last ones, until stdin closes (the parent's signal)."""
    from clevertap_assets.days import day_ranges, days_between, local_today
    from clevertap_assets.emulator import CleverTapEmulator, EmulatorConfig

    config = EmulatorConfig(
        prerender=True, prerender_cache_bytes=PRERENDER_CACHE_BYTES, records_per_day=records_per_day
    )
    emulator = CleverTapEmulator(config)
    last = local_today(config.timezone)
    first = last - timedelta(days=days - 1)
    # Our client asks for profiles without app fields or event summaries, through one cursor
    # per range of days; quickhouse sends only batch_size (the API's defaults: summaries on).
    windows = [
        (span, {"app": False, "events": False, "profile": True})
        for parts in cursors
        for span in day_ranges(first, last, parts)
    ]
    windows.append(((first, last), {"app": False, "events": True, "profile": True}))

    def render_all() -> float:
        started = time.monotonic()
        for (start, end), flags in windows:
            emulator.prerender(event, start, end, **flags)
        return time.monotonic() - started

    rendered = render_all()
    warm = render_all()
    emulator.set_faults(delay_seconds=latency)
    served = Served(
        url=emulator.start(),
        account_id=config.account_id,
        passcode=config.passcode,
        expected_rows=sum(emulator.true_count(event, day) for day in days_between(first, last)),
        prerender_seconds=round(rendered, 1),
        warm_pass_seconds=round(warm, 2),
    )
    print(json.dumps(asdict(served)), flush=True)
    for _ in sys.stdin:
        stats = emulator.stats
        print(json.dumps({"max_in_flight": stats.max_in_flight, **stats.requests}), flush=True)
        emulator.reset_stats()
    emulator.stop()


# --- the pipeline process -----------------------------------------------------------------


def run_pipeline(
    served: Served,
    days: int,
    event: str,
    cursors: int,
    workdir: Path,
    profile: Path | None,
    rss_timeline: Path,
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
    os.environ["DUCKDB_PATH"] = str(workdir / "warehouse.duckdb")
    settings = load_settings(
        events_csv=csv,
        api_url=served.url,
        destination="duckdb",
        timezone="UTC",
        history_days=days,
    )
    clevertap = CleverTapResource(
        account_id=served.account_id,
        passcode=served.passcode,
        api_url=served.url,
        max_concurrent_requests=cursors,
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
    print(json.dumps(asdict(_measure(result, sampler))), flush=True)


class RssSampler(threading.Thread):
    """RSS every 100 ms into a TSV, to see which phase of the step holds the memory: the
    pipeline's process and, beside it, that process with its children (the parse workers and
    their forkserver), whose peak is the run's peak RSS. Pages the workers share with their
    forkserver count once per process, so the sum errs high."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.first_mb = _rss_mb()
        self.peak_tree_mb = self.first_mb
        self._stopped = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        tree = ProcessTree(os.getpid())
        with self.path.open("w", encoding="utf-8") as out:
            out.write("seconds\trss_mb\ttree_rss_mb\n")
            while not self._stopped.wait(0.1):
                own = _rss_mb()
                total = sum(_rss_mb(member.pid) for member in tree.members())
                self.peak_tree_mb = max(self.peak_tree_mb, total)
                out.write(f"{time.monotonic() - started:.1f}\t{own:.0f}\t{total:.0f}\n")

    def stop(self) -> None:
        self._stopped.set()
        self.join()


class ProcessTree:
    """A process and its descendants, listed again at most every 2 s: listing walks every
    process of the machine, too much to do ten times a second, and the parse workers start
    once, with the read."""

    def __init__(self, pid: int) -> None:
        self._root = psutil.Process(pid)
        self._members = [self._root]
        self._listed = 0.0

    def members(self) -> list[psutil.Process]:
        if time.monotonic() - self._listed > 2.0:
            self._members = [self._root, *self._root.children(recursive=True)]
            self._listed = time.monotonic()
        return self._members

    def list_again(self) -> None:
        self._listed = 0.0


_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def _rss_mb(pid: int | str = "self") -> float:
    """Resident pages from /proc/<pid>/statm (0 once the process is gone): /proc/<pid>/status
    walks every thread and mapping, and read ten times a second it cost the measured process
    1.5 s of CPU a run."""
    try:
        statm = Path(f"/proc/{pid}/statm").read_text(encoding="ascii")
    except OSError:
        return 0.0
    return int(statm.split()[1]) * _PAGE_MB


def _start_profiler() -> cProfile.Profile:
    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _measure(result: "ExecuteInProcessResult", sampler: RssSampler) -> Measured:
    """The asset step's own duration (read, spool, dedupe and the load into DuckDB) from
    Dagster's step event; the asset's metadata splits off the read and the dedupe, and the
    rest of the step is the IO manager's load."""
    if not result.success:
        failures = [
            str(event.event_specific_data) for event in result.all_events if event.is_failure
        ]
        raise SystemExit("the backfill failed: " + "; ".join(failures))
    main_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # One materialization per day of the window, all carrying the run's metadata.
    materialization = result.get_asset_materialization_events()[0]
    metadata = {k: v.value for k, v in materialization.materialization.metadata.items()}
    (step,) = [
        event
        for event in result.get_step_success_events()
        if event.step_key == materialization.step_key
    ]
    return Measured(
        records=metadata["window_records_received"],
        rows_written=metadata["window_rows_written"],
        bytes_received=metadata["bytes_received"],
        api_pages=metadata["api_pages"],
        step_seconds=step.event_specific_data.duration_ms / 1000,
        read_seconds=metadata["seconds"] - metadata["dedupe_seconds"],
        dedupe_seconds=metadata["dedupe_seconds"],
        peak_rss_mb=max(main_peak_mb, sampler.peak_tree_mb),
        before_run_rss_mb=sampler.first_mb,
        success=result.success,
        main_peak_rss_mb=main_peak_mb,
    )


# --- the parent ---------------------------------------------------------------------------


def _child(role: str, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), f"--role={role}", *args]


def bench_size(args: argparse.Namespace, records_per_day: int) -> dict[str, list[Measured]]:
    """One size: a fresh emulator, warmed, then each contender in its own fresh process,
    alternating, `repeat` times, so a change in the machine's load falls on all of them."""
    common = (f"--days={args.days}", f"--event={args.event}")
    serve_args = (f"--sizes={records_per_day}", f"--latency-ms={args.latency_ms}")
    contenders = [f"cursors={n}" for n in _cursors(args)]
    if args.quickhouse:
        contenders.append(QUICKHOUSE)
    runs: dict[str, list[Measured]] = {name: [] for name in contenders}
    with subprocess.Popen(
        _child("serve", *serve_args, f"--cursors={args.cursors}", *common),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as emulator:
        try:
            served = Served(**json.loads(emulator.stdout.readline()))
            print(
                f"  emulator: {served.expected_rows:,} distinct records rendered in "
                f"{served.prerender_seconds}s (warm pass {served.warm_pass_seconds}s), "
                f"{args.latency_ms:g} ms per request",
                flush=True,
            )
            if served.warm_pass_seconds > WARM_PASS_MAX_SHARE * served.prerender_seconds:
                print("  warning: the warm pass re-rendered pages; the cache is too small")
            for _ in range(args.repeat):
                for name in contenders:
                    load = os.getloadavg()[0]
                    measured = _run_contender(args, name, served, records_per_day, common)
                    emulator.stdin.write("stats\n")
                    emulator.stdin.flush()
                    seen = json.loads(emulator.stdout.readline())
                    measured = replace(
                        measured, max_in_flight=seen["max_in_flight"], load_average=load
                    )
                    runs[name].append(measured)
                    _print_run(name, measured, served.expected_rows)
        finally:
            emulator.stdin.close()
            emulator.wait(timeout=30)
    return runs


def _cursors(args: argparse.Namespace) -> list[int]:
    return [int(n) for n in args.cursors.split(",")]


def _run_contender(
    args: argparse.Namespace, name: str, served: Served, records_per_day: int, common: Sequence[str]
) -> Measured:
    with tempfile.TemporaryDirectory(prefix="bench_backfill_") as workdir:
        if name == QUICKHOUSE:
            return _run_quickhouse(args, served, Path(workdir))
        RESULTS.mkdir(parents=True, exist_ok=True)
        extra = [
            f"--{name}",
            f"--workdir={workdir}",
            f"--served={json.dumps(asdict(served))}",
            f"--rss-to={RESULTS / f'rss_{records_per_day}.tsv'}",
        ]
        if args.profile:
            extra.append(f"--profile-to={RESULTS / f'profile_{records_per_day}.pstats'}")
        started = time.monotonic()
        returncode, stdout, stderr, peak_pss_mb = _run_sampled(
            _child("run", *common, *extra), cwd=REPO
        )
        process_seconds = time.monotonic() - started
    if returncode != 0:
        sys.stderr.write(stderr[-4000:])
        raise SystemExit(f"pipeline process failed for {records_per_day} records a day")
    measured = Measured(**json.loads(stdout.strip().splitlines()[-1]))
    return replace(measured, process_seconds=process_seconds, peak_pss_mb=peak_pss_mb)


def _run_sampled(command: list[str], cwd: Path | None = None) -> tuple[int, str, str, float]:
    """Run a contender to the end, sampling its process tree's PSS from here, so the
    sampling's CPU is not the measured processes'. Reading a process's PSS makes the kernel
    walk its page tables: sampled every 200 ms with the tree listed anew each time, the
    sampler took 12 to 25% of a core, so the PSS is read every 500 ms (see `ProcessTree`)."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        tree = ProcessTree(process.pid)
        while not done.wait(0.5):
            try:
                total = sum(member.memory_full_info().pss for member in tree.members())
            except psutil.Error:
                tree.list_again()  # a member ended
                continue
            peak[0] = max(peak[0], total / (1 << 20))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    return process.returncode, stdout, stderr, peak[0]


_QUICKHOUSE_RUN = """
import json, resource, sys
import quickhouse as qh
url, account, passcode, event, first, last, out = sys.argv[1:]
columns = [("ts", "TIMESTAMP"), ("profile", "JSON", "profile"),
           ("event_props", "JSON", "event_props"), ("session_props", "JSON", "session_props")]
source = qh.CleverTap(account_id=account, passcode=passcode, event_name=event, base_url=url,
                      columns=columns, from_date=first, to_date=last)
result = qh.sync(source, qh.Csv(out), dest_table="events", mode="full")
print(json.dumps({"rows": result.rows_read,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run_quickhouse(args: argparse.Namespace, served: Served, workdir: Path) -> Measured:
    """quickhouse 0.21's CleverTap source (one cursor) into CSV files: every record's ts,
    profile, event and session properties, the whole process timed as ours is."""
    last_day = datetime.now(UTC).date()  # the emulator's zone, as in `serve`
    first, last = (last_day - timedelta(days=args.days - 1)).isoformat(), last_day.isoformat()
    command = [
        args.quickhouse,
        "-c",
        _QUICKHOUSE_RUN,
        served.url,
        served.account_id,
        served.passcode,
        args.event,
        first,
        last,
        str(workdir / "csv"),
    ]
    started = time.monotonic()
    returncode, stdout, stderr, peak_pss_mb = _run_sampled(command)
    seconds = time.monotonic() - started
    if returncode != 0:
        sys.stderr.write(stderr[-4000:])
        raise SystemExit("the quickhouse run failed")
    reported = json.loads(stdout.strip().splitlines()[-1])
    return Measured(
        records=reported["rows"],
        rows_written=reported["rows"],
        bytes_received=0,
        api_pages=0,
        step_seconds=seconds,
        read_seconds=seconds,
        dedupe_seconds=0.0,
        peak_rss_mb=reported["peak_rss_mb"],
        before_run_rss_mb=0.0,
        success=True,
        main_peak_rss_mb=reported["peak_rss_mb"],
        peak_pss_mb=peak_pss_mb,
        process_seconds=seconds,
    )


def _print_run(name: str, m: Measured, expected_rows: int) -> None:
    print(
        f"  {name:>10}: {m.records:,} records in {m.process_seconds:.1f} s whole process "
        f"({m.records / m.process_seconds:,.0f}/s; step {m.step_seconds:.1f} s), "
        f"peak PSS {m.peak_pss_mb:.0f} MB (RSS: every process {m.peak_rss_mb:.0f}, "
        f"main process {m.main_peak_rss_mb:.0f}), "
        f"max {m.max_in_flight} in flight, "
        f"load {m.load_average:.1f}",
        flush=True,
    )
    if name != QUICKHOUSE and m.rows_written != expected_rows:
        print(f"  warning: {m.rows_written:,} rows written, {expected_rows:,} expected")


def print_table(results: dict[int, dict[str, list[Measured]]]) -> None:
    """Medians per size and contender; whole-process records/s is what a user waits for."""
    header = ("per day", "contender", "runs", "records", "process s", "step s", "read s")
    header += ("dedupe s",)
    header += ("records/s", "step rec/s", "peak PSS MB", "main RSS MB", "in flight", "load")
    print("\n" + " | ".join(f"{h:>11}" for h in header))
    for per_day, runs in results.items():
        for name, measured in runs.items():

            def median(field: str, measured: list[Measured] = measured) -> float:
                return statistics.median(getattr(m, field) for m in measured)

            records = median("records")
            cells = (
                f"{per_day:,}",
                name,
                str(len(measured)),
                f"{records:,.0f}",
                f"{median('process_seconds'):.1f}",
                f"{median('step_seconds'):.1f}",
                f"{median('read_seconds'):.1f}",
                f"{median('dedupe_seconds'):.1f}",
                f"{statistics.median(m.records / m.process_seconds for m in measured):,.0f}",
                f"{statistics.median(m.records / m.step_seconds for m in measured):,.0f}",
                f"{median('peak_pss_mb'):.0f}",
                f"{median('main_peak_rss_mb'):.0f}",
                f"{max(m.max_in_flight for m in measured)}",
                f"{median('load_average'):.1f}",
            )
            print(" | ".join(f"{c:>11}" for c in cells))
    sizes = sorted(results)
    if len(sizes) > 1:
        for name in results[sizes[0]]:
            small = statistics.median(m.peak_pss_mb for m in results[sizes[0]][name])
            large = statistics.median(m.peak_pss_mb for m in results[sizes[-1]][name])
            print(
                f"memory ratio {sizes[-1] // sizes[0]}x records, {name}: {large / small:.2f}x "
                f"peak PSS (target <= {TARGET_MEMORY_RATIO}x)"
            )
    print(
        f"target: peak PSS of the process tree <= {TARGET_PEAK_RSS_MB} MB; records/s are "
        "medians of alternating runs"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="records a day, comma-separated")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--event", default=DEFAULT_EVENT)
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="added by the emulator to every request"
    )
    parser.add_argument(
        "--cursors", default="3", help="cursors per window (= requests in flight), e.g. 1,3"
    )
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs per contender")
    parser.add_argument("--quickhouse", help="a Python with quickhouse 0.21, as a contender")
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
        serve(sizes[0], args.days, args.event, args.latency_ms / 1000, _cursors(args))
        return 0
    if args.role == "run":
        profile = Path(args.profile_to) if args.profile_to else None
        served = Served(**json.loads(args.served))
        (cursors,) = _cursors(args)
        workdir, rss = Path(args.workdir), Path(args.rss_to)
        run_pipeline(served, args.days, args.event, cursors, workdir, profile, rss)
        return 0
    results: dict[int, dict[str, list[Measured]]] = {}
    for per_day in sizes:
        print(f"{per_day:,} records a day x {args.days} days of {args.event!r}:", flush=True)
        results[per_day] = bench_size(args, per_day)
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

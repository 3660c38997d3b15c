"""`clevertap-assets`: the commands a user runs outside the Dagster UI.

Each subcommand only parses its flags and hands over to the module that owns the concern,
so the same code runs from the command line, from Dagster jobs and from the tests.
"""

import argparse
import sys
from collections.abc import Callable, Sequence


def _check(args: argparse.Namespace) -> int:
    from clevertap_assets.connection_check import run_connection_check
    from clevertap_assets.definitions import build_code_location

    return run_connection_check(day=args.day, build_definitions=build_code_location)


def _emulator(args: argparse.Namespace) -> int:
    from clevertap_assets.emulator import serve_forever

    serve_forever(host=args.host, port=args.port, latency_seconds=args.latency_ms / 1000)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from clevertap_assets.demo import run_demo

    return run_demo(days=args.days, duckdb_path=args.duckdb_path)


def _load(args: argparse.Namespace) -> int:
    from clevertap_assets.headless import load_recent_days
    from clevertap_assets.settings import SettingsError, load_settings

    try:
        loaded = load_recent_days(load_settings(), args.days, args.event or None)
    except SettingsError as error:
        print(f"clevertap-assets load: {error}", file=sys.stderr)
        return 2
    return 0 if loaded else 1


def _partition_range(args: argparse.Namespace) -> int:
    from clevertap_assets.assets.partitions import recent_range
    from clevertap_assets.settings import load_settings

    print(recent_range(load_settings(), args.days))
    return 0


def _webhook(args: argparse.Namespace) -> int:
    from clevertap_assets.webhooks.receiver import serve_webhooks

    serve_webhooks(host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clevertap-assets", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser(
        "check", help="validate settings and reach CleverTap (TEST & CONTINUE)"
    )
    check.add_argument("--day", help="local day YYYY-MM-DD to read (default: yesterday)")
    check.set_defaults(run=_check)

    emulator = commands.add_parser("emulator", help="serve the local CleverTap emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="added to every request, like the live API's round trip (e.g. 250)",
    )
    emulator.set_defaults(run=_emulator)

    demo = commands.add_parser(
        "demo", help="load the history of every event from the emulator into DuckDB"
    )
    demo.add_argument("--days", type=int, default=None, help="days of history (default: settings)")
    demo.add_argument("--duckdb-path", default="demo.duckdb")
    demo.set_defaults(run=_demo)

    load = commands.add_parser(
        "load",
        help="load the last days of the pipeline's events now, in one run of this process",
    )
    load.add_argument(
        "--days", type=int, default=None, help="days up to today (default and at most: history)"
    )
    load.add_argument(
        "--event", action="append", help="a CleverTap event name (repeatable; default: all)"
    )
    load.set_defaults(run=_load)

    partition_range = commands.add_parser(
        "partition-range",
        help="print FIRST...LAST of the last days for dagster's --partition-range",
    )
    partition_range.add_argument(
        "--days", type=int, default=None, help="days up to today (default and at most: history)"
    )
    partition_range.set_defaults(run=_partition_range)

    webhook = commands.add_parser("webhook", help="receive CleverTap webhooks into the inbox")
    webhook.add_argument("--host", default="127.0.0.1")
    webhook.add_argument("--port", type=int, default=8800)
    webhook.set_defaults(run=_webhook)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

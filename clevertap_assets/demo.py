"""The embedded default, end to end: the emulator as CleverTap, DuckDB as the warehouse.

`clevertap-assets demo` is the README's first command. It runs exactly what a scheduled run
does (the same assets, IO manager and checks), over the history window, headlessly.
"""

import os
import warnings
from datetime import timedelta
from pathlib import Path

import polars as pl
from dagster import BetaWarning

from clevertap_assets.assets.pipeline_events import pipeline_events
from clevertap_assets.days import days_between, local_today
from clevertap_assets.destinations.duckdb.lock import connect_when_unlocked
from clevertap_assets.destinations.registry import warehouse_for
from clevertap_assets.emulator import CleverTapEmulator, EmulatorConfig
from clevertap_assets.headless import load_days
from clevertap_assets.naming import quote_identifier
from clevertap_assets.settings import PipelineSettings, load_settings


def run_demo(days: int | None, duckdb_path: str) -> int:
    warnings.filterwarnings("ignore", category=BetaWarning)
    base = load_settings()
    config = EmulatorConfig(timezone=base.timezone, events=base.all_event_names)
    with CleverTapEmulator(config) as emulator:
        os.environ["CLEVERTAP_ACCOUNT_ID"] = config.account_id
        os.environ["CLEVERTAP_PASSCODE"] = config.passcode
        os.environ["DUCKDB_PATH"] = duckdb_path
        settings = load_settings(
            api_url=emulator.url,
            destination="duckdb",
            history_days=days or base.history_days,
        )
        Path(duckdb_path).unlink(missing_ok=True)
        print(
            f"CleverTap emulator at {emulator.url}; loading {settings.history_days} days of "
            f"{len(settings.event_names)} events into {duckdb_path} ..."
        )
        days = history_days(settings)
        if not load_days(settings, days[0], days[-1], log_level="WARNING").success:
            return 1
        summary = daily_summary(settings, duckdb_path)
        truth = pl.DataFrame(
            [
                {"day": day, "event": name, "truth": emulator.true_count(name, day)}
                for name in settings.event_names
                for day in history_days(settings)
            ]
        )
    print_summary(summary, truth, {e.name: e.table for e in pipeline_events(settings)})
    return 0


def history_days(settings: PipelineSettings) -> list:
    today = local_today(settings.timezone)
    return list(days_between(today - timedelta(days=settings.history_days - 1), today))


def daily_summary(settings: PipelineSettings, duckdb_path: str) -> pl.DataFrame:
    """Rows per event and local day, read back from the DuckDB file."""
    frames = []
    schema = warehouse_for(settings).schema
    connection = connect_when_unlocked(duckdb_path, read_only=True, config={})
    with connection:
        present = {
            name
            for (name,) in connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                [schema],
            ).fetchall()
        }
        for event in pipeline_events(settings):
            if event.table not in present:
                continue
            table = f"{quote_identifier(schema)}.{quote_identifier(event.table)}"
            rows = connection.execute(
                f"SELECT CAST(event_time AS DATE) AS day, ? AS event, count(*) AS rows "
                f"FROM {table} GROUP BY 1",
                [event.name],
            ).fetchall()
            frames.append(pl.DataFrame(rows, schema=["day", "event", "rows"], orient="row"))
    return pl.concat(frames) if frames else pl.DataFrame()


def print_summary(summary: pl.DataFrame, truth: pl.DataFrame, tables: dict[str, str]) -> None:
    """Rows per day (rows) and table (columns), their sum beside the emulator's truth (its
    distinct records of those events that day), then how they compare."""
    compared = truth.join(summary, on=["day", "event"], how="left").with_columns(
        pl.col("rows").fill_null(0)
    )
    loaded_events = summary["event"].unique().to_list() if summary.height else []
    loaded = compared.filter(pl.col("event").is_in(loaded_events))
    totals = loaded.group_by("day").agg(
        pl.col("rows").sum().alias("all tables"), pl.col("truth").sum().alias("truth")
    )
    table = (
        loaded.with_columns(pl.col("event").replace_strict(tables))
        .pivot(on="event", index="day", values="rows")
        .join(totals, on="day")
        .sort("day")
    )
    with pl.Config(
        tbl_rows=-1,
        tbl_cols=-1,
        tbl_width_chars=400,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        tbl_formatting="ASCII_MARKDOWN",
    ):
        print(table)
    checked = compared.filter(pl.col("event").is_in(loaded_events))
    mismatches = checked.filter(pl.col("rows") != pl.col("truth"))
    skipped = sorted(set(truth["event"].to_list()) - set(loaded_events))
    print(
        f"{checked['rows'].sum():,} rows in {len(loaded_events)} tables; "
        f"{checked.height - mismatches.height} of {checked.height} event-days equal the "
        f"emulator's distinct records"
    )
    if skipped:
        print(f"not exported (CleverTap refuses to export them): {', '.join(skipped)}")

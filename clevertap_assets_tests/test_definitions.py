"""The code location as Dagster loads it: what a user sees in the UI before any run."""

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, Definitions

from clevertap_assets.definitions import build_code_location
from clevertap_assets.settings import load_settings
from clevertap_assets_tests.harness import (
    daily_rows,
    make_pipeline,
    pipeline_env,
    recent_days,
    write_events_csv,
)

REPO = Path(__file__).resolve().parent.parent
MODULE = "clevertap_assets.definitions"


def run_dagster(
    arguments: list[str], cwd: Path, dagster_home: Path, **env: str
) -> subprocess.CompletedProcess:
    """Dagster's own command, with this interpreter's PATH and nothing else of the caller's
    environment but `env`."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), *arguments],
        cwd=cwd,
        env={
            "PATH": str(Path(sys.executable).parent),
            "DAGSTER_HOME": str(dagster_home),
            "HOME": str(dagster_home),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_every_selected_event_is_an_asset_with_its_checks(tmp_path):
    events = ["App Launched", "Charged", "Notification Sent"]
    settings = load_settings(
        events_csv=write_events_csv(tmp_path / "events.csv", events),
        exclude_events="Notification Sent",
        pipeline_name="Growth App",
        table_prefix="ct",
    )
    defs = build_code_location(settings)
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = set(graph.get_all_asset_keys())
    assert keys == {
        AssetKey(["growth_app", "app_launched"]),
        AssetKey(["growth_app", "charged"]),
        AssetKey(["growth_app", "webhook_events"]),
    }
    charged = graph.get(AssetKey(["growth_app", "charged"]))
    assert charged.group_name == "growth_app"
    assert charged.metadata["table"] == "ct_charged"
    assert charged.metadata["schema"] == "growth_app"
    assert charged.partitions_def.timezone == "UTC"
    check_names = {key.name for key in graph.asset_check_keys if key.asset_key == charged.key}
    assert check_names == {
        "no_duplicate_record_ids",
        "row_count_matches_clevertap",
        "freshness_check",
    }
    assert {s.name for s in defs.schedules} == {"ingestion_schedule"}
    assert {s.name for s in defs.sensors} == {  # no alerts without ALERT_WEBHOOK_URL
        "reconciliation_sensor",
        "recovered_days_sensor",
        "freshness_checks_sensor",
        "webhook_inbox_sensor",
    }


def test_the_repository_definitions_validate_with_dagsters_own_command(tmp_path):
    """`dagster definitions validate` on the package, from the repository as shipped."""
    result = run_dagster(["definitions", "validate", "-w", "workspace.yaml"], REPO, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


@pytest.mark.slow
def test_the_readmes_headless_loads_take_every_event_or_a_selection(tmp_path, make_emulator):
    """`clevertap-assets load --days N [--event NAME]` and a single day through
    `dagster asset materialize --select 'group:clevertap' --partition DAY`, as the README
    gives them, through the real commands on a persistent instance; the days equal the
    truth, and `key:"clevertap/*"` lists the webhook asset beside the events."""
    events = ["Charged", "App Launched"]
    emulator = make_emulator(events=events)
    pipeline = make_pipeline(tmp_path, emulator, events=events)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    env = pipeline_env(pipeline, dagster_home, tmp_path)
    first, last = recent_days(pipeline.settings, 3)
    load = [str(Path(sys.executable).parent / "clevertap-assets"), "load", "--days", "3"]
    done = subprocess.run(
        [*load, "--event", "Charged"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", first, last)
    assert "app_launched" not in tables(pipeline)
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", MODULE]
    command += ["--select", "group:clevertap", "--partition", last.isoformat()]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert daily_rows(pipeline, "app_launched") == pipeline.truth("App Launched", last, last)
    unknown = subprocess.run(
        [*load, "--event", "Chargd"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert unknown.returncode == 2
    assert unknown.stderr.startswith(
        "clevertap-assets load: --event 'Chargd' is not among the selected events ('Charged',"
    )
    listing = [*command[:4], "list", "-m", MODULE, "--select", 'key:"clevertap/*"']
    listed = subprocess.run(listing, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert listed.stdout.split() == [
        "clevertap/app_launched",
        "clevertap/charged",
        "clevertap/webhook_events",
    ]


def tables(pipeline) -> set[str]:
    with duckdb.connect(pipeline.duckdb_path, read_only=True) as connection:
        return {
            n
            for (n,) in connection.sql(
                "SELECT table_name FROM information_schema.tables"
            ).fetchall()
        }

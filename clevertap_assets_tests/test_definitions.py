"""The code location as Dagster loads it: what a user sees in the UI before any run."""

import subprocess
import sys
from pathlib import Path

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
        duckdb_path=str(tmp_path / "w.duckdb"),
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
    assert check_names == {"no_duplicate_record_ids", "row_count_matches_clevertap"}
    assert {s.name for s in defs.schedules} == {"ingestion_schedule"}
    assert {s.name for s in defs.sensors} == {"reconciliation_sensor", "webhook_inbox_sensor"}


def test_the_repository_definitions_validate_with_dagsters_own_command(tmp_path):
    """`dagster definitions validate` on the package, from the repository as shipped."""
    result = run_dagster(["definitions", "validate", "-w", "workspace.yaml"], REPO, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_the_readmes_selections_load_every_event_over_a_range_of_days(tmp_path, make_emulator):
    """`--select 'group:clevertap'` (and `'key:"clevertap/*"'` for one pipeline's assets) as
    the README gives them, through the real CLI: the webhook asset beside the events no
    longer makes a range of days an invalid subset, and the days equal the truth."""
    emulator = make_emulator(events=["Charged"])
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"])
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    first, last = recent_days(pipeline.settings, 2)
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", MODULE]
    command += ["--select", "group:clevertap", "--partition-range", f"{first}...{last}"]
    env = pipeline_env(pipeline, dagster_home, tmp_path)
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", first, last)
    listing = [*command[:4], "list", "-m", MODULE, "--select", 'key:"clevertap/*"']
    listed = subprocess.run(listing, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert listed.stdout.split() == ["clevertap/charged", "clevertap/webhook_events"]


STEP_PARENT_JOB = """
import os
from pathlib import Path

from dagster import job, op

from clevertap_assets.definitions import EXECUTOR


@op
def record_step_parent() -> None:
    parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\\0", b" ")
    Path(os.environ["STEP_PARENT_FILE"]).write_bytes(parent)


@job(executor_def=EXECUTOR)
def one_step():
    record_step_parent()
"""


def test_steps_fork_from_a_server_that_imported_the_project(tmp_path):
    """A run's step processes fork from Dagster's forkserver with this package (and Dagster,
    polars, DuckDB) and the instance's storage already imported, so a step does not import
    them again: a near-empty `dagster asset materialize` of one event took 14.4 s without
    them, 13.4 s with the package alone."""
    (tmp_path / "one_step.py").write_text(STEP_PARENT_JOB, encoding="utf-8")
    (tmp_path / "dagster_home").mkdir()
    parent_file = tmp_path / "step_parent.txt"
    done = run_dagster(
        ["job", "execute", "-f", "one_step.py", "-j", "one_step"],
        tmp_path,
        tmp_path / "dagster_home",
        STEP_PARENT_FILE=str(parent_file),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    parent = parent_file.read_text(encoding="utf-8")
    assert "multiprocessing.forkserver" in parent, parent
    preloaded = parent.split("**")[0]  # the server's preload list
    assert f"'{MODULE}'" in preloaded and "'dagster._core.storage.sqlite_storage'" in preloaded

"""`clevertap-assets load` on a persistent instance, as the README's headless section runs it."""

import subprocess
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from clevertap_assets.headless import open_home_instance
from clevertap_assets.settings import SettingsError
from clevertap_assets_tests.harness import (
    daily_rows,
    load_command,
    make_pipeline,
    pipeline_env,
    recent_days,
)

LOADS = 5


@pytest.mark.topology
def test_loads_started_together_on_a_fresh_home_all_load_and_leave_it_usable(
    tmp_path: Path, make_emulator
):
    """Five loads started at once on a new, empty SQLite DAGSTER_HOME: the first to open it
    creates the instance while the others wait, so none breaks it; each loads its days
    exactly and the instance records the five runs."""
    emulator = make_emulator(events=["Charged"])
    home = tmp_path / "dagster_home"
    home.mkdir()
    workdirs = [tmp_path / f"p{n}" for n in range(LOADS)]
    for workdir in workdirs:
        workdir.mkdir()
    pipelines = [make_pipeline(workdir, emulator, events=["Charged"]) for workdir in workdirs]
    started = []
    for workdir, pipeline in zip(workdirs, pipelines, strict=True):
        env = pipeline_env(pipeline, home, workdir)
        started.append(
            subprocess.Popen(
                load_command("--days", "2"),
                env=env,
                cwd=workdir,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errors = [process.communicate(timeout=240)[1] for process in started]
    assert [process.returncode for process in started] == [0] * LOADS, errors
    first, last = recent_days(pipelines[0].settings, 2)
    for pipeline in pipelines:
        assert daily_rows(pipeline, "charged") == pipeline.truth("Charged", first, last)
    with DagsterInstance.from_config(str(home)) as instance:
        statuses = [run.status for run in instance.get_runs()]
    assert statuses == [DagsterRunStatus.SUCCESS] * LOADS


def test_a_home_that_is_no_directory_is_named(tmp_path: Path):
    with pytest.raises(SettingsError) as raised:
        open_home_instance(str(tmp_path / "missing"))
    assert str(raised.value) == (
        f"DAGSTER_HOME={str(tmp_path / 'missing')!r} is not a directory: create it, or unset "
        "DAGSTER_HOME for a run that is not recorded"
    )

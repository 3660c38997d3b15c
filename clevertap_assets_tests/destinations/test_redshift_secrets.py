"""The warehouse password appears in nothing a run leaves behind: a real `clevertap-assets
load` process against the Redshift double, with `REDSHIFT_PASSWORD` set as a user
sets it, once with the right password and once with a wrong one (a failed login is where a
driver's message could carry it). Checked: the process's stdout and stderr, every event of
the run's event log as Dagster stores it, the run's config, and the materialization
metadata."""

import secrets
import subprocess
from pathlib import Path

from dagster import AssetKey, DagsterInstance
from dagster._serdes import serialize_value

from clevertap_assets_tests.harness import load_command, make_pipeline, pipeline_env

MODULE = "clevertap_assets.definitions"
RUN_SECONDS = 300


def materialize(pipeline, tmp_path: Path, home: Path, password: str) -> subprocess.CompletedProcess:
    command = load_command("--days", "2", "--event", "Charged")
    env = {
        **pipeline_env(pipeline, home, tmp_path),
        "DESTINATION": "redshift",
        "REDSHIFT_PASSWORD": password,
    }
    return subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_SECONDS
    )


def stored_run(home: Path) -> tuple[str, list[dict]]:
    """Everything the instance keeps of its one run (serialized in full, as stored), and the
    metadata of its Charged materializations."""
    with DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        stored = serialize_value(run) + "".join(
            serialize_value(entry) for entry in instance.all_logs(run.run_id)
        )
        records = instance.fetch_materializations(AssetKey(["clevertap", "charged"]), limit=10)
        metadata = [
            {k: v.value for k, v in record.asset_materialization.metadata.items()}
            for record in records.records
        ]
    return stored, metadata


def test_the_password_is_in_no_output_event_or_metadata_of_a_headless_load(
    tmp_path, make_emulator, warehouse
):
    pipeline = make_pipeline(tmp_path, make_emulator(), events=["Charged"], destination="redshift")
    password = warehouse.server.password
    home = tmp_path / "home_ok"
    home.mkdir()
    done = materialize(pipeline, tmp_path, home, password)
    assert done.returncode == 0, done.stderr[-3000:]
    stored, metadata = stored_run(home)
    assert "ASSET_MATERIALIZATION" in stored and len(metadata) == 2  # one per day
    assert all(entry["destination_table"] == "clevertap.charged" for entry in metadata)
    for text in (done.stdout, done.stderr, stored, repr(metadata)):
        assert password not in text

    wrong = "wrong-" + secrets.token_urlsafe(12)
    home = tmp_path / "home_wrong"
    home.mkdir()
    failed = materialize(pipeline, tmp_path, home, wrong)
    assert failed.returncode != 0
    stored, _ = stored_run(home)
    assert "password authentication failed" in stored  # the reason is told...
    for text in (failed.stdout, failed.stderr, stored):
        assert wrong not in text and password not in text  # ...the password is not

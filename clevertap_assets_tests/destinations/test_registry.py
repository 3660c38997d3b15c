"""The registry that picks a destination by `DESTINATION` and reads its own settings."""

import importlib
from pathlib import Path

import pytest

from clevertap_assets.definitions import build_code_location
from clevertap_assets.destinations import registry
from clevertap_assets.destinations.registry import (
    DESTINATIONS,
    destination_for,
    refuse_run_local_warehouse,
    warehouse_for,
)
from clevertap_assets.settings import SettingsError, instance_run_launcher, load_settings
from clevertap_assets_tests.harness import write_events_csv


def test_the_settings_accept_exactly_the_registrys_destinations_and_each_loads(tmp_path):
    events_csv = write_events_csv(tmp_path / "events.csv", ["Charged"])
    for name, load in DESTINATIONS.items():
        assert load_settings(events_csv=events_csv, destination=name).destination == name
        destination = load()
        assert callable(destination.build_resources) and callable(destination.check)
    with pytest.raises(SettingsError) as error:
        load_settings(events_csv=events_csv, destination="oracle")
    assert str(error.value) == (
        "DESTINATION='oracle' is not a destination; allowed: duckdb, snowflake, bigquery, redshift"
    )


def test_a_missing_extra_is_one_clear_message(tmp_path, monkeypatch):
    """A destination whose client library is not installed names the extra to install."""

    def missing_stack() -> registry.Destination:
        importlib.import_module("snowflake_not_installed_here")
        raise AssertionError("unreachable")

    monkeypatch.setitem(DESTINATIONS, "snowflake", missing_stack)
    settings = load_settings(
        events_csv=write_events_csv(tmp_path / "events.csv", ["Charged"]),
        destination="snowflake",
    )
    with pytest.raises(SettingsError) as error:
        destination_for(settings)
    assert str(error.value) == (
        "DESTINATION=snowflake needs its client libraries (module 'snowflake_not_installed_here'"
        " is missing): pip install 'clevertap_assets[snowflake]'"
    )


@pytest.fixture
def events_csv(tmp_path: Path) -> Path:
    return write_events_csv(tmp_path / "events.csv", ["App Launched", "Charged"])


def warehouse_error(**values: object) -> str:
    """The message that stops the definitions when the destination's settings are read."""
    with pytest.raises(SettingsError) as raised:
        warehouse_for(load_settings(**values))
    return str(raised.value)


@pytest.mark.parametrize(
    ("destination", "variable"),
    [
        ("duckdb", "DUCKDB_SCHEMA"),
        ("snowflake", "SNOWFLAKE_SCHEMA"),
        ("bigquery", "BIGQUERY_DATASET"),
        ("redshift", "REDSHIFT_SCHEMA"),
    ],
)
def test_each_destination_reads_its_own_schema_variable_and_defaults_to_the_pipeline(
    events_csv: Path, monkeypatch: pytest.MonkeyPatch, destination: str, variable: str
):
    settings = load_settings(events_csv=events_csv, destination=destination)
    assert warehouse_for(settings).schema == "clevertap"
    for other in ("DUCKDB_SCHEMA", "SNOWFLAKE_SCHEMA", "BIGQUERY_DATASET", "REDSHIFT_SCHEMA"):
        monkeypatch.setenv(other, f"not_{destination}")
    monkeypatch.setenv(variable, "events_raw")
    assert warehouse_for(settings).schema == "events_raw"
    monkeypatch.setenv(variable, "")
    assert warehouse_for(settings).schema == "clevertap"


def test_a_duckdb_file_named_like_its_schema_stops_the_definitions(
    events_csv: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DUCKDB_PATH", "data/clevertap.duckdb")
    assert warehouse_error(events_csv=events_csv) == (
        "DUCKDB_PATH='data/clevertap.duckdb' names the DuckDB catalog 'clevertap', the same "
        "as the schema 'clevertap'; rename the file or set DUCKDB_SCHEMA"
    )
    with pytest.raises(SettingsError, match="names the DuckDB catalog 'clevertap', the same"):
        build_code_location(load_settings(events_csv=events_csv))
    monkeypatch.setenv("DUCKDB_SCHEMA", "raw")
    assert warehouse_for(load_settings(events_csv=events_csv)).schema == "raw"
    assert warehouse_for(load_settings(events_csv=events_csv, destination="redshift"))


@pytest.mark.parametrize(
    ("destination", "limit"),
    [
        ("duckdb", 100 * 2**20),
        ("snowflake", 100 * 2**20),
        ("bigquery", 50 * 2**20),
        ("redshift", 16 * 2**20),
    ],
)
def test_rows_are_capped_at_what_the_destination_takes(events_csv: Path, destination, limit):
    settings = load_settings(events_csv=events_csv, destination=destination)
    assert warehouse_for(settings).row_limit_bytes == limit
    smaller = load_settings(events_csv=events_csv, destination=destination, max_row_bytes=1000)
    assert warehouse_for(smaller).row_limit_bytes == 1000


@pytest.mark.parametrize(
    ("destination", "limit"),
    [("duckdb", 200 * 2**20), ("snowflake", 128 * 2**20), ("bigquery", 50 * 2**20)],
)
def test_a_raised_row_limit_stops_at_the_largest_value_the_destination_stores(
    events_csv: Path, destination, limit
):
    """Snowflake's VARCHAR and VARIANT hold 128 MB a value
    (https://docs.snowflake.com/en/sql-reference/data-types-text,
    https://docs.snowflake.com/en/sql-reference/data-types-semistructured): a row over it is
    skipped and counted rather than failing the load, whatever MAX_ROW_BYTES says."""
    raised = load_settings(
        events_csv=events_csv, destination=destination, max_row_bytes=200 * 2**20
    )
    assert warehouse_for(raised).row_limit_bytes == limit


@pytest.mark.parametrize(("destination", "limit"), [("redshift", 127), ("snowflake", 255)])
def test_table_prefix_is_checked_against_the_destinations_table_name_limit(
    events_csv: Path, destination: str, limit: int
):
    """Redshift: 127 bytes (https://docs.aws.amazon.com/redshift/latest/dg/r_names.html);
    Snowflake: 255 (https://docs.snowflake.com/en/sql-reference/identifiers-syntax)."""
    fits = "p" * (limit - len("_webhook_events"))
    assert warehouse_for(
        load_settings(events_csv=events_csv, destination=destination, table_prefix=fits)
    )
    message = warehouse_error(
        events_csv=events_csv, destination=destination, table_prefix="p" * 300
    )
    assert message == (
        f"TABLE_PREFIX (300 characters) makes table '{'p' * 57}...' 315 bytes long, "
        f"over {destination}'s limit of {limit} bytes; shorten the prefix"
    )
    # DuckDB sets no limit
    assert warehouse_for(load_settings(events_csv=events_csv, table_prefix="p" * 300))


K8S_INSTANCE = """
run_launcher:
  module: dagster_k8s
  class: K8sRunLauncher
  config:
    instance_config_map: dagster-instance
    service_account_name: dagster
    job_image: registry.example.com/clevertap-assets:0.1.0
"""


def test_duckdb_is_refused_where_each_run_has_a_pod_of_its_own(
    events_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The launcher is read from the instance's own dagster.yaml, as the Helm chart writes it;
    a server warehouse loads there, and DuckDB stays allowed where runs share the disk."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(K8S_INSTANCE)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    launcher = instance_run_launcher()
    assert launcher == "K8sRunLauncher"

    with pytest.raises(SettingsError) as raised:
        refuse_run_local_warehouse(load_settings(events_csv=events_csv), launcher)
    assert str(raised.value).startswith(
        "DESTINATION='duckdb' cannot load under this instance's K8sRunLauncher"
    )
    assert "DESTINATION=snowflake, bigquery or redshift" in str(raised.value)
    warehouse = load_settings(events_csv=events_csv, destination="redshift")
    refuse_run_local_warehouse(warehouse, launcher)

    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert instance_run_launcher() == "DefaultRunLauncher"
    refuse_run_local_warehouse(load_settings(events_csv=events_csv), instance_run_launcher())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "missing"))
    assert instance_run_launcher() is None

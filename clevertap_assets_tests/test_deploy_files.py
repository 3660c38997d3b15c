"""What can be checked here of the files `deploy/` hands to Docker, Compose and Helm: no Docker
daemon and no Kubernetes cluster run on this machine, so these check that the files agree with
each other and with the commands the topology test (test_deploy.py) runs for real.

- `docker-compose.yaml` is validated and rendered by Debian's docker-compose (1.29, which
  validates against the Compose file schema without needing a daemon).
- `helm/values.yaml` uses only keys of Dagster's chart: the allow-list below is transcribed
  from the chart's values schema, https://github.com/dagster-io/dagster/tree/master/helm/dagster/schema/schema/charts
  (`dagster/values.py`, `dagster/subschema/{postgresql,global_,concurrency,run_launcher,telemetry,daemon}.py`;
  `daemon.runMonitoring` is a free mapping there, its keys those of the chart's instance template),
  `dagster_user_deployments/subschema/user_deployments.py`).
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from clevertap_assets_tests.deployment import (
    DEPLOY,
    code_server_command,
    daemon_command,
    receiver_command,
    webserver_command,
)

REPOSITORY = DEPLOY.parent
LOCATIONS = ("pipeline_a", "pipeline_b")
CHART_KEYS = {
    "dagster-user-deployments.enabled",
    "dagster-user-deployments.deployments[].name",
    "dagster-user-deployments.deployments[].image.repository",
    "dagster-user-deployments.deployments[].image.tag",
    "dagster-user-deployments.deployments[].image.pullPolicy",
    "dagster-user-deployments.deployments[].codeServerArgs[]",
    "dagster-user-deployments.deployments[].port",
    "dagster-user-deployments.deployments[].envSecrets[].name",
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns.enabled",
    "runLauncher.type",
    "postgresql.enabled",
    "postgresql.postgresqlHost",
    "postgresql.postgresqlUsername",
    "postgresql.postgresqlDatabase",
    "postgresql.postgresqlScheme",
    "postgresql.service.port",
    "generatePostgresqlPasswordSecret",
    "global.postgresqlSecretName",
    "concurrency.enabled",
    "concurrency.pools.defaultLimit",
    "concurrency.pools.granularity",
    "concurrency.runs.maxConcurrentRuns",
    "dagsterDaemon.runMonitoring.enabled",
    "dagsterDaemon.runMonitoring.startTimeoutSeconds",
    "dagsterDaemon.runMonitoring.pollIntervalSeconds",
    "dagsterDaemon.runMonitoring.freeSlotsAfterRunEndSeconds",
    "telemetry.enabled",
}
COMPOSE_INSTALL_HINT = (
    "docker-compose was not found; install it with: apt-get update && apt-get install -y "
    "docker-compose (bin/test does)"
)


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def leaf_paths(value: object, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        return {
            path
            for key, child in value.items()
            for path in leaf_paths(child, f"{prefix}.{key}" if prefix else str(key))
        }
    if isinstance(value, list):
        return {path for child in value for path in leaf_paths(child, f"{prefix}[]")}
    return {prefix}


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict:
    """`docker-compose config` of a copy of deploy/, with the env files made from the
    examples the README tells users to copy."""
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        pytest.fail(COMPOSE_INSTALL_HINT, pytrace=False)
    deploy = tmp_path_factory.mktemp("repository") / "deploy"
    shutil.copytree(DEPLOY, deploy)
    shutil.copy(deploy / "dagster.env.example", deploy / "dagster.env")
    for location in LOCATIONS:
        shutil.copy(deploy / "pipeline.env.example", deploy / f"{location}.env")
        shutil.copy(REPOSITORY / "events.csv", deploy / f"{location}.events.csv")
    rendered = subprocess.run(
        [docker_compose, "-f", str(deploy / "docker-compose.yaml"), "config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    return yaml.safe_load(rendered.stdout)


def test_the_production_instance_keeps_the_laptops_limits_on_postgres():
    production, laptop = (
        load("dagster.yaml"),
        yaml.safe_load((REPOSITORY / "dagster.yaml").read_text()),
    )
    assert production["concurrency"] == laptop["concurrency"]
    assert production["run_monitoring"] == laptop["run_monitoring"]
    assert production["telemetry"] == {"enabled": False}
    database = production["storage"]["postgres"]["postgres_db"]
    assert database.pop("scheme") == "postgresql+psycopg2"
    assert database == {
        field: {"env": f"DAGSTER_POSTGRES_{variable}"}
        for field, variable in [
            ("hostname", "HOST"),
            ("port", "PORT"),
            ("username", "USER"),
            ("password", "PASSWORD"),
            ("db_name", "DB"),
        ]
    }


def test_the_image_serves_the_code_location_as_the_topology_test_does():
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    (cmd,) = [line for line in lines if line.startswith("CMD ")]
    assert json.loads(cmd.removeprefix("CMD ")) == code_server_command("", "0.0.0.0", 4000)[:-2]
    assert "ARG EXTRAS=production" in lines
    assert "COPY deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in lines


def test_compose_runs_the_topology_tests_commands(compose: dict):
    services = compose["services"]
    workspace = "workspace.yaml"
    for location in LOCATIONS:
        assert services[location]["command"] == code_server_command(location, "0.0.0.0", 4000)
        assert services[f"webhooks_{location[-1]}"]["command"] == receiver_command("0.0.0.0", 8800)
    assert services["webserver"]["command"] == webserver_command(workspace, "0.0.0.0", 3000)
    assert services["daemon"]["command"] == daemon_command(workspace)


def test_compose_gives_every_process_the_instance_and_the_workspace_its_hosts(compose: dict):
    services = compose["services"]
    instance = {f"DAGSTER_POSTGRES_{v}" for v in ("HOST", "PORT", "USER", "DB")}
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    hosts = {
        entry["grpc_server"][part]["env"]
        for entry in workspace["load_from"]
        for part in ("host", "port")
    }
    for name in ("webserver", "daemon", *LOCATIONS):
        assert instance | (hosts if name in ("webserver", "daemon") else set()) <= set(
            services[name]["environment"]
        ), name
    # The password reaches the processes from the env file, never from the compose file.
    assert services["webserver"]["environment"]["DAGSTER_POSTGRES_PASSWORD"] == "change-me"
    assert "PASSWORD" not in (DEPLOY / "docker-compose.yaml").read_text()


def test_each_receiver_writes_the_inbox_its_code_server_reads(compose: dict):
    services = compose["services"]
    for location in LOCATIONS:
        code, receiver = services[location], services[f"webhooks_{location[-1]}"]
        inbox = code["environment"]["WEBHOOK_INBOX_PATH"]
        assert receiver["environment"]["WEBHOOK_INBOX_PATH"] == inbox
        volume = f"{location}:{Path(inbox).parent}:rw"
        assert volume in code["volumes"] and volume in receiver["volumes"]
    assert set(compose["volumes"]) == {"postgres", *LOCATIONS}


def test_helm_values_use_only_the_charts_keys_and_the_instances_limits():
    values = load("helm/values.yaml")
    assert leaf_paths(values) <= CHART_KEYS, leaf_paths(values) - CHART_KEYS
    production = load("dagster.yaml")
    pools, runs = production["concurrency"]["pools"], production["concurrency"]["runs"]
    assert values["concurrency"] == {
        "enabled": True,
        "pools": {
            "defaultLimit": pools["default_limit"],
            "granularity": pools["granularity"],
        },
        "runs": {"maxConcurrentRuns": runs["max_concurrent_runs"]},
    }
    monitoring = production["run_monitoring"]
    assert values["dagsterDaemon"]["runMonitoring"] == {
        "enabled": monitoring["enabled"],
        "startTimeoutSeconds": monitoring["start_timeout_seconds"],
        "pollIntervalSeconds": 120,
        "freeSlotsAfterRunEndSeconds": monitoring["free_slots_after_run_end_seconds"],
    }
    scheme = production["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["postgresql"]["postgresqlScheme"] == scheme
    assert values["telemetry"] == {"enabled": False}
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    module_args = code_server_command("", "0.0.0.0", 4000)[7:9]
    for deployment in values["dagster-user-deployments"]["deployments"]:
        assert deployment["codeServerArgs"] == module_args
        assert deployment["envSecrets"] == [{"name": f"clevertap-{deployment['name']}"}]

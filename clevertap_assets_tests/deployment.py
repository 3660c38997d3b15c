"""A production deployment under test: the processes `deploy/` describes, started for real.

The commands are those of `deploy/docker-compose.yaml`, on 127.0.0.1 and free ports: PostgreSQL
holds the instance; each pipeline has its own `dagster code-server start` (its own account,
events, DuckDB file and webhook inbox) and webhook receiver; one `dagster-webserver` and one
`dagster-daemon run` load `deploy/workspace.yaml`. Every process has a disk of its own, as a
container has (its DAGSTER_HOME with `deploy/dagster.yaml`, its compute log directory), and
shares only what Compose shares: one compute log directory for the code servers and the
webserver, a pipeline's folder for its code server and receiver. Each process runs in its own
process group, killed whole (run workers included) when the deployment stops or a test fails.
Waits poll against a deadline and fail with the tail of every process's log.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import yaml

from clevertap_assets.emulator import CleverTapEmulator
from clevertap_assets_tests.postgres_server import PostgresServer

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
README = DEPLOY.parent / "README.md"
BIN = Path(sys.executable).parent
WAIT_SECONDS = 240.0
LOG_TAIL_CHARS = 4000
FINISHED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})

T = TypeVar("T")


CONTAINER = ["unshare", "--pid", "--fork", "--mount-proc"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def code_server_command(location: str, host: str, port: int) -> list[str]:
    return [
        "dagster",
        "code-server",
        "start",
        "-h",
        host,
        "-p",
        str(port),
        "-m",
        "clevertap_assets.definitions",
        "--location-name",
        location,
    ]


def webserver_command(workspace: str, host: str, port: int) -> list[str]:
    return ["dagster-webserver", "-w", workspace, "-h", host, "-p", str(port)]


def daemon_command(workspace: str) -> list[str]:
    return ["dagster-daemon", "run", "-w", workspace]


def receiver_command(host: str, port: int) -> list[str]:
    return ["clevertap-assets", "webhook", "--host", host, "--port", str(port)]


def readme_block(containing: str) -> str:
    """The README's one bash block holding `containing`, as a user would paste it."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (block,) = [b for b in blocks if containing in b]
    return block


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (keyword.upper(), rest.strip())
        for keyword, _, rest in (line.partition(" ") for line in lines)
        if keyword and not keyword.startswith("#")
    ]


def image_health_check() -> list[str]:
    """The command of the image's HEALTHCHECK, which Docker runs in code server containers."""
    (check,) = [arguments for keyword, arguments in dockerfile() if keyword == "HEALTHCHECK"]
    return json.loads(check.split(" CMD ", 1)[1])


def compose_health_checks() -> dict[str, list[str]]:
    """Each Compose service's own health check command, as docker-compose.yaml gives it."""
    services = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())["services"]
    checks = {name: s["healthcheck"]["test"] for name, s in services.items() if "healthcheck" in s}
    return {name: test[1:] for name, test in checks.items() if test[0] == "CMD"}


@dataclass
class Service:
    """One started process group and the file its output goes to."""

    name: str
    process: subprocess.Popen
    log: Path

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-LOG_TAIL_CHARS:]

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL to whatever outlives a grace period."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclass
class Pipeline:
    """One CleverTap pipeline of the deployment: its code location and its receiver."""

    location: str
    emulator: CleverTapEmulator
    env: dict[str, str] = field(repr=False)
    code_port: int
    webhook_url: str

    @property
    def duckdb_path(self) -> str:
        return self.env["DUCKDB_PATH"]

    @property
    def webhook_secret(self) -> str:
        return self.env["WEBHOOK_SECRET"]


@dataclass
class Deployment:
    """A running deployment: where to reach it, how to wait on it, and its daemon switch."""

    root: Path
    webserver_url: str
    postgres: PostgresServer
    database: str
    pipelines: dict[str, Pipeline]
    workspace_env: dict[str, str] = field(repr=False)
    services: list[Service] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        container: bool = False,
    ) -> None:
        """Start a command from this venv in its own process group, its output to a log;
        as a `container`, in a PID namespace of its own as well (`unshare`), where its
        process ids mean nothing to the other services, as in Docker Compose."""
        log = self.root / "logs" / f"{name}.log"
        namespace = CONTAINER if container else []
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*namespace, str(BIN / argv[0]), *argv[1:]],
                env=dict(env),
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.services.append(Service(name, process, log))

    def start_code_server(self, pipeline: "Pipeline") -> None:
        """A pipeline's code server (its schedule, sensors and runs), as its own container,
        writing step logs to the volume it shares with the webserver."""
        name = f"{pipeline.location}-code-server"
        command = code_server_command(pipeline.location, "127.0.0.1", pipeline.code_port)
        env = {**pipeline.env, **container_disk(self.root, name, self.compute_logs)}
        self.start(name, command, env, self.root / pipeline.location, True)

    @property
    def compute_logs(self) -> Path:
        """The compute log volume of Compose: the code servers write it, the webserver reads."""
        return self.root / "volumes" / "compute_logs"

    def kill(self, name: str) -> None:
        """`kill -9` of a service's process group, as a container that crashed."""
        service = next(s for s in self.services if s.name == name)
        os.killpg(service.process.pid, signal.SIGKILL)
        service.process.wait(timeout=30)
        self.services.remove(service)

    def start_daemon(self) -> None:
        """Schedules, sensors, backfills and the run queue. Started after a test has made its
        requests, the daemon's first iterations pick them up at once, as after a restart."""
        env = {**self.workspace_env, **container_disk(self.root, "daemon")}
        self.start("daemon", daemon_command(str(DEPLOY / "workspace.yaml")), env, self.root)

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.webserver_url}/graphql",
            json={"query": query, "variables": dict(variables or {})},
            timeout=60,
        )
        response.raise_for_status()
        document = response.json()
        assert "errors" not in document, document["errors"]
        return document["data"]

    def query(self, sql: str, *params: object) -> list[tuple]:
        """Read the instance's own tables, as an operator would with psql."""
        with psycopg.connect(self.postgres.conninfo(self.database)) as connection:
            return connection.execute(sql, params).fetchall()

    def runs_tagged(self, key: str, value: str) -> dict[str, str]:
        """Run id to status of the runs carrying a tag, from PostgreSQL's `runs` table."""
        rows = self.query(
            "SELECT runs.run_id, runs.status FROM runs JOIN run_tags USING (run_id) "
            "WHERE run_tags.key = %s AND run_tags.value = %s",
            key,
            value,
        )
        return dict(rows)

    def wait_for_runs(self, key: str, value: str, timeout: float = WAIT_SECONDS) -> dict[str, str]:
        """The tagged runs, once there are some and all of them have finished."""
        return self.wait_for(
            f"runs tagged {key}={value} to finish",
            lambda: (
                (runs := self.runs_tagged(key, value)) and set(runs.values()) <= FINISHED and runs
            ),
            timeout,
        )

    def wait_for(
        self, what: str, condition: Callable[[], T | None], timeout: float = WAIT_SECONDS
    ) -> T:
        """Poll until `condition` returns something truthy; fail at once if a process died."""
        deadline = time.monotonic() + timeout
        while True:
            for service in self.services:
                if service.process.poll() is not None:
                    raise AssertionError(
                        f"{service.name} exited ({service.process.returncode}) while waiting "
                        f"for {what}\n{self.logs()}"
                    )
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}"
                )
            time.sleep(0.5)

    def health_check(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        """A shipped health check's exit status, run from this venv as Docker runs it."""
        checked = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]],
            env=dict(env),
            cwd=self.root,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return checked.returncode

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} ({s.log}) ---\n{s.tail()}" for s in self.services)


def instance_env(postgres: PostgresServer, database: str) -> dict[str, str]:
    """What every Dagster process of the deployment shares: the instance's database."""
    return {
        "DAGSTER_POSTGRES_HOST": postgres.host,
        "DAGSTER_POSTGRES_PORT": str(postgres.port),
        "DAGSTER_POSTGRES_USER": postgres.user,
        "DAGSTER_POSTGRES_PASSWORD": postgres.password,
        "DAGSTER_POSTGRES_DB": database,
    }


def container_disk(root: Path, name: str, compute_logs: Path | None = None) -> dict[str, str]:
    """A container's own disk: its DAGSTER_HOME with the image's `deploy/dagster.yaml`, and
    the compute log directory the image names, private unless a shared one is mounted there."""
    disk = root / "containers" / name
    home = disk / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    logs = compute_logs or disk / "compute_logs"
    logs.mkdir(parents=True, exist_ok=True)
    return {"DAGSTER_HOME": str(home), "DAGSTER_COMPUTE_LOGS_DIR": str(logs)}


def clean_env() -> dict[str, str]:
    """The test's environment without anything that would configure a pipeline or an
    instance behind the deployment's back; this venv first on PATH, as run workers are
    started through the `dagster` entry point."""
    prefixes = ("CLEVERTAP_", "DAGSTER_", "DUCKDB_", "WEBHOOK_", "DESTINATION", "PIPELINE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return env


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _locations_loaded(deployment: Deployment) -> bool:
    data = deployment.graphql(
        "{ workspaceOrError { ... on Workspace { locationEntries { name "
        "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    )
    entries = data["workspaceOrError"]["locationEntries"]
    loaded = {
        e["name"] for e in entries if e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
    }
    return loaded == set(deployment.pipelines)


@contextmanager
def run_deployment(
    root: Path,
    postgres: PostgresServer,
    pipelines: Mapping[str, tuple[CleverTapEmulator, Mapping[str, str]]],
) -> Iterator[Deployment]:
    """PostgreSQL storage, a code server and a receiver per pipeline and the webserver, all
    loaded and answering; the daemon is the caller's to start. Everything stops on exit.

    `pipelines` maps each location of `deploy/workspace.yaml` to the emulator that plays its
    CleverTap account and the pipeline's own settings."""
    (root / "logs").mkdir(parents=True)
    database = postgres.create_database(f"dagster_{secrets.token_hex(6)}")
    shared = {**clean_env(), **instance_env(postgres, database)}
    # As the README's upgrade step does (and a first start needs nothing else).
    migrate = subprocess.run(
        [str(BIN / "dagster"), "instance", "migrate"],
        env={**shared, **container_disk(root, "migrate")},
        cwd=root,
        capture_output=True,
    )
    assert migrate.returncode == 0, migrate.stderr.decode(errors="replace")
    web_port = free_port()
    deployment = Deployment(
        root=root,
        webserver_url=f"http://127.0.0.1:{web_port}",
        postgres=postgres,
        database=database,
        pipelines={},
        workspace_env=dict(shared),
    )
    with ExitStack() as stack:
        stack.callback(lambda: [service.stop() for service in reversed(deployment.services)])
        for location, (emulator, settings) in pipelines.items():
            workdir = root / location
            workdir.mkdir()
            pipeline = Pipeline(
                location=location,
                emulator=emulator,
                env={
                    **shared,
                    "CLEVERTAP_ACCOUNT_ID": emulator.config.account_id,
                    "CLEVERTAP_PASSCODE": emulator.config.passcode,
                    "CLEVERTAP_API_URL": emulator.url,
                    "CLEVERTAP_TIMEZONE": emulator.config.timezone,
                    "DUCKDB_PATH": str(workdir / "warehouse.duckdb"),
                    "WEBHOOK_INBOX_PATH": str(workdir / "webhook_inbox.sqlite3"),
                    "WEBHOOK_SECRET": f"secret-of-{location}",
                    **settings,
                },
                code_port=free_port(),
                webhook_url=f"http://127.0.0.1:{free_port()}",
            )
            deployment.pipelines[location] = pipeline
            deployment.workspace_env[f"{location.upper()}_CODE_SERVER_HOST"] = "127.0.0.1"
            deployment.workspace_env[f"{location.upper()}_CODE_SERVER_PORT"] = str(
                pipeline.code_port
            )
            deployment.start_code_server(pipeline)
            receiver = receiver_command("127.0.0.1", int(pipeline.webhook_url.rsplit(":", 1)[1]))
            deployment.start(f"{location}-webhooks", receiver, pipeline.env, workdir)
        workspace = str(DEPLOY / "workspace.yaml")
        webserver = webserver_command(workspace, "127.0.0.1", web_port)
        disk = container_disk(root, "webserver", deployment.compute_logs)
        deployment.start("webserver", webserver, {**deployment.workspace_env, **disk}, root)
        deployment.wait_for(
            "the webserver", lambda: _answers(f"{deployment.webserver_url}/server_info")
        )
        deployment.wait_for("every code location to load", lambda: _locations_loaded(deployment))
        for pipeline in deployment.pipelines.values():
            deployment.wait_for(
                f"{pipeline.location}'s webhook receiver",
                lambda p=pipeline: _answers(f"{p.webhook_url}/health"),
            )
        yield deployment

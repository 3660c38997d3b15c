"""A local BigQuery for the tests: bqemulator in its own virtualenv, one per test session.

bqemulator pins a sqlglot that fakesnow cannot share, so it lives in `.venv-bqemulator` and
runs as a subprocess (`bqemulator_launcher.py`, which closes its gaps to BigQuery). The
product code talks to it unchanged; only this fixture adjusts the client side: the
`BIGQUERY_EMULATOR_HOST` endpoint, anonymous credentials, and resumable uploads (the
emulator rejects small multipart ones).
"""

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import google.auth
import google.cloud.bigquery.client
import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = Path(__file__).with_name("bqemulator_launcher.py")
PROJECT = "clevertap-test"
INSTALL = (
    "python3.11 -m venv .venv-bqemulator && "
    ".venv-bqemulator/bin/pip install bqemulator==1.4.0 numpy"
)
START_SECONDS = 60


@dataclass(frozen=True)
class BigQueryEmulator:
    url: str
    project: str
    log: Path

    def client(self) -> bigquery.Client:
        return bigquery.Client(project=self.project, credentials=AnonymousCredentials())

    def query(self, sql: str) -> list[tuple]:
        return [tuple(row.values()) for row in self.client().query(sql).result()]

    def new_dataset(self) -> str:
        """A dataset name no other test uses, so tests share one emulator safely."""
        return f"t_{uuid.uuid4().hex[:10]}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _emulator_python() -> Path:
    python = Path(os.environ.get("BQEMULATOR_PYTHON", REPO / ".venv-bqemulator/bin/python"))
    if not python.is_file():
        pytest.fail(
            f"bqemulator's interpreter {python} is missing; install it at the repository "
            f"root with: {INSTALL}  (or point BQEMULATOR_PYTHON at one)",
            pytrace=False,
        )
    return python


def _wait_until_up(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/bigquery/v2/projects/{PROJECT}/datasets", timeout=1).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    tail = log.read_text(errors="replace")[-3000:]
    pytest.fail(
        f"bqemulator did not start at {url} (reinstall with: {INSTALL}); log tail:\n{tail}",
        pytrace=False,
    )


@pytest.fixture(scope="session", name="bigquery_emulator")
def bigquery_emulator_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BigQueryEmulator]:
    python = _emulator_python()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("bqemulator") / "bqemulator.log"
    command = [
        str(python), str(LAUNCHER), "--rest-host", "127.0.0.1", "--rest-port", str(port),
        "--grpc-port", str(_free_port()), "--project", PROJECT, "--ephemeral",
        "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(process, url, log)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("BIGQUERY_EMULATOR_HOST", url)
            patch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
            patch.setattr(google.cloud.bigquery.client, "_MAX_MULTIPART_SIZE", 0)
            patch.setattr(
                google.auth, "default", lambda *_, **__: (AnonymousCredentials(), PROJECT)
            )
            yield BigQueryEmulator(url=url, project=PROJECT, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def bigquery_env(monkeypatch: pytest.MonkeyPatch, bigquery_emulator: BigQueryEmulator) -> None:
    """The BIGQUERY_* variables a user sets, for the emulator's project and a dataset of the
    test's own, and no credentials."""
    monkeypatch.setenv("BIGQUERY_PROJECT", bigquery_emulator.project)
    monkeypatch.setenv("BIGQUERY_DATASET", bigquery_emulator.new_dataset())
    for name in ("BIGQUERY_LOCATION", "BIGQUERY_GCP_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)

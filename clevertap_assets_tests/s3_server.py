"""A throwaway S3-compatible server for tests: moto's server mode, in a process of its own on
127.0.0.1 and a free port, stopped at the end of the session. Clients reach it over HTTP as
they reach S3, through the variables boto3 reads (`AWS_ENDPOINT_URL_S3`, the key pair, the
region), so the code under test runs unchanged. Import the fixture into a test module:

    from clevertap_assets_tests.s3_server import s3_server  # noqa: F401
"""

import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import boto3
import httpx
import pytest

START_SECONDS = 30


@dataclass(frozen=True)
class S3Server:
    """Where the server listens, and the credentials its clients sign requests with."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"

    def environment(self) -> dict[str, str]:
        """What a user's AWS environment would hold, pointing at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket)
        return [item["Key"] for item in listing.get("Contents", [])]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto's S3 server did not start on port {port}", pytrace=False)
                time.sleep(0.1)
        yield S3Server(endpoint, "test-key", secrets.token_urlsafe(24))
    finally:
        process.terminate()
        process.wait(10)

"""The receiver over a real uvicorn server on 127.0.0.1: what CleverTap gets back, what lands
in the inbox (only what was acknowledged), and what never leaks (secrets, bodies)."""

import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import orjson
import pytest

from clevertap_assets.settings import SettingsError
from clevertap_assets.webhooks.inbox import WebhookInbox, expand_entry
from clevertap_assets.webhooks.receiver import (
    MAX_BODY_BYTES,
    WEBHOOK_PATH,
    WebhookAuth,
    serve_webhooks,
)
from clevertap_assets_tests.webhook_server import (
    PASSWORD,
    USER,
    basic_auth,
    post_webhook,
    serving,
)

SECRET = "s3cr3t-header-value-91b2"
PAYLOAD = {
    "targetId": 1472124953,
    "key_values": {"campaign": "spring"},
    "profiles": [
        {"objectId": "o1", "identity": "u1", "email": "a@example.com"},
        {"ObjectId": "o2", "Identity": "u2", "profileData": {"plan": "gold"}},
    ],
}


class Receiver:
    """A running server's URL and inbox, with the credentials it expects."""

    def __init__(self, url: str, inbox: WebhookInbox, headers: dict[str, str]) -> None:
        self.url = url
        self.inbox = inbox
        self.headers = headers

    def post(self, content: object, headers: dict[str, str] | None = None) -> httpx.Response:
        body = content if isinstance(content, bytes) else orjson.dumps(content)
        return post_webhook(self.url, body, self.headers if headers is None else headers)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    """Start a receiver with the given auth (Basic by default); stopped after the test."""
    with ExitStack() as stack:

        def _start(
            auth: WebhookAuth | None = None,
            headers: dict[str, str] | None = None,
            inbox: WebhookInbox | None = None,
        ) -> Receiver:
            auth = auth or WebhookAuth(basic_user=USER, basic_password=PASSWORD)
            inbox = inbox or WebhookInbox(tmp_path / "inbox.sqlite3")
            url = stack.enter_context(serving(inbox, auth))
            return Receiver(url, inbox, basic_auth(USER, PASSWORD) if headers is None else headers)

        yield _start


@pytest.fixture
def receiver(start: Callable[..., Receiver]) -> Receiver:
    return start()


def test_valid_post_is_stored_byte_exact_and_acknowledged_with_its_id(receiver: Receiver):
    body = b'{"targetId": 1,  "profiles": {"Identity": "J\xc3\xbcrgen"}}\n'
    response = receiver.post(body)

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "id": 1}
    [entry] = receiver.inbox.read_after(0, 10)
    assert (entry.id, entry.body) == (1, body)
    assert [(r.profile["identity"], r.inbox_id, r.profile_index) for r in expand_entry(entry)] == [
        ("Jürgen", 1, 0)
    ]


def test_broadcast_payload_expands_to_one_record_per_profile(receiver: Receiver):
    entry_id = receiver.post(PAYLOAD).json()["id"]
    records = expand_entry(receiver.inbox.read_after(0, 1)[0])

    assert [(r.profile["objectId"], r.profile["identity"]) for r in records] == [
        ("o1", "u1"),
        ("o2", "u2"),
    ]
    assert {(r.inbox_id, r.profile_index) for r in records} == {
        (entry_id, 0),
        (entry_id, 1),
    }


def test_test_call_gets_200_and_never_becomes_rows(receiver: Receiver):
    response = receiver.post({"is_test": True, "profiles": [{"identity": "t"}]})

    assert response.status_code == 200
    [entry] = receiver.inbox.read_after(0, 10)
    assert expand_entry(entry) == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic_auth(USER, "wrong"),
        basic_auth("someone-else", PASSWORD),
        basic_auth(USER, PASSWORD + "x"),
        {"Authorization": "Basic !!not-base64!!"},
        {"Authorization": "Bearer " + SECRET},
        {"X-Webhook-Secret": SECRET},
    ],
    ids=["missing", "wrong-password", "wrong-user", "longer", "garbled", "bearer", "header"],
)
def test_basic_auth_refuses_wrong_or_missing_credentials(receiver: Receiver, headers):
    response = receiver.post(PAYLOAD, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert receiver.inbox.last_id() == 0


def test_secret_header_mode(start: Callable[..., Receiver]):
    auth = WebhookAuth(secret=SECRET, secret_header="X-CleverTap-Token")
    receiver = start(auth, headers={"x-clevertap-token": SECRET})

    assert receiver.post(PAYLOAD).status_code == 200
    for headers in ({}, {"X-CleverTap-Token": SECRET[:-1]}, {"X-Webhook-Secret": SECRET}):
        response = receiver.post(PAYLOAD, headers=headers)
        assert response.status_code == 401
        assert "www-authenticate" not in response.headers
    assert receiver.inbox.last_id() == 1


def test_both_modes_configured_require_both(start: Callable[..., Receiver]):
    auth = WebhookAuth(basic_user=USER, basic_password=PASSWORD, secret=SECRET)
    receiver = start(auth, headers={**basic_auth(USER, PASSWORD), "X-Webhook-Secret": SECRET})

    assert receiver.post(PAYLOAD).status_code == 200
    assert receiver.post(PAYLOAD, headers=basic_auth(USER, PASSWORD)).status_code == 401
    assert receiver.post(PAYLOAD, headers={"X-Webhook-Secret": SECRET}).status_code == 401
    assert receiver.inbox.last_id() == 1


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b"null", b'{"a": NaN}'])
def test_malformed_body_gets_400_and_does_not_disturb_the_next_request(
    receiver: Receiver, body: bytes
):
    bad = receiver.post(body)
    good = receiver.post(PAYLOAD)

    assert bad.status_code == 400
    assert bad.json()["status"] == "error" and bad.json()["reason"]
    assert good.status_code == 200
    assert [entry.body for entry in receiver.inbox.read_after(0, 10)] == [orjson.dumps(PAYLOAD)]


def _padded(size: int) -> bytes:
    """A valid JSON object of exactly `size` bytes."""
    head, tail = b'{"profiles": [], "pad": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_body_of_exactly_16_mib_is_accepted_and_one_byte_more_refused(receiver: Receiver):
    largest = _padded(MAX_BODY_BYTES)

    assert receiver.post(_padded(MAX_BODY_BYTES + 1)).status_code == 413
    assert receiver.post(largest).status_code == 200
    assert [entry.body for entry in receiver.inbox.read_after(0, 10)] == [largest]


def test_chunked_body_over_the_cap_is_refused(receiver: Receiver):
    def chunks() -> Iterator[bytes]:
        yield b'{"pad": "'
        for _ in range(MAX_BODY_BYTES // 2**20 + 1):
            yield b"x" * 2**20

    response = httpx.post(
        receiver.url + WEBHOOK_PATH, content=chunks(), headers=receiver.headers, timeout=10
    )
    assert response.status_code == 413
    assert receiver.inbox.last_id() == 0


def _raw_exchange(receiver: Receiver, head: str, body: bytes) -> bytes:
    """Send a request that is never finished and read what comes back."""
    host, port = receiver.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(head.encode() + body)
        return connection.recv(4096)


def test_oversize_is_answered_before_the_body_is_sent_or_finished(receiver: Receiver):
    """Declared too large: refused on the headers alone. Chunked: refused as soon as the
    cap is passed, while the client has not even finished the body."""
    auth = receiver.headers["Authorization"]
    declared = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    )
    assert _raw_exchange(receiver, declared, b"").startswith(b"HTTP/1.1 413")

    chunked = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    over = f"{MAX_BODY_BYTES + 1:x}\r\n".encode() + b"x" * (MAX_BODY_BYTES + 1) + b"\r\n"
    assert _raw_exchange(receiver, chunked, over).startswith(b"HTTP/1.1 413")
    assert receiver.inbox.last_id() == 0


class _BrokenInbox(WebhookInbox):
    def append(self, *args: object, **kwargs: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")


def test_storage_failure_gets_500_so_clevertap_retries(
    start: Callable[..., Receiver], tmp_path: Path
):
    receiver = start(inbox=_BrokenInbox(tmp_path / "broken.sqlite3"))

    response = receiver.post(PAYLOAD)
    assert response.status_code == 500
    assert response.json()["status"] == "error"


def test_fifty_concurrent_posts_are_each_stored_once(receiver: Receiver):
    bodies = [orjson.dumps({**PAYLOAD, "n": n}) for n in range(50)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(receiver.post, bodies))

    assert [r.status_code for r in responses] == [200] * 50
    ids = [r.json()["id"] for r in responses]
    assert sorted(ids) == list(range(1, 51))
    stored = receiver.inbox.read_after(0, 100)
    assert sorted(entry.body for entry in stored) == sorted(bodies)
    assert {entry.id: entry.body for entry in stored} == dict(zip(ids, bodies, strict=True))


def test_health_and_method_routing(receiver: Receiver):
    assert httpx.get(receiver.url + "/health").status_code == 200
    assert httpx.get(receiver.url + WEBHOOK_PATH, headers=receiver.headers).status_code == 405
    assert receiver.inbox.last_id() == 0


def test_one_log_line_per_request_without_secrets_or_bodies(
    start: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
):
    auth = WebhookAuth(basic_user=USER, basic_password=PASSWORD, secret=SECRET)
    receiver = start(auth, headers={**basic_auth(USER, PASSWORD), "X-Webhook-Secret": SECRET})
    caplog.set_level(logging.INFO, logger="clevertap_assets")

    receiver.post(PAYLOAD)
    receiver.post(b"{broken a@example.com")
    receiver.post(PAYLOAD, headers={"X-Webhook-Secret": SECRET})

    lines = [r.getMessage() for r in caplog.records if r.name.startswith("clevertap_assets")]
    assert [line.split()[1] for line in lines] == ["status=200", "status=400", "status=401"]
    assert "id=1" in lines[0]
    _assert_nothing_secret("\n".join(lines))


def _assert_nothing_secret(text: str) -> None:
    for secret in (PASSWORD, SECRET, basic_auth(USER, PASSWORD)["Authorization"], "a@example.com"):
        assert secret not in text


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, ["WEBHOOK_BASIC_USER", "WEBHOOK_BASIC_PASSWORD", "WEBHOOK_SECRET"]),
        ({"WEBHOOK_SECRET_HEADER": "X-Token"}, ["WEBHOOK_SECRET"]),
        ({"WEBHOOK_BASIC_PASSWORD": PASSWORD}, ["WEBHOOK_BASIC_USER"]),
        ({"WEBHOOK_BASIC_USER": USER}, ["WEBHOOK_BASIC_PASSWORD"]),
        (
            {"WEBHOOK_SECRET": SECRET, "WEBHOOK_SECRET_HEADER": "Bad Header:"},
            ["WEBHOOK_SECRET_HEADER"],
        ),
    ],
)
def test_the_receiver_refuses_to_start_without_usable_auth(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], names: list[str]
):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in (
        "WEBHOOK_BASIC_USER",
        "WEBHOOK_BASIC_PASSWORD",
        "WEBHOOK_SECRET",
        "WEBHOOK_SECRET_HEADER",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WEBHOOK_INBOX_PATH", str(tmp_path / "inbox.sqlite3"))

    with pytest.raises(SettingsError) as error:
        serve_webhooks(host="127.0.0.1", port=1)
    for name in names:
        assert name in str(error.value)
    _assert_nothing_secret(str(error.value))
    assert not (tmp_path / "inbox.sqlite3").exists()


def test_auth_repr_names_the_checks_but_hides_every_credential():
    auth = WebhookAuth(basic_user=USER, basic_password=PASSWORD, secret=SECRET)
    assert repr(auth) == str(auth) == "WebhookAuth(basic + header X-Webhook-Secret)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_acknowledged_payloads_survive_a_kill_9(tmp_path: Path):
    """A 200 means durable: kill the server process the instant the answers arrive, then
    read the inbox from a new object and from a new process."""
    inbox_path = tmp_path / "inbox.sqlite3"
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_")},
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_INBOX_PATH": str(inbox_path),
    }
    command = [sys.executable, "-m", "clevertap_assets.cli", "webhook", "--port", str(port)]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, server)
        bodies = [orjson.dumps({**PAYLOAD, "n": n}) for n in range(20)]
        with ThreadPoolExecutor(max_workers=10) as pool:
            responses = list(
                pool.map(lambda body: post_webhook(url, body, {"X-Webhook-Secret": SECRET}), bodies)
            )
        server.send_signal(signal.SIGKILL)
        logs = server.communicate(timeout=10)[0].decode()
    finally:
        server.kill()

    assert [r.status_code for r in responses] == [200] * 20
    acknowledged = {r.json()["id"]: body for r, body in zip(responses, bodies, strict=True)}
    stored = {entry.id: entry.body for entry in WebhookInbox(inbox_path).read_after(0, 100)}
    assert stored == acknowledged
    assert _ids_read_by_a_new_process(inbox_path) == sorted(acknowledged)
    assert "status=200" in logs
    _assert_nothing_secret(logs)


def _wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[0].decode()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the webhook receiver did not become healthy")


def _ids_read_by_a_new_process(path: Path) -> list[int]:
    script = (
        "import sys; from clevertap_assets.webhooks.inbox import WebhookInbox; "
        "print(*(e.id for e in WebhookInbox(sys.argv[1]).read_after(0, 100)))"
    )
    output = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, check=True, text=True
    )
    return [int(token) for token in output.stdout.split()]

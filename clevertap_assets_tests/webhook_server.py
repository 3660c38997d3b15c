"""The webhook receiver served by uvicorn on 127.0.0.1, for tests that post to it as CleverTap
does: the Basic credentials it expects, the header they make, one POST."""

import base64
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from clevertap_assets.webhooks.inbox import WebhookInbox
from clevertap_assets.webhooks.receiver import WEBHOOK_PATH, WebhookAuth, build_app

USER = "clevertap-user"
PASSWORD = "pa:ss-Wörd-7f3a9c"  # a colon and non-ASCII: both must survive Basic auth


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def post_webhook(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url + WEBHOOK_PATH, content=body, headers=headers, timeout=10)


@contextmanager
def serving(inbox: WebhookInbox, auth: WebhookAuth) -> Iterator[str]:
    """uvicorn in a background thread on a port the OS picked, so tests never collide."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(build_app(inbox, auth), log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()

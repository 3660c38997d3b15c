"""The real-time path's receiving end: an ASGI app that acknowledges CleverTap webhooks only
once they are durably in the inbox, and does nothing else on the request path.

Endpoints:

- `POST /webhooks/clevertap`: the URL to give CleverTap. Answers 200 `{"status": "ok",
  "id": N}` after the body is committed to the inbox (N is the inbox id), 401 when the
  credentials are missing or wrong, 400 when the body is not a JSON object, 413 when it is
  over 16 MiB (the webhook limit; exactly 16 MiB is accepted), 500 when it could not be
  stored, so CleverTap retries. Nothing is stored unless the answer is 200. CleverTap's
  test call (`"is_test": true`) gets 200 and is stored, but never becomes rows.
- `GET /health`: 200 for load balancer and container probes, no auth, no database access.

Authentication is mandatory, since CleverTap signs nothing: HTTP Basic (`WEBHOOK_BASIC_USER`
+ `WEBHOOK_BASIC_PASSWORD`) and/or a shared secret sent in a header (`WEBHOOK_SECRET`, in the
header named by `WEBHOOK_SECRET_HEADER`, default `X-Webhook-Secret`). When both are set, a
request must pass both, as CleverTap can send Basic auth and custom headers together.
Secrets are compared in constant time and never appear in logs, errors or reprs.
"""

import base64
import binascii
import copy
import hmac
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import uvicorn
from dotenv import load_dotenv
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clevertap_assets.settings import SettingsError
from clevertap_assets.webhooks.inbox import (
    PayloadError,
    WebhookInbox,
    parse_payload,
)
from clevertap_assets.webhooks.settings import auth_from_env, inbox_path_from_env

WEBHOOK_PATH = "/webhooks/clevertap"
HEALTH_PATH = "/health"
MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_SECRET_HEADER = "X-Webhook-Secret"
_HEADER_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class WebhookAuth:
    """Which credentials a request must carry; `repr` names the checks, never the values."""

    basic_user: str | None = None
    basic_password: str | None = None
    secret: str | None = None
    secret_header: str = DEFAULT_SECRET_HEADER

    def __post_init__(self) -> None:
        if bool(self.basic_user) != bool(self.basic_password):
            raise SettingsError(
                "WEBHOOK_BASIC_USER and WEBHOOK_BASIC_PASSWORD must be set together"
            )
        if not (self.uses_basic or self.secret):
            raise SettingsError(
                "the webhook receiver needs authentication: set WEBHOOK_BASIC_USER and "
                "WEBHOOK_BASIC_PASSWORD (HTTP Basic), or WEBHOOK_SECRET (sent in the header "
                f"named by WEBHOOK_SECRET_HEADER, default {DEFAULT_SECRET_HEADER})"
            )
        if not _HEADER_TOKEN.match(self.secret_header):
            raise SettingsError(
                f"WEBHOOK_SECRET_HEADER={self.secret_header!r} is not a valid HTTP header name"
            )
        if self.uses_basic and self.secret and self.secret_header.lower() == "authorization":
            raise SettingsError(
                "WEBHOOK_SECRET_HEADER cannot be Authorization while HTTP Basic is configured"
            )

    def __repr__(self) -> str:
        checks = [
            name
            for name, on in (
                ("basic", self.uses_basic),
                (f"header {self.secret_header}", self.secret),
            )
            if on
        ]
        return f"WebhookAuth({' + '.join(checks)})"

    @classmethod
    def from_env(cls) -> "WebhookAuth":
        values = auth_from_env()
        return cls(**{**values, "secret_header": values["secret_header"] or DEFAULT_SECRET_HEADER})

    @property
    def uses_basic(self) -> bool:
        return bool(self.basic_user)

    def allows(self, headers: Mapping[str, str]) -> bool:
        """Every configured check runs, so timing does not tell which one failed."""
        checks = []
        if self.uses_basic:
            checks.append(self._basic_ok(headers.get("authorization")))
        if self.secret:
            checks.append(self._secret_ok(headers.get(self.secret_header)))
        return all(checks)

    def _basic_ok(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, _, password = decoded.partition(b":")
        user_ok = hmac.compare_digest(user, _utf8(self.basic_user))
        password_ok = hmac.compare_digest(password, _utf8(self.basic_password))
        return user_ok and password_ok

    def _secret_ok(self, header: str | None) -> bool:
        # Starlette decodes header bytes as latin-1; re-encode to compare the raw bytes.
        received = (header or "").encode("latin-1")
        return header is not None and hmac.compare_digest(received, _utf8(self.secret))

    @property
    def challenge(self) -> dict[str, str]:
        """Tell a Basic client to authenticate; a header-secret client gets no hint."""
        return {"WWW-Authenticate": 'Basic realm="clevertap-webhooks"'} if self.uses_basic else {}


def _utf8(value: str | None) -> bytes:
    return (value or "").encode("utf-8")


@dataclass
class _Outcome:
    """What the request came to, kept apart from the response so it can be logged."""

    status: int
    content: dict[str, object]
    size: int = 0
    inbox_id: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


def build_app(inbox: WebhookInbox, auth: WebhookAuth) -> Starlette:
    """The ASGI app, with its inbox and credentials injected so tests can run it anywhere."""

    async def webhook(request: Request) -> Response:
        started = time.perf_counter()
        outcome = await _receive(request, inbox, auth)
        _log(request, outcome, started)
        return JSONResponse(outcome.content, outcome.status, headers=outcome.headers)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, webhook, methods=["POST"]),
            Route(HEALTH_PATH, health, methods=["GET"]),
        ]
    )


async def _receive(request: Request, inbox: WebhookInbox, auth: WebhookAuth) -> _Outcome:
    """Auth before reading, so unauthenticated clients cannot make us read 16 MiB."""
    if not auth.allows(request.headers):
        return _Outcome(401, _error("unauthorized"), headers=auth.challenge)
    declared = _declared_length(request)
    if declared is not None and declared > MAX_BODY_BYTES:
        return _Outcome(413, _error(_too_large()), size=declared)
    body = await _read_capped(request, MAX_BODY_BYTES)
    if body is None:
        return _Outcome(413, _error(_too_large()), size=MAX_BODY_BYTES + 1)
    received_at = datetime.now(UTC)
    try:
        inbox_id = await run_in_threadpool(_store, inbox, body, received_at)
    except PayloadError as exc:
        return _Outcome(400, _error(str(exc)), size=len(body))
    except Exception:
        logger.exception("could not store a webhook of %d bytes", len(body))
        return _Outcome(500, _error("could not store the payload; retry"), size=len(body))
    return _Outcome(200, {"status": "ok", "id": inbox_id}, size=len(body), inbox_id=inbox_id)


def _store(inbox: WebhookInbox, body: bytes, received_at: datetime) -> int:
    """Parse and append in one worker-thread hop: both are blocking for large bodies."""
    return inbox.append(body, received_at, payload=parse_payload(body))


def _declared_length(request: Request) -> int | None:
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past `limit`: never buffer an oversize body."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _too_large() -> str:
    return f"body is over {MAX_BODY_BYTES} bytes"


def _error(reason: str) -> dict[str, object]:
    return {"status": "error", "reason": reason}


def _log(request: Request, outcome: _Outcome, started: float) -> None:
    """One line per request: never headers (credentials), never the body, no query string."""
    client = request.client.host if request.client else "-"
    logger.info(
        "webhook status=%d id=%s bytes=%d ms=%.1f client=%s",
        outcome.status,
        outcome.inbox_id if outcome.inbox_id is not None else "-",
        outcome.size,
        (time.perf_counter() - started) * 1000,
        client,
    )


def _log_config() -> dict:
    """uvicorn's logging plus ours on the same handler; its access log is off (it logs the
    query string, where someone may put a token) since `_log` writes one line per request."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["clevertap_assets"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def serve_webhooks(host: str, port: int) -> None:
    """Run the receiver until interrupted; settings are checked before the port is bound."""
    load_dotenv(override=False)
    auth = WebhookAuth.from_env()
    inbox = WebhookInbox(inbox_path_from_env().resolve())
    config = uvicorn.Config(
        build_app(inbox, auth),
        host=host,
        port=port,
        log_config=_log_config(),
        access_log=False,
        server_header=False,
    )
    logger.info("webhook receiver: POST %s into %s (%r)", WEBHOOK_PATH, inbox.path, auth)
    uvicorn.Server(config).run()

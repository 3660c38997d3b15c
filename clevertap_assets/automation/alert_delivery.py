"""Where alerts go: one message, the same text, to a webhook (ALERT_WEBHOOK_URL) or by e-mail
(ALERT_EMAIL_TO through ALERT_SMTP_HOST, with Python's own `smtplib`).

A sender either delivers the message or raises `AlertDeliveryError`, which says why without
the URL (a Slack URL holds its token) or the SMTP password: the sensors then keep the alert
for their next evaluation. Both secrets live in `SecretStr`s, and no error, log line or repr
here shows them.
"""

import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

import httpx
from pydantic import SecretStr

from clevertap_assets.settings import PipelineSettings

ALERT_TIMEOUT_SECONDS = 10.0


class AlertDeliveryError(RuntimeError):
    """The webhook or the SMTP server did not take a message; says why without a secret."""


@dataclass(frozen=True)
class Alert:
    pipeline: str
    problem: str
    events: Sequence[str]
    days: str
    cause: str

    @property
    def subject(self) -> str:
        return f"CleverTap pipeline {self.pipeline!r}: {self.problem}"

    @property
    def text(self) -> str:
        events = ", ".join(self.events) or "no event"
        return f"{self.subject}. Events: {events}. Days: {self.days}. Cause: {self.cause}"


class AlertSender(Protocol):
    target: str
    """The setting naming where the messages go, for the sensors' descriptions."""

    def send(self, alert: Alert) -> None: ...


class AlertWebhook:
    """Posts alerts to ALERT_WEBHOOK_URL as `{"text": ...}`."""

    target = "ALERT_WEBHOOK_URL"

    def __init__(self, url: SecretStr) -> None:
        self._url = url

    def __repr__(self) -> str:
        return "AlertWebhook(url=SecretStr('**********'))"

    def send(self, alert: Alert) -> None:
        try:
            response = httpx.post(
                self._url.get_secret_value(),
                json={"text": alert.text},
                timeout=ALERT_TIMEOUT_SECONDS,
            )
        except httpx.HTTPError as exc:
            # httpx's messages can hold the URL: only the kind of failure is told.
            raise AlertDeliveryError(
                f"ALERT_WEBHOOK_URL could not be reached ({type(exc).__name__})"
            ) from None
        if response.is_error:
            raise AlertDeliveryError(f"ALERT_WEBHOOK_URL answered HTTP {response.status_code}")


@dataclass(frozen=True)
class AlertEmail:
    """Mails alerts to ALERT_EMAIL_TO from ALERT_EMAIL_FROM through the SMTP server, with
    STARTTLS, implicit TLS (`ssl`) or neither, and a login when a user is set."""

    recipients: Sequence[str]
    sender: str
    host: str
    port: int
    security: str
    user: str
    password: SecretStr | None

    target = "ALERT_EMAIL_TO"

    def send(self, alert: Alert) -> None:
        message = EmailMessage()
        message["Subject"] = alert.subject
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(alert.text)
        server = f"ALERT_SMTP_HOST {self.host}:{self.port}"
        try:
            with self._connect() as smtp:
                if self.user:
                    password = self.password.get_secret_value() if self.password else ""
                    smtp.login(self.user, password)
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            raise AlertDeliveryError(
                f"{server} answered {exc.smtp_code} ({type(exc).__name__})"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise AlertDeliveryError(
                f"{server} did not take the message ({type(exc).__name__})"
            ) from None

    def _connect(self) -> smtplib.SMTP:
        """With TLS, the server's certificate is verified against the system's CAs (smtplib's
        own default context verifies nothing)."""
        if self.security == "ssl":
            return smtplib.SMTP_SSL(
                self.host,
                self.port,
                timeout=ALERT_TIMEOUT_SECONDS,
                context=ssl.create_default_context(),
            )
        smtp = smtplib.SMTP(self.host, self.port, timeout=ALERT_TIMEOUT_SECONDS)
        if self.security == "starttls":
            try:
                smtp.starttls(context=ssl.create_default_context())
            except BaseException:
                smtp.close()
                raise
        return smtp


def alert_senders(settings: PipelineSettings) -> dict[str, AlertSender]:
    """The configured senders by the word their sensors are named with: `alerts` for the
    webhook (`run_failure_alerts`), `emails` for e-mail (`run_failure_emails`)."""
    senders: dict[str, AlertSender] = {}
    if settings.alert_webhook_url is not None:
        senders["alerts"] = AlertWebhook(settings.alert_webhook_url)
    if settings.alert_email_recipients:
        senders["emails"] = AlertEmail(
            recipients=settings.alert_email_recipients,
            sender=settings.alert_email_from,
            host=settings.alert_smtp_host,
            port=settings.alert_smtp_port,
            security=settings.alert_smtp_security,
            user=settings.alert_smtp_user,
            password=settings.alert_smtp_password,
        )
    return senders

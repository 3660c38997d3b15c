"""An SMTP server on 127.0.0.1 (aiosmtpd) standing in for ALERT_SMTP_HOST: it requires a
login, with STARTTLS when given a certificate, and can defer messages as a busy server does."""

import datetime
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SMTP_USER = "alerts"
SMTP_PASSWORD = "smtp-pw-7f3a"


class Mailbox:
    """aiosmtpd's handler: keeps each message delivered, answers 451 (try again later) to the
    next `refusals` messages; `logins` are the user names that logged in."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refusals = 0
        self.logins: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.refusals:
            self.refusals -= 1
            return "451 4.3.0 Try again later"
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if (auth_data.login, auth_data.password) == (SMTP_USER.encode(), SMTP_PASSWORD.encode()):
            self.logins.append(auth_data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@contextmanager
def serving_mail(tls: ssl.SSLContext | None = None) -> Iterator[tuple[Mailbox, int]]:
    """The mailbox and its port. With `tls`, STARTTLS is required before the login, as a
    submission server on port 587 requires it; without, the login goes in plain text (aiosmtpd
    warns of that)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailbox = Mailbox()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        auth_required=True,
        auth_require_tls=tls is not None,
        require_starttls=tls is not None,
        tls_context=tls,
    )
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def self_signed_tls(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a new certificate for 127.0.0.1, and the certificate's file, for
    a client to trust (SSL_CERT_FILE) or not."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp.crt", folder / "smtp.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file

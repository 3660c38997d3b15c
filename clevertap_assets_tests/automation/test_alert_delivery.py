"""E-mail delivery against a real SMTP server on 127.0.0.1: STARTTLS (the default) verifies
the server's certificate before the login goes over the wire."""

import pytest
from pydantic import SecretStr

from clevertap_assets.automation.alert_delivery import Alert, AlertDeliveryError, AlertEmail
from clevertap_assets_tests.smtp_server import (
    SMTP_PASSWORD,
    SMTP_USER,
    self_signed_tls,
    serving_mail,
)

ALERT = Alert("clevertap", "run 1f2e failed", ["Charged"], "2026-12-01", "the passcode")


def test_starttls_verifies_the_servers_certificate_before_logging_in(tmp_path, monkeypatch):
    tls, certificate = self_signed_tls(tmp_path)
    with serving_mail(tls) as (mailbox, port):
        email = AlertEmail(
            recipients=["data@example.com", "oncall@example.com"],
            sender="dagster@example.com",
            host="127.0.0.1",
            port=port,
            security="starttls",
            user=SMTP_USER,
            password=SecretStr(SMTP_PASSWORD),
        )
        with pytest.raises(AlertDeliveryError) as untrusted:
            email.send(ALERT)  # a certificate no CA of the system signed
        assert str(untrusted.value) == (
            f"ALERT_SMTP_HOST 127.0.0.1:{port} did not take the message (SSLCertVerificationError)"
        )
        assert mailbox.logins == [] and mailbox.messages == []
        assert SMTP_PASSWORD not in repr(email)

        monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # now the system trusts it
        email.send(ALERT)
    (mail,) = mailbox.messages
    assert mailbox.logins == [SMTP_USER]
    assert mail["To"] == "data@example.com, oncall@example.com"
    assert mail["Subject"] == "CleverTap pipeline 'clevertap': run 1f2e failed"
    assert mail.get_content().strip() == ALERT.text

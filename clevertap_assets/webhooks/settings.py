"""The webhook path's settings, from the environment: the inbox file, which the receiver
writes and the sensor and asset read (both must resolve to the same file), and how a request
proves it comes from CleverTap (checked by `receiver.WebhookAuth`)."""

import os
from pathlib import Path

DEFAULT_INBOX_PATH = Path(".dagster_home") / "webhook_inbox.sqlite3"
AUTH_VARIABLES = {
    "basic_user": "WEBHOOK_BASIC_USER",
    "basic_password": "WEBHOOK_BASIC_PASSWORD",
    "secret": "WEBHOOK_SECRET",
    "secret_header": "WEBHOOK_SECRET_HEADER",
}


def inbox_path_from_env() -> Path:
    return Path(os.environ.get("WEBHOOK_INBOX_PATH") or DEFAULT_INBOX_PATH)


def auth_from_env() -> dict[str, str | None]:
    """Each of AUTH_VARIABLES as set, None when unset or empty."""
    return {field: os.environ.get(variable) or None for field, variable in AUTH_VARIABLES.items()}

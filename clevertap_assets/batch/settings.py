"""The read path's process settings, from the environment: where pages are spooled and how
many worker processes parse them. Read each time they are needed, so a bad value fails the
read that met it, with one message naming the variable."""

import os
import tempfile
from pathlib import Path

SPOOL_DIR_ENV = "CLEVERTAP_SPOOL_DIR"
PARSE_PROCESSES_ENV = "CLEVERTAP_PARSE_PROCESSES"
DEFAULT_PARSE_PROCESSES = 1


def spool_root() -> Path:
    """The one directory every spool folder of this host lives under."""
    configured = os.environ.get(SPOOL_DIR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "clevertap_assets"


def parse_processes() -> int:
    """`CLEVERTAP_PARSE_PROCESSES`, else `DEFAULT_PARSE_PROCESSES`.

    One worker keeps up with what CleverTap's 3 request slots deliver at a second a request,
    and each worker holds a page's memory while it parses; more workers only pay where
    answers come faster than one can parse them (a CleverTap close by, the emulator)."""
    configured = os.environ.get(PARSE_PROCESSES_ENV, "").strip()
    if not configured:
        return DEFAULT_PARSE_PROCESSES
    if not configured.isdigit() or not 1 <= int(configured) <= 64:
        raise ValueError(
            f"{PARSE_PROCESSES_ENV}={configured!r} is not allowed: a whole number of worker "
            f"processes from 1 to 64 (unset: {DEFAULT_PARSE_PROCESSES})"
        )
    return int(configured)

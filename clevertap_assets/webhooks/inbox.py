"""The durable inbox between the webhook receiver and the loader: store first, process later.

CleverTap waits only 3 to 5 seconds for an answer and retries, so the receiver only appends
the raw body here and acknowledges; a Dagster sensor and asset later load the profiles.

Storage is one SQLite file in WAL mode with `synchronous=FULL`: once `append` returns, the entry
survives a crash of the process or the machine. Every operation opens its own connection (with
a busy timeout), so threads and processes share the file (uvicorn workers writing, the sensor
reading). WAL needs a local file system (not NFS/SMB), as SQLite documents.

The contract the loader's exactly-once rule relies on:

- Ids strictly increase in commit order (one writer at a time chooses the id inside its
  transaction), so a reader that has seen id N never later sees a new id <= N: "last id
  loaded" as the cursor with `read_after(cursor, ...)` never skips nor repeats an entry.
- Ids are dense: rows are never deleted and `AUTOINCREMENT` never reuses an id; a gap is only
  a rolled-back insert, never visible to anyone.
- Entries never change: the body is the exact bytes received and a trigger refuses any
  UPDATE, so parsing an entry twice gives the same records.
- Entries are deliveries, not unique events: a CleverTap retry can store the same body twice.
  Its indexed `sha256` lets the loader read only the first copy (`read_first_copies`).
- Every body is a JSON object (`append` refuses anything else), so `expand_payload` never
  fails to parse a stored entry.

CleverTap's test call (`"is_test": true`) is stored, flagged in `is_test`, so an operator sees
the dashboard's test arrive; it expands to no records. `WEBHOOK_INBOX_PATH` names the file; the
default `.dagster_home/webhook_inbox.sqlite3` is relative to the working directory, so the
receiver and Dagster run from the same directory or both set the variable.
"""

import hashlib
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

BUSY_TIMEOUT_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    body BLOB NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    target_id TEXT,
    is_test INTEGER NOT NULL,
    profile_count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_inbox_sha256 ON webhook_inbox (sha256, id);
CREATE TRIGGER IF NOT EXISTS webhook_inbox_entries_never_change
BEFORE UPDATE ON webhook_inbox
BEGIN
    SELECT RAISE(ABORT, 'webhook inbox entries never change');
END;
"""

# Profile keys the loader maps, by their spelling with case, '_', '-' and spaces removed.
_CANONICAL_PROFILE_KEYS = {
    "objectid": "objectId",
    "identity": "identity",
    "email": "email",
    "name": "name",
    "phone": "phone",
    "profiledata": "profileData",
    "eventproperties": "event_properties",
    "eventprops": "event_properties",
    "sessionprops": "session_props",
    "sessionproperties": "session_props",
    "eventname": "eventName",
    "evtname": "eventName",
    "ts": "ts",
}


class PayloadError(ValueError):
    """A body is not a JSON object; the message is short and never quotes the body."""


@dataclass(frozen=True)
class InboxEntry:
    id: int
    received_at: datetime
    body: bytes


def parse_payload(body: bytes) -> dict[str, Any]:
    """Parse a webhook body, refusing what could never expand into records."""
    if not body.strip():
        raise PayloadError("body is empty")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise PayloadError(f"body must be a JSON object, got {type(document).__name__}")
    return document


class WebhookInbox:
    """An append-only, crash-safe queue of webhook bodies shared by threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._initialise()

    def __repr__(self) -> str:
        return f"WebhookInbox({str(self.path)!r})"

    def _initialise(self) -> None:
        """Switch to WAL and create the table, retrying while another process does the same:
        SQLite does not apply the busy timeout to the switch of a brand-new file to WAL."""
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                with self._connect() as connection:
                    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    connection.executescript(_SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                if (
                    exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY
                    or time.monotonic() > deadline
                ):
                    raise
                time.sleep(0.01)
        if mode.lower() != "wal":
            raise OSError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection per operation: nothing to share between threads or forks."""
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        with closing(connection):
            connection.execute("PRAGMA synchronous=FULL")
            yield connection

    def append(
        self,
        body: bytes,
        received_at: datetime | None = None,
        *,
        payload: Mapping[str, Any] | None = None,
    ) -> int:
        """Store a body and return its id; when this returns, the entry is on disk.

        `payload` is the body already parsed (the receiver has it), to avoid a second parse
        of a body of up to 16 MB; without it the body is parsed here, so a non-object body
        is refused with `PayloadError` either way. A naive `received_at` is refused rather
        than guessed: the loader compares these times across hosts.
        """
        document = parse_payload(body) if payload is None else payload
        moment = _as_utc(received_at or datetime.now(UTC))
        row = (
            moment.isoformat(timespec="microseconds"),
            bytes(body),
            len(body),
            hashlib.sha256(body).hexdigest(),
            _target_id(document),
            int(is_test_payload(document)),
            len(_profiles(document)),
        )
        with self._connect() as connection:
            cursor = connection.execute(
                "INSERT INTO webhook_inbox (received_at, body, size_bytes, sha256, target_id,"
                " is_test, profile_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid or 0)

    def read_after(self, after_id: int, limit: int) -> list[InboxEntry]:
        """Entries with id > after_id, oldest first: the loader's cursor is the last id it loaded."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT id, received_at, body FROM webhook_inbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [
            InboxEntry(id=row[0], received_at=datetime.fromisoformat(row[1]), body=row[2])
            for row in rows
        ]

    def read_first_copies(
        self, first_id: int, last_id: int, window: timedelta
    ) -> tuple[list[InboxEntry], int]:
        """The entries with ids in [first_id, last_id] that are not a re-delivery, and how many
        were: a re-delivery is a body byte for byte equal (same `sha256`) to an entry with a
        smaller id received at most `window` before it. CleverTap re-sends a payload whose 200
        it did not see within seconds to minutes; the same body days apart is a new event.
        A zero window keeps every entry. Entries never change, so a range always gives the
        same answer."""
        days = window.total_seconds() / 86400
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT id, received_at, body, EXISTS (SELECT 1 FROM webhook_inbox AS earlier"
                " WHERE ? > 0 AND earlier.sha256 = entry.sha256 AND earlier.id < entry.id"
                " AND julianday(earlier.received_at) >= julianday(entry.received_at) - ?)"
                " FROM webhook_inbox AS entry WHERE id BETWEEN ? AND ? ORDER BY id",
                (days, days, first_id, last_id),
            ).fetchall()
        entries = [
            InboxEntry(id=row[0], received_at=datetime.fromisoformat(row[1]), body=row[2])
            for row in rows
            if not row[3]
        ]
        return entries, len(rows) - len(entries)

    def last_id(self) -> int:
        """The newest id, 0 when empty, so 0 is the cursor that reads everything."""
        with self._connect() as connection:
            return int(
                connection.execute("SELECT COALESCE(MAX(id), 0) FROM webhook_inbox").fetchone()[0]
            )


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    return moment.astimezone(UTC)


def _top_level(document: Mapping[str, Any], name: str) -> Any:
    """A payload-level key in any casing (`targetId`/`TargetId`, `is_test`/`isTest`)."""
    if name in document:
        return document[name]
    wanted = _fold(name)
    return next((value for key, value in document.items() if _fold(key) == wanted), None)


def _fold(key: str) -> str:
    return "".join(ch for ch in key.lower() if ch not in "_- ")


def _target_id(document: Mapping[str, Any]) -> str | None:
    value = _top_level(document, "targetId")
    return None if value is None else str(value)


def is_test_payload(document: Mapping[str, Any]) -> bool:
    """CleverTap's dashboard test call; it must be acknowledged but never become rows."""
    flag = _top_level(document, "is_test")
    return flag is True or (isinstance(flag, str) and flag.strip().lower() == "true")


def _profiles(document: Mapping[str, Any]) -> list[Any]:
    """`profiles` is an array in the broadcast form and a single object otherwise."""
    profiles = _top_level(document, "profiles")
    if isinstance(profiles, dict):
        return [profiles]
    return profiles if isinstance(profiles, list) else []


def normalise_profile(profile: Mapping[str, Any]) -> dict[str, Any]:
    """Give the keys the loader maps one spelling; keep every other key as it came.

    When a profile holds two spellings of one field, the canonical spelling wins, else the
    first in the payload's order; the other spellings are dropped, being the same field.
    """
    record: dict[str, Any] = {}
    for key, value in profile.items():
        canonical = _CANONICAL_PROFILE_KEYS.get(_fold(key)) if isinstance(key, str) else None
        if canonical is None:
            record[key] = value
        elif key == canonical or canonical not in record:
            record[canonical] = value
    return record


@dataclass(frozen=True)
class WebhookProfile:
    """One profile of a delivery, and the delivery's context beside it, never inside it: the
    profile's keys are whatever CleverTap sent (an `_inbox_id` of its own included), so no
    key of the payload can overwrite the loader's, nor the loader's one of the payload."""

    profile: dict[str, Any]
    inbox_id: int | None
    profile_index: int
    target_id: Any
    key_values: Any


def expand_payload(body: bytes, inbox_id: int | None = None) -> list[WebhookProfile]:
    """One record per profile, each keyed by `(inbox_id, profile_index)`.

    The index is the profile's position in the payload, counted over every element, so a
    non-object element (which carries nothing to map and is skipped) never shifts the keys
    of the others. Payload-level context travels with each record as `target_id` and
    `key_values`. A test call expands to nothing.
    """
    document = parse_payload(body)
    if is_test_payload(document):
        return []
    target_id, key_values = _top_level(document, "targetId"), _top_level(document, "key_values")
    return [
        WebhookProfile(normalise_profile(profile), inbox_id, index, target_id, key_values)
        for index, profile in enumerate(_profiles(document))
        if isinstance(profile, dict)
    ]


def expand_entry(entry: InboxEntry) -> list[WebhookProfile]:
    """The records of one stored entry, keyed by its inbox id."""
    return expand_payload(entry.body, inbox_id=entry.id)

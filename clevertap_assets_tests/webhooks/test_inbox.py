"""The inbox's contract with the loader: exact bytes, ordered dense ids, immutable entries,
safe across processes, and payload expansion with a stable (inbox id, index) key."""

import multiprocessing
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from clevertap_assets.webhooks.inbox import (
    InboxEntry,
    PayloadError,
    WebhookInbox,
    WebhookProfile,
    expand_entry,
    expand_payload,
)

WRITERS = 4
APPENDS_PER_WRITER = 25


@pytest.fixture
def inbox(tmp_path: Path) -> WebhookInbox:
    return WebhookInbox(tmp_path / "nested" / "dir" / "inbox.sqlite3")


def _body(**fields: object) -> bytes:
    return orjson.dumps({"targetId": 1472124953, **fields})


def test_append_returns_increasing_ids_and_bodies_come_back_byte_exact(inbox: WebhookInbox):
    bodies = [
        b'{ "targetId" : 1,\n  "profiles": [{"name": "J\xc3\xbcrgen"}] }  ',
        b'{"profiles": {"identity": "x"}, "dup": 1, "dup": 2}',
        _body(profiles=[]),
    ]
    ids = [inbox.append(body) for body in bodies]

    assert ids == [1, 2, 3]
    assert inbox.last_id() == 3
    assert [entry.body for entry in inbox.read_after(0, 10)] == bodies


def test_read_after_pages_in_id_order(inbox: WebhookInbox):
    for index in range(7):
        inbox.append(_body(n=index))

    first = inbox.read_after(0, 3)
    second = inbox.read_after(first[-1].id, 3)
    rest = inbox.read_after(second[-1].id, 3)

    assert [entry.id for entry in first + second + rest] == list(range(1, 8))
    assert inbox.read_after(7, 3) == []
    with pytest.raises(ValueError, match="limit"):
        inbox.read_after(0, 0)


def test_empty_inbox_has_last_id_zero(inbox: WebhookInbox):
    assert inbox.last_id() == 0
    assert inbox.read_after(0, 100) == []


def test_received_at_is_kept_in_utc(inbox: WebhookInbox):
    local = datetime(
        2025, 6, 7, 18, 39, 35, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    inbox.append(_body(), received_at=local)
    before = datetime.now(UTC)
    inbox.append(_body())

    given, defaulted = inbox.read_after(0, 2)
    assert given.received_at == local
    assert given.received_at.utcoffset() == timedelta(0)
    assert defaulted.received_at.tzinfo is not None
    assert abs(defaulted.received_at - before) < timedelta(seconds=5)
    with pytest.raises(ValueError, match="timezone-aware"):
        inbox.append(_body(), received_at=datetime(2025, 1, 1))


@pytest.mark.parametrize("body", [b"", b"  ", b"not json", b"[1, 2]", b'"text"', b"{"])
def test_append_refuses_what_is_not_a_json_object(inbox: WebhookInbox, body: bytes):
    with pytest.raises(PayloadError):
        inbox.append(body)
    assert inbox.last_id() == 0


def test_entries_never_change(inbox: WebhookInbox):
    inbox.append(_body())
    with sqlite3.connect(inbox.path) as connection, pytest.raises(sqlite3.DatabaseError):
        connection.execute("UPDATE webhook_inbox SET body = x'00'")
    assert inbox.read_after(0, 1)[0].body == _body()


def test_file_is_wal_and_extracted_fields_are_stored(inbox: WebhookInbox):
    inbox.append(b'{"TargetId": 42, "profiles": [{}, {}, 3]}')
    inbox.append(b'{"is_test": true}')
    with sqlite3.connect(inbox.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = connection.execute(
            "SELECT target_id, is_test, profile_count, size_bytes, length(sha256)"
            " FROM webhook_inbox ORDER BY id"
        ).fetchall()
    assert rows == [("42", 0, 3, 41, 64), (None, 1, 0, 17, 64)]


def test_a_new_object_sees_what_another_wrote(inbox: WebhookInbox):
    entry_id = inbox.append(_body(profiles=[]))
    assert WebhookInbox(inbox.path).read_after(0, 5)[0].id == entry_id
    assert repr(inbox) == f"WebhookInbox({str(inbox.path)!r})"


def _write_many(path: str, writer: int) -> None:
    inbox = WebhookInbox(path)
    for index in range(APPENDS_PER_WRITER):
        inbox.append(_body(writer=writer, index=index))


def test_processes_write_while_a_reader_follows_without_skipping(tmp_path: Path):
    """The exactly-once rule: a cursor-following reader sees each id once, in order."""
    path = str(tmp_path / "inbox.sqlite3")
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_many, args=(path, n)) for n in range(WRITERS)]
    for process in writers:
        process.start()

    reader, cursor, seen = WebhookInbox(path), 0, []
    deadline = time.monotonic() + 15
    while len(seen) < WRITERS * APPENDS_PER_WRITER and time.monotonic() < deadline:
        for entry in reader.read_after(cursor, 7):
            assert entry.id > cursor
            cursor = entry.id
            seen.append(entry)
    for process in writers:
        process.join(timeout=10)
        assert process.exitcode == 0

    total = WRITERS * APPENDS_PER_WRITER
    assert [entry.id for entry in seen] == list(range(1, total + 1))
    payloads = {(doc["writer"], doc["index"]) for doc in (orjson.loads(e.body) for e in seen)}
    assert len(payloads) == total


def test_expand_broadcast_array_keys_each_profile_by_inbox_id_and_index():
    body = _body(
        key_values={"campaign": "spring"},
        profiles=[
            {"objectId": "o1", "identity": "u1", "profileData": {"plan": "gold"}},
            {"objectId": "o2", "identity": "u2", "custom": [1, 2]},
        ],
    )
    records = expand_payload(body, inbox_id=9)

    assert records == [
        WebhookProfile(
            {"objectId": "o1", "identity": "u1", "profileData": {"plan": "gold"}},
            inbox_id=9,
            profile_index=0,
            target_id=1472124953,
            key_values={"campaign": "spring"},
        ),
        WebhookProfile(
            {"objectId": "o2", "identity": "u2", "custom": [1, 2]},
            inbox_id=9,
            profile_index=1,
            target_id=1472124953,
            key_values={"campaign": "spring"},
        ),
    ]


def test_expand_single_object_with_other_casings():
    body = (
        b'{"TargetId": 7, "Profiles": {"ObjectId": "o", "Identity": "u", "Email": "e@x",'
        b' "Name": "N", "Phone": 911, "ProfileData": {"Plan": "x"},'
        b' "Event_Properties": {"Fare": 1}, "Session_Props": {"utm": "g"},'
        b' "evtName": "Charged", "TS": 20250607130935, "Custom Field": "kept"}}'
    )
    [record] = expand_payload(body, inbox_id=1)

    assert record.profile == {
        "objectId": "o",
        "identity": "u",
        "email": "e@x",
        "name": "N",
        "phone": 911,
        "profileData": {"Plan": "x"},
        "event_properties": {"Fare": 1},
        "session_props": {"utm": "g"},
        "eventName": "Charged",
        "ts": 20250607130935,
        "Custom Field": "kept",
    }
    assert (record.inbox_id, record.target_id, record.key_values, record.profile_index) == (
        1,
        7,
        None,
        0,
    )


def test_expand_prefers_the_canonical_spelling_when_both_are_present():
    body = b'{"profiles": [{"Identity": "first", "identity": "canonical", "IDENTITY": "last"}]}'
    [record] = expand_payload(body)
    assert record.profile == {"identity": "canonical"}

    [record] = expand_payload(b'{"profiles": [{"IDENTITY": "a", "Identity": "b"}]}')
    assert record.profile == {"identity": "a"}


def test_expand_skips_non_objects_without_shifting_indexes():
    body = b'{"profiles": [{"identity": "a"}, null, "junk", {"identity": "b"}]}'
    records = expand_payload(body, inbox_id=3)
    assert [(r.profile["identity"], r.profile_index) for r in records] == [("a", 0), ("b", 3)]


def test_profile_keys_named_like_the_loaders_neither_override_it_nor_are_lost():
    keys = {"_inbox_id": 99, "_profile_index": 98, "_target_id": 97, "_key_values": 96}
    body = orjson.dumps({"targetId": 5, "key_values": {"k": 1}, "profiles": [keys]})
    [record] = expand_payload(body, inbox_id=4)
    assert (record.inbox_id, record.profile_index, record.target_id) == (4, 0, 5)
    assert record.key_values == {"k": 1}
    assert record.profile == keys


@pytest.mark.parametrize(
    "body",
    [
        b'{"is_test": true, "profiles": [{"identity": "a"}]}',
        b'{"isTest": "true", "profiles": {"identity": "a"}}',
        b'{"targetId": 1}',
        b'{"profiles": null}',
        b'{"profiles": "nope"}',
    ],
)
def test_payloads_with_nothing_to_load_expand_to_nothing(body: bytes):
    assert expand_payload(body) == []


def test_is_test_false_still_expands():
    assert len(expand_payload(b'{"is_test": false, "profiles": [{"identity": "a"}]}')) == 1


def test_expand_entry_uses_the_entry_id(inbox: WebhookInbox):
    inbox.append(_body(profiles={"identity": "u"}))
    [entry] = inbox.read_after(0, 1)
    assert isinstance(entry, InboxEntry)
    assert [r.inbox_id for r in expand_entry(entry)] == [entry.id]

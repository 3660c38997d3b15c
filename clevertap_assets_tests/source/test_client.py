"""The CleverTap client against the emulator over real HTTP: the cursor flow, every row of the
failure table in the shared API notes, retries bounded by time, the concurrency limit per API,
counts, and that the passcode never leaks into messages, reprs or logs."""

import gc
import http.server
import logging
import re
import threading
import types
from collections.abc import Callable
from datetime import date, timedelta

import dagster as dg
import httpx
import orjson
import pytest

from clevertap_assets.emulator import InFlightGate
from clevertap_assets.source.client import (
    CleverTapAuthError,
    CleverTapError,
    CleverTapProtocolError,
    CleverTapResource,
    CursorExpiredError,
    ExportNotAllowedError,
    FetchStats,
    UnknownEventError,
)

PASSCODE = "pc-TOP-SECRET-4711"
WRONG_PASSCODE = "wrong-SECRET-0815"
ACCOUNT = "TEST-ACCOUNT"
EVENTS = [
    "App Launched",
    "Product Viewed",
    "Charged",
    "Added To Cart",
    "Checkout Started",
    "UTM Visited",
    "Notification Sent",
]
DAY = date(2024, 3, 1)
FAST = {
    "backoff_seconds": 0.005,
    "max_backoff_seconds": 0.02,
    "throttle_wait_seconds": 0.01,
    "timeout_seconds": 5,
}
# Backoff for the tests that wait through many retries: still milliseconds, but exponential.
PATIENT = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05, "max_wait_seconds": 60}
GAVE_UP = re.compile(
    r"CleverTap (?P<method>GET|POST) (?P<path>\S+) for event '(?P<event>[^']+)' "
    r"\((?P<first>[\d-]+)\.\.(?P<last>[\d-]+)\) still failing after (?P<seconds>[\d.]+) s "
    r"of retries \((?P<attempts>\d+) attempts\); last failure: (?P<failure>.+)"
)


@pytest.fixture
def start(make_emulator) -> Callable[..., object]:
    """An emulator holding the test's account and a distinctive passcode to hunt for."""

    def _start(**config: object) -> object:
        return make_emulator(account_id=ACCOUNT, passcode=PASSCODE, events=EVENTS, **config)

    return _start


def client_for(emulator, **overrides: object) -> CleverTapResource:
    settings = {"account_id": ACCOUNT, "passcode": PASSCODE, "api_url": emulator.url, **FAST}
    return CleverTapResource(**{**settings, **overrides})


def read_all(client: CleverTapResource, event: str, first: date, last: date, **kw) -> list[dict]:
    with client:
        return [
            record for page in client.iter_event_pages(event, first, last, **kw) for record in page
        ]


def canonical(record: dict) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def assert_no_secret(caplog: pytest.LogCaptureFixture, *texts: object) -> None:
    for secret in (PASSCODE, WRONG_PASSCODE):
        assert secret not in caplog.text
        for text in texts:
            assert secret not in str(text)
            assert secret not in repr(text)


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "retry" in r.getMessage()
    ]


# --- the cursor flow -------------------------------------------------------------------------


def test_multi_day_window_returns_every_record_including_duplicates(start) -> None:
    emulator = start(duplicate_share=0.1)
    first, last = DAY, DAY + timedelta(days=2)
    stats = FetchStats()
    records = read_all(client_for(emulator, batch_size=7), "Charged", first, last, stats=stats)

    days = [first + timedelta(days=n) for n in range(3)]
    truth = [canonical(r) for d in days for r in emulator.true_records("Charged", d, events=False)]
    # Exports repeat some records; the emulator repeats round(share * n) of a day's n records.
    duplicates = sum(int(emulator.true_count("Charged", d) * 0.1 + 0.5) for d in days)
    assert {canonical(r) for r in records} == set(truth)
    assert len(records) == len(truth) + duplicates > len(truth)
    assert stats.records == len(records) and stats.pages > 1 and stats.retries == 0
    assert stats.bytes_received > 0 and stats.requests == stats.pages + 1
    assert emulator.stats.open_params[-1] == {
        "batch_size": "7",
        "app": "false",
        "events": "false",
        "profile": "true",
    }
    assert emulator.stats.open_bodies[-1] == {
        "event_name": "Charged",
        "from": 20240301,
        "to": 20240303,
    }


def test_pages_stream_one_request_at_a_time(start) -> None:
    emulator = start()
    client = client_for(emulator, batch_size=5)
    with client:
        pages = client.iter_event_pages("App Launched", DAY, DAY)
        assert isinstance(pages, types.GeneratorType)
        assert emulator.stats.requests["open"] == 0
        first = next(pages)
        assert 0 < len(first) <= 5
        assert emulator.stats.requests["open"] == 1 and emulator.stats.requests["page"] == 1
        rest = list(pages)
    assert emulator.stats.requests["page"] == 1 + len(rest) > 2


def test_cursor_is_sent_exactly_as_issued(start) -> None:
    """The emulator's cursors are percent-encoded like CleverTap's; re-encoding them (what
    `params=` does) is answered with code 3, so a complete read proves they went out verbatim."""
    emulator = start()
    headers = {"X-CleverTap-Account-Id": ACCOUNT, "X-CleverTap-Passcode": PASSCODE}
    body = {"event_name": "App Launched", "from": 20240301, "to": 20240301}
    with httpx.Client(base_url=emulator.url, headers=headers) as raw:
        cursor = raw.post("/1/events.json", params={"batch_size": 5}, json=body).json()["cursor"]
        reencoded = raw.get("/1/events.json", params={"cursor": cursor}).json()
    assert "%" in cursor
    assert reencoded["code"] == 3

    records = read_all(client_for(emulator, batch_size=5), "App Launched", DAY, DAY)
    assert len(records) >= emulator.true_count("App Launched", DAY)


def test_final_page_with_records_and_no_cursor_ends_the_read(start) -> None:
    emulator = start(final_page="records", duplicate_share=0.0)
    records = read_all(client_for(emulator, batch_size=9), "Product Viewed", DAY, DAY)
    assert len(records) == emulator.true_count("Product Viewed", DAY)


def test_a_cursor_that_repeats_is_an_error_not_a_loop(start, caplog) -> None:
    emulator = start(repeat_cursor=True)
    with pytest.raises(CleverTapProtocolError, match="already used") as failure:
        read_all(client_for(emulator, batch_size=5), "App Launched", DAY, DAY)
    assert emulator.stats.requests["page"] == 1
    assert_no_secret(caplog, failure.value)


def test_an_endless_stream_of_empty_cursors_is_stopped_with_a_clear_error(start, caplog) -> None:
    emulator = start(endless_empty_pages=True, duplicate_share=0.0)
    stats = FetchStats()
    client = client_for(emulator, batch_size=5000, max_empty_pages=20)
    with pytest.raises(CleverTapProtocolError) as failure:
        read_all(client, "Charged", DAY, DAY, stats=stats)
    assert str(failure.value) == (
        f"CleverTap sent 20 pages in a row without records for event 'Charged' ({DAY}..{DAY}), "
        "each with a new cursor; stopping instead of paging forever (max_empty_pages=20)"
    )
    assert stats.records == emulator.true_count("Charged", DAY)
    assert_no_secret(caplog, failure.value)


def test_a_cursor_chain_sending_far_more_than_the_count_is_stopped(start, caplog) -> None:
    """Pages with records that never end: once past the margin, CleverTap's count for the
    same days is asked once, and the chain stops at twice it plus the margin."""
    emulator = start(
        endless_cursor_events=frozenset({"Charged"}), duplicate_share=0.0, vary_page_sizes=False
    )
    count = emulator.true_count("Charged", DAY)
    client = client_for(emulator, batch_size=10, count_margin_records=50)
    with pytest.raises(CleverTapProtocolError) as failure:
        read_all(client, "Charged", DAY, DAY)
    message = str(failure.value)
    assert message.startswith(f"CleverTap's cursor chain for event 'Charged' ({DAY}..{DAY}) sent ")
    assert f"CleverTap's counts API says those days hold {count}:" in message
    assert "count_margin_records=50" in message
    assert emulator.stats.requests["count"] == 1
    # a page that reaches the end of the day before starting over is short
    assert emulator.stats.requests["page"] <= 3 * (2 * count + 50) // 10
    assert_no_secret(caplog, failure.value)


def test_a_chain_over_the_margin_within_its_count_reads_every_record(start) -> None:
    """Duplicates and a long window pass the margin but not twice the count: all is read."""
    emulator = start(duplicate_share=0.5, records_per_day=200)
    last = DAY + timedelta(days=2)
    records = read_all(
        client_for(emulator, batch_size=50, count_margin_records=10), "Charged", DAY, last
    )
    truth = sum(emulator.true_count("Charged", DAY + timedelta(days=n)) for n in range(3))
    assert len({orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records}) == truth
    assert len(records) > truth
    assert emulator.stats.requests["count"] == 1


def test_a_window_read_longer_than_its_time_bound_is_stopped(start, caplog) -> None:
    emulator = start(delay_seconds=0.2, duplicate_share=0.0)
    client = client_for(emulator, batch_size=5, max_window_seconds=0.5)
    with pytest.raises(
        CleverTapProtocolError, match=r"over max_window_seconds=0\.5, after \d+ pages"
    ):
        read_all(client, "Charged", DAY, DAY)
    assert emulator.stats.requests["page"] < emulator.true_count("Charged", DAY) / 5


# --- retried faults --------------------------------------------------------------------------


def test_page_in_progress_code_2_retries_the_same_cursor(start, caplog) -> None:
    emulator = start(page_in_progress=True, duplicate_share=0.0)
    stats = FetchStats()
    with caplog.at_level(logging.DEBUG):
        records = read_all(client_for(emulator, batch_size=10), "Charged", DAY, DAY, stats=stats)
    assert len(records) == emulator.true_count("Charged", DAY)
    assert emulator.stats.faults["in_progress"] == stats.retries == stats.pages > 1
    assert any("code 2" in message for message in retry_warnings(caplog))
    assert_no_secret(caplog)


def test_a_page_not_ready_for_longer_than_eight_attempts_is_read_in_full(start, caplog) -> None:
    """CleverTap can take minutes to prepare a page: each page here answers code 2 twelve
    times, and is still read through the same cursor, as retries are bounded by time, not by
    a count of attempts."""
    emulator = start(page_in_progress=True, page_in_progress_polls=12, duplicate_share=0.0)
    stats = FetchStats()
    client = client_for(emulator, batch_size=20, **PATIENT)
    with caplog.at_level(logging.WARNING):
        records = read_all(client, "Charged", DAY, DAY, stats=stats)
    truth = emulator.true_records("Charged", DAY, events=False)
    assert sorted(map(canonical, records)) == sorted(map(canonical, truth))
    assert stats.pages > 1 and emulator.stats.requests["open"] == 1
    assert emulator.stats.faults["in_progress"] == stats.retries == 12 * stats.pages
    assert emulator.stats.requests["page"] == 13 * stats.pages
    assert len(retry_warnings(caplog)) == stats.retries
    assert_no_secret(caplog)


def test_a_page_that_never_becomes_ready_fails_after_max_wait_seconds(start, caplog) -> None:
    """One message says what was asked for, how long it was waited for and why it failed; the
    waits add up to no more than `max_wait_seconds`."""
    emulator = start(page_in_progress=True, page_in_progress_polls=None)
    stats = FetchStats()
    last = DAY + timedelta(days=2)
    client = client_for(emulator, **{**PATIENT, "max_wait_seconds": 1})
    with caplog.at_level(logging.WARNING), pytest.raises(CleverTapError) as failure:
        read_all(client, "Charged", DAY, last, stats=stats)
    message = str(failure.value)
    gave_up = GAVE_UP.fullmatch(message)
    assert gave_up, message
    assert gave_up.group("method", "path", "event", "first", "last") == (
        "GET",
        "/1/events.json",
        "Charged",
        "2024-03-01",
        "2024-03-03",
    )
    assert gave_up["failure"] == (
        "page not ready (code 2: Request still in progress, please retry later)"
    )
    assert 1 <= float(gave_up["seconds"]) < 60
    attempts = int(gave_up["attempts"])
    assert attempts == emulator.stats.faults["in_progress"] == stats.retries + 1 > 1
    assert emulator.stats.requests["open"] == 1
    assert stats.backoff_seconds <= 1
    assert PASSCODE not in message
    assert_no_secret(caplog, failure.value)


def test_a_long_wait_the_server_asks_for_is_cut_to_the_deadline(start) -> None:
    """CleverTap's errors page says to retry a 429 after 10 minutes: a `Retry-After` longer
    than what is left of `max_wait_seconds` is cut to it, never slept through."""
    emulator = start(max_concurrent=0, retry_after=600)
    stats = FetchStats()
    client = client_for(emulator, max_wait_seconds=1)
    with pytest.raises(CleverTapError) as failure:
        read_all(client, "Charged", DAY, DAY, stats=stats)
    gave_up = GAVE_UP.fullmatch(str(failure.value))
    assert gave_up and gave_up["failure"] == "HTTP 429 Too many concurrent requests"
    assert int(gave_up["attempts"]) == emulator.stats.rate_limited == stats.retries + 1
    assert stats.backoff_seconds <= 1


def test_throttled_code_1_waits_the_throttle_time(start, caplog) -> None:
    emulator = start(throttle_every=3, duplicate_share=0.0)
    stats = FetchStats()
    client = client_for(emulator, batch_size=10, throttle_wait_seconds=0.03, backoff_seconds=0)
    with caplog.at_level(logging.WARNING):
        records = read_all(client, "Charged", DAY, DAY, stats=stats)
    assert len(records) == emulator.true_count("Charged", DAY)
    throttled = emulator.stats.faults["throttled"]
    assert throttled == stats.retries > 0
    assert stats.backoff_seconds == pytest.approx(0.03 * throttled)
    assert any("code 1" in message for message in retry_warnings(caplog))
    assert_no_secret(caplog)


@pytest.mark.parametrize("fault", ["server_error_every", "drop_every"])
def test_server_errors_and_dropped_connections_are_retried(start, caplog, fault) -> None:
    emulator = start(**{fault: 2}, duplicate_share=0.0)
    stats = FetchStats()
    with caplog.at_level(logging.WARNING):
        records = read_all(client_for(emulator, batch_size=10), "Charged", DAY, DAY, stats=stats)
    assert len(records) == emulator.true_count("Charged", DAY)
    served = emulator.stats.faults["server_error" if fault == "server_error_every" else "dropped"]
    assert served == stats.retries > 0
    expected = (
        ("HTTP 500", "HTTP 503") if fault == "server_error_every" else ("RemoteProtocolError",)
    )
    for token in expected:
        assert any(token in message for message in retry_warnings(caplog))
    assert_no_secret(caplog)


def test_too_many_concurrent_429_is_retried_and_honours_retry_after(start, caplog) -> None:
    emulator = start(max_concurrent=1, retry_after=0.05, delay_seconds=0.02, duplicate_share=0.0)
    client = client_for(emulator, batch_size=10, max_concurrent_requests=3)
    results: dict[str, int] = {}
    stats = {event: FetchStats() for event in EVENTS[:3]}

    def read(event: str) -> None:
        pages = client.iter_event_pages(event, DAY, DAY, stats=stats[event])
        results[event] = sum(len(page) for page in pages)

    with caplog.at_level(logging.WARNING), client:
        run_threads(read, EVENTS[:3])
    assert results == {event: emulator.true_count(event, DAY) for event in EVENTS[:3]}
    retries = sum(s.retries for s in stats.values())
    assert emulator.stats.rate_limited == retries > 0
    assert sum(s.backoff_seconds for s in stats.values()) == pytest.approx(0.05 * retries)
    assert any("HTTP 429" in message for message in retry_warnings(caplog))
    assert_no_secret(caplog)


# --- the concurrency limit -------------------------------------------------------------------


def run_threads(target: Callable[[str], None], events: list[str]) -> None:
    errors: list[BaseException] = []

    def guarded(event: str) -> None:
        try:
            target(event)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors


def test_threads_sharing_a_resource_keep_three_requests_in_flight_per_api(start) -> None:
    """One reader holds the account, and its threads share one resource: six threads read
    windows of six events while six more count days. Every request waits at a gate in the
    emulator until six are held at once, which only three exports beside three counts can
    be: so the semaphores are used to the full, one per API, and never exceeded (no 429)."""
    gate = InFlightGate(count=6, timeout_seconds=30)
    emulator = start(delay_seconds=0.02, duplicate_share=0.0, gate=gate, counts_gate=gate)
    client = client_for(emulator, batch_size=8, timeout_seconds=60)
    exportable = [event for event in EVENTS if not event.startswith("Notification")]
    last = DAY + timedelta(days=1)
    read: dict[str, int] = {}
    counted: dict[str, int] = {}

    def read_window(event: str) -> None:
        read[event] = sum(len(page) for page in client.iter_event_pages(event, DAY, last))

    def count_window(event: str) -> None:
        counted[event] = client.count_events(event, DAY, last)

    def work(job: str) -> None:
        kind, event = job.split(":", 1)
        (read_window if kind == "read" else count_window)(event)

    with client:
        run_threads(work, [f"{kind}:{event}" for event in exportable for kind in ("read", "count")])
    truth = {e: emulator.true_count(e, DAY) + emulator.true_count(e, last) for e in exportable}
    assert read == counted == truth
    assert gate.filled
    assert emulator.stats.max_in_flight == emulator.stats.max_counts_in_flight == 3
    assert emulator.stats.rate_limited == 0


# --- failures that stop the read -------------------------------------------------------------


def test_wrong_passcode_fails_fast_with_a_clear_message(start, caplog) -> None:
    emulator = start()
    client = client_for(emulator, passcode=WRONG_PASSCODE)
    with caplog.at_level(logging.DEBUG), pytest.raises(CleverTapAuthError) as failure:
        read_all(client, "App Launched", DAY, DAY)
    message = str(failure.value)
    assert f"authentication failed for account {ACCOUNT} at {emulator.url}" in message
    for variable in ("CLEVERTAP_ACCOUNT_ID", "CLEVERTAP_PASSCODE", "CLEVERTAP_REGION"):
        assert variable in message
    assert emulator.stats.requests["unauthorized"] == 1
    assert_no_secret(caplog, failure.value)


def test_notification_events_raise_export_not_allowed(start) -> None:
    emulator = start()
    with pytest.raises(ExportNotAllowedError) as failure:
        read_all(client_for(emulator), "Notification Sent", DAY, DAY)
    assert failure.value.event_name == "Notification Sent"
    assert emulator.stats.requests["open"] == 1


def test_unknown_event_names_the_event_and_case_sensitivity(start) -> None:
    emulator = start()
    with pytest.raises(UnknownEventError, match=r"'app launched'.*case-sensitive"):
        read_all(client_for(emulator), "app launched", DAY, DAY)
    assert emulator.stats.requests["open"] == 1


def test_incorrect_usage_code_3_is_not_retried(start, monkeypatch) -> None:
    emulator = start()

    def reencoded(self: CleverTapResource, cursor: str) -> httpx.URL:
        return httpx.URL(self.base_url + "/1/events.json", params={"cursor": cursor})

    monkeypatch.setattr(CleverTapResource, "_cursor_url", reencoded)
    with pytest.raises(CleverTapProtocolError, match=r"Incorrect Usage.*code 3"):
        read_all(client_for(emulator), "App Launched", DAY, DAY)
    assert emulator.stats.requests["page"] == 1


def test_an_empty_body_is_an_error_naming_the_path(start) -> None:
    emulator = start()
    client = client_for(emulator, api_url=emulator.url + "/not-clevertap")
    with pytest.raises(CleverTapProtocolError, match=r"empty.*/not-clevertap/1/events.json"):
        read_all(client, "App Launched", DAY, DAY)


def test_an_expired_cursor_raises_cursor_expired(start) -> None:
    emulator = start(cursor_expiry_pages=2)
    pages: list[list[dict]] = []
    client = client_for(emulator, batch_size=5)
    with client, pytest.raises(CursorExpiredError, match="App Launched"):
        pages.extend(client.iter_event_pages("App Launched", DAY, DAY))
    assert len(pages) == 2
    reread = read_all(client, "App Launched", DAY, DAY)
    assert len(reread) >= emulator.true_count("App Launched", DAY)


def test_timeouts_are_retried_then_reported(start, caplog) -> None:
    """The requests the client gave up on still hold the emulator's threads: no limit there,
    so every attempt meets a timeout, not a 429."""
    emulator = start(delay_seconds=0.3, max_concurrent=None)
    client = client_for(emulator, timeout_seconds=0.05, max_wait_seconds=2)
    with caplog.at_level(logging.WARNING), pytest.raises(CleverTapError) as failure:
        read_all(client, "App Launched", DAY, DAY)
    gave_up = GAVE_UP.fullmatch(str(failure.value))
    assert gave_up and "Timeout" in gave_up["failure"], failure.value
    assert gave_up.group("method", "path") == ("POST", "/1/events.json")
    assert len(retry_warnings(caplog)) == int(gave_up["attempts"]) - 1 >= 1
    assert_no_secret(caplog, failure.value)


def test_giving_up_says_what_kept_failing(start) -> None:
    emulator = start(server_error_every=1)
    with pytest.raises(CleverTapError) as failure:
        read_all(client_for(emulator, max_wait_seconds=1), "App Launched", DAY, DAY)
    gave_up = GAVE_UP.fullmatch(str(failure.value))
    assert gave_up and re.fullmatch(r"HTTP 50[03] .+", gave_up["failure"]), failure.value
    assert gave_up["path"] == "/1/events.json"
    assert emulator.stats.faults["server_error"] == int(gave_up["attempts"]) > 1


# --- counts ----------------------------------------------------------------------------------


def test_count_events_answers_at_once(start) -> None:
    emulator = start()
    with client_for(emulator) as client:
        count = client.count_events("Charged", DAY, DAY + timedelta(days=1))
    assert count == emulator.true_count("Charged", DAY) + emulator.true_count(
        "Charged", DAY + timedelta(days=1)
    )


def test_count_events_polls_a_partial_answer(start) -> None:
    emulator = start(counts_partial=True, counts_partial_polls=2, server_error_every=3)
    stats = FetchStats()
    with client_for(emulator) as client:
        count = client.count_events("Charged", DAY, DAY, stats=stats)
    assert count == emulator.true_count("Charged", DAY)
    assert emulator.stats.requests["count_poll"] == 3
    assert stats.retries == emulator.stats.faults["server_error"] > 0


def test_count_events_polls_a_partial_answer_for_longer_than_eight_polls(start) -> None:
    emulator = start(counts_partial=True, counts_partial_polls=12)
    with client_for(emulator, **PATIENT) as client:
        count = client.count_events("Charged", DAY, DAY)
    assert count == emulator.true_count("Charged", DAY)
    assert emulator.stats.requests["count_poll"] == 13


def test_count_events_gives_up_on_an_endless_partial(start) -> None:
    emulator = start(counts_partial=True, counts_partial_polls=10**6)
    stats = FetchStats()
    with (
        client_for(emulator, max_wait_seconds=1) as client,
        pytest.raises(CleverTapError) as failure,
    ):
        client.count_events("Charged", DAY, DAY + timedelta(days=1), stats=stats)
    gave_up = re.fullmatch(
        r"CleverTap GET /1/counts/events.json for event 'Charged' \(2024-03-01\.\.2024-03-02\) "
        r"still partial after ([\d.]+) s of polling \((\d+) polls\)",
        str(failure.value),
    )
    assert gave_up, failure.value
    assert float(gave_up[1]) >= 1 and stats.backoff_seconds <= 1
    assert int(gave_up[2]) == emulator.stats.requests["count_poll"] > 1


# --- the passcode stays secret ---------------------------------------------------------------


def test_repr_and_str_hide_the_passcode() -> None:
    client = CleverTapResource(account_id=ACCOUNT, passcode=PASSCODE, region="in1")
    assert PASSCODE not in repr(client) and PASSCODE not in str(client)
    assert "passcode='***'" in repr(client) and ACCOUNT in repr(client)
    assert client.base_url == "https://in1.api.clevertap.com"


def test_region_is_validated_with_the_settings_rules() -> None:
    assert CleverTapResource(account_id=ACCOUNT, passcode=PASSCODE, region="Global").region == "eu1"
    with pytest.raises(ValueError, match="not a CleverTap region"):
        CleverTapResource(account_id=ACCOUNT, passcode=PASSCODE, region="mars")


FAILURES: dict[str, tuple[dict, dict, str, type[Exception]]] = {
    # name: (emulator faults, client overrides, event, expected exception)
    "401": ({}, {"passcode": WRONG_PASSCODE}, "App Launched", CleverTapAuthError),
    "export not allowed": ({}, {}, "Notification Sent", ExportNotAllowedError),
    "unknown event": ({}, {}, "Nope", UnknownEventError),
    "empty body": ({}, {"api_url": "/elsewhere"}, "App Launched", CleverTapProtocolError),
    "5xx exhausted": ({"server_error_every": 1}, {}, "App Launched", CleverTapError),
    "dropped exhausted": ({"drop_every": 1}, {}, "App Launched", CleverTapError),
    "throttled exhausted": ({"throttle_every": 1}, {}, "App Launched", CleverTapError),
    "in progress exhausted": (
        {"page_in_progress": True, "page_in_progress_polls": None},
        {},
        "App Launched",
        CleverTapError,
    ),
    "429 exhausted": ({"max_concurrent": 0}, {}, "App Launched", CleverTapError),
    "timeout": ({"delay_seconds": 0.2}, {"timeout_seconds": 0.02}, "App Launched", CleverTapError),
    "expired": ({"cursor_expiry_pages": 1}, {"batch_size": 5}, "App Launched", CursorExpiredError),
}


@pytest.mark.parametrize("name", FAILURES)
def test_no_failure_reveals_the_passcode(start, caplog, name: str) -> None:
    faults, overrides, event, expected = FAILURES[name]
    emulator = start(**faults)
    if "api_url" in overrides:
        overrides = {**overrides, "api_url": emulator.url + overrides["api_url"]}
    client = client_for(emulator, **{"max_wait_seconds": 0.2, **overrides})
    with caplog.at_level(logging.DEBUG), pytest.raises(expected) as failure:
        read_all(client, event, DAY, DAY)
    emulator.set_faults(counts_partial=True, counts_partial_polls=100)
    with caplog.at_level(logging.DEBUG), pytest.raises(CleverTapError) as count_failure, client:
        client.count_events("Nope" if name == "unknown event" else event, DAY, DAY)
    assert_no_secret(caplog, failure.value, count_failure.value, client, failure.value.__cause__)


def test_the_passcode_stays_out_of_dagster_runs(start, monkeypatch) -> None:
    """Inside a run the EnvVar is resolved to the value: the resource's repr, the logs and the
    event log must still not show it."""
    emulator = start()
    monkeypatch.setenv("CLEVERTAP_PASSCODE", PASSCODE)

    @dg.op
    def read_one_day(context: dg.OpExecutionContext, clevertap: CleverTapResource) -> int:
        context.log.info(f"using {clevertap!r}")
        stats = FetchStats()
        total = sum(
            len(p)
            for p in clevertap.iter_event_pages("Charged", DAY, DAY, stats=stats, log=context.log)
        )
        context.add_output_metadata(stats.as_metadata())
        return total

    @dg.job
    def read_job() -> None:
        read_one_day()

    resource = CleverTapResource(
        account_id=ACCOUNT, passcode=dg.EnvVar("CLEVERTAP_PASSCODE"), api_url=emulator.url, **FAST
    )
    with dg.instance_for_test() as instance:
        result = read_job.execute_in_process(resources={"clevertap": resource}, instance=instance)
        assert result.success
        assert result.output_for_node("read_one_day") >= emulator.true_count("Charged", DAY)
        logged = [str(record) for record in instance.all_logs(result.run_id)]
    assert any("passcode='***'" in line for line in logged)
    assert not any(PASSCODE in line for line in logged)


def test_idle_cursors_do_not_keep_a_reader_of_the_same_resource_waiting(start) -> None:
    """Slots are held per request, not per page stream: three idle cursors of one resource
    do not block a fourth reader of the same resource (it would wait for ever)."""
    emulator = start()
    client = client_for(emulator, batch_size=5)
    idle = [client.iter_event_pages(event, DAY, DAY) for event in EVENTS[:3]]
    for pages in idle:
        next(pages)
    records: list[dict] = []
    reader = threading.Thread(
        target=lambda: records.extend(
            r for page in client.iter_event_pages("Charged", DAY, DAY) for r in page
        ),
        daemon=True,
    )
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive() and len(records) >= emulator.true_count("Charged", DAY)
    client.close()


def test_a_read_leaves_no_answer_for_the_cyclic_collector(start) -> None:
    """The assets read with the cyclic collector paused, so an answer (and its page of bytes)
    that only the collector could free would stay until the read ends: after three cursors
    have read side by side, no httpx response is left alive, except one per retried
    transport error (its traceback is a cycle of its own; a loaded machine sometimes
    drops a connection)."""
    emulator = start(delay_seconds=0.01, duplicate_share=0.0)
    client = client_for(emulator, batch_size=9)
    stats = {event: FetchStats() for event in EVENTS[:3]}

    def read(event: str) -> None:
        for _ in client.iter_event_pages(event, DAY, DAY, stats=stats[event]):
            pass

    enabled = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        with client:
            run_threads(read, EVENTS[:3])
            left = [o for o in gc.get_objects() if isinstance(o, httpx.Response)]
    finally:
        if enabled:
            gc.enable()
    pages = sum(s.pages for s in stats.values())
    retries = sum(s.retries for s in stats.values())
    assert pages > 10
    assert len(left) <= retries


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (b'{"status": "success", "records": {"ts": 1}}', r"'records' that is not a list"),
        (b'[{"status": "success"}]', r"empty or non-JSON body with HTTP 200 on /1/events.json"),
        (b'{"status": "success", "records": [{"ts": 1}', r"empty or non-JSON body"),
    ],
)
def test_a_page_not_shaped_as_documented_is_refused(page: bytes, message: str) -> None:
    """The envelope is read without the records (msgspec), yet a page whose records are not a
    list, or a body that is not one JSON object, is still refused, never read as no data."""

    class Answers(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self._answer(b'{"status": "success", "cursor": "c1"}')

        def do_GET(self) -> None:
            self._answer(page)

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = CleverTapResource(account_id=ACCOUNT, passcode=PASSCODE, api_url=url, **FAST)
        with client, pytest.raises(CleverTapProtocolError, match=message):
            list(client.iter_raw_pages("Charged", DAY, DAY))
        server.shutdown()

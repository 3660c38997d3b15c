"""The emulator over real HTTP: it must behave like CleverTap as the shared API notes describe,
because every other test trusts it to."""

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from clevertap_assets.emulator import (
    OVERSIZE_PROPERTY,
    CleverTapEmulator,
    InFlightGate,
    peak_in_flight,
)

MakeEmulator = Callable[..., CleverTapEmulator]
DAY = date(2024, 3, 10)


def client(emulator: CleverTapEmulator, passcode: str | None = None) -> httpx.Client:
    config = emulator.config
    headers = {
        "X-CleverTap-Account-Id": config.account_id,
        "X-CleverTap-Passcode": config.passcode if passcode is None else passcode,
    }
    return httpx.Client(base_url=emulator.url, headers=headers, timeout=10)


def ymd(day: date) -> int:
    return int(day.strftime("%Y%m%d"))


def open_cursor(
    http: httpx.Client, event: str, first: date, last: date, batch_size: int = 5000, **params: str
) -> str:
    response = http.post(
        "/1/events.json",
        params={"batch_size": batch_size, **params},
        json={"event_name": event, "from": ymd(first), "to": ymd(last)},
    )
    assert response.status_code == 200, response.text
    return response.json()["cursor"]


def fetch(http: httpx.Client, cursor: str) -> dict[str, Any]:
    """The cursor goes into the URL as issued: it is already percent-encoded."""
    response = http.get(f"/1/events.json?cursor={cursor}")
    assert response.status_code == 200, response.text
    return response.json()


def read_all(http: httpx.Client, cursor: str) -> tuple[list[dict], list[dict[str, Any]]]:
    """All records of a cursor chain plus every answer, to check the answers' shapes."""
    records, answers = [], []
    while cursor:
        answer = fetch(http, cursor)
        answers.append(answer)
        records.extend(answer.get("records", []))
        cursor = answer.get("next_cursor")
        assert len(answers) < 1000, "cursor chain does not end"
    return records, answers


def export(
    emulator: CleverTapEmulator, event: str, first: date, last: date, **params: Any
) -> list[dict]:
    with client(emulator) as http:
        return read_all(http, open_cursor(http, event, first, last, **params))[0]


def canonical(record: dict) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def truth(
    emulator: CleverTapEmulator, event: str, first: date, last: date, **flags: bool
) -> list[dict]:
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [record for day in days for record in emulator.true_records(event, day, **flags)]


# --- the cursor flow -------------------------------------------------------------------


def test_cursor_flow_pages_vary_and_end_with_an_answer_without_records(
    make_emulator: MakeEmulator,
) -> None:
    emulator = make_emulator(records_per_day=300)
    with client(emulator) as http:
        opened = http.post(
            "/1/events.json?batch_size=100&app=false&events=false&profile=true",
            json={"event_name": "Charged", "from": ymd(DAY), "to": ymd(DAY + timedelta(days=1))},
        ).json()
        assert set(opened) == {"status", "cursor"} and opened["status"] == "success"
        assert "%" in opened["cursor"] and 1000 <= len(opened["cursor"]) <= 2500
        records, answers = read_all(http, opened["cursor"])

    assert answers[-1] == {"status": "success"}
    pages = [len(answer["records"]) for answer in answers[:-1]]
    assert all(1 <= size <= 100 for size in pages)
    assert min(pages) < 100, "page sizes should vary"
    assert all("next_cursor" in answer for answer in answers[:-1])
    true = truth(emulator, "Charged", DAY, DAY + timedelta(days=1), events=False)
    assert {canonical(record) for record in records} == {canonical(record) for record in true}


def test_last_records_page_can_carry_no_next_cursor(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(records_per_day=30, final_page="records")
    with client(emulator) as http:
        records, answers = read_all(http, open_cursor(http, "App Launched", DAY, DAY, 7))
    assert "records" in answers[-1] and "next_cursor" not in answers[-1]
    assert len({canonical(r) for r in records}) == emulator.true_count("App Launched", DAY)


def test_empty_window_answers_success_without_records(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(records_per_day=0)
    with client(emulator) as http:
        _, answers = read_all(http, open_cursor(http, "Charged", DAY, DAY))
    assert answers == [{"status": "success"}]


def test_legacy_get_query_form_gives_the_same_records(emulator: CleverTapEmulator) -> None:
    query = orjson.dumps({"event_name": "Product Viewed", "from": ymd(DAY), "to": ymd(DAY)})
    with client(emulator) as http:
        response = http.get("/1/events.json", params={"batch_size": 50, "query": query.decode()})
        legacy, _ = read_all(http, response.json()["cursor"])
    assert emulator.stats.open_bodies[0] == {
        "event_name": "Product Viewed",
        "from": ymd(DAY),
        "to": ymd(DAY),
    }
    assert legacy == export(emulator, "Product Viewed", DAY, DAY, batch_size=50)


def test_post_paging_works_and_a_re_encoded_cursor_is_incorrect_usage(
    emulator: CleverTapEmulator,
) -> None:
    with client(emulator) as http:
        cursor = open_cursor(http, "Charged", DAY, DAY)
        double_encoded = http.get("/1/events.json", params={"cursor": cursor})
        posted = http.post(f"/1/events.json?cursor={cursor}")
    assert "%25" in str(double_encoded.url)
    assert double_encoded.status_code == 200
    assert double_encoded.json() == {"status": "fail", "error": "Incorrect Usage", "code": 3}
    assert posted.json()["status"] == "success" and posted.json()["records"]


# --- errors ------------------------------------------------------------------------------


def test_bad_credentials_get_401_and_the_passcode_is_not_logged(
    emulator: CleverTapEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="clevertap_assets.emulator")
    body = {"event_name": "Charged", "from": ymd(DAY), "to": ymd(DAY)}
    with client(emulator, passcode="wrong-secret") as http:
        wrong = http.post("/1/events.json?batch_size=10", json=body)
    anonymous = httpx.post(f"{emulator.url}/1/counts/events.json", json=body)
    expected = {"status": "fail", "error": "Account ID is not valid", "code": 401}
    assert (wrong.status_code, wrong.json()) == (401, expected)
    assert (anonymous.status_code, anonymous.json()) == (401, expected)
    assert "wrong-secret" not in caplog.text and emulator.config.passcode not in caplog.text
    assert emulator.stats.requests["unauthorized"] == 2


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ("charged", "Invalid event : charged"),
        ("No Such Event", "Invalid event : No Such Event"),
        ("Notification Viewed", "Export not allowed for this event"),
    ],
)
def test_unknown_and_notification_events_get_400(
    emulator: CleverTapEmulator, event: str, error: str
) -> None:
    with client(emulator) as http:
        response = http.post(
            "/1/events.json?batch_size=10",
            json={"event_name": event, "from": ymd(DAY), "to": ymd(DAY)},
        )
    assert response.status_code == 400
    assert response.json() == {"status": "fail", "error": error, "code": 400}


def test_unknown_path_answers_200_with_an_empty_body(emulator: CleverTapEmulator) -> None:
    with client(emulator) as http:
        response = http.get("/1/event.json?batch_size=10")
    assert response.status_code == 200 and response.content == b""


def test_batch_size_above_5000_is_clamped_or_rejected(make_emulator: MakeEmulator) -> None:
    clamping = make_emulator(records_per_day=7000, vary_page_sizes=False)
    with client(clamping) as http:
        _, answers = read_all(http, open_cursor(http, "App Launched", DAY, DAY, 50000))
    assert max(len(answer.get("records", [])) for answer in answers) == 5000
    rejecting = make_emulator(batch_size_over_max="reject")
    with client(rejecting) as http:
        response = http.post(
            "/1/events.json?batch_size=5001",
            json={"event_name": "Charged", "from": ymd(DAY), "to": ymd(DAY)},
        )
    assert response.status_code == 400 and "5000" in response.json()["error"]


# --- data --------------------------------------------------------------------------------


def test_duplicates_are_exported_and_truth_counts_distinct_records(
    make_emulator: MakeEmulator,
) -> None:
    emulator = make_emulator(records_per_day=200, duplicate_share=0.1)
    records = export(emulator, "Added To Cart", DAY, DAY, batch_size=60)
    occurrences = Counter(canonical(record) for record in records)
    true = emulator.true_records("Added To Cart", DAY)
    assert any(count == 2 for count in occurrences.values())
    assert set(occurrences) == {canonical(record) for record in true}
    assert len(occurrences) == len(true) == emulator.true_count("Added To Cart", DAY)
    assert len(records) == len(true) + round(len(true) * 0.1)


def test_two_servers_with_the_same_config_serve_the_same_records(
    make_emulator: MakeEmulator,
) -> None:
    first = make_emulator(seed=7, records_per_day=50)
    second = make_emulator(seed=7, records_per_day=50)
    other_seed = make_emulator(seed=8, records_per_day=50)
    window = ("Charged", DAY, DAY + timedelta(days=2))
    assert export(first, *window, batch_size=40) == export(second, *window, batch_size=40)
    assert export(first, *window) != export(other_seed, *window)


def test_counts_per_day_vary_around_the_configured_mean(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(records_per_day=100)
    counts = [emulator.true_count("App Launched", DAY + timedelta(days=n)) for n in range(30)]
    assert len(set(counts)) > 10 and all(50 <= count <= 150 for count in counts)
    assert 80 <= sum(counts) / len(counts) <= 120


@pytest.mark.parametrize(
    ("zone", "day"), [("Asia/Kolkata", DAY), ("Europe/Berlin", date(2024, 3, 31))]
)
def test_records_fall_within_the_requested_local_day(
    make_emulator: MakeEmulator, zone: str, day: date
) -> None:
    emulator = make_emulator(timezone=zone, records_per_day=400)
    records = export(emulator, "App Launched", day, day)
    stamps = [datetime.strptime(str(record["ts"]), "%Y%m%d%H%M%S") for record in records]
    assert {stamp.date() for stamp in stamps} == {day}
    assert min(stamps).hour < 2 and max(stamps).hour >= 22  # spread over the whole day
    utc_hours = {
        stamp.replace(tzinfo=ZoneInfo(zone)).astimezone(ZoneInfo("UTC")).date() for stamp in stamps
    }
    assert len(utc_hours) == 2  # the local day straddles two UTC days in these zones


def test_records_have_the_documented_shape_and_drift(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(records_per_day=300)
    records = export(emulator, "Charged", DAY, DAY, app="true")
    profiles = [record["profile"] for record in records]
    assert all(str(record["ts"]).isdigit() and len(str(record["ts"])) == 14 for record in records)
    assert {type(p.get("phone")) for p in profiles} == {int, str, type(None)}
    assert all(isinstance(p["all_identities"], list) for p in profiles if "identity" in p)
    assert all({"os_version", "app_version", "make", "model"} <= set(p) for p in profiles)
    assert all(p["profileData"]["signupon"].startswith("$D_") for p in profiles)
    assert all("events" in p for p in profiles)
    assert any("session_props" not in r for r in records)
    assert any("session_props" in r for r in records)
    versions = {type(r["event_props"]["CT App Version"]) for r in records}
    assert versions == {int, str}
    props = records[0]["event_props"]
    assert isinstance(props["Items"], list) and isinstance(props["Items"][0], dict)
    assert isinstance(props["Amount"], int | float) and props["CT Source"]
    assert props["Delivery Date"].startswith("$D_")

    lean = export(emulator, "Charged", DAY, DAY, events="false", profile="false")
    assert not any("events" in r["profile"] or "profileData" in r["profile"] for r in lean)
    assert not any("os_version" in r["profile"] for r in lean)


def test_add_records_changes_the_next_export_and_count(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(records_per_day=20, duplicate_share=0)
    before = export(emulator, "Charged", DAY, DAY)
    emulator.add_records("Charged", DAY, 5)
    after = export(emulator, "Charged", DAY, DAY)
    with client(emulator) as http:
        count = http.post(
            "/1/counts/events.json",
            json={"event_name": "Charged", "from": ymd(DAY), "to": ymd(DAY)},
        ).json()
    assert len(after) == len(before) + 5 == emulator.true_count("Charged", DAY)
    assert count == {"status": "success", "count": len(after)}
    assert {canonical(r) for r in before} < {canonical(r) for r in after}


def test_extra_property_appears_from_a_given_day(make_emulator: MakeEmulator) -> None:
    later = DAY + timedelta(days=1)
    emulator = make_emulator(
        records_per_day=10, extra_event_props={"Coupon": "SPRING"}, extra_event_props_from=later
    )
    assert not any("Coupon" in r["event_props"] for r in emulator.true_records("Charged", DAY))
    assert all(
        r["event_props"]["Coupon"] == "SPRING" for r in export(emulator, "Charged", later, later)
    )
    emulator.set_data(extra_event_props_from=None)
    assert all("Coupon" in r["event_props"] for r in export(emulator, "Charged", DAY, DAY))


def test_an_oversize_record_carries_a_property_of_the_asked_size(
    make_emulator: MakeEmulator,
) -> None:
    emulator = make_emulator(records_per_day=5, oversize_records={("Charged", DAY): 2_000_000})
    records = export(emulator, "Charged", DAY, DAY)
    sizes = [len(r["event_props"].get(OVERSIZE_PROPERTY, "")) for r in records]
    assert sorted(sizes)[-1] == 2_000_000 and sorted(sizes)[-2] in (0, 2_000_000)
    assert sum(1 for size in sizes if size) >= 1


# --- counts ------------------------------------------------------------------------------


def test_counts_answer_distinct_records_directly_or_after_partial_polls(
    make_emulator: MakeEmulator,
) -> None:
    emulator = make_emulator(counts_partial=True, counts_partial_polls=2)
    body = {"event_name": "Charged", "from": ymd(DAY), "to": ymd(DAY + timedelta(days=2))}
    expected = sum(emulator.true_count("Charged", DAY + timedelta(days=n)) for n in range(3))
    with client(emulator) as http:
        first = http.post("/1/counts/events.json", json=body).json()
        polls = [
            http.get("/1/counts/events.json", params={"req_id": first["req_id"]}).json()
            for _ in range(3)
        ]
        emulator.set_faults(counts_partial=False)
        direct = http.post("/1/counts/events.json", json=body).json()
    assert first["status"] == "partial" and isinstance(first["req_id"], int)
    assert [poll["status"] for poll in polls] == ["partial", "partial", "success"]
    assert polls[-1]["count"] == expected
    assert direct == {"status": "success", "count": expected}


# --- faults ------------------------------------------------------------------------------


def _concurrent_opens(emulator: CleverTapEmulator, n: int) -> list[httpx.Response]:
    responses: list[httpx.Response] = []
    barrier = threading.Barrier(n)

    def one() -> None:
        with client(emulator) as http:
            barrier.wait()
            responses.append(
                http.post(
                    "/1/events.json?batch_size=10",
                    json={"event_name": "Charged", "from": ymd(DAY), "to": ymd(DAY)},
                )
            )

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def test_more_than_three_in_flight_get_429_with_optional_retry_after(
    make_emulator: MakeEmulator,
) -> None:
    emulator = make_emulator(delay_seconds=0.5, retry_after=2)
    responses = _concurrent_opens(emulator, 5)
    statuses = Counter(response.status_code for response in responses)
    limited = [response for response in responses if response.status_code == 429]
    assert statuses[200] == 3 and statuses[429] == 2
    assert limited[0].json()["error"] == "Too many concurrent requests"
    assert limited[0].headers["Retry-After"] == "2"
    assert emulator.stats.rate_limited == 2 and emulator.stats.max_in_flight >= 4

    emulator.set_faults(max_concurrent=None)
    assert all(r.status_code == 200 for r in _concurrent_opens(emulator, 5))


def test_max_in_flight_counts_the_accounts_export_requests_held_at_once(
    make_emulator: MakeEmulator,
) -> None:
    """The count the concurrency tests assert on: each request is in flight for its whole
    latency, so N opens at once are N, however the server's threads are scheduled; a request
    refused for its credentials is not the account's and is not counted."""
    emulator = make_emulator(delay_seconds=0.3, max_concurrent=None)
    assert all(r.status_code == 200 for r in _concurrent_opens(emulator, 5))
    assert emulator.stats.max_in_flight == 5 and emulator.stats.in_flight == 0
    emulator.reset_stats()
    with client(emulator, passcode="wrong") as http:
        assert http.post("/1/events.json", json={}).status_code == 401
    for _ in range(2):
        export(emulator, "Charged", DAY, DAY)
    assert emulator.stats.max_in_flight == 1


def test_in_flight_requests_are_counted_per_account_and_across_accounts(
    make_emulator: MakeEmulator,
) -> None:
    """One emulator is one account: each counts its own requests in flight, and their
    timelines tell how many were in flight at once across accounts."""
    first = make_emulator(account_id="ACCOUNT-A", delay_seconds=0.5)
    second = make_emulator(account_id="ACCOUNT-B", delay_seconds=0.5)
    together = threading.Thread(target=_concurrent_opens, args=(second, 3))
    together.start()
    assert [r.status_code for r in _concurrent_opens(first, 3)] == [200] * 3
    together.join()
    assert (first.stats.max_in_flight, second.stats.max_in_flight) == (3, 3)
    assert peak_in_flight(first.stats, second.stats) == 6
    assert (first.stats.in_flight, second.stats.in_flight) == (0, 0)

    first.reset_stats()
    second.reset_stats()
    _concurrent_opens(first, 2)
    _concurrent_opens(second, 2)
    assert peak_in_flight(first.stats, second.stats) == 2


def test_a_gate_holds_requests_until_enough_are_in_flight_across_accounts(
    make_emulator: MakeEmulator,
) -> None:
    """Requests sent one after another still meet at the gate; once it has opened, it holds
    nothing; a gate that never fills lets each waiter go after its timeout."""
    gate = InFlightGate(count=4, timeout_seconds=30)
    first = make_emulator(account_id="ACCOUNT-A", gate=gate)
    second = make_emulator(account_id="ACCOUNT-B", gate=gate)
    late = [threading.Thread(target=_concurrent_opens, args=(e, 2)) for e in (first, second)]
    for thread in late:
        thread.start()
        time.sleep(0.3)  # the second account starts later; its requests still overlap
    for thread in late:
        thread.join()
    assert peak_in_flight(first.stats, second.stats) == 4 and gate.filled
    started = time.monotonic()
    assert [r.status_code for r in _concurrent_opens(first, 1)] == [200]
    assert time.monotonic() - started < 5

    unfilled = InFlightGate(count=2, timeout_seconds=0.5)
    alone = make_emulator(gate=unfilled)
    assert [r.status_code for r in _concurrent_opens(alone, 1)] == [200]
    assert alone.stats.max_in_flight == 1 and not unfilled.filled


def test_counts_requests_in_flight_are_counted_apart_and_never_refused(
    make_emulator: MakeEmulator,
) -> None:
    """The counts API is an API of its own: four counts at once are all answered, counted
    apart from the export beside them, and a gate in both fields holds the two APIs alike."""
    gate = InFlightGate(count=5, timeout_seconds=30)
    emulator = make_emulator(gate=gate, counts_gate=gate)
    body = {"event_name": "Charged", "from": ymd(DAY), "to": ymd(DAY)}
    counts: list[httpx.Response] = []

    def count() -> None:
        with client(emulator) as http:
            counts.append(http.post("/1/counts/events.json", json=body))

    threads = [threading.Thread(target=count) for _ in range(4)]
    threads.append(threading.Thread(target=_concurrent_opens, args=(emulator, 1)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [response.status_code for response in counts] == [200] * 4
    assert gate.filled and emulator.stats.rate_limited == 0
    stats = emulator.stats
    assert (stats.max_counts_in_flight, stats.counts_in_flight, stats.max_in_flight) == (4, 0, 1)


def test_server_errors_throttling_and_drops_every_nth_request(emulator: CleverTapEmulator) -> None:
    body = {"event_name": "Charged", "from": ymd(DAY), "to": ymd(DAY)}
    with client(emulator) as http:

        def call() -> httpx.Response:
            return http.post("/1/events.json?batch_size=10", json=body)

        emulator.set_faults(server_error_every=2)
        assert [call().status_code for _ in range(4)] == [200, 500, 200, 503]
        emulator.set_faults(server_error_every=0, throttle_every=2)
        throttled = [call().json() for _ in range(2)]
        assert throttled[0]["status"] == "success"
        assert throttled[1]["status"] == "fail" and throttled[1]["code"] == 1
        emulator.set_faults(throttle_every=0, drop_every=2)
        assert call().status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            call()
        emulator.set_faults(drop_every=0)
        assert call().status_code == 200
    assert emulator.stats.faults["dropped"] == 1 and emulator.stats.faults["throttled"] == 1


def test_slow_responses_take_the_configured_delay(emulator: CleverTapEmulator) -> None:
    emulator.set_faults(delay_seconds=0.3)
    with client(emulator) as http:
        started = time.perf_counter()
        cursor = open_cursor(http, "Charged", DAY, DAY)
        assert time.perf_counter() - started >= 0.3
    assert cursor


def test_page_in_progress_then_success_on_retry(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(page_in_progress=True)
    with client(emulator) as http:
        cursor = open_cursor(http, "Charged", DAY, DAY)
        first, retry = fetch(http, cursor), fetch(http, cursor)
    assert first == {
        "status": "fail",
        "error": "Request still in progress, please retry later",
        "code": 2,
    }
    assert retry["status"] == "success" and retry["records"]


def test_a_page_can_stay_in_progress_for_n_fetches_or_for_ever(make_emulator: MakeEmulator) -> None:
    """Each page of a cursor chain has its own count of fetches still in progress."""
    in_progress = {"status": "fail", "error": "Request still in progress, please retry later"}
    emulator = make_emulator(page_in_progress=True, page_in_progress_polls=3)
    with client(emulator) as http:
        cursor = open_cursor(http, "Charged", DAY, DAY, batch_size=10)
        answers = [fetch(http, cursor) for _ in range(4)]
        following = [fetch(http, answers[-1]["next_cursor"]) for _ in range(4)]
        emulator.set_faults(page_in_progress_polls=None)
        stuck = open_cursor(http, "Charged", DAY, DAY)
        never = [fetch(http, stuck) for _ in range(20)]
    for chain in (answers, following):
        assert all(answer == {**in_progress, "code": 2} for answer in chain[:3])
        assert chain[3]["status"] == "success" and chain[3]["records"]
    assert all(answer["code"] == 2 for answer in never)
    assert emulator.stats.faults["in_progress"] == 3 + 3 + 20


def test_cursor_expires_after_n_pages_and_a_reopen_reads_everything(
    make_emulator: MakeEmulator,
) -> None:
    emulator = make_emulator(records_per_day=50, duplicate_share=0, cursor_expiry_pages=2)
    with client(emulator) as http:
        cursor = open_cursor(http, "Charged", DAY, DAY, 10)
        for _ in range(2):
            cursor = fetch(http, cursor)["next_cursor"]
        expired = fetch(http, cursor)
        records, _ = read_all(http, open_cursor(http, "Charged", DAY, DAY, 10))
    assert expired["status"] == "fail" and expired["code"] == 4 and "expired" in expired["error"]
    assert len(records) == emulator.true_count("Charged", DAY)


def test_prerender_serves_the_same_bytes(make_emulator: MakeEmulator) -> None:
    plain = make_emulator(records_per_day=100)
    cached = make_emulator(records_per_day=100, prerender=True)
    cached.prerender("Charged", DAY, DAY + timedelta(days=1), batch_size=30)
    window = ("Charged", DAY, DAY + timedelta(days=1))
    assert export(plain, *window, batch_size=30) == export(cached, *window, batch_size=30)
    assert cached.stats.requests["open"] == 1  # warming is not a request

"""Alerts against a real local HTTP endpoint standing in for ALERT_WEBHOOK_URL: a failed run,
a check that starts failing and a stale event each make one message naming the pipeline,
the event, the days and the cause; healthy runs and a failure seen before make none."""

import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    DagsterEventType,
    Definitions,
    ExecuteInProcessResult,
    RunRequest,
    SensorResult,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from dagster._core.definitions.run_status_sensor_definition import RunStatusSensorCursor
from dagster._core.test_utils import freeze_time

from clevertap_assets.assets.freshness import freshness_bound
from clevertap_assets.days import local_today
from clevertap_assets.definitions import build_definitions
from clevertap_assets.run_tags import load_tags
from clevertap_assets_tests.daemon import execute
from clevertap_assets_tests.harness import Pipeline, fast_clevertap, make_pipeline
from clevertap_assets_tests.smtp_server import SMTP_PASSWORD, SMTP_USER, Mailbox, serving_mail

CHARGED = AssetKey(["clevertap", "charged"])


class Endpoint:
    """A webhook on 127.0.0.1 that keeps every JSON body posted to it, or answers `status`;
    the next `refusals` posts it answers 503 whatever `status` says."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.status = 200
        self.refusals = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 503 if endpoint.refusals else endpoint.status
                endpoint.refusals = max(0, endpoint.refusals - 1)
                if status == 200:
                    endpoint.messages.append(json.loads(body)["text"])
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/secret-token"

    def take(self) -> list[str]:
        taken, self.messages = self.messages, []
        return taken


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with serving_mail() as served:
        yield served


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    endpoint = Endpoint()
    thread = threading.Thread(target=endpoint.server.serve_forever, daemon=True)
    thread.start()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()


def evaluate(definitions: Definitions, name: str, instance, cursor: str | None) -> SensorResult:
    with build_sensor_context(instance=instance, cursor=cursor, definitions=definitions) as context:
        return definitions.resolve_sensor_def(name).evaluate_tick(context)


def load_request(pipeline: Pipeline, days: int) -> RunRequest:
    today = local_today(pipeline.settings.timezone)
    keys = [CHARGED]
    checks = [AssetCheckKey(CHARGED, "no_duplicate_record_ids")]
    return RunRequest(
        asset_selection=keys,
        asset_check_keys=checks,
        tags=load_tags(keys, today - timedelta(days=days - 1), today),
    )


def fail_a_load(definitions: Definitions, emulator, instance, day: date) -> ExecuteInProcessResult:
    """A run of Charged over one day with a wrong passcode: it fails."""
    failed = materialize(
        list(definitions.assets or []),
        selection=AssetSelection.assets(CHARGED).without_checks(),
        partition_key=day.isoformat(),
        instance=instance,
        resources={
            **(definitions.resources or {}),
            "clevertap": fast_clevertap(emulator, passcode="not-the-passcode"),
        },
        raise_on_error=False,
    )
    assert not failed.success
    return failed


def failure_refused_once(
    pipeline: Pipeline, sensor: str, receiver: Endpoint | Mailbox
) -> tuple[ExecuteInProcessResult, str]:
    """A failed load of today whose alert the receiver refuses once, then three evaluations
    of the sensor: the refused one, the one delivering, one finding nothing more. The failed
    run, and what the refused evaluation said."""
    definitions = build_definitions(pipeline.settings)
    with instance_for_test() as instance:
        cursor = evaluate(definitions, sensor, instance, None).cursor
        today = local_today(pipeline.settings.timezone)
        failed = fail_a_load(definitions, pipeline.emulator, instance, today)
        receiver.refusals = 1
        refused = evaluate(definitions, sensor, instance, cursor)
        delivered = evaluate(definitions, sensor, instance, refused.cursor)
        evaluate(definitions, sensor, instance, delivered.cursor)
    return failed, refused.skip_message or ""


def test_a_failed_run_is_one_message_naming_its_event_days_and_cause(tmp_path, emulator, endpoint):
    pipeline = make_pipeline(tmp_path, emulator, alert_webhook_url=endpoint.url)
    definitions = build_definitions(pipeline.settings)
    with instance_for_test() as instance:
        started = evaluate(definitions, "run_failure_alerts", instance, None)
        healthy = execute(pipeline, definitions, load_request(pipeline, 2), instance)
        assert healthy.success
        quiet = evaluate(definitions, "run_failure_alerts", instance, started.cursor)
        assert endpoint.take() == []

        today = local_today(pipeline.settings.timezone)
        failed = fail_a_load(definitions, emulator, instance, today)
        found = evaluate(definitions, "run_failure_alerts", instance, quiet.cursor)
        (message,) = endpoint.take()
        assert "CleverTap pipeline 'clevertap'" in message
        assert f"run {failed.run_id}" in message and "failed" in message
        assert "Events: Charged." in message and f"Days: {today}." in message
        assert "'Charged'" in message.split("Cause:")[1]  # the step's Failure, which names it
        assert "not-the-passcode" not in message and endpoint.url not in message
        evaluate(definitions, "run_failure_alerts", instance, found.cursor)
        assert endpoint.take() == []  # the cursor moved past it


def test_a_run_failure_the_webhook_refused_is_sent_on_the_next_evaluation_once(
    tmp_path, emulator, endpoint
):
    """Dagster's run failure sensor moves its cursor past a run whose function raised: the
    message the webhook refused would be lost. Here the next evaluation delivers it."""
    pipeline = make_pipeline(tmp_path, emulator, alert_webhook_url=endpoint.url)
    failed, refused = failure_refused_once(pipeline, "run_failure_alerts", endpoint)
    today = local_today(pipeline.settings.timezone)
    assert refused == (
        f"ALERT_WEBHOOK_URL answered HTTP 503; run {failed.run_id} is alerted on the next "
        "evaluation"
    )
    (message,) = endpoint.take()
    assert message.startswith("CleverTap pipeline 'clevertap': run ")
    assert f"run {failed.run_id}" in message and "Events: Charged." in message
    assert f"Days: {today}." in message and "'Charged'" in message.split("Cause:")[1]


def test_the_cursor_dagsters_run_failure_sensor_left_carries_on_after_an_upgrade(
    tmp_path, emulator, endpoint
):
    """`run_failure_alerts` was Dagster's run failure sensor: its stored cursor, naming the
    newest failure it handled, is where the new sensor goes on, neither replaying nor
    skipping a failure."""
    pipeline = make_pipeline(tmp_path, emulator, alert_webhook_url=endpoint.url)
    definitions = build_definitions(pipeline.settings)
    today = local_today(pipeline.settings.timezone)
    with instance_for_test() as instance:
        handled = fail_a_load(definitions, emulator, instance, today)
        (record,) = instance.fetch_run_status_changes(DagsterEventType.RUN_FAILURE, 1).records
        left = RunStatusSensorCursor(record_id=record.storage_id).to_json()
        failed = fail_a_load(definitions, emulator, instance, today)
        evaluate(definitions, "run_failure_alerts", instance, left)
    (message,) = endpoint.take()
    assert f"run {failed.run_id} " in message and handled.run_id not in message


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_by_email_a_run_failure_the_server_deferred_is_mailed_once_with_the_same_text(
    tmp_path, emulator, mailbox
):
    """ALERT_EMAIL_TO alone: the e-mail sensors, no webhook's; the server's 451 keeps the
    failure for the next evaluation, which mails it once, with the webhook's text."""
    box, port = mailbox
    pipeline = make_pipeline(
        tmp_path,
        emulator,
        alert_email_to="data@example.com",
        alert_email_from="dagster@example.com",
        alert_smtp_host="127.0.0.1",
        alert_smtp_port=port,
        alert_smtp_security="none",
        alert_smtp_user=SMTP_USER,
        alert_smtp_password=SMTP_PASSWORD,
    )
    definitions = build_definitions(pipeline.settings)
    sensors = {s.name for s in definitions.sensors or []}
    assert {"run_failure_emails", "check_failure_emails"} <= sensors
    assert "run_failure_alerts" not in sensors
    failed, deferred = failure_refused_once(pipeline, "run_failure_emails", box)
    today = local_today(pipeline.settings.timezone)
    assert deferred == (
        f"ALERT_SMTP_HOST 127.0.0.1:{port} answered 451 (SMTPDataError); "
        f"run {failed.run_id} is alerted on the next evaluation"
    )
    (mail,) = box.messages
    assert (mail["From"], mail["To"]) == ("dagster@example.com", "data@example.com")
    assert mail["Subject"].startswith(f"CleverTap pipeline 'clevertap': run {failed.run_id} ")
    text = mail.get_content()
    assert text.startswith(mail["Subject"] + ". Events: Charged.")
    assert f"Days: {today}." in text and "'Charged'" in text.split("Cause:")[1]
    assert SMTP_PASSWORD not in text and box.logins == [SMTP_USER, SMTP_USER]


def test_a_check_that_starts_failing_is_one_message_until_it_passes(tmp_path, emulator, endpoint):
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], alert_webhook_url=endpoint.url)
    definitions = build_definitions(pipeline.settings)
    yesterday = local_today(pipeline.settings.timezone) - timedelta(days=1)
    with instance_for_test() as instance:
        cursor = evaluate(definitions, "check_failure_alerts", instance, None).cursor
        assert execute(pipeline, definitions, load_request(pipeline, 3), instance).success
        counting = evaluate(definitions, "reconciliation_sensor", instance, None).run_requests[0]
        assert execute(pipeline, definitions, counting, instance).success
        cursor = evaluate(definitions, "check_failure_alerts", instance, cursor).cursor
        assert endpoint.take() == []  # every check passed

        emulator.add_records("Charged", yesterday, 3)
        for hour in ("the next hour", "the hour after"):  # the same gap, counted twice
            counting = counting.with_replaced_attrs(run_key=hour)
            assert execute(pipeline, definitions, counting, instance).success
            cursor = evaluate(definitions, "check_failure_alerts", instance, cursor).cursor
        (message,) = endpoint.take()
        assert "check row_count_matches_clevertap failed" in message
        assert "Events: Charged." in message and f"Days: {yesterday.isoformat()}." in message
        assert "Cause:" in message and "CleverTap" in message.split("Cause:")[1]


def test_an_event_older_than_the_bound_is_one_message_and_a_fresh_one_none(
    tmp_path, emulator, endpoint
):
    pipeline = make_pipeline(tmp_path, emulator, events=["Charged"], alert_webhook_url=endpoint.url)
    definitions = build_definitions(pipeline.settings)
    today = local_today(pipeline.settings.timezone)
    freshness = AssetCheckKey(CHARGED, "freshness_check")
    with instance_for_test() as instance:
        cursor = evaluate(definitions, "check_failure_alerts", instance, None).cursor
        assert execute(pipeline, definitions, load_request(pipeline, 2), instance).success
        (fresh,) = evaluate(definitions, "freshness_checks_sensor", instance, None).run_requests
        assert fresh.asset_check_keys == [freshness]

        def run_freshness_check() -> None:
            result = materialize(
                [*(definitions.assets or []), *(definitions.asset_checks or [])],
                selection=AssetSelection.checks(freshness),
                instance=instance,
                resources=definitions.resources,
            )
            assert result.success

        run_freshness_check()
        cursor = evaluate(definitions, "check_failure_alerts", instance, cursor).cursor
        assert endpoint.take() == []

        later = (
            datetime.now(UTC)
            + freshness_bound(pipeline.settings.ingestion_interval)
            + timedelta(minutes=5)
        )
        with freeze_time(later):
            run_freshness_check()
            endpoint.status = 503  # the webhook is down: nothing is lost, nothing sent twice
            down = evaluate(definitions, "check_failure_alerts", instance, cursor)
            assert down.skip_message == "ALERT_WEBHOOK_URL answered HTTP 503"
            endpoint.status = 200
            cursor = evaluate(definitions, "check_failure_alerts", instance, down.cursor).cursor
            run_freshness_check()  # still stale: the same failure
            evaluate(definitions, "check_failure_alerts", instance, cursor)
        (message,) = endpoint.take()
        assert "check freshness_check failed" in message and "Events: Charged." in message
        assert f"Days: newest loaded day {today.isoformat()}." in message
        assert "overdue" in message.split("Cause:")[1]

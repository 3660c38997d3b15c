"""Alerts: a failed run, a failed check (the freshness checks included) each become one
message to ALERT_WEBHOOK_URL, naming the pipeline, the events, the days and the cause.

The message is `{"text": ...}`, the body a Slack incoming webhook takes, and plain JSON any
other webhook (Teams workflows, a chat bridge, an e-mail relay) can read. Run failures come
from Dagster's run failure sensor, whose cursor moves past each failed run once. A check is
alerted when it starts failing: the sensor's cursor holds, per check, the newest evaluation
handled, and an evaluation that fails after a failed one is the same failure (an hourly
count that keeps finding the same gap, a stale event staying stale), so it says nothing
again until the check has passed. A webhook that cannot be reached leaves the cursor where
it was for the checks not yet sent, so nothing is lost and nothing is sent twice.

The URL is a secret (a Slack URL holds its token): it lives in a `SecretStr`, and no error,
log line or repr here shows it.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetChecksDefinition,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    sensor,
)
from pydantic import SecretStr

from clevertap_assets.assets.pipeline_events import EventAsset
from clevertap_assets.assets.reconciliation import GAPS
from clevertap_assets.assets.refusals import latest_refusal
from clevertap_assets.run_tags import days_label, run_days
from clevertap_assets.settings import PipelineSettings

ALERT_TIMEOUT_SECONDS = 10.0
CHECK_ALERTS_INTERVAL_SECONDS = 60
FRESHNESS_CHECK = "freshness_check"
"""The name Dagster gives each check of `build_last_update_freshness_checks`."""


class AlertDeliveryError(RuntimeError):
    """The webhook did not take a message; says why without the URL."""


@dataclass(frozen=True)
class Alert:
    pipeline: str
    problem: str
    events: Sequence[str]
    days: str
    cause: str

    @property
    def text(self) -> str:
        events = ", ".join(self.events) or "no event"
        return (
            f"CleverTap pipeline {self.pipeline!r}: {self.problem}. Events: {events}. "
            f"Days: {self.days}. Cause: {self.cause}"
        )


class AlertWebhook:
    """Posts alerts to ALERT_WEBHOOK_URL."""

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


def event_names_of(keys: Sequence[AssetKey], names: Mapping[AssetKey, str]) -> list[str]:
    """CleverTap's names of the events, the key itself for another asset (webhook_events)."""
    return [names.get(key, key.to_user_string()) for key in keys]


def run_failure_alert(
    instance: DagsterInstance,
    pipeline: str,
    run: DagsterRun,
    names: Mapping[AssetKey, str],
    cause: str,
) -> Alert:
    return Alert(
        pipeline=pipeline,
        problem=f"run {run.run_id} of {run.job_name} failed",
        events=event_names_of(
            sorted(run_assets(instance, run), key=AssetKey.to_user_string), names
        ),
        days=run_days(run.tags) or "none (no partition)",
        cause=cause,
    )


def run_assets(instance: DagsterInstance, run: DagsterRun) -> set[AssetKey]:
    """The assets the run was to write (its selection, else its plan: a job's runs name no
    selection), or for a run of checks alone, the checks' assets."""
    if run.asset_selection:
        return set(run.asset_selection)
    planned = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    keys = {record.event_log_entry.dagster_event.asset_key for record in planned}
    return keys or {check.asset_key for check in run.asset_check_selection or ()}


def failure_cause(context: RunFailureSensorContext) -> str:
    """The failed steps' own descriptions (a `Failure` names the events not loaded), else
    Dagster's message for the run."""
    causes = []
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        user = data.user_failure_data
        if user is not None and user.description:
            causes.append(user.description)
        elif data.error is not None:
            causes.append(data.error.message.strip())
    return "; ".join(causes) or (context.failure_event.message or "the run failed")


def build_run_failure_alerts(
    pipeline: str, webhook: AlertWebhook, names: Mapping[AssetKey, str]
) -> SensorDefinition:
    @run_failure_sensor(
        name="run_failure_alerts",
        default_status=DefaultSensorStatus.RUNNING,
        description="Sends one message to ALERT_WEBHOOK_URL for each failed run.",
    )
    def run_failure_alerts(context: RunFailureSensorContext) -> None:
        alert = run_failure_alert(
            context.instance, pipeline, context.dagster_run, names, failure_cause(context)
        )
        webhook.send(alert)

    return run_failure_alerts


def check_alert(
    instance: DagsterInstance,
    pipeline: str,
    evaluation: AssetCheckEvaluation,
    run: DagsterRun | None,
    names: Mapping[AssetKey, str],
) -> Alert:
    key = evaluation.asset_key
    return Alert(
        pipeline=pipeline,
        problem=f"check {evaluation.check_name} failed",
        events=event_names_of([key], names),
        days=_check_days(instance, evaluation, run),
        cause=_check_cause(instance, evaluation),
    )


def _check_days(
    instance: DagsterInstance, evaluation: AssetCheckEvaluation, run: DagsterRun | None
) -> str:
    """The days the failure is about: the gaps of a count, the days a duplicate check looked
    at, the newest loaded day of a stale event, else the run's days."""
    metadata = evaluation.metadata
    if GAPS in metadata and metadata[GAPS].value:
        return ", ".join(sorted(metadata[GAPS].value))
    if "first_day" in metadata and "last_day" in metadata:
        return days_label(metadata["first_day"].value, metadata["last_day"].value)
    if evaluation.check_name == FRESHNESS_CHECK:
        loaded = sorted(instance.get_materialized_partitions(evaluation.asset_key))
        return f"newest loaded day {loaded[-1]}" if loaded else "no day loaded yet"
    return (run_days(run.tags) if run else None) or "not named by the check"


def _check_cause(instance: DagsterInstance, evaluation: AssetCheckEvaluation) -> str:
    cause = evaluation.description or "the check failed without a description"
    if evaluation.check_name == FRESHNESS_CHECK and latest_refusal(instance, evaluation.asset_key):
        return f"{cause} CleverTap refuses to export this event, so nothing new can load."
    return cause


def new_check_failures(
    instance: DagsterInstance, checks: Sequence[AssetCheckKey], handled: Mapping[str, int]
) -> tuple[list[tuple[AssetCheckKey, str, AssetCheckEvaluation]], dict[str, int]]:
    """Each check whose newest completed evaluation, not handled yet, failed after a pass (or
    as its first); and every check's newest completed evaluation, the next cursor."""
    storage = instance.event_log_storage
    summaries = storage.get_asset_check_summary_records(list(checks))
    newest: dict[str, int] = {}
    failures = []
    for check_key in checks:
        record = summaries[check_key].last_completed_check_execution_record
        if record is None or record.event is None:
            continue
        name = check_key.to_user_string()
        newest[name] = record.id
        evaluation = record.event.asset_check_evaluation
        if record.id <= handled.get(name, -1) or evaluation is None or evaluation.passed:
            continue
        if not _failed_before(instance, check_key, record.id):
            failures.append((check_key, record.run_id, evaluation))
    return failures, newest


def _failed_before(instance: DagsterInstance, check_key: AssetCheckKey, record_id: int) -> bool:
    """Whether the check's completed evaluation before `record_id` failed too."""
    history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=5)
    earlier = [
        record.event.asset_check_evaluation
        for record in history
        if record.id < record_id
        and record.event is not None
        and record.event.asset_check_evaluation is not None
    ]
    return bool(earlier) and not earlier[0].passed


def check_alerts_result(
    instance: DagsterInstance,
    pipeline: str,
    webhook: AlertWebhook,
    checks: Sequence[AssetCheckKey],
    names: Mapping[AssetKey, str],
    cursor: str | None,
) -> SensorResult:
    """One message per check that started failing since the last evaluation. The first
    evaluation only records where the checks stand: a new sensor does not replay history."""
    if cursor is None:
        _, newest = new_check_failures(instance, checks, {})
        return SensorResult(
            skip_reason=SkipReason("started: checks that fail from now on are alerted"),
            cursor=json.dumps(newest),
        )
    handled: dict[str, int] = json.loads(cursor)
    failures, newest = new_check_failures(instance, checks, handled)
    sent = 0
    for _, run_id, evaluation in failures:
        run = instance.get_run_by_id(run_id)
        try:
            webhook.send(check_alert(instance, pipeline, evaluation, run, names))
        except AlertDeliveryError as error:
            # The checks not sent stay unhandled, and are sent on a later evaluation.
            unsent = {key.to_user_string() for key, _, _ in failures[sent:]}
            kept = {n: i for n, i in newest.items() if n not in unsent}
            kept |= {n: handled[n] for n in unsent if n in handled}
            return SensorResult(skip_reason=SkipReason(str(error)), cursor=json.dumps(kept))
        sent += 1
    reason = f"{sent} failed check(s) alerted" if sent else "no check started failing"
    return SensorResult(skip_reason=SkipReason(reason), cursor=json.dumps(newest))


def build_check_failure_alerts(
    pipeline: str,
    webhook: AlertWebhook,
    checks: Sequence[AssetCheckKey],
    names: Mapping[AssetKey, str],
) -> SensorDefinition:
    @sensor(
        name="check_failure_alerts",
        minimum_interval_seconds=CHECK_ALERTS_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description="Sends one message to ALERT_WEBHOOK_URL when a check of an event (row "
        "counts, duplicates, freshness) starts failing.",
    )
    def check_failure_alerts(context: SensorEvaluationContext) -> SensorResult:
        return check_alerts_result(
            context.instance, pipeline, webhook, checks, names, context.cursor
        )

    return check_failure_alerts


def build_alert_sensors(
    settings: PipelineSettings,
    events: Sequence[EventAsset],
    freshness: Sequence[AssetChecksDefinition],
) -> list[SensorDefinition]:
    """None without ALERT_WEBHOOK_URL: the freshness checks still show in the UI."""
    if settings.alert_webhook_url is None:
        return []
    webhook = AlertWebhook(settings.alert_webhook_url)
    names = {event.key: event.name for event in events}
    checks = [
        *(check for event in events for check in event.check_keys),
        *(spec.key for checks_def in freshness for spec in checks_def.check_specs),
    ]
    return [
        build_run_failure_alerts(settings.pipeline_name, webhook, names),
        build_check_failure_alerts(settings.pipeline_name, webhook, checks, names),
    ]

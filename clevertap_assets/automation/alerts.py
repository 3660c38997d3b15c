"""Alerts: a failed run, a failed check (the freshness checks included) each become one
message to ALERT_WEBHOOK_URL and by e-mail to ALERT_EMAIL_TO (`alert_delivery`), naming the
pipeline, the events, the days and the cause.

Run failures are
read from the instance's run status changes, the sensor's cursor being the newest failure
delivered: Dagster's own `run_failure_sensor` moves its cursor past a run also when its
function raises, so a message the webhook or mail server did not take would be lost. A check is alerted
when it starts failing: the sensor's cursor holds, per check, the newest evaluation
handled, and an evaluation that fails after a failed one is the same failure (an hourly
count that keeps finding the same gap, a stale event staying stale), so it says nothing
again until the check has passed. A sender that cannot deliver leaves either cursor where
it was for what was not sent yet, so nothing is lost and nothing is sent twice.
"""

import json
from collections.abc import Mapping, Sequence

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetChecksDefinition,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DefaultSensorStatus,
    EventLogRecord,
    RunStatusChangeRecordsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    deserialize_value,
    sensor,
)
from dagster._core.definitions.run_status_sensor_definition import RunStatusSensorCursor

from clevertap_assets.assets.pipeline_events import EventAsset
from clevertap_assets.assets.reconciliation import GAPS
from clevertap_assets.assets.refusals import latest_refusal
from clevertap_assets.automation.alert_delivery import (
    Alert,
    AlertDeliveryError,
    AlertSender,
    alert_senders,
)
from clevertap_assets.run_tags import days_label, run_days
from clevertap_assets.settings import PipelineSettings

CHECK_ALERTS_INTERVAL_SECONDS = 60
RUN_ALERTS_INTERVAL_SECONDS = 30
RUN_FAILURES_PER_EVALUATION = 25
FRESHNESS_CHECK = "freshness_check"
"""The name Dagster gives each check of `build_last_update_freshness_checks`."""


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


def failure_cause(instance: DagsterInstance, run_failure: EventLogRecord) -> str:
    """The failed steps' own descriptions (a `Failure` names the events not loaded), else
    Dagster's message for the run."""
    causes = []
    steps = instance.get_records_for_run(
        run_failure.run_id, of_type=DagsterEventType.STEP_FAILURE
    ).records
    for step in steps:
        data = step.event_log_entry.get_dagster_event().step_failure_data
        user = data.user_failure_data
        if user is not None and user.description:
            causes.append(user.description)
        elif data.error is not None:
            causes.append(data.error.message.strip())
    message = run_failure.event_log_entry.get_dagster_event().message
    return "; ".join(causes) or (message or "the run failed")


def run_failures_after(instance: DagsterInstance, storage_id: int) -> list[EventLogRecord]:
    """The first run failures recorded after `storage_id`, oldest first."""
    records_filter = RunStatusChangeRecordsFilter(
        DagsterEventType.RUN_FAILURE, after_storage_id=storage_id
    )
    return list(
        instance.fetch_run_status_changes(
            records_filter, RUN_FAILURES_PER_EVALUATION, ascending=True
        ).records
    )


def newest_run_failure(instance: DagsterInstance) -> int:
    """The storage id of the newest run failure; 0 before any."""
    records = instance.fetch_run_status_changes(DagsterEventType.RUN_FAILURE, 1).records
    return records[0].storage_id if records else 0


def handled_run_failure(cursor: str | None) -> int | None:
    """The storage id of the newest run failure handled; also from the cursor that Dagster's
    `run_failure_sensor` of the same name left before this sensor replaced it, so an upgrade
    neither replays nor skips a failure. None for a new sensor."""
    if cursor is None:
        return None
    if cursor.isdigit():
        return int(cursor)
    if RunStatusSensorCursor.is_valid(cursor):
        return deserialize_value(cursor, RunStatusSensorCursor).record_id
    return None


def in_code_location(context: SensorEvaluationContext, run: DagsterRun) -> bool:
    """Whether the run is of this sensor's code location, as Dagster's run status sensors
    judge it (a run launched in process has no origin, nor has a sensor under test)."""
    origin = run.remote_job_origin
    location = context.code_location_origin
    return (
        origin.repository_origin.code_location_origin.location_name if origin else None,
        origin.repository_origin.repository_name if origin else None,
    ) == (location.location_name if location else None, context.repository_name)


def run_alerts_result(
    context: SensorEvaluationContext,
    pipeline: str,
    sender: AlertSender,
    names: Mapping[AssetKey, str],
) -> SensorResult:
    """One message per run of this code location that failed since the newest one
    delivered, oldest first. The first evaluation only records where the failures stand; a
    message not taken leaves the cursor before its run, which the next evaluation sends."""
    instance = context.instance
    handled = handled_run_failure(context.cursor)
    if handled is None:
        return SensorResult(
            skip_reason=SkipReason("started: runs that fail from now on are alerted"),
            cursor=str(newest_run_failure(instance)),
        )
    sent = 0
    for record in run_failures_after(instance, handled):
        run = instance.get_run_by_id(record.run_id)
        if run is not None and in_code_location(context, run):
            alert = run_failure_alert(
                instance, pipeline, run, names, failure_cause(instance, record)
            )
            try:
                sender.send(alert)
            except AlertDeliveryError as error:
                reason = f"{error}; run {run.run_id} is alerted on the next evaluation"
                return SensorResult(skip_reason=SkipReason(reason), cursor=str(handled))
            sent += 1
        handled = record.storage_id
    reason = f"{sent} failed run(s) alerted" if sent else "no run failed"
    return SensorResult(skip_reason=SkipReason(reason), cursor=str(handled))


def build_run_failure_alerts(
    name: str, pipeline: str, sender: AlertSender, names: Mapping[AssetKey, str]
) -> SensorDefinition:
    @sensor(
        name=name,
        minimum_interval_seconds=RUN_ALERTS_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Sends one message to {sender.target} for each failed run.",
    )
    def run_failure_alerts(context: SensorEvaluationContext) -> SensorResult:
        return run_alerts_result(context, pipeline, sender, names)

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
    sender: AlertSender,
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
            sender.send(check_alert(instance, pipeline, evaluation, run, names))
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
    name: str,
    pipeline: str,
    sender: AlertSender,
    checks: Sequence[AssetCheckKey],
    names: Mapping[AssetKey, str],
) -> SensorDefinition:
    @sensor(
        name=name,
        minimum_interval_seconds=CHECK_ALERTS_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Sends one message to {sender.target} when a check of an event (row "
        "counts, duplicates, freshness) starts failing.",
    )
    def check_failure_alerts(context: SensorEvaluationContext) -> SensorResult:
        return check_alerts_result(
            context.instance, pipeline, sender, checks, names, context.cursor
        )

    return check_failure_alerts


def build_alert_sensors(
    settings: PipelineSettings,
    events: Sequence[EventAsset],
    freshness: Sequence[AssetChecksDefinition],
) -> list[SensorDefinition]:
    """Two per configured sender (`run_failure_alerts` and `check_failure_alerts` for the
    webhook, `..._emails` for e-mail), each with its own cursor, so a sender that is down
    delays only its own messages; none without a sender: the freshness checks still show in
    the UI."""
    names = {event.key: event.name for event in events}
    checks = [
        *(check for event in events for check in event.check_keys),
        *(spec.key for checks_def in freshness for spec in checks_def.check_specs),
    ]
    pipeline = settings.pipeline_name
    return [
        sensor_def
        for word, sender in alert_senders(settings).items()
        for sensor_def in (
            build_run_failure_alerts(f"run_failure_{word}", pipeline, sender, names),
            build_check_failure_alerts(f"check_failure_{word}", pipeline, sender, checks, names),
        )
    ]

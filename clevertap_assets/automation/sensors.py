"""The two sensors: reconciliation against CleverTap's counts, and draining the webhook inbox.

`reconciliation_sensor` catches days CleverTap changed after the lookback (a device offline
for a week). Hourly it launches a run of the `row_count_matches_clevertap` checks alone,
holding the account like any reader, so one event's failed count is its own verdict; a later
evaluation reads that run's verdicts and re-runs each day with a gap (not one still settling).
Run keys name the counts seen, so a difference no re-run can fix is not retried every hour.

`webhook_inbox_sensor` turns new inbox entries into ranges of `webhook_events`. The ranges,
stored by the instance as dynamic partitions, are its cursor: each opens after the newest, and
a range with neither a materialization nor a run in progress is requested again, so a lost
cursor neither skips nor reloads an entry. Loaded ranges beyond the newest `RANGES_KEPT` are
deleted as partitions (rows and materializations stay), and no range opens while
`MAX_OPEN_RANGES` wait; the newest range always stays, being the cursor.
"""

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    RunRecord,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from clevertap_assets.assets.checks import loaded_full_days
from clevertap_assets.assets.pipeline_events import (
    RECONCILIATION_CHECK,
    EventAsset,
    PipelineFacts,
)
from clevertap_assets.assets.reconciliation import (
    GAPS,
    RECONCILED_DAYS,
    DayCounts,
)
from clevertap_assets.assets.refusals import latest_refusal
from clevertap_assets.assets.webhooks import WebhookInboxResource, parse_range_key, range_key
from clevertap_assets.automation.runs import in_progress_runs, range_run_request
from clevertap_assets.days import local_today
from clevertap_assets.keys import EVENT_TAG, PARTITION_NAME_TAG, PRIORITY_TAG
from clevertap_assets.materializations import materialization_records
from clevertap_assets.settings import missing_credentials
from clevertap_assets.webhooks.inbox import WebhookInbox

RECONCILE_COUNTS_TAG = "clevertap/reconcile_counts"
"""`<event slug>=<warehouse rows>/<CleverTap's count>` of each event a re-run is for."""
MAX_TAG_CHARS = 4000
RECONCILE_PRIORITY = 5
"""Between a tick's runs and a backfill's."""
RECONCILE_INTERVAL_SECONDS = 3600
"""How often CleverTap's counts are compared."""
RECONCILE_SENSOR_INTERVAL_SECONDS = 300
"""How soon a counting run's gaps are re-run after it ends."""
COUNTING_RUN_TAG = "clevertap/reconcile"
"""On each run of the reconciliation checks alone: the pipeline whose events it counts."""
WEBHOOK_INTERVAL_SECONDS = 30
WEBHOOK_MAX_BACKOFF_SECONDS = 3600
WEBHOOK_RETRY_HISTORY = 8  # failures counted: 30 s * 2**7 is past the hour's cap already
ENTRIES_PER_RANGE = 10_000
"""Inbox entries one tick turns into one range (one run): a run's fixed cost (a process,
the definitions, a DuckDB transaction) is most of a small range's time, so ranges this large
let one run per 30-s tick drain more than the receiver accepts (bench/bench_webhooks.py)."""
RANGES_KEPT = 48
"""Loaded ranges kept as partitions, the newest, so recent loads show in the UI."""
MAX_OPEN_RANGES = 16
"""Ranges not loaded yet (queued, running, failed) at which no new range is opened."""


def reconciliation_result(
    instance: DagsterInstance, pipeline: PipelineFacts, cursor: str | None, now: float
) -> SensorResult:
    """Re-runs of the gaps the latest counting run found (once per run: the cursor is the id
    of the run handled last), else a new counting run once the last is an hour old."""
    latest = _latest_counting_run(instance, pipeline.slug)
    if latest is not None and not latest.dagster_run.is_finished:
        return SensorResult(
            skip_reason=SkipReason(f"counting in run {latest.dagster_run.run_id}"), cursor=cursor
        )
    if latest is not None and latest.dagster_run.run_id != cursor:
        run_id = latest.dagster_run.run_id
        reruns = list(gap_reruns(instance, pipeline.events, run_id))
        reason = None if reruns else f"every day counted in run {run_id} matches CleverTap"
        return SensorResult(run_requests=reruns, skip_reason=reason, cursor=run_id)
    due = latest.create_timestamp.timestamp() + RECONCILE_INTERVAL_SECONDS if latest else now
    if due > now:
        next_count = datetime.fromtimestamp(due, UTC)
        return SensorResult(
            skip_reason=SkipReason(f"next count of CleverTap's days at {next_count:%H:%M} UTC"),
            cursor=cursor,
        )
    today = local_today(pipeline.timezone)
    loaded = [event for event in pipeline.events if _is_comparable(instance, event, today)]
    if not loaded:
        return SensorResult(skip_reason=SkipReason("no full day loaded yet"), cursor=cursor)
    return SensorResult(run_requests=[counting_request(pipeline.slug, loaded, now)], cursor=cursor)


def _is_comparable(instance: DagsterInstance, event: EventAsset, today: date) -> bool:
    """A recent full day loaded, and no refusal in force (its days hold no data)."""
    if latest_refusal(instance, event.key) is not None:
        return False
    return bool(loaded_full_days(instance, event.key, today))


def counting_request(pipeline_slug: str, events: Sequence[EventAsset], now: float) -> RunRequest:
    """A run of the events' reconciliation checks alone, each comparing the recent full days
    its event has loaded."""
    return RunRequest(
        run_key=f"reconcile-counts:{int(now // RECONCILE_INTERVAL_SECONDS)}",
        asset_selection=[],
        asset_check_keys=[event.reconciliation_check for event in events],
        tags={
            COUNTING_RUN_TAG: pipeline_slug,
            EVENT_TAG: f"{len(events)} events' counts",
            PRIORITY_TAG: str(RECONCILE_PRIORITY),
        },
    )


def _latest_counting_run(instance: DagsterInstance, pipeline_slug: str) -> RunRecord | None:
    records = instance.get_run_records(RunsFilter(tags={COUNTING_RUN_TAG: pipeline_slug}), limit=1)
    return records[0] if records else None


def gap_reruns(
    instance: DagsterInstance, events: Sequence[EventAsset], run_id: str
) -> Iterator[RunRequest]:
    """One run per day with a gap in the run's verdicts, over the events with that gap."""
    by_key = {event.key: event for event in events}
    gaps_by_day: dict[date, list[tuple[EventAsset, DayCounts]]] = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.get_dagster_event().event_specific_data
        event = by_key.get(evaluation.asset_key)
        if event is None or evaluation.check_name != RECONCILIATION_CHECK:
            continue
        gaps = evaluation.metadata.get(GAPS)
        for day, counts in (gaps.value if gaps is not None else {}).items():
            gaps_by_day.setdefault(date.fromisoformat(day), []).append((event, DayCounts(**counts)))
    for day, differing in sorted(gaps_by_day.items()):
        seen = ",".join(
            f"{event.slug}={counts.warehouse}/{counts.clevertap}" for event, counts in differing
        )
        yield range_run_request(
            [event for event, _ in differing],
            day,
            day,
            run_key=f"reconcile:{day}:{seen}",
            tags={
                RECONCILE_COUNTS_TAG: seen[:MAX_TAG_CHARS],
                PRIORITY_TAG: str(RECONCILE_PRIORITY),
            },
        )


def build_reconciliation_sensor(
    pipeline: PipelineFacts, reader: AssetsDefinition
) -> SensorDefinition:
    @sensor(
        name="reconciliation_sensor",
        target=reader,
        minimum_interval_seconds=RECONCILE_SENSOR_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            f"Hourly, counts the last {RECONCILED_DAYS} full days each event loaded against "
            "CleverTap's count API in a run of the reconciliation checks, then re-runs the "
            "days with a gap."
        ),
    )
    def reconciliation_sensor(context: SensorEvaluationContext) -> SensorResult:
        if missing := missing_credentials():
            return SensorResult(
                skip_reason=SkipReason(f"{missing} (see .env.example)"), cursor=context.cursor
            )
        return reconciliation_result(context.instance, pipeline, context.cursor, time.time())

    return reconciliation_sensor


def webhook_result(
    instance: DagsterInstance,
    webhook_asset: AssetsDefinition,
    inbox: WebhookInbox,
    now: float | None = None,
    kept: int = RANGES_KEPT,
    max_open: int = MAX_OPEN_RANGES,
) -> SensorResult:
    """Retry the ranges not loaded (each once its backoff has passed), open one range over the
    entries after the newest unless `max_open` wait, and retire loaded ranges but `kept`."""
    ranges_def, key = webhook_asset.partitions_def, webhook_asset.key
    assert isinstance(ranges_def, DynamicPartitionsDefinition)
    ranges = sorted(instance.get_dynamic_partitions(ranges_def.name))  # keys sort like ids
    loaded = materialized_ranges(instance, key, ranges)
    running = {run.tags.get(PARTITION_NAME_TAG) for run in in_progress_runs(instance, [key])}
    open_ranges = [r for r in ranges if r not in loaded]
    unloaded = [r for r in open_ranges if r not in running]
    now = time.time() if now is None else now
    pending = [r for r in unloaded if retry_at(instance, r) <= now]
    after_id = parse_range_key(ranges[-1])[1] if ranges else 0
    full = len(open_ranges) >= max_open
    entries = [] if full else inbox.read_after(after_id, ENTRIES_PER_RANGE)
    new = [range_key(after_id + 1, entries[-1].id)] if entries else []
    retired = retired_ranges(ranges, loaded, running, kept)
    requests = [RunRequest(asset_selection=[key], partition_key=r) for r in [*pending, *new]]
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[
            *([ranges_def.build_add_request(new)] if new else []),
            *([ranges_def.build_delete_request(retired)] if retired else []),
        ],
        skip_reason=None if requests else SkipReason(_idle_reason(after_id, unloaded, full)),
    )


def _idle_reason(after_id: int, unloaded: Sequence[str], full: bool) -> str:
    if full:
        return (
            f"{len(unloaded)} range(s) are not loaded yet; entries after id {after_id} wait "
            "in the inbox until one is"
        )
    waiting = f"; {len(unloaded)} failed range(s) wait for their retry" if unloaded else ""
    return f"no inbox entry after id {after_id}{waiting}"


def materialized_ranges(
    instance: DagsterInstance, key: AssetKey, ranges: Sequence[str]
) -> set[str]:
    """The ranges among `ranges` with a materialization: asked for those ranges only, so a
    tick's cost does not grow with every range ever loaded."""
    if not ranges:
        return set()
    records_filter = AssetRecordsFilter(asset_key=key, asset_partitions=list(ranges))
    return {
        record.partition_key
        for record in materialization_records(instance, records_filter, page_size=1000)
        if record.partition_key
    }


def retired_ranges(
    ranges: Sequence[str], loaded: set[str], running: set[str | None], kept: int
) -> list[str]:
    """Loaded ranges with no run in progress, but the newest `kept` of them and the newest
    range (the cursor): with at most `max_open` ranges not loaded, the instance then holds at
    most `kept + max_open` ranges."""
    done = [r for r in ranges if r in loaded and r not in running]
    return [r for r in done[: max(0, len(done) - kept)] if r != ranges[-1]]


def retry_at(instance: DagsterInstance, partition_key: str) -> float:
    """When a range may be requested again: at once after its first failure (the next tick),
    then after 60 s, 120 s, ... up to an hour after its latest failure, so a range that keeps
    failing (a warehouse down, a bad payload) is not retried every tick forever."""
    failed = instance.get_run_records(
        RunsFilter(tags={PARTITION_NAME_TAG: partition_key}, statuses=[DagsterRunStatus.FAILURE]),
        limit=WEBHOOK_RETRY_HISTORY,
    )
    if len(failed) < 2:
        return 0.0
    latest = max(record.end_time or 0.0 for record in failed)
    backoff = min(WEBHOOK_INTERVAL_SECONDS * 2 ** (len(failed) - 1), WEBHOOK_MAX_BACKOFF_SECONDS)
    return latest + backoff


def build_webhook_inbox_sensor(webhook_asset: AssetsDefinition) -> SensorDefinition:
    @sensor(
        name="webhook_inbox_sensor",
        target=webhook_asset,
        minimum_interval_seconds=WEBHOOK_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description="Loads new webhook inbox entries, a range of ids per run, each exactly once.",
    )
    def webhook_inbox_sensor(
        context: SensorEvaluationContext, webhook_inbox: WebhookInboxResource
    ) -> SensorResult:
        return webhook_result(context.instance, webhook_asset, webhook_inbox.open())

    return webhook_inbox_sensor

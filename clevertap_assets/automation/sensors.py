"""The two sensors: reconciliation against CleverTap's counts, and draining the webhook inbox.

`reconciliation_sensor` goes beyond Hevo: the schedule reloads only the lookback days, so a day
that CleverTap still changed afterwards (a device that was offline for a week) would stay short
forever. Hourly, it compares rows per day in each event table with CleverTap's count API over
the last `RECONCILED_DAYS` full days and re-runs the days that differ. Today is skipped: its
count moves while the schedule keeps reloading it. Each request's run key names the counts it
saw, so the daemon launches one re-run per discrepancy; a difference that a re-run cannot fix
(records over the size limits are skipped by design) is not retried every hour.

`webhook_inbox_sensor` turns new inbox entries into ranges of the `webhook_events` asset (see
assets/webhooks.py for why a range is loaded exactly once). The ranges it has created, stored
by the instance as dynamic partitions, are its cursor: each new range starts after the newest
one, and a range without a materialization and without a run in progress (its run failed, or
the daemon stopped before launching it) is requested again. A new sensor, a restarted daemon
or a lost cursor therefore neither skips nor reloads an entry.

The partitions stay bounded however long webhooks arrive: a loaded range is never loaded
again, so all but the newest `RANGES_KEPT` loaded ranges are deleted as partitions (their rows
stay in the table, their materializations with first and last inbox id in the asset's
history), and no new range is opened while `MAX_OPEN_RANGES` wait to be loaded (the entries
wait in the inbox, and the next range takes up to `ENTRIES_PER_RANGE` of them). The newest
range always stays: it is the cursor.
"""

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, timedelta

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    build_resources,
    sensor,
)

from clevertap_assets.assets.pipeline_events import EventAsset
from clevertap_assets.assets.reconciliation import RECONCILED_DAYS, DayCounts, differing_days
from clevertap_assets.assets.webhooks import (
    WebhookInboxResource,
    parse_range_key,
    range_key,
    webhook_ranges,
)
from clevertap_assets.automation.runs import assets_in_progress, in_progress_runs, range_run_request
from clevertap_assets.days import days_between, local_today
from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.keys import CLEVERTAP, PARTITION_NAME_TAG, WAREHOUSE_STATS
from clevertap_assets.liveness import PRIORITY_TAG
from clevertap_assets.settings import PipelineSettings, missing_credentials
from clevertap_assets.source.client import CleverTapResource
from clevertap_assets.webhooks.inbox import WebhookInbox

RECONCILE_COUNTS_TAG = "clevertap/reconcile_counts"
"""`<event slug>=<warehouse rows>/<CleverTap's count>` of each event a re-run is for."""
MAX_TAG_CHARS = 4000
RECONCILE_PRIORITY = 5
"""Between a tick's runs and a backfill's."""
RECONCILE_INTERVAL_SECONDS = 3600
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


def reconciliation_requests(
    instance: DagsterInstance,
    settings: PipelineSettings,
    events: Sequence[EventAsset],
    clevertap: CleverTapResource,
    warehouse_stats: EventTableStats,
    today: date,
    days: int = RECONCILED_DAYS,
) -> Iterator[RunRequest]:
    """One run per day whose row count differs from CleverTap's for some events, over loaded
    days, with those events.

    Only days that were loaded are compared: a missing day is the schedule's to load, and an
    event CleverTap will not export never has one. An event with a run in progress is left
    for the next evaluation, since that run may be changing the very rows being counted.
    """
    first_day = today - timedelta(days=days)
    busy = assets_in_progress(instance, [event.key for event in events])
    differing_by_day: dict[date, list[tuple[EventAsset, DayCounts]]] = {}
    for event in events:
        if event.key in busy:
            continue
        loaded = instance.get_materialized_partitions(event.key)
        compared = [
            d for d in days_between(first_day, today - timedelta(days=1)) if d.isoformat() in loaded
        ]
        if not compared:
            continue
        differing = differing_days(
            clevertap, warehouse_stats, settings.warehouse_schema, event.table, event.name, compared
        )
        for day, counts in differing.items():
            differing_by_day.setdefault(day, []).append((event, counts))
    for day, differing in sorted(differing_by_day.items()):
        seen = ",".join(
            f"{event.slug}={counts.warehouse}/{counts.clevertap}" for event, counts in differing
        )
        yield range_run_request(
            [event.key for event, _ in differing],
            day,
            day,
            run_key=f"reconcile:{day}:{seen}",
            tags={
                RECONCILE_COUNTS_TAG: seen[:MAX_TAG_CHARS],
                PRIORITY_TAG: str(RECONCILE_PRIORITY),
            },
        )


def build_reconciliation_sensor(
    settings: PipelineSettings,
    reader: AssetsDefinition,
    events: Sequence[EventAsset],
    resources: Mapping[str, object],
) -> SensorDefinition:
    """The sensor builds its CleverTap and warehouse resources itself, after checking the
    credentials: Dagster builds a sensor's declared resources before calling it, so a missing
    `EnvVar` would fail every evaluation with Dagster's raw "environment variable ... is not
    set" instead of one skip naming what to set."""
    needed = {key: resources[key] for key in (CLEVERTAP, WAREHOUSE_STATS)}

    @sensor(
        name="reconciliation_sensor",
        target=reader,
        minimum_interval_seconds=RECONCILE_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            f"Re-runs any of the last {RECONCILED_DAYS} full days whose row count differs "
            "from CleverTap's count API."
        ),
    )
    def reconciliation_sensor(context: SensorEvaluationContext) -> list[RunRequest] | SkipReason:
        if missing := missing_credentials():
            return SkipReason(f"{missing} (see .env.example)")
        today = local_today(settings.timezone)
        with build_resources(needed) as built:
            requests = list(
                reconciliation_requests(
                    context.instance,
                    settings,
                    events,
                    getattr(built, CLEVERTAP),
                    getattr(built, WAREHOUSE_STATS),
                    today,
                )
            )
        return requests or SkipReason("every loaded day matches CleverTap's counts")

    return reconciliation_sensor


def webhook_result(
    instance: DagsterInstance,
    settings: PipelineSettings,
    webhook_asset: AssetsDefinition,
    inbox: WebhookInbox,
    now: float | None = None,
    kept: int = RANGES_KEPT,
    max_open: int = MAX_OPEN_RANGES,
) -> SensorResult:
    """Retry the ranges not loaded (each once its backoff has passed), open one range over the
    entries after the newest unless `max_open` wait, and retire loaded ranges but `kept`."""
    ranges_def = webhook_ranges(settings)
    key = webhook_asset.key
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
    found: set[str] = set()
    cursor = None
    while True:
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=list(ranges)),
            limit=1000,
            cursor=cursor,
        )
        found |= {record.partition_key for record in result.records if record.partition_key}
        if not result.has_more:
            return found
        cursor = result.cursor


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


def build_webhook_inbox_sensor(
    settings: PipelineSettings, webhook_asset: AssetsDefinition
) -> SensorDefinition:
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
        return webhook_result(context.instance, settings, webhook_asset, webhook_inbox.open())

    return webhook_inbox_sensor

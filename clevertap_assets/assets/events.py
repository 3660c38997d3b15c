"""The event assets: one daily-partitioned asset per selected CleverTap event, all read by one
step per run, the account's reader.

CleverTap allows 3 requests in flight per account, so the events of one account are one
`multi_asset`: every event keeps its own asset, table, partitions, metadata and checks in the
UI, while a run's selected events share one step, which holds the account's pool slot
(`liveness.account_lease`, one reader per account by default) and reads every event and day
through the account's request slots at once (`batch.export`). A backfill is cut into runs of
at most `BACKFILL_DAYS_PER_RUN` days, so a scheduled tick, queued at a higher priority, waits
for one chunk at most.
"""

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import date, timedelta

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    BackfillPolicy,
    BetaWarning,
    Failure,
    JsonMetadataValue,
    MetadataValue,
    Output,
    ResourceParam,
    TableColumn,
    TableSchema,
    multi_asset,
)

from clevertap_assets.assets.catalog import (
    described,
    event_description,
    event_tags,
    system_column_schema,
)
from clevertap_assets.assets.checks import (
    ReconciliationCounts,
    event_check_results,
    event_check_specs,
)
from clevertap_assets.assets.freshness import freshness_policy
from clevertap_assets.assets.pipeline_events import EventAsset, PipelineFacts
from clevertap_assets.assets.refusals import refusal_metadata, source_digest
from clevertap_assets.batch.export import EventRead, EventWindow, read_events
from clevertap_assets.batch.spool import EventBatch, SpoolStats
from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.keys import (
    CLEVERTAP_EXPORTS_PER_ACCOUNT,
    COLUMN_SCHEMA,
    PARTITION_ROW_COUNT,
    WAREHOUSE_IO_MANAGER,
    clevertap_pool,
)
from clevertap_assets.liveness import account_lease, heartbeat
from clevertap_assets.materializations import materialization_records
from clevertap_assets.naming import ColumnNames
from clevertap_assets.run_tags import tag_own_run
from clevertap_assets.source.client import CleverTapResource
from clevertap_assets.source.regions import base_url_for

BACKFILL_DAYS_PER_RUN = 7
"""Days one backfill run reads: a week of every selected event holds the account's reader
for minutes, the longest a scheduled tick then waits for it."""


def build_event_assets(pipeline: PipelineFacts) -> AssetsDefinition:
    """The account's reader: one multi-asset over every event, any subset of them a run."""
    events = pipeline.events
    outs = {
        event.slug: AssetOut(
            key=event.key,
            description=event_description(event),
            io_manager_key=WAREHOUSE_IO_MANAGER,
            is_required=False,
            kinds={"clevertap", pipeline.destination},
            owners=list(pipeline.owners),
            tags=event_tags(event),
            freshness_policy=freshness_policy(pipeline.freshness_bound),
            metadata={
                "clevertap_event": event.name,
                "schema": pipeline.schema,
                "table": event.table,
                "partition_expr": "event_time",
                COLUMN_SCHEMA: system_column_schema(),
            },
        )
        for event in events
    }
    # `backfill_policy` is beta in Dagster 1.13; its warning, on every load, only buried output.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        reader = multi_asset(
            name=f"{pipeline.slug}_events",
            outs=outs,
            group_name=pipeline.slug,
            partitions_def=pipeline.partitions_def,
            backfill_policy=BackfillPolicy.multi_run(BACKFILL_DAYS_PER_RUN),
            can_subset=True,
            pool=pipeline.pool,
            check_specs=event_check_specs(events),
        )

    @reader
    def clevertap_events(
        context: AssetExecutionContext,
        clevertap: CleverTapResource,
        warehouse_stats: ResourceParam[EventTableStats],
    ) -> Iterator[object]:
        selected = [event for event in events if event.key in context.selected_asset_keys]
        tag_own_run(context, [event.key for event in selected])
        loaded: list[EventAsset] = []
        failures: list[str] = []
        with (
            heartbeat(context.instance, context.run.run_id, context.log),
            ReconciliationCounts(context, pipeline, clevertap) as counts,
        ):
            if selected:
                reads = _read(context, clevertap, warehouse_stats, pipeline, selected)
                for event, read in reads:
                    if read.refused:
                        yield _refusal(context, clevertap, event)
                    elif read.error is not None:
                        context.log.error(f"{event.name}: {read.error}")
                        failures.append(f"{event.name!r}: {read.error}")
                    else:
                        yield _output(context, event, read)
                        loaded.append(event)
            yield from event_check_results(context, pipeline, warehouse_stats, loaded, counts)
        if failures:
            raise Failure(
                description=f"{len(failures)} of {len(selected)} events were not loaded "
                "(the others were): " + "; ".join(failures)
            )

    return clevertap_events


def _read(
    context: AssetExecutionContext,
    clevertap: CleverTapResource,
    warehouse_stats: EventTableStats,
    pipeline: PipelineFacts,
    events: Sequence[EventAsset],
) -> Iterator[tuple[EventAsset, EventRead]]:
    """Every selected event over the run's days, holding the account's reader; each event is
    handed on (and written) while the others are still read. A pool limit raised above one
    reader shares the account's request slots among the readers."""
    days = context.partition_time_window
    first_day, last_day = days.start.date(), (days.end - timedelta(days=1)).date()
    by_name = {event.name: event for event in events}
    windows = [
        EventWindow(
            event.normalise,
            first_day,
            last_day,
            known_column_names(context, warehouse_stats, pipeline.schema, event.table, event.key),
            pipeline.app_fields,
        )
        for event in events
    ]
    pool = clevertap_pool(clevertap.account_id)
    step_key = context.op_execution_context.get_step_execution_context().step.key
    with account_lease(
        context.instance, pool, context.run.run_id, step_key, context.log
    ) as readers:
        requests = min(clevertap.max_concurrent_requests, CLEVERTAP_EXPORTS_PER_ACCOUNT)
        for read in read_events(clevertap, windows, max(1, requests // readers), context.log):
            yield by_name[read.window.event_name], read


def _refusal(
    context: AssetExecutionContext, clevertap: CleverTapResource, event: EventAsset
) -> Output[None]:
    """The event's days materialized as refused, with no batch: the IO manager writes
    nothing, and the run and its backfill end green."""
    context.log.warning(
        f"CleverTap does not allow exporting {event.name!r} (notification events are not "
        "exportable); its days are recorded as refused, nothing in the warehouse was changed"
    )
    source = source_digest(clevertap.account_id, base_url_for(clevertap.region, clevertap.api_url))
    return Output(None, output_name=event.slug, metadata=refusal_metadata(source))


def _output(
    context: AssetExecutionContext, event: EventAsset, read: EventRead
) -> Output[EventBatch]:
    """The batch, each day's materialization with that day's own figures first, then the
    run's totals and the IO manager's, then the preview and the column maps.

    Dagster merges a materialization's metadata as the Output's, the IO manager's, then the
    partition's own, and a key stays where it first appears: so the day's keys lead the
    Output's metadata (holding the run's sums, which each day's own figures replace), and the
    preview and maps, the same on every day, come with the partition's metadata, last."""
    batch = read.batch
    assert batch is not None
    days = [date.fromisoformat(key) for key in context.partition_keys]
    column_keys = read.window.names.record()
    totals = {
        **day_figures(
            batch.rows, sum(batch.duplicates_by_day.values()), sum(batch.skipped_by_day.values())
        ),
        **read_metadata(read),
        "table": event.table,
    }
    maps = {
        "preview": _preview(batch, days),
        COLUMN_SCHEMA: _column_schema(batch),
        COLUMN_KEYS: MetadataValue.json(column_keys),
    }
    for day in days:
        context.add_asset_metadata(
            {**day_metadata(batch, day), **maps}, asset_key=event.key, partition_key=day.isoformat()
        )
    _warn_skipped(context, event, read.spool)
    return Output(replace(batch, column_keys=column_keys), output_name=event.slug, metadata=totals)


COLUMN_KEYS = "column_keys"
"""Output metadata: every data column and the property key path it holds (see ColumnNames)."""


def known_column_names(
    context: AssetExecutionContext,
    warehouse_stats: EventTableStats,
    schema: str,
    table: str,
    key: AssetKey,
) -> ColumnNames:
    """The columns the table's keys own, as stored with the tables
    (`destinations.column_map`). Only a table with no stored map yet (loaded before its
    destination stored one) is named from the instance's record, which its first load then
    stores: from then on the map is read from the warehouse alone."""
    stored = warehouse_stats.column_keys(schema, table)
    return ColumnNames(stored or recorded_column_keys(context, key))


def recorded_column_keys(context: AssetExecutionContext, key: AssetKey) -> dict[str, list[str]]:
    """The columns the asset's keys were given, from its latest materialization that loaded
    data (a refusal's records none)."""
    for record in materialization_records(context.instance, key, page_size=100):
        recorded = record.asset_materialization.metadata.get(COLUMN_KEYS)
        if isinstance(recorded, JsonMetadataValue):
            return recorded.value
    return {}


def read_metadata(read: EventRead) -> dict[str, object]:
    """What reading one event's window cost and kept, on its materialization."""
    stats, batch, fetch = read.spool, read.batch, read.fetch
    assert batch is not None
    skipped = stats.oversize_records + stats.oversize_rows + stats.invalid_ts
    kept = stats.received - skipped - stats.outside_window
    window = read.window
    return {
        "window_records_received": stats.received,
        "window_duplicates_dropped": kept - batch.rows,
        "window_rows_written": batch.rows,
        "window_records_skipped": skipped,
        "records_over_size_limit": stats.oversize_records,
        "rows_over_size_limit": stats.oversize_rows,
        "records_with_invalid_ts": stats.invalid_ts,
        "records_outside_window": stats.outside_window,
        "api_cursors": read.cursors,
        "api_pages": fetch.pages,
        "api_requests": fetch.requests,
        "api_retries": fetch.retries,
        "bytes_received": stats.bytes,
        "seconds": read.seconds,
        "dedupe_seconds": read.dedupe_seconds,
        "rows_per_second": round(batch.rows / read.seconds, 1) if read.seconds else 0.0,
        "window": f"{window.first_day}..{window.last_day}",
    }


def _warn_skipped(context: AssetExecutionContext, event: EventAsset, stats: SpoolStats) -> None:
    limits = event.normalise
    for count, reason in (
        (
            stats.oversize_records,
            f"records over {limits.max_record_bytes:,} bytes were not ingested",
        ),
        (stats.oversize_rows, f"rows over {limits.max_row_bytes:,} bytes were rejected"),
        (stats.invalid_ts, "records without a readable ts were skipped"),
        (
            stats.outside_window,
            "records outside the requested days were not loaded (their ts lies on other days; "
            "many of them fail the event, see CLEVERTAP_TIMEZONE)",
        ),
    ):
        if count:
            context.log.warning(f"{event.name}: {count} {reason}")


def day_metadata(batch: EventBatch, day: date) -> dict[str, object]:
    """What one partition's materialization says: that day's rows, dropped copies and records
    skipped over the size limits. A range run is one Output for many days; Dagster would
    otherwise give every partition the window's totals (which stay on it as `window_*`).
    Records without a readable `ts` have no day: they count in the window only."""
    return day_figures(
        batch.rows_by_day.get(day, 0),
        batch.duplicates_by_day.get(day, 0),
        batch.skipped_by_day.get(day, 0),
    )


def day_figures(rows: int, duplicates: int, skipped: int) -> dict[str, object]:
    """The figures of some days: rows written, copies dropped, records skipped."""
    return {
        "rows_written": rows,
        "duplicates_dropped": duplicates,
        "records_skipped": skipped,
        PARTITION_ROW_COUNT: rows,
    }


def _column_schema(batch: EventBatch) -> TableSchema:
    return TableSchema(
        columns=[described(TableColumn(n, kind.value)) for n, kind in batch.columns().items()]
    )


PREVIEW_ROWS = 5
PREVIEW_PROPERTIES = 3
PREVIEW_CELL_CHARS = 24


def _preview(batch: EventBatch, days: list[date]) -> MetadataValue:
    """What the UI's preview shows at a glance, in two small tables that fit its dialog: each
    day of the window (rows, copies dropped, records skipped) and a few rows' time and event
    properties, each value cut short. A frame of every column printed as markdown gave
    headers cut to a few characters and values wrapped over many lines."""
    per_day = [
        (
            day,
            batch.rows_by_day.get(day, 0),
            batch.duplicates_by_day.get(day, 0),
            batch.skipped_by_day.get(day, 0),
        )
        for day in days
    ]
    days_table = _markdown_table(["day", "rows", "duplicates dropped", "skipped"], per_day)
    parts = [f"Each day of this run:\n\n{days_table}"]
    sample = batch.preview(PREVIEW_ROWS)
    if not sample.is_empty():
        properties = [c for c in sample.columns if c.startswith("event_props")]
        shown = ["event_time", *properties[:PREVIEW_PROPERTIES]]
        header = [name.removeprefix("event_props__") for name in shown]
        table = _markdown_table(header, sample.select(shown).rows())
        parts.append(f"First rows (event properties without `event_props__`):\n\n{table}")
    return MetadataValue.md("\n\n".join(parts))


def _markdown_table(header: list[str], rows: list) -> str:
    lines = [header, ["---"] * len(header), *[[_cell(v) for v in row] for row in rows]]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def _cell(value: object) -> str:
    text = "" if value is None else str(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"

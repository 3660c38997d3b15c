"""`webhook_events`: the webhook inbox loaded into `<TABLE_PREFIX>_webhook_events`, exactly once.

Partitions are ranges of inbox ids, `<first id>-<last id>` zero-padded, tiling the id space
without overlap (`webhook_inbox_sensor` opens each after the newest). Every row carries its
range in `_inbox_range`, the partition column, so a range loads like a day of events (delete
and insert in one transaction): loaded twice, it still holds each payload once, and a range is
done exactly when Dagster has its materialization.

A payload becomes one row per profile, shaped like an exported record so the same normaliser
and AUTO_MAPPING apply: `profile`, `event_props`, `session_props`, `inbox_id`, `profile_index`,
`target_id`, `payload_sha256`, `key_values`; `ts` is when the receiver stored it. Inbox id and
profile index make `_record_id` stable per (payload, profile). CleverTap's payload carries no
event id, so a body equal to one received within `WEBHOOK_REDELIVERY_MINUTES` is taken for a
re-delivery and loads once (0 keeps every delivery; the README states the trade-off).
"""

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    ConfigurableResource,
    MetadataValue,
    Output,
    ResourceParam,
    asset,
)

from clevertap_assets.assets.events import COLUMN_KEYS, known_column_names
from clevertap_assets.assets.pipeline_events import PipelineFacts, WebhookAsset
from clevertap_assets.batch.spool import EventBatch, EventSpool
from clevertap_assets.destinations.stats import EventTableStats
from clevertap_assets.errors import SettingsError
from clevertap_assets.keys import WAREHOUSE_IO_MANAGER
from clevertap_assets.liveness import heartbeat
from clevertap_assets.naming import ColumnNames
from clevertap_assets.source.normalise import JSON_SECTIONS, normalise_page
from clevertap_assets.webhooks.inbox import (
    InboxEntry,
    WebhookInbox,
    WebhookProfile,
    expand_entry,
)

RANGE_COLUMN = "_inbox_range"
RECORDS_PER_PAGE = 5000
_ID_DIGITS = 12
_SECTION_KEYS = {"event_properties": "event_props", "session_props": "session_props"}
_JSON_COLUMNS = frozenset({*JSON_SECTIONS, "key_values"})


class WebhookInboxResource(ConfigurableResource):
    """The inbox file the receiver writes (WEBHOOK_INBOX_PATH), for the sensor and the asset."""

    path: str

    def open(self) -> WebhookInbox:
        return WebhookInbox(self.path)


def range_key(first_id: int, last_id: int) -> str:
    return f"{first_id:0{_ID_DIGITS}d}-{last_id:0{_ID_DIGITS}d}"


def parse_range_key(key: str) -> tuple[int, int]:
    first, _, last = key.partition("-")
    return int(first), int(last)


def read_range(
    inbox: WebhookInbox, first_id: int, last_id: int, window: timedelta
) -> tuple[list[InboxEntry], int]:
    """The first copies of the entries with an id in [first_id, last_id] (a body equal to one
    received at most `window` before is CleverTap re-sending a delivery whose 200 it missed),
    and the number of re-deliveries left out; always the same for a range, since entries never
    change and no new entry can get an id the sensor has already seen."""
    return inbox.read_first_copies(first_id, last_id, window)


def build_webhook_asset(pipeline: PipelineFacts) -> AssetsDefinition:
    webhook = pipeline.webhook
    key, table = webhook.key, webhook.table
    if key in {event.key for event in pipeline.events}:
        raise SettingsError(
            f"an event in {pipeline.events_csv} would load into the webhook table "
            f"{table!r}; exclude it with CLEVERTAP_EXCLUDE_EVENTS"
        )

    @asset(
        key=key,
        # A group of its own: `group:<pipeline>` then selects exactly the daily event assets,
        # which a `--partition-range` of days can materialize (webhook ranges are not days).
        group_name=webhook.group,
        description="CleverTap webhook payloads, one row per profile, by range of inbox ids.",
        partitions_def=webhook.ranges,
        io_manager_key=WAREHOUSE_IO_MANAGER,
        kinds={"clevertap", pipeline.destination},
        metadata={
            "schema": pipeline.schema,
            "table": table,
            "partition_expr": RANGE_COLUMN,
        },
    )
    def webhook_events(
        context: AssetExecutionContext,
        webhook_inbox: WebhookInboxResource,
        warehouse_stats: ResourceParam[EventTableStats],
    ) -> Iterator[Output[EventBatch]]:
        """The heartbeat lasts until the IO manager has written the range (the generator
        is suspended at the yield while it writes)."""
        first_id, last_id = parse_range_key(context.partition_key)
        with heartbeat(context.instance, context.run.run_id, context.log):
            entries, redeliveries = read_range(
                webhook_inbox.open(), first_id, last_id, webhook.redelivery_window
            )
            names = known_column_names(context, warehouse_stats, pipeline.schema, table, key)
            batch, records = _load_batch(webhook, context.partition_key, entries, names)
            yield Output(
                replace(batch, column_keys=names.record()),
                metadata={
                    "payloads": len(entries),
                    "redeliveries_dropped": redeliveries,
                    "profiles": records,
                    "rows_written": batch.rows,
                    "first_inbox_id": first_id,
                    "last_inbox_id": last_id,
                    "table": table,
                    COLUMN_KEYS: MetadataValue.json(names.record()),
                },
            )

    return webhook_events


def _load_batch(
    webhook: WebhookAsset,
    partition_key: str,
    entries: Sequence[InboxEntry],
    names: ColumnNames,
) -> tuple[EventBatch, int]:
    json_columns = frozenset() if webhook.auto_mapping else _JSON_COLUMNS
    received = 0
    with EventSpool(event_name="webhook") as spool:
        for records in _pages(entries, webhook.auto_mapping):
            page = normalise_page(records, webhook.normalise, names)
            frame = page.frame.with_columns(pl.lit(partition_key).alias(RANGE_COLUMN))
            json_in_page = json_columns & set(frame.columns)
            json_columns_in_page = page.json_columns | json_in_page
            spool.add(replace(page, frame=frame, json_columns=json_columns_in_page), len(records))
            received += len(records)
        return spool.finish(loaded_at=datetime.now(UTC)), received


def _pages(entries: Sequence[InboxEntry], auto_mapping: bool) -> Iterator[list[dict[str, Any]]]:
    """Shaped records in pages, so a range of broadcast payloads never sits in one frame."""
    page: list[dict[str, Any]] = []
    for entry in entries:
        sha256 = hashlib.sha256(entry.body).hexdigest()
        for record in expand_entry(entry):
            page.append(_shaped(entry, record, sha256, auto_mapping))
            if len(page) == RECORDS_PER_PAGE:
                yield page
                page = []
    if page:
        yield page


def _shaped(
    entry: InboxEntry, record: WebhookProfile, sha256: str, auto_mapping: bool
) -> dict[str, Any]:
    """A webhook profile in an exported event's shape (see the module docstring)."""
    profile = record.profile
    sections = {
        "profile": {k: v for k, v in profile.items() if k not in _SECTION_KEYS},
        **{section: profile.get(key) for key, section in _SECTION_KEYS.items()},
        "key_values": record.key_values,
    }
    if not auto_mapping:
        sections = {
            name: None if value is None else orjson.dumps(value).decode()
            for name, value in sections.items()
        }
    target_id = record.target_id
    return {
        "ts": int(entry.received_at.timestamp()),
        "inbox_id": entry.id,
        "profile_index": record.profile_index,
        "target_id": None if target_id is None else str(target_id),
        "payload_sha256": sha256,
        **sections,
    }

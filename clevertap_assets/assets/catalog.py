"""What the catalog says about each event asset, from what CleverTap exports.

The description is the Description column of the dashboard's events export, the Event Type
column is a tag (filterable in the catalog), owners come from ASSET_OWNERS, and the system
columns every event table has are described once here; the data columns, which differ per
event and per day, are added by each materialization's column schema.
"""

import re

from dagster import TableColumn, TableSchema

from clevertap_assets.assets.pipeline_events import EventAsset
from clevertap_assets.batch.kinds import Kind

EVENT_TYPE_TAG = "clevertap/event_type"

SYSTEM_COLUMN_DESCRIPTIONS = {
    # Every column the pipeline adds to a record's own (source.normalise's SYSTEM_COLUMNS,
    # and the load's time), in table order.
    "_record_id": "SHA-256 of the record as CleverTap exported it: a re-run or backfill "
    "replaces a record rather than adding a copy (checked by no_duplicate_record_ids)",
    "event_name": "The CleverTap event, spelled as in the dashboard",
    "ts": "CleverTap's own time of the event: yyyyMMddHHmmss in the project's time zone "
    "(older exports: epoch seconds or milliseconds), as exported",
    "event_time": "ts as a timestamp in the project's time zone (CLEVERTAP_TIMEZONE), "
    "without zone: the day partition the row belongs to",
    "event_time_utc": "event_time converted to UTC",
    "_loaded_at": "When the run that wrote the row loaded it (UTC)",
}
SYSTEM_COLUMN_KINDS = {
    "ts": Kind.BIGINT,
    "event_time": Kind.TIMESTAMP,
    "event_time_utc": Kind.TIMESTAMPTZ,
    "_loaded_at": Kind.TIMESTAMPTZ,
}
_TAG_VALUE = re.compile(r"[^A-Za-z0-9_.-]+")


def event_description(event: EventAsset) -> str:
    """CleverTap's description first: it is what the catalog's list shows."""
    kind = f"{event.event_type} event" if event.event_type else "event"
    source = f"CleverTap {kind} {event.name!r}, one row per record, by local day."
    return f"{event.description}\n\n{source}" if event.description else source


def event_tags(event: EventAsset) -> dict[str, str]:
    """The Event Type as a tag, in the characters Dagster allows in a tag value."""
    value = _TAG_VALUE.sub("_", event.event_type).strip("_")[:63]
    return {EVENT_TYPE_TAG: value} if value else {}


def described(column: TableColumn) -> TableColumn:
    """The column, with its description when it is a system column."""
    description = SYSTEM_COLUMN_DESCRIPTIONS.get(column.name)
    if description is None:
        return column
    return TableColumn(column.name, column.type, description=description)


def system_column_schema() -> TableSchema:
    """The columns every event table has, described, for the asset's definition."""
    return TableSchema(
        columns=[
            described(TableColumn(name, SYSTEM_COLUMN_KINDS.get(name, Kind.TEXT).value))
            for name in SYSTEM_COLUMN_DESCRIPTIONS
        ]
    )

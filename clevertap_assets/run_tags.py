"""What a run's tags say about it in the runs list: which events and which days it loads.

A tick or sensor request carries these tags from the start; a run launched from the UI
(`__ASSET_JOB`, a backfill's runs) passes through none of our code before it starts, so the
account's reader adds the missing ones to its own run when its step begins. Alerts read the
same tags, falling back to Dagster's partition tags for a run that failed before its step.
"""

from collections.abc import Mapping, Sequence
from datetime import date

from dagster import AssetExecutionContext, AssetKey

from clevertap_assets.keys import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    DAYS_TAG,
    EVENT_TAG,
    PARTITION_NAME_TAG,
)


def event_tag(keys: Sequence[AssetKey]) -> str:
    """The event's asset name, or how many events: a tag value stays short."""
    return keys[0].path[-1] if len(keys) == 1 else f"{len(keys)} events"


def days_label(first: date | str, last: date | str) -> str:
    return str(first) if str(first) == str(last) else f"{first}...{last}"


def load_tags(keys: Sequence[AssetKey], first: date, last: date) -> dict[str, str]:
    """The tags of a run loading `keys` over the days `first` to `last`."""
    return {
        EVENT_TAG: event_tag(keys),
        DAYS_TAG: days_label(first, last),
        ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
    }


def tag_own_run(context: AssetExecutionContext, keys: Sequence[AssetKey]) -> None:
    """Adds the event and days tags its run lacks (a run launched from the UI has neither)."""
    if not keys:  # a run of the checks alone has no days
        return
    partitions = context.partition_key_range
    wanted = {
        EVENT_TAG: event_tag(keys),
        DAYS_TAG: days_label(partitions.start, partitions.end),
    }
    missing = {tag: value for tag, value in wanted.items() if tag not in context.run.tags}
    if missing:
        context.instance.add_run_tags(context.run.run_id, missing)


def run_days(tags: Mapping[str, str]) -> str | None:
    """The days a run loads, from its tags: ours, else Dagster's range or partition tag."""
    if DAYS_TAG in tags:
        return tags[DAYS_TAG]
    if ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
        return days_label(
            tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]
        )
    return tags.get(PARTITION_NAME_TAG)

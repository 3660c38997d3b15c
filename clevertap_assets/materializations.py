"""Reading an asset's materializations from the instance, newest first, page after page: a
caller stops as soon as it has what it needs, so a long history is not read to its end."""

from collections.abc import Iterator

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, EventLogRecord


def materialization_records(
    instance: DagsterInstance, records_filter: AssetKey | AssetRecordsFilter, page_size: int
) -> Iterator[EventLogRecord]:
    cursor = None
    while True:
        result = instance.fetch_materializations(records_filter, limit=page_size, cursor=cursor)
        yield from result.records
        if not result.has_more:
            return
        cursor = result.cursor

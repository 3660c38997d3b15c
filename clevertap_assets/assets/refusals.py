"""Events CleverTap refuses to export, remembered so the schedule stops asking for them.

CleverTap answers "Export not allowed for this event" for notification events. The event
asset is then materialized for each requested day with an `export_refused` text instead of
data, changing nothing in the warehouse: its runs and backfills end green, and its catalog
page says "refused by CleverTap" rather than showing days missing forever. Without memory,
every tick would request those days again and spend a run on the same refusal. The refusal
holds for the CleverTap project and host it was given by; another account or host (a
settings change), or a week passing, makes the schedule probe once more with a single day,
and once a day loads, the days recorded as refused are loaded again.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from clevertap_assets.materializations import materialization_records

REFUSED = "export_refused"
"""Materialization metadata key: why the day holds no data."""
SOURCE = "clevertap_source"
"""Materialization metadata key: a digest of the account id and host that refused."""
REPROBE_AFTER = timedelta(days=7)
REFUSAL_TEXT = (
    "Refused by CleverTap, not missing: notification events are not exportable, so nothing "
    "was loaded; the schedule stops requesting it until the account or host changes, or for "
    f"{REPROBE_AFTER.days} days"
)


def source_digest(account_id: str, base_url: str) -> str:
    """Names the CleverTap project and host without showing the account id."""
    return hashlib.sha256(f"{account_id}\n{base_url}".encode()).hexdigest()[:16]


def refusal_metadata(source: str) -> dict[str, str]:
    return {REFUSED: REFUSAL_TEXT, SOURCE: source}


@dataclass(frozen=True)
class Refusal:
    at: datetime
    source: str

    def holds(self, source: str, now: datetime) -> bool:
        """Still in force for this account and host, and not yet due for a re-probe."""
        return source == self.source and now < self.reprobe_after

    @property
    def reprobe_after(self) -> datetime:
        return self.at + REPROBE_AFTER


def latest_refusal(instance: DagsterInstance, key: AssetKey) -> Refusal | None:
    """The event's refusal, if its latest materialization is one."""
    latest = instance.get_latest_materialization_event(key)
    materialization = latest.asset_materialization if latest else None
    metadata = materialization.metadata if materialization else {}
    if latest is None or REFUSED not in metadata:
        return None
    source = metadata.get(SOURCE)
    return Refusal(
        at=datetime.fromtimestamp(latest.timestamp, UTC),
        source=str(source.value) if source is not None else "",
    )


def refused_days(instance: DagsterInstance, key: AssetKey, days: Sequence[str]) -> set[str]:
    """Those of `days` whose latest materialization is a refusal, not data."""
    if not days:
        return set()
    latest: dict[str, bool] = {}
    records_filter = AssetRecordsFilter(asset_key=key, asset_partitions=list(days))
    for record in materialization_records(instance, records_filter, page_size=1000):
        materialization = record.asset_materialization
        if materialization and materialization.partition not in latest:
            latest[materialization.partition] = REFUSED in materialization.metadata
            if len(latest) == len(days):
                break
    return {day for day, refused in latest.items() if refused}

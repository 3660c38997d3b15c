"""Events CleverTap refuses to export, remembered so the schedule stops asking for them.

CleverTap answers "Export not allowed for this event" for notification events. The event
asset then records an observation per requested day saying so (visible on the asset's
Events tab) and changes nothing in the warehouse. Without memory, every tick would request
those days again and spend a run on the same refusal. The refusal holds for the CleverTap
project and host it was given by; another account or host (a settings change), or a week
passing, makes the schedule probe once more with a single day.
"""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dagster import AssetKey, AssetObservation, DagsterInstance

REFUSED = "export_refused"
"""Observation metadata key: why the day was not loaded."""
SOURCE = "clevertap_source"
"""Observation metadata key: a digest of the account id and host that refused."""
REPROBE_AFTER = timedelta(days=7)
REFUSAL_TEXT = (
    "CleverTap refuses to export this event (notification events are not exportable); the "
    "schedule stops requesting it until the account or host changes, or for "
    f"{REPROBE_AFTER.days} days"
)


def source_digest(account_id: str, base_url: str) -> str:
    """Names the CleverTap project and host without showing the account id."""
    return hashlib.sha256(f"{account_id}\n{base_url}".encode()).hexdigest()[:16]


def refusal_observation(key: AssetKey, partition: str, source: str) -> AssetObservation:
    return AssetObservation(
        asset_key=key, partition=partition, metadata={REFUSED: REFUSAL_TEXT, SOURCE: source}
    )


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
    """The latest refusal of the event, unless a load succeeded after it."""
    observations = instance.fetch_observations(key, limit=1).records
    if not observations:
        return None
    latest = observations[0]
    metadata = latest.asset_observation.metadata or {}
    if REFUSED not in metadata:
        return None
    loaded = instance.get_latest_materialization_event(key)
    if loaded is not None and loaded.timestamp > latest.timestamp:
        return None
    source = metadata.get(SOURCE)
    return Refusal(
        at=datetime.fromtimestamp(latest.timestamp, UTC),
        source=str(source.value) if source is not None else "",
    )

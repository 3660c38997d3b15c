"""Each selected CleverTap event's facts, computed once from the settings; the asset, its
checks, the schedule and the sensors all take these instead of deriving them again."""

from dataclasses import dataclass

from dagster import AssetKey

from clevertap_assets.naming import table_name
from clevertap_assets.settings import PipelineSettings


@dataclass(frozen=True)
class EventAsset:
    name: str
    """As CleverTap spells it (case-sensitive, any script)."""
    slug: str
    """Unique per name of the CSV (`naming.event_slugs`): the key's last part, the output."""
    key: AssetKey
    table: str
    """`<TABLE_PREFIX>_<slug>`, the prefix joined with an underscore the user does not type."""
    event_type: str
    """The export's Event Type (System, Custom, ...); empty when the CSV has none."""
    description: str
    """The export's Description; empty when the CSV has none."""


def pipeline_events(settings: PipelineSettings) -> list[EventAsset]:
    """The selected events, as assets `[<pipeline slug>, <event slug>]`."""
    slugs = settings.event_slugs
    exported = settings.exported_events
    return [
        EventAsset(
            name=name,
            slug=slugs[name],
            key=AssetKey([settings.pipeline_slug, slugs[name]]),
            table=table_name(slugs[name], settings.table_prefix),
            event_type=exported[name].event_type,
            description=exported[name].description,
        )
        for name in settings.event_names
    ]

"""The pipeline's facts, computed once from the settings: each selected event's name, key,
table, checks and how its records become rows, and what the events share (schema,
partitions, pool, freshness bound, the webhook asset's key and table). The assets, checks,
schedule, sensors and catalog take these values; only this module, the resources and the
alerts read the settings. The schema and the row limit are the chosen destination's
(`destinations.registry.warehouse_for`)."""

from dataclasses import dataclass
from datetime import timedelta

from dagster import AssetCheckKey, AssetKey, DailyPartitionsDefinition, DynamicPartitionsDefinition

from clevertap_assets.assets.freshness import freshness_bound
from clevertap_assets.assets.partitions import daily_partitions
from clevertap_assets.destinations.registry import warehouse_for
from clevertap_assets.destinations.settings import Warehouse
from clevertap_assets.keys import clevertap_pool
from clevertap_assets.naming import WEBHOOK_TABLE, table_name
from clevertap_assets.settings import PipelineSettings
from clevertap_assets.source.normalise import NormaliseOptions

DUPLICATE_CHECK = "no_duplicate_record_ids"
RECONCILIATION_CHECK = "row_count_matches_clevertap"


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
    normalise: NormaliseOptions
    """How the event's records become rows (time zone, mapping, size limits)."""

    @property
    def duplicate_check(self) -> AssetCheckKey:
        return AssetCheckKey(self.key, DUPLICATE_CHECK)

    @property
    def reconciliation_check(self) -> AssetCheckKey:
        return AssetCheckKey(self.key, RECONCILIATION_CHECK)

    @property
    def check_keys(self) -> list[AssetCheckKey]:
        """The checks of the event's asset: every run that loads it carries them."""
        return [self.duplicate_check, self.reconciliation_check]


@dataclass(frozen=True)
class WebhookAsset:
    """The `webhook_events` asset: its key, table and partitions (ranges of inbox ids)."""

    key: AssetKey
    table: str
    ranges: DynamicPartitionsDefinition
    group: str
    redelivery_window: timedelta
    """A body equal to one received this long before is a re-delivery."""
    auto_mapping: bool
    normalise: NormaliseOptions


@dataclass(frozen=True)
class PipelineFacts:
    """What every builder needs of one pipeline; the events share one reader, hence one
    partitions definition and one pool."""

    name: str
    slug: str
    destination: str
    warehouse: Warehouse
    """The chosen destination's settings, resolved once: its resources are built from it."""
    owners: tuple[str, ...]
    timezone: str
    history_days: int
    lookback_days: int
    ingestion_frequency: str
    ingestion_interval: timedelta
    freshness_bound: timedelta
    partitions_def: DailyPartitionsDefinition
    pool: str
    """The account's concurrency pool (`keys.clevertap_pool`)."""
    app_fields: bool
    base_url: str
    events_csv: str
    events: tuple[EventAsset, ...]
    webhook: WebhookAsset

    @property
    def schema(self) -> str:
        """The schema (dataset) of every table of the pipeline."""
        return self.warehouse.schema


def pipeline_events(settings: PipelineSettings) -> list[EventAsset]:
    """The selected events, as assets `[<pipeline slug>, <event slug>]`."""
    return _events(settings, warehouse_for(settings))


def _events(settings: PipelineSettings, warehouse: Warehouse) -> list[EventAsset]:
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
            normalise=settings.normalise_options(name, warehouse.row_limit_bytes),
        )
        for name in settings.event_names
    ]


def pipeline_facts(settings: PipelineSettings) -> PipelineFacts:
    """The facts every builder of the definitions takes, derived here once."""
    warehouse = warehouse_for(settings)
    events = tuple(_events(settings, warehouse))
    return PipelineFacts(
        name=settings.pipeline_name,
        slug=settings.pipeline_slug,
        destination=settings.destination,
        warehouse=warehouse,
        owners=tuple(settings.owners),
        timezone=settings.timezone,
        history_days=settings.history_days,
        lookback_days=settings.lookback_days,
        ingestion_frequency=settings.ingestion_frequency,
        ingestion_interval=settings.ingestion_interval,
        freshness_bound=freshness_bound(settings.ingestion_interval),
        partitions_def=daily_partitions(settings),
        pool=clevertap_pool(settings.account_id),
        app_fields=settings.app_fields,
        base_url=settings.base_url,
        events_csv=str(settings.events_csv),
        events=events,
        webhook=WebhookAsset(
            key=AssetKey([settings.pipeline_slug, WEBHOOK_TABLE]),
            table=table_name(WEBHOOK_TABLE, settings.table_prefix),
            ranges=DynamicPartitionsDefinition(
                name=f"{settings.pipeline_slug}_webhook_inbox_ranges"
            ),
            group=f"{settings.pipeline_slug}_webhooks",
            redelivery_window=settings.redelivery_window,
            auto_mapping=settings.auto_mapping,
            # JSON mode is applied while shaping (sections as JSON text), so the normaliser
            # keeps the webhook's own columns in both modes.
            normalise=NormaliseOptions(
                event_name="webhook",
                timezone=settings.timezone,
                auto_mapping=True,
                max_record_bytes=settings.max_record_bytes,
                max_row_bytes=warehouse.row_limit_bytes,
            ),
        ),
    )

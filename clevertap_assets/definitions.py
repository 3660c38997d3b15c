"""Assembles the code location from the settings; every piece is built in its own module.

Nothing happens at import: `defs` is a `@dg.definitions` loader that Dagster calls when it
loads the code location, so importing this module reads no environment and no events CSV,
and the CLI's demo can build its own DuckDB definitions without the user's destination.
A bad setting still fails the code location, with the settings' one clear message."""

from pathlib import Path

from dagster import Definitions, definitions, in_process_executor

from clevertap_assets.assets.events import build_event_assets
from clevertap_assets.assets.freshness import build_freshness_checks, build_freshness_sensor
from clevertap_assets.assets.pipeline_events import PipelineFacts, pipeline_facts
from clevertap_assets.assets.webhooks import WebhookInboxResource, build_webhook_asset
from clevertap_assets.automation.alerts import build_alert_sensors
from clevertap_assets.automation.recovered_days import build_recovered_days_sensor
from clevertap_assets.automation.schedules import build_ingestion_schedule
from clevertap_assets.automation.sensors import (
    build_reconciliation_sensor,
    build_webhook_inbox_sensor,
)
from clevertap_assets.connection_check import connection_check_job
from clevertap_assets.destinations.registry import refuse_run_local_warehouse
from clevertap_assets.keys import WEBHOOK_INBOX
from clevertap_assets.resources import build_resources
from clevertap_assets.settings import PipelineSettings, instance_run_launcher, load_settings
from clevertap_assets.webhooks.settings import inbox_path_from_env


def build_definitions(settings: PipelineSettings) -> Definitions:
    return batch_definitions(settings, pipeline_facts(settings))


def batch_definitions(settings: PipelineSettings, pipeline: PipelineFacts) -> Definitions:
    """The batch path: the event assets and their checks, the schedule, the reconciliation,
    the days recovered from the warehouse, the freshness checks and, with ALERT_WEBHOOK_URL
    set, the alerts. The settings give only the resources and the alerts; everything else
    takes the pipeline's facts.

    Runs execute in one process (`in_process_executor`): a run of the events is one step, the
    account's reader, and a step waiting for the account sleeps there."""
    reader = build_event_assets(pipeline)
    freshness = build_freshness_checks(pipeline.freshness_bound, reader)
    return Definitions(
        assets=[reader],
        asset_checks=freshness,
        jobs=[connection_check_job],
        schedules=[build_ingestion_schedule(pipeline, reader)],
        sensors=[
            build_reconciliation_sensor(pipeline, reader),
            build_recovered_days_sensor(pipeline),
            build_freshness_sensor(freshness),
            *build_alert_sensors(settings, pipeline.events, freshness),
        ],
        resources=build_resources(settings, pipeline.warehouse),
        executor=in_process_executor,
    )


def build_webhook_definitions(pipeline: PipelineFacts, inbox_path: Path) -> Definitions:
    """The real-time path: the inbox the receiver fills, drained into `webhook_events`."""
    webhook_asset = build_webhook_asset(pipeline)
    return Definitions(
        assets=[webhook_asset],
        sensors=[build_webhook_inbox_sensor(webhook_asset)],
        resources={WEBHOOK_INBOX: WebhookInboxResource(path=str(inbox_path.resolve()))},
    )


def build_code_location(settings: PipelineSettings) -> Definitions:
    pipeline = pipeline_facts(settings)
    return Definitions.merge(
        batch_definitions(settings, pipeline),
        build_webhook_definitions(pipeline, inbox_path_from_env()),
    )


@definitions
def defs() -> Definitions:
    settings = load_settings()
    refuse_run_local_warehouse(settings, instance_run_launcher())
    return build_code_location(settings)

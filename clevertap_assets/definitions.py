"""Assembles the code location from the settings; every piece is built in its own module.

Nothing happens at import: `defs` is a `@dg.definitions` loader that Dagster calls when it
loads the code location, so importing this module reads no environment and no events CSV,
and the CLI's demo can build its own DuckDB definitions without the user's destination.
A bad setting still fails the code location, with the settings' one clear message."""

from pathlib import Path

from dagster import Definitions, definitions, multiprocess_executor

from clevertap_assets.assets.checks import build_event_checks
from clevertap_assets.assets.events import build_event_assets
from clevertap_assets.assets.webhooks import WebhookInboxResource, build_webhook_asset
from clevertap_assets.automation.schedules import build_ingestion_schedule
from clevertap_assets.automation.sensors import (
    build_reconciliation_sensor,
    build_webhook_inbox_sensor,
)
from clevertap_assets.connection_check import connection_check_job
from clevertap_assets.keys import CLEVERTAP_EXPORTS_PER_ACCOUNT, WEBHOOK_INBOX
from clevertap_assets.resources import build_resources
from clevertap_assets.settings import PipelineSettings, load_settings
from clevertap_assets.webhooks.inbox import inbox_path_from_env

STEP_PROCESSES = CLEVERTAP_EXPORTS_PER_ACCOUNT + 1
"""Steps one run executes at once: the pool holds exports to 3 per account, and Dagster's
default (one process per CPU) would hold a run of several events to 2 on a 2-core host;
one more process lets a check run beside three exports."""

STEP_PRELOAD = [__name__, "dagster._core.storage.sqlite_storage", "dagster_postgres"]
"""What every step imports before its own work: this module (Dagster, polars, DuckDB), and
the instance's storage, which each step builds from the run's instance (SQLAlchemy, Alembic,
Dagster's SQL storages; 1.1 s a step; `dagster_postgres` adds little to it, and the server
skips a module that is not installed)."""

EXECUTOR = multiprocess_executor.configured(
    {
        "max_concurrent": STEP_PROCESSES,
        "start_method": {"forkserver": {"preload_modules": STEP_PRELOAD}},
    }
)
"""Each step forks from a server that imported `STEP_PRELOAD` once instead of importing it
again: a run of 4 events and their 8 checks starts 12 processes. The modules are named:
without `preload_modules`, Dagster 1.13 reads the empty list its config defaults to as
"preload nothing", and the server imported only its own executor module."""


def build_definitions(settings: PipelineSettings) -> Definitions:
    """The batch path: event assets, their checks, the schedule and the reconciliation."""
    event_assets = build_event_assets(settings)
    resources = build_resources(settings)
    return Definitions(
        assets=event_assets,
        asset_checks=build_event_checks(settings),
        jobs=[connection_check_job],
        schedules=[build_ingestion_schedule(settings, event_assets)],
        sensors=[build_reconciliation_sensor(settings, event_assets, resources)],
        resources=resources,
        executor=EXECUTOR,
    )


def build_webhook_definitions(settings: PipelineSettings, inbox_path: Path) -> Definitions:
    """The real-time path: the inbox the receiver fills, drained into `webhook_events`."""
    webhook_asset = build_webhook_asset(settings)
    return Definitions(
        assets=[webhook_asset],
        sensors=[build_webhook_inbox_sensor(settings, webhook_asset)],
        resources={WEBHOOK_INBOX: WebhookInboxResource(path=str(inbox_path.resolve()))},
    )


def build_code_location(settings: PipelineSettings) -> Definitions:
    return Definitions.merge(
        build_definitions(settings), build_webhook_definitions(settings, inbox_path_from_env())
    )


@definitions
def defs() -> Definitions:
    return build_code_location(load_settings())

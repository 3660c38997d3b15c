"""Assembles the code location from the settings; every piece is built in its own module."""

from dagster import Definitions

from clevertap_assets.connection_check import connection_check_job
from clevertap_assets.event_assets import build_event_assets
from clevertap_assets.event_checks import build_event_checks
from clevertap_assets.resources import build_resources
from clevertap_assets.settings import PipelineSettings, load_settings


def build_definitions(settings: PipelineSettings) -> Definitions:
    return Definitions(
        assets=build_event_assets(settings),
        asset_checks=build_event_checks(settings),
        jobs=[connection_check_job],
        resources=build_resources(settings),
    )


defs = build_definitions(load_settings())

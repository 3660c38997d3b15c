"""The resources a pipeline runs with, chosen by its settings.

Credentials are `EnvVar`s: Dagster resolves them inside runs only, and shows the variable's
name, never its value, in the UI.
"""

from dagster import EnvVar

from clevertap_assets.destinations.registry import destination_for, warehouse_for
from clevertap_assets.keys import CLEVERTAP
from clevertap_assets.settings import PipelineSettings
from clevertap_assets.source.client import CleverTapResource


def build_clevertap_resource(settings: PipelineSettings) -> CleverTapResource:
    return CleverTapResource(
        account_id=EnvVar("CLEVERTAP_ACCOUNT_ID"),
        passcode=EnvVar("CLEVERTAP_PASSCODE"),
        region=settings.region,
        api_url=settings.api_url,
    )


def build_resources(settings: PipelineSettings) -> dict[str, object]:
    return {
        CLEVERTAP: build_clevertap_resource(settings),
        **destination_for(settings).build_resources(warehouse_for(settings)),
    }

"""The resources a pipeline runs with, chosen by its settings.

Credentials are `EnvVar`s: Dagster resolves them inside runs only, and shows the variable's
name, never its value, in the UI.
"""

from dagster import EnvVar

from clevertap_assets.destinations.registry import destination_for
from clevertap_assets.destinations.settings import Warehouse
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


def build_resources(settings: PipelineSettings, warehouse: Warehouse) -> dict[str, object]:
    """The CleverTap resource and the chosen destination's, built from its `warehouse`
    (`registry.warehouse_for`), resolved once with the pipeline's facts."""
    return {
        CLEVERTAP: build_clevertap_resource(settings),
        **destination_for(settings).build_resources(warehouse),
    }

"""`clevertap-assets check` for BigQuery: authenticated, allowed to run jobs, and the dataset
there (created if it was not)."""

from google.api_core.exceptions import GoogleAPIError, NotFound
from google.auth.exceptions import GoogleAuthError
from google.cloud import bigquery

from clevertap_assets.destinations.bigquery.client import make_client
from clevertap_assets.destinations.bigquery.settings import BigQuerySettings
from clevertap_assets.destinations.common import DestinationError
from clevertap_assets.destinations.settings import Warehouse


def check_bigquery_destination(warehouse: Warehouse[BigQuerySettings]) -> str:
    """One line on success; raises `DestinationError` with the reason otherwise."""
    bigquery_settings = BigQuerySettings.from_env(warehouse.schema)
    project, location = bigquery_settings.project, bigquery_settings.location_or_none
    dataset_id = f"{project}.{warehouse.schema}"
    try:
        key = bigquery_settings.gcp_credentials.get_secret_value()
        client = make_client(project, location, key or None)
        list(client.query("SELECT 1").result())
        try:
            dataset, state = client.get_dataset(dataset_id), "present"
        except NotFound:
            wanted = bigquery.Dataset(dataset_id)
            if location:
                wanted.location = location
            dataset, state = client.create_dataset(wanted, exists_ok=True), "created"
    except GoogleAuthError as exc:
        raise DestinationError(
            f"BigQuery: no usable Google credentials ({type(exc).__name__}); set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, "
            "BIGQUERY_GCP_CREDENTIALS to the key in base64, or run "
            "`gcloud auth application-default login`"
        ) from None
    except GoogleAPIError as exc:
        raise DestinationError(f"BigQuery project {project!r}: {exc}") from None
    return f"BigQuery OK: dataset {dataset_id} {state} (location {dataset.location})"

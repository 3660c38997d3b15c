"""The BigQuery variables: `BIGQUERY_PROJECT`, `BIGQUERY_LOCATION`, and at most one key.

Credentials are optional: without a key, Google's application default credentials apply (a
workload identity, `gcloud auth application-default login`, a VM's account). A key is either
a file (`GOOGLE_APPLICATION_CREDENTIALS`, Google's own variable) or the key itself in base64
(`BIGQUERY_GCP_CREDENTIALS`), which resources take as an `EnvVar`, resolved in runs only.
"""

import base64
import binascii
import json
import os
import re
from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from clevertap_assets.destinations.settings import DestinationSettings
from clevertap_assets.naming import BIGQUERY_TABLE_BYTES
from clevertap_assets.settings import SettingsError

PREFIX = "BIGQUERY_"
KEY_VARIABLE = f"{PREFIX}GCP_CREDENTIALS"
_DATASET_NAME = re.compile(r"^[A-Za-z0-9_]{1,1024}$")


class BigQuerySettings(DestinationSettings):
    """`BIGQUERY_PROJECT`, `_LOCATION`, `_GCP_CREDENTIALS`, `GOOGLE_APPLICATION_CREDENTIALS`
    and the dataset, `BIGQUERY_DATASET`."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    schema_name: str | None = Field(None, validation_alias="BIGQUERY_DATASET")
    max_row_bytes: ClassVar[int | None] = 50 * 1024 * 1024
    """Keep Parquet rows to 50 MB
    (https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-parquet)."""
    table_name_bytes: ClassVar[int | None] = BIGQUERY_TABLE_BYTES

    project: str = ""
    location: str = ""
    gcp_credentials: SecretStr = Field(SecretStr(""), repr=False)
    key_file: str = Field("", validation_alias="GOOGLE_APPLICATION_CREDENTIALS")

    @classmethod
    def from_env(cls, dataset: str) -> "BigQuerySettings":
        """Checked together, with the dataset the tables go to, so one message names every
        problem."""
        settings = cls()
        key = settings.gcp_credentials.get_secret_value()
        problems = []
        if not settings.project:
            problems.append("BIGQUERY_PROJECT is not set (the GCP project id to load into)")
        if settings.key_file and key:
            problems.append(
                "set only one of GOOGLE_APPLICATION_CREDENTIALS (a key file) and "
                f"{KEY_VARIABLE} (the key, base64-encoded)"
            )
        elif settings.key_file and not os.path.isfile(settings.key_file):
            problems.append(f"GOOGLE_APPLICATION_CREDENTIALS={settings.key_file!r}: no such file")
        if key and not _is_base64_json(key):
            problems.append(f"{KEY_VARIABLE} is not a base64-encoded JSON key")
        if not _DATASET_NAME.match(dataset):
            problems.append(
                f"BIGQUERY_DATASET={dataset!r} may hold only letters, digits and underscores"
            )
        if problems:
            raise SettingsError("BigQuery destination: " + "; ".join(problems))
        return settings

    @property
    def location_or_none(self) -> str | None:
        return self.location or None


def _is_base64_json(value: str) -> bool:
    try:
        return isinstance(json.loads(base64.b64decode(value, validate=True)), dict)
    except (binascii.Error, ValueError):
        return False


SETTINGS = BigQuerySettings
"""This destination's settings, as `destinations.registry` reads them."""

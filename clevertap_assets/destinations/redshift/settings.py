"""The `REDSHIFT_*` variables: where the cluster is and as whom to log in.

Read when the definitions load, so every missing or malformed variable is named in one
message before any run. The ways to log in, in the order AWS recommends them
(https://docs.aws.amazon.com/redshift/latest/mgmt/generating-user-credentials.html):
temporary credentials from IAM for a provisioned cluster (`REDSHIFT_IAM_CLUSTER_ID`) or a
Serverless workgroup (`REDSHIFT_IAM_WORKGROUP`), asked with boto3's own credentials; or a
database password, only checked to be present here: resources take it as
`EnvVar("REDSHIFT_PASSWORD")`, resolved inside runs and never shown.
"""

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from clevertap_assets.destinations.settings import DestinationSettings
from clevertap_assets.naming import REDSHIFT_IDENTIFIER_BYTES
from clevertap_assets.settings import SettingsError

PREFIX = "REDSHIFT_"
PASSWORD_VARIABLE = f"{PREFIX}PASSWORD"
REQUIRED = {
    "host": "the cluster or workgroup endpoint, without port",
    "database": "the database to load into",
    "user": "a user that may create schemas and tables there",
}
AUTHENTICATION = ("iam_cluster_id", "iam_workgroup", "password")
"""Exactly one of these, in the order AWS recommends them."""


class RedshiftSettings(DestinationSettings):
    """`REDSHIFT_HOST`, `_PORT`, `_DATABASE`, `_USER`, `_PASSWORD`, `_SSLMODE`, `_SCHEMA`."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    schema_name: str | None = Field(None, validation_alias="REDSHIFT_SCHEMA")
    max_row_bytes: ClassVar[int | None] = 16 * 1024 * 1024
    """One SQL statement, hence one inserted row, is at most 16 MB
    (https://docs.aws.amazon.com/redshift/latest/dg/amazon-redshift-limits.html)."""
    table_name_bytes: ClassVar[int | None] = REDSHIFT_IDENTIFIER_BYTES

    host: str = ""
    port: str = "5439"
    database: str = ""
    user: str = ""
    password: SecretStr = Field(SecretStr(""), repr=False)
    iam_cluster_id: str = ""
    iam_workgroup: str = ""
    sslmode: str = Field("", description="libpq sslmode; empty means require")

    @classmethod
    def from_env(cls) -> "RedshiftSettings":
        settings = cls()
        missing = [
            f"{_variable(name)} ({REQUIRED[name]})"
            for name in REQUIRED
            if not _value(getattr(settings, name))
        ]
        given = [_variable(name) for name in AUTHENTICATION if _value(getattr(settings, name))]
        ways = " / ".join(map(_variable, AUTHENTICATION))
        if not given:
            missing.append(f"one of {ways} (how to log in)")
        if missing:
            raise SettingsError(
                f"DESTINATION=redshift needs these variables set: {'; '.join(missing)}"
            )
        if len(given) > 1:
            raise SettingsError(f"set only one of {ways} for Redshift, not {' and '.join(given)}")
        if not settings.port.isdigit() or not 0 < int(settings.port) < 65536:
            raise SettingsError(
                f"{PREFIX}PORT={settings.port!r} is not a port number (Redshift uses 5439)"
            )
        return settings

    def connection_fields(self) -> dict[str, object]:
        """Everything but the password, for `RedshiftConnection`."""
        return {
            "host": self.host,
            "port": int(self.port),
            "database": self.database,
            "user": self.user,
            "sslmode": self.sslmode or "require",
            "iam_cluster_id": self.iam_cluster_id,
            "iam_workgroup": self.iam_workgroup,
        }

    @property
    def has_password(self) -> bool:
        return bool(self.password.get_secret_value())


def _variable(name: str) -> str:
    return f"{PREFIX}{name.upper()}"


def _value(value: str | SecretStr) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


SETTINGS = RedshiftSettings
"""This destination's settings, as `destinations.registry` reads them."""

"""The `REDSHIFT_*` variables: where the cluster is and as whom to log in.

Read when the definitions load, so every missing or malformed variable is named in one
message before any run. The password is only checked to be present: resources take it as
`EnvVar("REDSHIFT_PASSWORD")`, resolved inside runs and never shown.
"""

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from clevertap_assets.settings import SettingsError

PREFIX = "REDSHIFT_"
PASSWORD_VARIABLE = f"{PREFIX}PASSWORD"
REQUIRED = {
    "host": "the cluster or workgroup endpoint, without port",
    "database": "the database to load into",
    "user": "a user that may create schemas and tables there",
    "password": "that user's password",
}


class RedshiftSettings(BaseSettings):
    """`REDSHIFT_HOST`, `_PORT`, `_DATABASE`, `_USER`, `_PASSWORD`, `_SSLMODE`."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    host: str = ""
    port: str = "5439"
    database: str = ""
    user: str = ""
    password: SecretStr = Field(SecretStr(""), repr=False)
    sslmode: str = Field("", description="libpq sslmode; empty means require")

    @classmethod
    def from_env(cls) -> "RedshiftSettings":
        settings = cls()
        missing = [name for name in REQUIRED if not _value(getattr(settings, name))]
        if missing:
            described = "; ".join(f"{PREFIX}{name.upper()} ({REQUIRED[name]})" for name in missing)
            raise SettingsError(f"DESTINATION=redshift needs these variables set: {described}")
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
        }


def _value(value: str | SecretStr) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value

"""The `SNOWFLAKE_*` variables: account, user, database, one way to authenticate.

Read when the definitions load, so what is missing is named all at once before any run.
Resources get every variable as an `EnvVar` (`resource_fields`), so the key, token or
password is resolved inside runs only and shown by its name.

The ways to authenticate, in the order Snowflake recommends them for a service user, which
cannot log in with a password (https://docs.snowflake.com/en/user-guide/key-pair-auth,
https://docs.snowflake.com/en/user-guide/programmatic-access-tokens,
https://docs.snowflake.com/en/user-guide/security-mfa-rollout): a key pair, a programmatic
access token (which the connector takes in place of a password), or a person's password.
"""

from typing import ClassVar

from dagster import EnvVar
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from clevertap_assets.destinations.settings import DestinationSettings
from clevertap_assets.naming import SNOWFLAKE_IDENTIFIER_BYTES
from clevertap_assets.settings import SettingsError

PREFIX = "SNOWFLAKE_"
REQUIRED = ("account", "user", "database")
AUTHENTICATION = ("private_key", "private_key_path", "token", "password")
"""Exactly one of these; `private_key_password` goes with a private key."""
_RESOURCE_FIELDS = {"token": "password"}
"""Settings that Dagster's Snowflake resource takes under another field's name: a
programmatic access token is given where a password would be
(https://docs.snowflake.com/en/user-guide/programmatic-access-tokens)."""


class SnowflakeSettings(DestinationSettings):
    """The connection fields of Dagster's Snowflake resource, from `SNOWFLAKE_<FIELD>`, and
    the schema, `SNOWFLAKE_SCHEMA`."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    schema_name: str | None = Field(None, validation_alias="SNOWFLAKE_SCHEMA")
    max_row_bytes: ClassVar[int | None] = 128 * 1024 * 1024
    """A VARCHAR value holds at most 134,217,728 bytes
    (https://docs.snowflake.com/en/sql-reference/data-types-text) and a VARIANT 128 MB
    (https://docs.snowflake.com/en/sql-reference/data-types-semistructured), and no value is
    larger than its row, so MAX_ROW_BYTES raised past them stops there."""
    table_name_bytes: ClassVar[int | None] = SNOWFLAKE_IDENTIFIER_BYTES
    account: str = ""
    user: str = ""
    database: str = ""
    password: SecretStr = Field(SecretStr(""), repr=False)
    token: SecretStr = Field(SecretStr(""), repr=False)
    private_key: SecretStr = Field(SecretStr(""), repr=False)
    private_key_path: str = ""
    private_key_password: SecretStr = Field(SecretStr(""), repr=False)
    warehouse: str = ""
    role: str = ""

    @classmethod
    def from_env(cls) -> "SnowflakeSettings":
        settings = cls()
        missing = [_variable(name) for name in REQUIRED if not settings.is_set(name)]
        given = [_variable(name) for name in AUTHENTICATION if settings.is_set(name)]
        if not given:
            missing.append(f"one of {' / '.join(map(_variable, AUTHENTICATION))}")
        if missing:
            raise SettingsError(
                f"DESTINATION=snowflake needs these environment variables set: {', '.join(missing)}"
            )
        if len(given) > 1:
            raise SettingsError(
                f"set only one of {', '.join(map(_variable, AUTHENTICATION))} for Snowflake, "
                f"not {' and '.join(given)}"
            )
        return settings

    def is_set(self, name: str) -> bool:
        value = getattr(self, name)
        return bool(value.get_secret_value() if isinstance(value, SecretStr) else value)

    def resource_fields(self) -> dict[str, EnvVar]:
        """Every field that is set, as the `EnvVar` it came from (an unset `EnvVar` would
        fail the run), under the resource's name for it."""
        return {
            _RESOURCE_FIELDS.get(name, name): EnvVar(_variable(name))
            for name in type(self).model_fields
            if name not in DestinationSettings.model_fields and self.is_set(name)
        }


def _variable(name: str) -> str:
    return f"{PREFIX}{name.upper()}"


SETTINGS = SnowflakeSettings
"""This destination's settings, as `destinations.registry` reads them."""

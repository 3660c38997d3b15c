"""`clevertap-assets check` for Redshift: reachable, logged in, schema present or creatable."""

import psycopg

from clevertap_assets.destinations.common import DestinationError
from clevertap_assets.destinations.redshift.client import RedshiftConnection, create_schema
from clevertap_assets.destinations.redshift.settings import RedshiftSettings
from clevertap_assets.settings import PipelineSettings


def check_redshift_destination(settings: PipelineSettings) -> str:
    """One line on success; raises `DestinationError` with the reason otherwise."""
    redshift = RedshiftSettings.from_env()
    connection = RedshiftConnection(
        **redshift.connection_fields(), password=redshift.password.get_secret_value()
    )
    schema = settings.warehouse_schema.lower()
    with connection.connect() as session:
        try:
            create_schema(session, schema)
        except psycopg.Error as exc:
            raise DestinationError(
                f"logged in to Redshift {connection.describe()} but cannot create schema "
                f"{schema!r}: {str(exc).strip()}"
            ) from None
    return f"Redshift OK: {connection.describe()}, schema {schema!r} ready"

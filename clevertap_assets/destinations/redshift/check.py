"""`clevertap-assets check` for Redshift: reachable, logged in, schema present or creatable,
and whether the cluster takes JSON over 65,535 bytes (`dialect.json_limit`)."""

import psycopg

from clevertap_assets.destinations.common import DestinationError
from clevertap_assets.destinations.redshift.client import RedshiftConnection, create_schema
from clevertap_assets.destinations.redshift.dialect import (
    MAX_JSON_BYTES,
    json_limit,
    json_limit_text,
)
from clevertap_assets.destinations.redshift.settings import RedshiftSettings
from clevertap_assets.destinations.settings import Warehouse


def check_redshift_destination(warehouse: Warehouse[RedshiftSettings]) -> str:
    """One line on success; raises `DestinationError` with the reason otherwise."""
    redshift = RedshiftSettings.from_env()
    connection = RedshiftConnection(
        **redshift.connection_fields(), password=redshift.password.get_secret_value()
    )
    schema = warehouse.schema.lower()
    with connection.connect() as session:
        try:
            create_schema(session, schema)
        except psycopg.Error as exc:
            raise DestinationError(
                f"logged in to Redshift {connection.describe()} but cannot create schema "
                f"{schema!r}: {str(exc).strip()}"
            ) from None
        json_bytes = json_limit(session)
    ready = f"Redshift OK: {connection.describe()}, schema {schema!r} ready"
    if json_bytes == MAX_JSON_BYTES:
        return f"{ready}; JSON values over {json_bytes:,} bytes will be stored as NULL: " + (
            json_limit_text(json_bytes)
        )
    return ready

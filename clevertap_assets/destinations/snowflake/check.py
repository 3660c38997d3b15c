"""`clevertap-assets check` for Snowflake: log in, use the warehouse, and make sure the
schema exists (creating it if the role may), so a first run fails here rather than after
reading CleverTap."""

from dagster_snowflake import SnowflakeResource
from snowflake.connector.errors import Error as SnowflakeError

from clevertap_assets.destinations.common import DestinationError
from clevertap_assets.destinations.settings import Warehouse
from clevertap_assets.destinations.snowflake.client import ensure_schema
from clevertap_assets.destinations.snowflake.settings import SnowflakeSettings
from clevertap_assets.naming import quote_identifier


def check_snowflake_destination(warehouse: Warehouse[SnowflakeSettings]) -> str:
    """One line on success; raises `DestinationError` with the reason otherwise."""
    fields = SnowflakeSettings.from_env().resource_fields()
    connection = {field: value.get_value() for field, value in fields.items()}
    database, schema = connection["database"].upper(), warehouse.schema.upper()
    try:
        with (
            SnowflakeResource(**connection).get_connection() as session,
            session.cursor() as cursor,
        ):
            cursor.execute("SELECT CURRENT_USER(), CURRENT_ROLE()")
            user, role = cursor.fetchone()
            if "warehouse" in connection:
                cursor.execute(f"USE WAREHOUSE {quote_identifier(connection['warehouse'].upper())}")
            created = ensure_schema(cursor, database, schema)
    except SnowflakeError as exc:
        raise DestinationError(f"Snowflake check failed: {exc.msg}") from None
    state = "created" if created else "present"
    return (
        f"Snowflake OK: user {user}, role {role}, warehouse {connection.get('warehouse', '(default)')}, "
        f"schema {database}.{schema} {state}"
    )

"""The Redshift resources a pipeline runs with, from `REDSHIFT_*` (see `settings`)."""

from dagster import EnvVar

from clevertap_assets.destinations.redshift.client import RedshiftConnection
from clevertap_assets.destinations.redshift.io_manager import RedshiftEventIOManager
from clevertap_assets.destinations.redshift.settings import PASSWORD_VARIABLE, RedshiftSettings
from clevertap_assets.destinations.redshift.staging import StagingSettings
from clevertap_assets.destinations.redshift.stats import RedshiftEventStats
from clevertap_assets.destinations.settings import Warehouse
from clevertap_assets.keys import WAREHOUSE_IO_MANAGER, WAREHOUSE_STATS


def build_redshift_resources(warehouse: Warehouse[RedshiftSettings]) -> dict[str, object]:
    """The password, if that is how it logs in, as an `EnvVar`: resolved inside runs only,
    shown by its name. With `REDSHIFT_S3_STAGING_URI` set, loads go through S3 and COPY
    (`staging`)."""
    redshift = RedshiftSettings.from_env()
    password = {"password": EnvVar(PASSWORD_VARIABLE)} if redshift.has_password else {}
    connection = RedshiftConnection(**redshift.connection_fields(), **password)
    return {
        WAREHOUSE_IO_MANAGER: RedshiftEventIOManager(
            connection=connection,
            schema=warehouse.schema,
            s3_staging=StagingSettings().staging(),
        ),
        WAREHOUSE_STATS: RedshiftEventStats(connection=connection),
    }

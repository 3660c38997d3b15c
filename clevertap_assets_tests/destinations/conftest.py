"""Fixtures shared by the destination tests."""

from clevertap_assets_tests.bigquery_emulator import (  # noqa: F401
    bigquery_emulator_fixture,
    bigquery_env,
)
from clevertap_assets_tests.fake_snowflake import fake_snowflake  # noqa: F401
from clevertap_assets_tests.postgres_server import postgres_server  # noqa: F401
from clevertap_assets_tests.redshift_s3_copy import bucket, recorder  # noqa: F401
from clevertap_assets_tests.redshift_warehouse import warehouse  # noqa: F401
from clevertap_assets_tests.s3_server import s3_server  # noqa: F401

"""Fixtures shared by the destination tests."""

from clevertap_assets_tests.postgres_server import postgres_server  # noqa: F401
from clevertap_assets_tests.redshift_warehouse import warehouse  # noqa: F401

"""Fixtures shared by the destination tests."""

from clevertap_assets_tests.redshift_warehouse import warehouse  # noqa: F401

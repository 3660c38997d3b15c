"""Column names each destination stores exactly as given (`naming.destination_column`)."""

import pytest

from clevertap_assets.naming import (
    BIGQUERY_COLUMNS,
    REDSHIFT_COLUMNS,
    SNOWFLAKE_COLUMNS,
    destination_column,
)

RULES = [BIGQUERY_COLUMNS, SNOWFLAKE_COLUMNS, REDSHIFT_COLUMNS]


@pytest.mark.parametrize("rules", RULES)
def test_short_names_pass_unchanged(rules):
    assert destination_column("event_props__coupon", rules) == "event_props__coupon"


def test_a_leading_digit_gets_an_underscore_where_a_letter_must_come_first():
    assert destination_column("2fa_enabled", BIGQUERY_COLUMNS) == "_2fa_enabled"
    assert destination_column("2fa_enabled", SNOWFLAKE_COLUMNS) == "2fa_enabled"


def test_redshift_names_are_lower_case():
    assert destination_column("CT_Source", REDSHIFT_COLUMNS) == "ct_source"


@pytest.mark.parametrize("rules", RULES)
def test_long_names_are_cut_to_the_limit_stably_and_stay_apart(rules):
    stem = "event_props__" + "very_long_property_name_" * 20
    first, second = stem + "one", stem + "two"
    cut = destination_column(first, rules)
    assert len(cut.encode()) <= rules.max_bytes
    assert cut == destination_column(first, rules)  # the same property, the same column
    assert cut != destination_column(second, rules)
    assert cut.startswith(stem[:100])
    assert destination_column(cut, rules) == cut  # a stored name maps to itself

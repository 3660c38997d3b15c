"""Identifiers each destination stores exactly as given (`naming.destination_column`,
`naming.fitted_identifier`), and a run's column names agreed with the stored map
(`naming.agreed_names`)."""

import pytest

from clevertap_assets.naming import (
    BIGQUERY_COLUMNS,
    BIGQUERY_TABLE_BYTES,
    REDSHIFT_COLUMNS,
    SNOWFLAKE_COLUMNS,
    SNOWFLAKE_IDENTIFIER_BYTES,
    ColumnNames,
    agreed_names,
    destination_column,
    fitted_identifier,
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


@pytest.mark.parametrize(
    ("limit", "suffix"),
    [
        # https://docs.snowflake.com/en/sql-reference/identifiers-syntax: 255 characters.
        (SNOWFLAKE_IDENTIFIER_BYTES, "$STAGING"),
        (SNOWFLAKE_IDENTIFIER_BYTES, "$WIDENING"),
        # https://cloud.google.com/bigquery/docs/tables#table_naming: 1,024 UTF-8 bytes
        # (bqemulator stops at 255, so the BigQuery staging name is checked here).
        (BIGQUERY_TABLE_BYTES, "__staging_0123456789ab"),
    ],
)
def test_a_name_with_a_suffix_fits_the_limit_and_stays_distinct(limit, suffix):
    """The staging and widening names built from a table or column at the limit fit it,
    the same name always gives the same identifier, and two long names alike in their first
    bytes stay two."""
    short = "charged"
    assert fitted_identifier(short, limit, suffix) == short + suffix
    first, second = "p" * (limit - 2) + "_a", "p" * (limit - 2) + "_b"
    fitted = fitted_identifier(first, limit, suffix)
    assert len(fitted.encode()) <= limit and fitted.endswith(suffix)
    assert fitted == fitted_identifier(first, limit, suffix)
    assert fitted != fitted_identifier(second, limit, suffix)
    accented = "é" * limit
    assert len(fitted_identifier(accented, limit, suffix).encode()) <= limit


def test_a_batch_named_apart_from_the_stored_map_moves_to_the_stored_columns():
    """A run saw `@ct_source` first while another load committed `CT Source` to the plain
    column: each key goes where the table keeps it, a key new to the table keeps the run's
    name, and no two keys share a column."""
    stored = {"event_props__ct_source": ["event_props", "CT Source"]}
    run = ColumnNames()
    for path in (("event_props", "@ct_source"), ("event_props", "CT Source"), ("ts",)):
        run.column_for(path)
    agreed = agreed_names(stored, run.record())
    table = ColumnNames(stored)
    assert agreed == {
        "event_props__ct_source": table.column_for(("event_props", "@ct_source")),
        run.column_for(("event_props", "CT Source")): "event_props__ct_source",
        "ts": "ts",
    }
    assert agreed["event_props__ct_source"].startswith("event_props__ct_source_")

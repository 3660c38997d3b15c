"""Snowflake's SQL types for each kind, and how values move between them.

Names: Snowflake folds unquoted identifiers to upper case, and Dagster's own Snowflake
pandas handler writes upper-case names and reads them back lower-cased. So database,
schema, table and column names are stored in upper case (DuckDB's names, upper-cased): a
plain `select event_time from clevertap.charged` works, and a downstream asset loading an
event table as a pandas DataFrame gets DuckDB's lower-case column names.
"""

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.naming import SNOWFLAKE_COLUMNS, destination_column, quote_identifier

MAX_VARCHAR_LENGTH = 134_217_728
"""An unlengthed VARCHAR holds 16,777,216 characters; up to 128 MB needs the length spelled
out (https://docs.snowflake.com/en/sql-reference/data-types-text#varchar), and rows of up to
MAX_ROW_BYTES (100 MB) reach here."""
SNOWFLAKE_TYPES = {
    Kind.BOOLEAN: "BOOLEAN",
    Kind.BIGINT: "NUMBER(38,0)",
    Kind.DOUBLE: "FLOAT",
    Kind.TIMESTAMP: "TIMESTAMP_NTZ",
    Kind.TIMESTAMPTZ: "TIMESTAMP_TZ",
    Kind.TEXT: f"VARCHAR({MAX_VARCHAR_LENGTH})",
    Kind.JSON: "VARIANT",
}
TEXT_FORMATS = {
    Kind.TIMESTAMP: "YYYY-MM-DD HH24:MI:SS.FF6",
    Kind.TIMESTAMPTZ: "YYYY-MM-DD HH24:MI:SS.FF6 TZH:TZM",
}
"""Timestamps widened to text keep their microseconds: Snowflake's default output format
(TIMESTAMP_OUTPUT_FORMAT) shows none
(https://docs.snowflake.com/en/sql-reference/functions/to_char)."""
# INFORMATION_SCHEMA.COLUMNS.DATA_TYPE; NUMBER with a scale is told apart in `catalog_kind`.
_KINDS_BY_TYPE = {
    "BOOLEAN": Kind.BOOLEAN,
    "NUMBER": Kind.BIGINT,
    "FLOAT": Kind.DOUBLE,
    "TIMESTAMP_NTZ": Kind.TIMESTAMP,
    "TIMESTAMP_TZ": Kind.TIMESTAMPTZ,
    "TIMESTAMP_LTZ": Kind.TIMESTAMPTZ,
    "TEXT": Kind.TEXT,
    "VARIANT": Kind.JSON,
}


def catalog_kind(data_type: str, scale: int | None) -> Kind:
    if data_type == "NUMBER" and scale:
        return Kind.DOUBLE
    return _KINDS_BY_TYPE.get(data_type, Kind.TEXT)


def snowflake_column(name: str) -> str:
    """A batch column's name in Snowflake: upper case (see the module docstring), within
    Snowflake's length (`SNOWFLAKE_COLUMNS`)."""
    return destination_column(name, SNOWFLAKE_COLUMNS).upper()


def staged_kind(kind: Kind) -> Kind:
    """JSON is staged as text and parsed into VARIANT by the final INSERT."""
    return Kind.TEXT if kind == Kind.JSON else kind


def converted(column: str, current: Kind, target: Kind) -> str:
    """A column's values as the target kind. Text keeps what `::VARCHAR` would lose: a
    timestamp's microseconds and a VARIANT string's quotes (TO_JSON writes JSON text)."""
    if target == Kind.TEXT and current == Kind.JSON:
        return f"TO_JSON({column})"
    if target == Kind.TEXT and current in TEXT_FORMATS:
        return f"TO_VARCHAR({column}, '{TEXT_FORMATS[current]}')"
    return f"{column}::{SNOWFLAKE_TYPES[target]}"


def insert_expression(name: str, staged: Kind, target: Kind) -> str:
    """A JSON target column is only ever fed JSON text (anything else widened it to TEXT),
    staged as text; anything else is converted as a widening converts it."""
    column = quote_identifier(name)
    if target == Kind.JSON:
        return f"PARSE_JSON({column})"
    return converted(column, staged_kind(staged), target)

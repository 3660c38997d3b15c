"""Redshift's SQL types for each kind, its rules for names, and what its columns can hold.

Redshift's `VARCHAR` holds at most 65,535 bytes (its `TEXT` is only `VARCHAR(256)`), so text
columns are `VARCHAR(65535)`; longer text is cut at a character boundary. JSON goes into
`SUPER` through `JSON_PARSE`, which takes at most 65,535 bytes unless the cluster sets
`enable_large_strings_opt_in` (then 16,000,000, `json_limit`); larger JSON is stored as NULL.
Both are counted in the materialization metadata (`FitCounts`).
"""

from dataclasses import dataclass

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from dagster._core.storage.db_io_manager import TableSlice

from clevertap_assets.batch.kinds import Kind
from clevertap_assets.destinations.redshift.client import table_columns
from clevertap_assets.naming import REDSHIFT_COLUMNS, ColumnRules

MAX_VARCHAR_BYTES = 65_535
MAX_SUPER_BYTES = 16 * 1024 * 1024
"""SUPER's limit per value (https://docs.aws.amazon.com/redshift/latest/dg/limitations-super.html)."""
LARGE_STRINGS_SETTING = "enable_large_strings_opt_in"
MAX_JSON_BYTES = 65_535
"""`JSON_PARSE`'s input and a SUPER string, unless the cluster sets `LARGE_STRINGS_SETTING`
(https://docs.aws.amazon.com/redshift/latest/dg/r_enable_large_strings_opt_in.html)."""
MAX_LARGE_JSON_BYTES = 16_000_000
"""The same once the cluster opted in (same page)."""

REDSHIFT_TYPES = {
    Kind.BOOLEAN: "BOOLEAN",
    Kind.BIGINT: "BIGINT",
    Kind.DOUBLE: "DOUBLE PRECISION",
    Kind.TIMESTAMP: "TIMESTAMP",
    Kind.TIMESTAMPTZ: "TIMESTAMPTZ",
    Kind.TEXT: f"VARCHAR({MAX_VARCHAR_BYTES})",
}
_KINDS_BY_CATALOG_TYPE = {
    "boolean": Kind.BOOLEAN,
    "bigint": Kind.BIGINT,
    "double precision": Kind.DOUBLE,
    "timestamp without time zone": Kind.TIMESTAMP,
    "timestamp with time zone": Kind.TIMESTAMPTZ,
    "character varying": Kind.TEXT,
}
ARROW_TYPES = {
    Kind.BOOLEAN: pa.bool_(),
    Kind.BIGINT: pa.int64(),
    Kind.DOUBLE: pa.float64(),
    Kind.TIMESTAMP: pa.timestamp("us"),
    Kind.TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
    Kind.TEXT: pa.string(),
    Kind.JSON: pa.string(),
}


@dataclass(frozen=True)
class RedshiftDialect:
    """Redshift's SQL for each kind, and its rules for column names."""

    columns: ColumnRules = REDSHIFT_COLUMNS
    json_type: str = "SUPER"
    json_parse: str = "JSON_PARSE(%s)"
    json_serialize: str = "JSON_SERIALIZE({column})"

    def column_type(self, kind: Kind) -> str:
        return self.json_type if kind == Kind.JSON else REDSHIFT_TYPES[kind]

    def kind_of_catalog_type(self, data_type: str) -> Kind:
        if data_type.lower() == self.json_type.lower():
            return Kind.JSON
        return _KINDS_BY_CATALOG_TYPE.get(data_type.lower(), Kind.TEXT)

    def placeholder(self, kind: Kind) -> str:
        """Parameters go in text format (`%t`), which every Redshift release reads, rather
        than the binary format psycopg picks for numbers and timestamps by default."""
        return self.json_parse.replace("%s", "%t") if kind == Kind.JSON else "%t"

    def as_text(self, column: str, kind: Kind) -> str:
        """A column's values as text, spelled as DuckDB casts them (`true`, `10`, `1.5`)."""
        if kind == Kind.JSON:
            return self.json_serialize.format(column=column)
        if kind == Kind.BOOLEAN:
            return f"CASE WHEN {column} THEN 'true' WHEN NOT {column} THEN 'false' END"
        return f"CAST({column} AS {REDSHIFT_TYPES[Kind.TEXT]})"

    def converted(self, column: str, old: Kind, new: Kind) -> str:
        """The expression that moves a column's values to its widened kind."""
        if new == Kind.TEXT:
            return self.as_text(column, old)
        return f"CAST({column} AS {self.column_type(new)})"


def existing_kinds(
    connection: psycopg.Connection, dialect: RedshiftDialect, table_slice: TableSlice
) -> dict[str, Kind]:
    columns = table_columns(connection, table_slice.schema, table_slice.table)
    return {name: dialect.kind_of_catalog_type(data_type) for name, data_type in columns.items()}


@dataclass
class FitCounts:
    """Values changed to fit Redshift's columns, reported with the load."""

    text_values_truncated: int = 0
    json_values_nulled: int = 0
    json_values_nulled_for_copy: int = 0


def _truncate_utf8(value: str) -> str:
    return value.encode()[:MAX_VARCHAR_BYTES].decode(errors="ignore")


def large_strings_enabled(connection: psycopg.Connection) -> bool:
    """Whether the cluster opted in to large strings (`LARGE_STRINGS_SETTING`); a cluster too
    old to know the function has not. Asked in a transaction of its own, ended here, so a
    load's transaction still begins with its LOCK."""
    try:
        enabled = connection.execute("SELECT is_large_string_enabled()").fetchone()[0]
    except psycopg.errors.UndefinedFunction:
        enabled = False
    connection.rollback()
    return bool(enabled)


def json_limit(connection: psycopg.Connection) -> int:
    """The most JSON text, in bytes, `JSON_PARSE` takes on this cluster."""
    return MAX_LARGE_JSON_BYTES if large_strings_enabled(connection) else MAX_JSON_BYTES


def json_limit_text(json_bytes: int) -> str:
    """Why JSON over `json_bytes` cannot be stored, naming the setting that raises it."""
    if json_bytes == MAX_JSON_BYTES:
        return (
            f"Redshift's JSON_PARSE takes at most {MAX_JSON_BYTES:,} bytes unless the cluster "
            f"sets {LARGE_STRINGS_SETTING} (in its parameter group, or the workgroup's "
            "configuration; a provisioned cluster needs a reboot)"
        )
    return f"a SUPER string holds at most {json_bytes:,} bytes"


def _fit_strings(array: pa.Array, limit: int, is_json: bool, counts: FitCounts) -> pa.Array:
    """NUL characters are dropped (no PostgreSQL-protocol text may hold them); text over
    `limit` bytes is cut, and such JSON, which cannot be cut, becomes NULL."""
    array = pc.replace_substring(array, "\x00", "")
    too_long = pc.fill_null(pc.greater(pc.binary_length(array), limit), False)
    over = pc.sum(too_long).as_py() or 0
    if not over:
        return array
    if is_json:
        counts.json_values_nulled += over
        return pc.if_else(too_long, pa.scalar(None, array.type), array)
    counts.text_values_truncated += over
    values = array.to_pylist()
    return pa.array([_truncate_utf8(v) if v is not None else None for v in values], array.type)


def column_values(
    array: pa.Array, incoming: Kind, target: Kind, counts: FitCounts, json_bytes: int
) -> pa.Array:
    """Values ready for a column of the target kind: text columns receive text, JSON of at
    most `json_bytes` (`json_limit`)."""
    if target == Kind.TEXT and incoming not in (Kind.TEXT, Kind.JSON):
        array = pc.cast(array, pa.string())
    if target == Kind.JSON:
        return _fit_strings(array, json_bytes, True, counts)
    if target == Kind.TEXT:
        return _fit_strings(array, MAX_VARCHAR_BYTES, False, counts)
    return array

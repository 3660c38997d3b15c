"""BigQuery's SQL types for each kind, and how values move between them."""

import json

from google.cloud import bigquery

from clevertap_assets.batch.kinds import Kind

BIGQUERY_TYPES = {
    Kind.BOOLEAN: "BOOL",
    Kind.BIGINT: "INT64",
    Kind.DOUBLE: "FLOAT64",
    Kind.TIMESTAMP: "DATETIME",
    Kind.TIMESTAMPTZ: "TIMESTAMP",
    Kind.TEXT: "STRING",
    Kind.JSON: "JSON",
}
# The API answers with legacy names (INTEGER, FLOAT, BOOLEAN) for tables it describes.
_KINDS_BY_TYPE = {
    **{sql: kind for kind, sql in BIGQUERY_TYPES.items()},
    "INTEGER": Kind.BIGINT,
    "FLOAT": Kind.DOUBLE,
    "BOOLEAN": Kind.BOOLEAN,
}


def quote(name: str) -> str:
    """A BigQuery identifier in backticks (names may start with a digit or be keywords)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def catalog_kind(field_type: str) -> Kind:
    return _KINDS_BY_TYPE.get(field_type, Kind.TEXT)


def staged_kind(kind: Kind) -> Kind:
    """JSON travels as text in the Parquet file and is parsed in the MERGE."""
    return Kind.TEXT if kind == Kind.JSON else kind


def schema_fields(columns: dict[str, Kind]) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(name, BIGQUERY_TYPES[kind]) for name, kind in columns.items()]


def widened(column: str, current: Kind, target: Kind) -> str:
    """A quoted column's values as its widened kind."""
    if current == Kind.JSON:
        return f"TO_JSON_STRING({column})"
    return f"CAST({column} AS {BIGQUERY_TYPES[target]})"


def exact_json(column: str) -> str:
    """JSON text as BigQuery's JSON, every number exactly as CleverTap sent it.

    BigQuery's JSON holds numbers as INT64, UINT64 or FLOAT64; `PARSE_JSON` refuses a number
    none of them holds exactly, unless told to round it (`wide_number_mode`,
    https://cloud.google.com/bigquery/docs/reference/standard-sql/json_functions#parse_json).
    Rounding would make BigQuery's copy differ from CleverTap's and the other destinations'
    in silence, so a document with such a number is kept whole as a JSON string of its
    exact text instead (`JSON_VALUE` gives the text back). Text that is not JSON at all
    still fails the statement (the round-mode parse), so nothing is stored wrong."""
    exact = f"SAFE.PARSE_JSON({column}, wide_number_mode => 'exact')"
    checked = f"PARSE_JSON({column}, wide_number_mode => 'round')"
    return (
        f"IF({column} IS NULL, NULL, "
        f"COALESCE({exact}, IF({checked} IS NULL, NULL, TO_JSON({column}))))"
    )


def converted(column: str, incoming: Kind, target: Kind) -> str:
    """A staged, quoted column as the target column's type (text to JSON, or widened)."""
    if target == Kind.JSON:
        return exact_json(column)
    if staged_kind(incoming) == target:
        return column
    return f"CAST({column} AS {BIGQUERY_TYPES[target]})"


def every_partition(column: str) -> str:
    """A condition true of every row, on the partitioning column: a table whose owner set
    `require_partition_filter` refuses any query of it without a filter on that column
    (https://cloud.google.com/bigquery/docs/managing-partitioned-tables#require-filter),
    and the loads and the duplicate check read whole tables."""
    return f"({quote(column)} IS NULL OR {quote(column)} IS NOT NULL)"


def string_literal(value: str) -> str:
    """A GoogleSQL string literal (its escapes are JSON's)."""
    return json.dumps(value)


def layout_and_options(table: bigquery.Table) -> str:
    """The table's partitioning, clustering and options, spelled for `CREATE OR REPLACE`: a
    widening rewrites the table (BigQuery changes a column to STRING no other way) and
    must keep what its owner set (https://cloud.google.com/bigquery/docs/reference/standard-sql/data-definition-language#create_table_statement).
    Column descriptions and policy tags cannot be written here: the load puts them back
    with a schema update after the rewrite."""
    clauses = []
    partitioning = table.time_partitioning
    if partitioning and partitioning.field:
        clauses.append(f"PARTITION BY DATETIME_TRUNC({quote(partitioning.field)}, DAY)")
    if table.clustering_fields:
        clauses.append("CLUSTER BY " + ", ".join(map(quote, table.clustering_fields)))
    labels = ", ".join(
        f"({string_literal(k)}, {string_literal(v)})" for k, v in (table.labels or {}).items()
    )
    options = {
        "description": string_literal(table.description) if table.description else None,
        "friendly_name": string_literal(table.friendly_name) if table.friendly_name else None,
        "labels": f"[{labels}]" if labels else None,
        "expiration_timestamp": (
            f"TIMESTAMP {string_literal(table.expires.isoformat())}" if table.expires else None
        ),
        "require_partition_filter": "TRUE" if table.require_partition_filter else None,
        "partition_expiration_days": (
            str(partitioning.expiration_ms / 86_400_000)
            if partitioning and partitioning.expiration_ms
            else None
        ),
    }
    written = ", ".join(f"{name} = {value}" for name, value in options.items() if value)
    if written:
        clauses.append(f"OPTIONS ({written})")
    return "".join(" " + clause for clause in clauses)

"""Names that reach the warehouse: asset keys, table names and column names.

Every identifier we create is derived here, so the rules (lower snake case, one `_` for any
run of other characters, Hevo's `<prefix>_<table>`) live in one place and every destination
agrees on them.
"""

import re

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_TABLE_PREFIX = re.compile(r"^[A-Za-z0-9_]+$")


def slug(name: str) -> str:
    """`App Launched` -> `app_launched`: lower case, runs of other characters become one `_`.

    Leading and trailing underscores are dropped so that a hostile or decorated name
    (`x"; drop table y; --`) still gives a plain identifier (`x_drop_table_y`).
    """
    return _NON_ALNUM.sub("_", name.lower()).strip("_")


def column_name(key: str) -> str:
    """A property key as a column name part: `objectId` -> `object_id`, `CT Source` -> `ct_source`.

    CleverTap mixes camelCase (`objectId`) with spaced names (`CT Source`); splitting camel
    humps first makes both read the same way in SQL. A key with no letters or digits keeps a
    stable, visible name instead of vanishing.
    """
    name = slug(_CAMEL_BOUNDARY.sub("_", key))
    return name or "_"


def table_name(event_slug: str, table_prefix: str | None) -> str:
    """Hevo's convention: the prefix is joined with an underscore the user does not type."""
    return f"{table_prefix}_{event_slug}" if table_prefix else event_slug


def is_valid_table_prefix(prefix: str) -> bool:
    return bool(_TABLE_PREFIX.match(prefix))


def quote_identifier(name: str) -> str:
    """Double-quote an identifier for DuckDB, Snowflake, PostgreSQL and Redshift.

    Our names are slugs already; quoting anyway keeps a name that starts with a digit or
    collides with a keyword (`order`, `group`) valid.
    """
    return '"' + name.replace('"', '""') + '"'

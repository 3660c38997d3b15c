"""Names that reach the warehouse: asset keys, table names and column names.

Every identifier we create is derived here, so the rules (lower snake case, one `_` for any
run of other characters, `<prefix>_<table>`) live in one place and every destination agrees on
them.
"""

import hashlib
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from anyascii import anyascii

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
    """`<prefix>_<event slug>`: the table prefix gets an underscore the user does not type."""
    return f"{table_prefix}_{event_slug}" if table_prefix else event_slug


def is_valid_table_prefix(prefix: str) -> bool:
    return bool(_TABLE_PREFIX.match(prefix))


def quote_identifier(name: str) -> str:
    """Double-quote an identifier for DuckDB, Snowflake, PostgreSQL and Redshift.

    Our names are slugs already; quoting anyway keeps a name that starts with a digit or
    collides with a keyword (`order`, `group`) valid.
    """
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class ColumnRules:
    """What one destination accepts as a column name, beyond our slugs' plain ASCII."""

    max_bytes: int
    letter_first: bool = False
    lower_case: bool = False


SNOWFLAKE_IDENTIFIER_BYTES = 255
"""https://docs.snowflake.com/en/sql-reference/identifiers-syntax"""
BIGQUERY_TABLE_BYTES = 1024
"""https://cloud.google.com/bigquery/docs/tables#table_naming"""
REDSHIFT_IDENTIFIER_BYTES = 127
"""https://docs.aws.amazon.com/redshift/latest/dg/r_names.html"""
BIGQUERY_COLUMNS = ColumnRules(max_bytes=300, letter_first=True)
"""A letter or `_` first, at most 300 characters; Parquet loads take no flexible names by
default (https://cloud.google.com/bigquery/docs/schemas#column_names,
https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-parquet)."""
SNOWFLAKE_COLUMNS = ColumnRules(max_bytes=SNOWFLAKE_IDENTIFIER_BYTES)
"""At most 255 characters (https://docs.snowflake.com/en/sql-reference/identifiers-syntax)."""
REDSHIFT_COLUMNS = ColumnRules(max_bytes=REDSHIFT_IDENTIFIER_BYTES, lower_case=True)
"""At most 127 bytes, longer names are truncated, and names fold to lower case
(https://docs.aws.amazon.com/redshift/latest/dg/r_names.html)."""
_HASH_CHARACTERS = 8


WEBHOOK_TABLE = "webhook_events"
"""The webhook asset's table (before the prefix)."""


def destination_column(name: str, rules: ColumnRules) -> str:
    """A column name the destination stores exactly as given, so the same property always
    maps to the same column: `_` before a leading digit where a letter must come first, and a
    name over the limit fitted by `fitted_identifier`."""
    if rules.lower_case:
        name = name.lower()
    if rules.letter_first and name[:1].isdigit():
        name = "_" + name
    return fitted_identifier(name, rules.max_bytes)


def fitted_identifier(name: str, max_bytes: int, suffix: str = "") -> str:
    """`name` followed by `suffix` within `max_bytes` UTF-8 bytes: the one rule for every
    identifier the loads build (columns, and the staging tables and widening columns named
    after a table or column). A name that does not fit is cut short and followed by a hash of
    the whole name before the suffix, so two long names alike in their first bytes stay two
    identifiers, and the same name always gives the same identifier."""
    whole = name + suffix
    if len(whole.encode()) <= max_bytes:
        return whole
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_CHARACTERS]
    room = max_bytes - len(suffix.encode()) - _HASH_CHARACTERS - 1
    head = name.encode()[:room].decode(errors="ignore")
    return f"{head}_{digest}{suffix}"


SYSTEM_COLUMN_NAMES = frozenset({"event_name", "event_time", "event_time_utc"})
"""The loader's own columns that a key's name can read as (no key's name starts with `_`): a
key named so (a top-level `event_name`, `Event Name`) gets the hashed name, like any other
key whose plain name is taken."""


class ColumnNames:
    """Which property key path owns which column, so colliding keys never share one.

    `CT Source`, `ct_source` and `ct-source` all read `ct_source` as SQL names, yet they are
    three properties with three values. The first path seen for a name gets the plain name;
    every other path whose plain name is taken gets `<name>_<8 hex of SHA-256 of its path>`.
    Which path came first is only stable if it is remembered: every run starts from the
    record stored with the tables (`destinations.column_map`, `ColumnNames(record)`), and
    each load stores the columns it introduces, so a key keeps its column across pages, runs,
    days and Dagster instances. Shared by the spool threads of a run (pages parsed in worker
    processes are named there, see `normalise.column_names`).
    """

    def __init__(self, record: Mapping[str, Sequence[str]] | None = None) -> None:
        self._by_path: dict[tuple[str, ...], str] = {}
        self._taken: set[str] = set(SYSTEM_COLUMN_NAMES)
        self._lock = threading.Lock()
        for column, path in (record or {}).items():
            self._by_path[tuple(path)] = column
            self._taken.add(column)

    def column_for(self, path: Sequence[str]) -> str:
        key = tuple(path)
        with self._lock:
            known = self._by_path.get(key)
            if known is not None:
                return known
            plain = "__".join(column_name(part) for part in key)
            name = plain if plain not in self._taken else f"{plain}_{_path_digest(key)}"
            self._by_path[key] = name
            self._taken.add(name)
            return name

    def record(self) -> dict[str, list[str]]:
        """Column name to the key path it holds, for the asset's metadata."""
        with self._lock:
            return {column: list(path) for path, column in sorted(self._by_path.items())}


def merged_records(
    first: Mapping[str, Sequence[str]], then: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """`first`'s columns, and those of `then` whose name and key path `first` leaves free:
    where the two disagree about a key or a column, `first` wins."""
    paths = {tuple(path) for path in first.values()}
    kept = {
        column: list(path)
        for column, path in then.items()
        if column not in first and tuple(path) not in paths
    }
    return {**kept, **{column: list(path) for column, path in first.items()}}


def agreed_names(
    stored: Mapping[str, Sequence[str]], batch: Mapping[str, Sequence[str]]
) -> dict[str, str]:
    """Each of a batch's columns (its record, `batch`) to the column its key path owns in the
    table (`stored`): a run that named a key before another load committed a different
    column for it, or took a name that load gave another key, moves to the stored names; a
    key the table does not know yet keeps the run's name unless that name is taken."""
    names = ColumnNames(merged_records(stored, batch))
    return {column: names.column_for(path) for column, path in batch.items()}


def _path_digest(path: tuple[str, ...]) -> str:
    return hashlib.sha256("\x1f".join(path).encode()).hexdigest()[:_HASH_CHARACTERS]


def event_slugs(event_names: Sequence[str]) -> dict[str, str]:
    """Each event name's table and asset name, readable, stable and unique.

    CleverTap projects name events in any script (`購入`, Hindi, Arabic) and names may differ
    only in case or punctuation, yet each is its own event. A name is transliterated to ASCII
    (anyascii: `Ünïcødé Évènt` -> `unicode_event`, `購入` -> `gouru`) and slugged; a name that
    was not plain ASCII, or whose slug an earlier name of the list already has, gets the first
    8 hex of its SHA-256 after it, and one with nothing left (`✓✓` keeps `vv`, an invisible
    name keeps nothing) is `event_<hash>`. The hash depends on the name alone and the plain
    slug goes to the first name of the CSV, so the names do not move as events are added.
    """
    slugs: dict[str, str] = {}
    taken: set[str] = set()
    for name in event_names:
        plain = slug(anyascii(name))
        if plain and name.isascii() and plain not in taken:
            chosen = plain
        else:
            digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_CHARACTERS]
            chosen = f"{plain or 'event'}_{digest}"
        slugs[name] = chosen
        taken.add(chosen)
    return slugs

"""The column kinds every destination maps to its own types, and how a drifting property widens.

A property's type can drift between records and pages (a number here, text there); the
kinds are the small lattice that both the spool and the destinations agree on, so a
drifting property is kept, never dropped.
"""

import functools
from enum import StrEnum

import polars as pl
import pyarrow as pa


class Kind(StrEnum):
    """The few column types a CleverTap table needs, mapped by each destination to its own."""

    BOOLEAN = "boolean"
    BIGINT = "bigint"
    DOUBLE = "double"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    TEXT = "text"
    JSON = "json"


def widen(old: Kind, new: Kind) -> Kind:
    """The narrowest kind holding both: numbers meet in DOUBLE, anything else falls to TEXT,
    so a property whose type drifts is kept, never dropped."""
    if old == new:
        return old
    if {old, new} == {Kind.BIGINT, Kind.DOUBLE}:
        return Kind.DOUBLE
    return Kind.TEXT


def kind_of(arrow_type: pa.DataType, is_json: bool) -> Kind:
    if pa.types.is_boolean(arrow_type):
        return Kind.BOOLEAN
    if pa.types.is_integer(arrow_type):
        return Kind.BIGINT
    if pa.types.is_floating(arrow_type):
        return Kind.DOUBLE
    if pa.types.is_timestamp(arrow_type):
        return Kind.TIMESTAMPTZ if arrow_type.tz else Kind.TIMESTAMP
    return Kind.JSON if is_json else Kind.TEXT


@functools.cache
def kind_of_polars(dtype: pl.DataType) -> Kind | None:
    """A spooled column's kind; None for an all-null column, which says nothing of its type."""
    if dtype == pl.Null:
        return None
    return kind_of(pl.Series(dtype=dtype).to_arrow().type, is_json=False)

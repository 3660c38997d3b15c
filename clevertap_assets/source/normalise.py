"""Turn one page of CleverTap records into warehouse-ready columns.

The page is the unit of work: the client yields pages of up to 5000 records and each becomes
one polars frame, so memory stays flat however long the window. The page is parsed once: one
walk over the parsed records gives each its canonical JSON and SHA-256 (the dedupe key) and
fills one list of values per key path, which become typed columns; time parsing, `$D_` dates
and the size limits are polars expressions.

Until `NormalisedPage.named` gives them their columns, data columns are named by their key
path (`path_key`): naming is the one step that needs the run's shared state (`ColumnNames`),
so everything before it can run in another process (see `batch.parse_processes`).
"""

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

import orjson
import polars as pl

from clevertap_assets.naming import ColumnNames

JSON_SECTIONS = ("profile", "event_props", "session_props")
SYSTEM_COLUMNS = ("_record_id", "event_name", "ts", "event_time", "event_time_utc")
_NAMED_COLUMNS = frozenset(SYSTEM_COLUMNS) - {"ts"}
"""System columns named as they are; `ts` is the record's own key, named like the others."""
PATH_SEPARATOR = "\x1f"


_SYSTEM_NAME_MARK = "\x1e"
"""Before a top-level key named like a system column (`event_name`) in its frame column name,
so the record's own value is not overwritten by the system column (ASCII's record separator,
which CleverTap's property names do not contain either)."""


def column_names(keys: Iterable[str], names: ColumnNames) -> dict[str, str]:
    """The column name of each key path of a page's columns (see `ColumnNames`), asked in
    the page's order (key paths sorted), so the first path of a run to want a name gets it,
    whichever process parsed the page."""
    return {
        key: names.column_for(key.removeprefix(_SYSTEM_NAME_MARK).split(PATH_SEPARATOR))
        for key in keys
        if key not in _NAMED_COLUMNS
    }


def path_key(path: tuple[str, ...]) -> str:
    """A key path as one frame column name until the page is named (ASCII's unit separator,
    which CleverTap's property names do not contain)."""
    key = PATH_SEPARATOR.join(path)
    return _SYSTEM_NAME_MARK + key if key in _NAMED_COLUMNS else key


_DATE_PATTERN = r"^\$D_-?\d+$"

_WIDE_NUMBER = re.compile(rb"\d{20}|[eE][+-]?\d{3}")
"""Text a number orjson would not keep exactly could hold: 20 digits or more (beyond 64 bits
orjson reads an integer as a float), or a 3-digit exponent (`1e400` is past a double). It
also matches inside strings; such a page only takes the exact path for nothing."""
_INT_RANGE = (-(2**63), 2**64 - 1)
"""The integers orjson reads as integers."""


def load_records(raw: bytes) -> Any:
    """A page's JSON as orjson reads it, except that a number orjson would round or refuse
    (an integer wider than 64 bits, `1e400`) is kept as its exact text (`orjson.Fragment`):
    its record's id and its column hold the digits CleverTap sent, so records differing only
    there stay distinct. Every other value is what orjson reads, so the ids of records without
    such numbers do not change; pages without them (nearly all) are read by orjson alone."""
    if not _WIDE_NUMBER.search(raw):
        return orjson.loads(raw)
    return json.loads(raw, parse_int=_exact_int, parse_float=_exact_float, parse_constant=_not_json)


def _exact_int(text: str) -> int | orjson.Fragment:
    if len(text) <= 21:  # longer is past 64 bits, and too long for `int` to be cheap
        value = int(text)
        if _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            return value
    return orjson.Fragment(text)


def _exact_float(text: str) -> float | orjson.Fragment:
    value = float(text)
    return value if math.isfinite(value) else orjson.Fragment(text)


def _not_json(text: str) -> None:
    raise ValueError(f"{text} is not JSON")


@dataclass(frozen=True)
class NormaliseOptions:
    event_name: str
    timezone: str
    auto_mapping: bool
    max_record_bytes: int
    max_row_bytes: int


@dataclass(frozen=True)
class PageCounts:
    """What a page lost to the size limits or an unreadable `ts`, and its size: it follows
    the page into the spool's statistics, wherever the page was written."""

    oversize_records: int
    oversize_rows: int
    invalid_ts: int
    bytes: int
    largest_row_bytes: int = 0
    """The largest row kept, as `_row_bytes` measures it: what a database must hold at once."""
    skipped_by_day: dict[date, int] = field(default_factory=dict)
    """Records and rows over the size limits per local day (those without a readable `ts`
    have no day: they are counted in `invalid_ts` only), so each day's metadata says what
    that day lost."""


@dataclass(frozen=True)
class NormalisedPage:
    frame: pl.DataFrame
    json_columns: frozenset[str]
    counts: PageCounts

    def named(self, names: ColumnNames) -> "NormalisedPage":
        """The page with each key path's column name (see `column_names`)."""
        renames = column_names(self.frame.columns, names)
        return replace(
            self,
            frame=self.frame.rename(renames),
            json_columns=frozenset(renames.get(key, key) for key in self.json_columns),
        )


@dataclass(frozen=True)
class ParsedPage:
    """A page reduced where it was parsed: each kept record's key and its data columns as a
    frame. The parsed dicts are read exactly once, here, and freed; the frame holds a
    fraction of their memory until `normalise_parsed` shapes it."""

    data: pl.DataFrame
    json_columns: frozenset[str]
    record_ids: list[str]
    oversize_records: int
    bytes: int
    oversize_ts: list[str] = field(default_factory=list)
    """The `ts` of each record over the size limit, to count it against its day."""


def parse_page(records: Sequence[dict], options: NormaliseOptions) -> ParsedPage:
    """The per-record Python part of normalising (it holds the GIL), done once per record:
    canonical JSON and its SHA-256 (the dedupe key: the same record, received twice, gets the
    same key), the 128 MB record limit, and the record's leaves as columns."""
    canonical = [orjson.dumps(record, option=orjson.OPT_SORT_KEYS) for record in records]
    keep = [len(body) <= options.max_record_bytes for body in canonical]
    kept = [record for record, k in zip(records, keep, strict=True) if k]
    if options.auto_mapping:
        data, json_columns = _flattened(kept)
    else:
        data, json_columns = _sections_frame(kept), frozenset(JSON_SECTIONS)
    return ParsedPage(
        data=data,
        json_columns=json_columns,
        record_ids=[
            hashlib.sha256(body).hexdigest() for body, k in zip(canonical, keep, strict=True) if k
        ],
        oversize_records=len(records) - len(kept),
        bytes=sum(len(body) for body in canonical),
        oversize_ts=[str(r.get("ts")) for r, k in zip(records, keep, strict=True) if not k],
    )


def normalise_page(
    records: Sequence[dict], options: NormaliseOptions, names: ColumnNames | None = None
) -> NormalisedPage:
    """One page as a frame with the system columns first, then the data columns, named by
    `names` (a fresh `ColumnNames` when the caller keeps none)."""
    page = normalise_parsed(parse_page(records, options), options)
    return page.named(names if names is not None else ColumnNames())


def normalise_parsed(page: ParsedPage, options: NormaliseOptions) -> NormalisedPage:
    """The columnar part of normalising (polars, mostly without the GIL) of a page
    `parse_page` reduced; its data columns are still named by key path."""
    frame = _with_system_columns(page.data, page.record_ids, options)
    valid = frame.filter(pl.col("event_time").is_not_null())
    row_bytes = valid.select(_row_bytes(valid)).to_series()
    fits = row_bytes <= options.max_row_bytes
    within_limit = valid.filter(fits)
    counts = PageCounts(
        largest_row_bytes=int(row_bytes.filter(fits).max() or 0),
        oversize_records=page.oversize_records,
        oversize_rows=valid.height - within_limit.height,
        invalid_ts=frame.height - valid.height,
        bytes=page.bytes,
        skipped_by_day=_skipped_by_day(
            valid.filter(~fits)["event_time"], page.oversize_ts, options.timezone
        ),
    )
    return NormalisedPage(within_limit, page.json_columns & set(within_limit.columns), counts)


def _skipped_by_day(
    oversize_rows: pl.Series, oversize_ts: list[str], timezone: str
) -> dict[date, int]:
    if oversize_rows.is_empty() and not oversize_ts:
        return {}
    records = pl.DataFrame({"ts": oversize_ts}, schema={"ts": pl.String}).select(
        _local_event_time(_ts_integer(pl.col("ts")), timezone)
    )
    days = pl.concat([oversize_rows.to_frame("t"), records.to_series().to_frame("t")])
    counts = days.drop_nulls().group_by(pl.col("t").dt.date()).len()
    return dict(counts.iter_rows())


def _with_system_columns(
    data: pl.DataFrame, record_ids: list[str], options: NormaliseOptions
) -> pl.DataFrame:
    ts = _ts_integer(pl.col("ts"))
    event_time = _local_event_time(ts, options.timezone)
    frame = data.with_columns(
        pl.Series("_record_id", record_ids, dtype=pl.String),
        pl.lit(options.event_name, pl.String).alias("event_name"),
        ts.alias("ts"),
    ).with_columns(event_time.alias("event_time"))
    frame = frame.with_columns(
        pl.col("event_time")
        .dt.replace_time_zone(options.timezone, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
        .alias("event_time_utc")
    )
    data_columns = [c for c in frame.columns if c not in SYSTEM_COLUMNS]
    return frame.select(*SYSTEM_COLUMNS, *data_columns)


def _ts_integer(ts: pl.Expr) -> pl.Expr:
    """`ts` as an integer from an integer, a float (`20250607130935.0`, epoch seconds with a
    fraction, cut to the second) or either as text (a `ts` column widened to text by one odd
    record); null for anything else."""
    as_float = ts.cast(pl.String, strict=False).cast(pl.Float64, strict=False)
    return pl.coalesce(ts.cast(pl.Int64, strict=False), as_float.cast(pl.Int64, strict=False))


def _local_event_time(ts: pl.Expr, timezone: str) -> pl.Expr:
    """CleverTap's 14-digit local `yyyyMMddHHmmss`; 13- and 10-digit epochs are converted into
    the project's zone so every row lands in the day partition CleverTap would put it in."""

    def from_epoch(unit: str) -> pl.Expr:
        return (
            pl.from_epoch(ts, time_unit=unit)
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone(timezone)
            .dt.replace_time_zone(None)
            .dt.cast_time_unit("us")
        )

    local = ts.cast(pl.String).str.strptime(pl.Datetime("us"), "%Y%m%d%H%M%S", strict=False)
    return (
        pl.when(ts >= 10**13)
        .then(local)
        .when(ts >= 10**11)
        .then(from_epoch("ms"))
        .otherwise(from_epoch("s"))
    )


def _row_bytes(frame: pl.DataFrame) -> pl.Expr:
    """A row's size as the warehouse will store it: text by its UTF-8 length, the rest 8 bytes."""
    text = [
        pl.col(c).str.len_bytes().fill_null(0) for c, t in frame.schema.items() if t == pl.String
    ]
    fixed = sum(1 for t in frame.schema.values() if t != pl.String) * 8
    return pl.sum_horizontal(text) + fixed if text else pl.lit(fixed)


def _sections_frame(records: Sequence[dict]) -> pl.DataFrame:
    """AUTO_MAPPING=false: the three sections as JSON text exactly as received, schema fixed."""
    columns: dict[str, list] = {"ts": [record.get("ts") for record in records]}
    for section in JSON_SECTIONS:
        columns[section] = [
            orjson.dumps(record[section]).decode() if record.get(section) is not None else None
            for record in records
        ]
    schema = {"ts": pl.Int64, **dict.fromkeys(JSON_SECTIONS, pl.String)}
    return pl.DataFrame(columns, schema=schema, strict=False)


_Node = tuple[dict[str, list], dict[str, "_Node"]]
"""One level of the records' objects while they are flattened: the scalar and list values
under each key (a list with a slot per record), and the objects under each key."""


def _flattened(records: Sequence[dict]) -> tuple[pl.DataFrame, frozenset[str]]:
    """AUTO_MAPPING=true: every scalar leaf its own column, lists as JSON text.

    One walk over the parsed records fills a list of values per key path, then each list
    becomes a typed column: one Python type is that type, integers beside floats are floats,
    any other mix (a bool beside a number, a number beside text, an object's key holding a
    scalar elsewhere keeps both) is text, so a drifting property is kept, never dropped.
    """
    root: _Node = ({}, {})
    for row, record in enumerate(records):
        _collect(record, root, row, len(records))
    columns, json_columns = [], set()
    for path, values in sorted(_paths(root, ())):
        series, is_json = _typed(path_key(path), values)
        if series is not None:
            columns.append(series)
            if is_json:
                json_columns.add(series.name)
    frame = pl.DataFrame(columns, height=len(records))
    if "ts" not in frame.columns:  # a page without any `ts`: every record is invalid
        frame = frame.with_columns(ts=pl.lit(None, pl.Int64))
    return _parse_dates(frame), frozenset(json_columns)


def _collect(record: dict, node: _Node, row: int, rows: int) -> None:
    leaves, objects = node
    for key, value in record.items():
        if type(value) is dict:
            child = objects.get(key)
            if child is None:
                child = objects[key] = ({}, {})
            _collect(value, child, row, rows)
        else:
            column = leaves.get(key)
            if column is None:
                column = leaves[key] = [None] * rows
            column[row] = value


def _paths(node: _Node, prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], list]]:
    leaves, objects = node
    for key, values in leaves.items():
        yield (*prefix, key), values
    for key, child in objects.items():
        yield from _paths(child, (*prefix, key))


_SORTED = orjson.OPT_SORT_KEYS
_DTYPES = {str: pl.String, int: pl.Int64, float: pl.Float64, bool: pl.Boolean}


def _typed(name: str, values: list) -> tuple[pl.Series | None, bool]:
    """A column of one key path's values, and whether it holds JSON; None when all null."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return None, False
    if kinds == {list}:
        encoded = [None if v is None else orjson.dumps(v, option=_SORTED).decode() for v in values]
        return pl.Series(name, encoded, dtype=pl.String), True
    if kinds == {int, float}:
        dtype = pl.Float64
    else:
        dtype = _DTYPES.get(kinds.pop()) if len(kinds) == 1 else None
    if dtype is not None:
        try:
            return pl.Series(name, values, dtype=dtype), False
        except (TypeError, OverflowError):  # beyond a signed 64-bit integer: kept as digits
            pass
    text = [
        v if v is None or type(v) is str else orjson.dumps(v, option=_SORTED).decode()
        for v in values
    ]
    return pl.Series(name, text, dtype=pl.String), False


def _parse_dates(frame: pl.DataFrame) -> pl.DataFrame:
    """A text column whose every value is CleverTap's `$D_<epoch seconds>` becomes a timestamp."""
    candidates = [c for c, t in frame.schema.items() if t == pl.String and c != "ts"]
    if not candidates:
        return frame
    checks = frame.select(
        (pl.col(c).str.contains(_DATE_PATTERN).all() & pl.col(c).is_not_null().any()).alias(c)
        for c in candidates
    ).row(0, named=True)
    dates = [c for c, is_date in checks.items() if is_date]
    return frame.with_columns(
        pl.from_epoch(pl.col(c).str.slice(3).cast(pl.Int64), time_unit="s")
        .dt.cast_time_unit("us")
        .alias(c)
        for c in dates
    )

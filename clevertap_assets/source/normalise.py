"""Turn one page of CleverTap records into warehouse-ready columns.

The page is the unit of work: the client yields pages of up to 5000 records and each becomes
one polars frame, so memory stays flat however long the window. Per-record Python is kept to
what has no columnar form (canonical JSON and its SHA-256, the dedupe key); flattening, time
parsing, `$D_` dates and the size limits are polars expressions.
"""

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import orjson
import polars as pl

from clevertap_assets.naming import ColumnNames

JSON_SECTIONS = ("profile", "event_props", "session_props")
SYSTEM_COLUMNS = ("_record_id", "event_name", "ts", "event_time", "event_time_utc")
_DATE_PATTERN = r"^\$D_-?\d+$"
_JSON_WRAPPER = '{"v":'


@dataclass(frozen=True)
class NormaliseOptions:
    event_name: str
    timezone: str
    auto_mapping: bool
    max_record_bytes: int
    max_row_bytes: int
    column_names: ColumnNames = field(default_factory=ColumnNames, compare=False)
    """Shared by every page of a run, so a key keeps its column (see `ColumnNames`)."""


@dataclass(frozen=True)
class NormalisedPage:
    frame: pl.DataFrame
    json_columns: frozenset[str]
    oversize_records: int
    oversize_rows: int
    invalid_ts: int
    bytes: int
    skipped_by_day: dict[date, int] = field(default_factory=dict)
    """Records and rows over the size limits per local day (those without a readable `ts`
    have no day: they are counted in `invalid_ts` only), so each day's metadata says what
    that day lost."""


@dataclass(frozen=True)
class CanonicalPage:
    """What a page's records are reduced to before they are shaped: each kept record's key,
    and its canonical JSON (AUTO_MAPPING) or its sections as text (JSON mode). It holds a
    fraction of the memory of the parsed dicts, so pages waiting for a spool thread keep
    only this."""

    canonical: list[bytes]
    record_ids: list[str]
    sections: dict[str, list] | None
    oversize_records: int
    bytes: int
    oversize_ts: list[str] = field(default_factory=list)
    """The `ts` of each record over the size limit, to count it against its day."""


def canonicalise_page(records: Sequence[dict], options: NormaliseOptions) -> CanonicalPage:
    """The per-record Python part of normalising (it holds the GIL), done once per record:
    canonical JSON, its SHA-256 (Hevo's `__hevo_id` idea: the same record, received twice,
    gets the same key) and the 128 MB record limit."""
    canonical = [orjson.dumps(record, option=orjson.OPT_SORT_KEYS) for record in records]
    keep = [len(body) <= options.max_record_bytes for body in canonical]
    kept = [body for body, k in zip(canonical, keep, strict=True) if k]
    sections = None
    if not options.auto_mapping:
        sections = _json_sections([r for r, k in zip(records, keep, strict=True) if k])
    return CanonicalPage(
        canonical=kept if sections is None else [],
        record_ids=[hashlib.sha256(body).hexdigest() for body in kept],
        sections=sections,
        oversize_records=len(records) - len(kept),
        bytes=sum(len(body) for body in canonical),
        oversize_ts=[str(r.get("ts")) for r, k in zip(records, keep, strict=True) if not k],
    )


def normalise_page(
    records: Sequence[dict] | CanonicalPage, options: NormaliseOptions
) -> NormalisedPage:
    """One page as a frame with the system columns first, then the data columns. The
    columnar part (polars, mostly without the GIL) of a page `canonicalise_page` reduced."""
    page = records if isinstance(records, CanonicalPage) else canonicalise_page(records, options)
    if page.sections is None:
        data, json_columns = _flattened(page.canonical, options.column_names)
    else:
        data, json_columns = _sections_frame(page.sections), frozenset(JSON_SECTIONS)
    frame = _with_system_columns(data, page.record_ids, options)
    valid = frame.filter(pl.col("event_time").is_not_null())
    fits = valid.select(_row_bytes(valid) <= options.max_row_bytes).to_series()
    within_limit = valid.filter(fits)
    return NormalisedPage(
        frame=within_limit,
        json_columns=json_columns & set(within_limit.columns),
        oversize_records=page.oversize_records,
        oversize_rows=valid.height - within_limit.height,
        invalid_ts=frame.height - valid.height,
        bytes=page.bytes,
        skipped_by_day=_skipped_by_day(
            valid.filter(~fits)["event_time"], page.oversize_ts, options.timezone
        ),
    )


def _skipped_by_day(
    oversize_rows: pl.Series, oversize_ts: list[str], timezone: str
) -> dict[date, int]:
    if oversize_rows.is_empty() and not oversize_ts:
        return {}
    records = pl.DataFrame({"ts": oversize_ts}, schema={"ts": pl.String}).select(
        _local_event_time(pl.col("ts").cast(pl.Int64, strict=False), timezone)
    )
    days = pl.concat([oversize_rows.to_frame("t"), records.to_series().to_frame("t")])
    counts = days.drop_nulls().group_by(pl.col("t").dt.date()).len()
    return dict(counts.iter_rows())


def _with_system_columns(
    data: pl.DataFrame, record_ids: list[str], options: NormaliseOptions
) -> pl.DataFrame:
    ts = pl.col("ts").cast(pl.Int64, strict=False)
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


def _json_sections(records: Sequence[dict]) -> dict[str, list]:
    """AUTO_MAPPING=false: the three sections as JSON text exactly as received, schema fixed."""
    columns = {"ts": [record.get("ts") for record in records]}
    for section in JSON_SECTIONS:
        columns[section] = [
            orjson.dumps(record[section]).decode() if record.get(section) is not None else None
            for record in records
        ]
    return columns


def _sections_frame(sections: dict[str, list]) -> pl.DataFrame:
    schema = {"ts": pl.Int64, **dict.fromkeys(JSON_SECTIONS, pl.String)}
    return pl.DataFrame(sections, schema=schema, strict=False)


def _flattened(canonical: list[bytes], names: ColumnNames) -> tuple[pl.DataFrame, frozenset[str]]:
    """AUTO_MAPPING=true: every scalar leaf its own column, lists as JSON text.

    Polars infers one schema for the page (int and string become string) and flattens in
    Rust; only a page whose types cannot be unified that way (a bool beside a number) takes
    the slower per-record route.
    """
    if not canonical:
        return pl.DataFrame(schema={"ts": pl.Int64}), frozenset()
    try:
        raw = _read_records(canonical)
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError):
        return _flattened_slowly([orjson.loads(body) for body in canonical], names)
    leaves = [
        leaf
        for name, dtype in raw.schema.items()
        for leaf in _leaves(pl.col(name), dtype, [name], names)
    ]
    json_columns = frozenset(name for name, _, is_json in leaves if is_json)
    return _parse_dates(raw.select(expr.alias(name) for name, expr, _ in leaves)), json_columns


def _read_records(canonical: list[bytes]) -> pl.DataFrame:
    """The page as one JSON array, which polars reads about a quarter faster than NDJSON.

    The array reader, though, turns `true` beside a number into 1 where the NDJSON reader
    refuses the page (and the slow path keeps both as text), so a page with a boolean
    literal anywhere, even inside a string, is read as NDJSON.
    """
    joined = b",".join(canonical)
    if b"true" in joined or b"false" in joined:
        return pl.read_ndjson(io.BytesIO(b"\n".join(canonical)), infer_schema_length=None)
    return pl.read_json(io.BytesIO(b"[" + joined + b"]"), infer_schema_length=None)


def _leaves(
    expr: pl.Expr, dtype: pl.DataType, path: list[str], names: ColumnNames
) -> list[tuple[str, pl.Expr, bool]]:
    """(column name, expression, is JSON) for each scalar or list under a column, depth first."""
    if isinstance(dtype, pl.Struct):
        return [
            leaf
            for member in dtype.fields
            for leaf in _leaves(
                expr.struct.field(member.name), member.dtype, [*path, member.name], names
            )
        ]
    name = names.column_for(path)
    if isinstance(dtype, pl.List | pl.Array):
        return [(name, _json_text(expr), True)]
    if dtype == pl.Null:
        return []
    if dtype in (pl.Int128, pl.UInt64, pl.UInt128):
        return [(name, expr.cast(pl.String), False)]
    return [(name, expr, False)]


def _json_text(expr: pl.Expr) -> pl.Expr:
    """A list as JSON text, in Rust: wrap it in a one-field struct, encode, unwrap."""
    encoded = pl.struct(expr.alias("v")).struct.json_encode()
    unwrapped = encoded.str.strip_prefix(_JSON_WRAPPER).str.strip_suffix("}")
    return pl.when(expr.is_null()).then(None).otherwise(unwrapped)


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


def _flattened_slowly(
    records: Sequence[dict], names: ColumnNames
) -> tuple[pl.DataFrame, frozenset[str]]:
    """Slow path for pages polars cannot type: leaves whose Python types disagree become text."""
    rows = [_flatten_record(record, names) for record in records]
    kinds: dict[str, set[type]] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None:
                kinds.setdefault(key, set()).add(type(value))
    json_columns = frozenset(key for key, seen in kinds.items() if seen == {list})
    text = {key for key, seen in kinds.items() if len(seen) > 1 or seen == {list}}
    typed = [
        {k: _as_text(v) if k in text and v is not None else v for k, v in row.items()}
        for row in rows
    ]
    return _parse_dates(pl.from_dicts(typed, infer_schema_length=None)), json_columns


def _flatten_record(
    record: dict, names: ColumnNames, path: tuple[str, ...] = ()
) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten_record(value, names, (*path, key)))
        else:
            flat[names.column_for((*path, key))] = value
    return flat


def _as_text(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()

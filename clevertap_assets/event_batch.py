"""The hand-over between an event asset and its IO manager: one window's rows on local disk.

Pages are spooled to Parquet as they arrive and deduplicated by DuckDB when the window is
complete, so neither the asset nor the IO manager ever holds the window in memory, and every
destination receives the same already-typed, duplicate-free file to load in chunks.
"""

import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from clevertap_assets.naming import quote_identifier
from clevertap_assets.normalise import NormalisedPage

LOAD_CHUNK_ROWS = 50_000
_WRITE_CHUNK_ROWS = 10_000  # rows in flight between DuckDB and the batch file's writer
_DEDUPE_MEMORY_LIMIT = "64MB"
_BATCH_COMPRESSION = "lz4"  # read once, by the load: decoding speed beats size


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


@dataclass(frozen=True)
class EventBatch:
    """One event's deduplicated rows for one window of days, ready for any destination."""

    event_name: str
    path: Path | None
    rows: int
    json_columns: frozenset[str] = frozenset()

    def columns(self) -> dict[str, Kind]:
        """Column name to kind, in file order; empty for a window without rows."""
        if self.path is None:
            return {}
        schema = pq.read_schema(self.path)
        return {f.name: kind_of(f.type, f.name in self.json_columns) for f in schema}

    def iter_arrow(self, chunk_rows: int = LOAD_CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
        """The rows in bounded chunks, for destinations that load through their client."""
        if self.path is None:
            return
        yield from pq.ParquetFile(self.path).iter_batches(batch_size=chunk_rows)

    def discard(self) -> None:
        """Remove the batch's files once a destination has committed them (or given up)."""
        if self.path is not None:
            shutil.rmtree(self.path.parent, ignore_errors=True)

    def preview(self, rows: int = 5) -> pl.DataFrame:
        if self.path is None:
            return pl.DataFrame()
        return pl.scan_parquet(self.path).head(rows).collect()


@dataclass
class SpoolStats:
    received: int = 0
    oversize_records: int = 0
    oversize_rows: int = 0
    invalid_ts: int = 0
    outside_window: int = 0
    bytes: int = 0


@dataclass
class EventSpool:
    """Collects normalised pages of one event window on disk, then writes the deduplicated batch.

    Pages are split by local day as they are spooled: a record returned twice is the same
    record, so its copies share a `ts` and a day, and deduplication can go one day at a time.
    The memory it needs is then bounded by the largest day, not by the window.

    Use as a context manager: on an error the directory and every partial file go with it,
    so a failed read leaves nothing that could be loaded; on success the batch owns the
    directory and the IO manager discards it once loaded.
    """

    event_name: str
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="clevertap_")))
    stats: SpoolStats = field(default_factory=SpoolStats)
    _chunks: dict[date, list[Path]] = field(default_factory=dict)
    _json_columns: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> "EventSpool":
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def add(self, page: NormalisedPage, received: int, outside_window: int = 0) -> None:
        """Safe to call from several threads: pages may be spooled in any order, because
        the copies of a record are identical and deduplication keeps any one of them."""
        days = page.frame.with_columns(_day=pl.col("event_time").dt.date()).partition_by(
            "_day", as_dict=True, include_key=False
        )
        for (day,), frame in days.items():
            with self._lock:
                chunks = self._chunks.setdefault(day, [])
                chunk = self.directory / f"{day.isoformat()}_{len(chunks):06d}.parquet"
                chunks.append(chunk)
            frame.write_parquet(chunk, compression="lz4", statistics=False)
        with self._lock:
            self.stats.received += received
            self.stats.oversize_records += page.oversize_records
            self.stats.oversize_rows += page.oversize_rows
            self.stats.invalid_ts += page.invalid_ts
            self.stats.outside_window += outside_window
            self.stats.bytes += page.bytes
            self._json_columns |= page.json_columns

    def finish(self, loaded_at: datetime) -> EventBatch:
        """Deduplicate by `_record_id`, day by day, into one Parquet file stamped `_loaded_at`.

        DuckDB deduplicates one day at a time, so its memory follows the largest day, not
        the window; a day's rows stream into the batch file in small Arrow batches. Within a
        day only the key and a row's position go through the aggregate (a `DISTINCT ON` over
        whole rows kept every string in memory and ran out of 512 MB at 300,000 rows), the
        key being the first 128 bits of the SHA-256 as a 16-byte integer. Every day is cast
        to the window's union of columns, where a property whose type differs between pages
        is widened, so all days share one schema.
        """
        if not self._chunks:
            shutil.rmtree(self.directory, ignore_errors=True)
            return EventBatch(self.event_name, None, 0)
        destination = self.directory / "batch.parquet"
        rows = 0
        with duckdb.connect(config=self._duckdb_config()) as connection:
            columns = _union_columns(connection, [c for cs in self._chunks.values() for c in cs])
            writer: pq.ParquetWriter | None = None
            for day in sorted(self._chunks):
                query = _deduplicated_day(connection, self._chunks[day], columns)
                relation = connection.sql(query, params={"loaded_at": loaded_at})
                reader = relation.to_arrow_reader(_WRITE_CHUNK_ROWS)
                writer = writer or pq.ParquetWriter(
                    destination, reader.schema, compression=_BATCH_COMPRESSION
                )
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
                for chunk in self._chunks[day]:
                    chunk.unlink()
            if writer is not None:
                writer.close()
        return EventBatch(self.event_name, destination, rows, frozenset(self._json_columns))

    def _duckdb_config(self) -> dict[str, str]:
        return {
            "memory_limit": _DEDUPE_MEMORY_LIMIT,
            "temp_directory": str(self.directory / "duckdb_tmp"),
            "preserve_insertion_order": "false",
            "threads": "2",
        }


def _files(paths: list[Path]) -> str:
    return "[" + ", ".join(f"'{path}'" for path in paths) + "]"


def _union_columns(connection: duckdb.DuckDBPyConnection, paths: list[Path]) -> dict[str, str]:
    """The window's columns and types, from the files' footers only."""
    described = connection.execute(
        f"DESCRIBE SELECT * FROM read_parquet({_files(paths)}, union_by_name = true)"
    ).fetchall()
    return {name: data_type for name, data_type, *_ in described}


def _positioned(paths: list[Path]) -> str:
    """The spooled rows with a position unique within the day, to keep a record's first copy."""
    return (
        "SELECT *, (file_index::BIGINT << 32) + file_row_number AS _position "
        f"FROM read_parquet({_files(paths)}, union_by_name = true)"
    )


def _deduplicated_day(
    connection: duckdb.DuckDBPyConnection, paths: list[Path], columns: dict[str, str]
) -> str:
    """One day's first copy of every record, with exactly the window's columns and types."""
    present = _union_columns(connection, paths)
    select = ", ".join(
        f"CAST({quote_identifier(name) if name in present else 'NULL'} AS {data_type}) "
        f"AS {quote_identifier(name)}"
        for name, data_type in columns.items()
    )
    return f"""
        SELECT {select}, $loaded_at::TIMESTAMPTZ AS _loaded_at
        FROM ({_positioned(paths)}) AS spooled
        SEMI JOIN (
            SELECT min(_position) AS _position FROM ({_positioned(paths)})
            GROUP BY ('0x' || left(_record_id, 32))::UHUGEINT
        ) AS firsts USING (_position)
    """

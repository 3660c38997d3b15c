"""The hand-over between an event asset and its IO manager: one window's rows on local disk.

Pages are spooled to Parquet as they arrive and deduplicated by DuckDB when the window is
complete, so neither the asset nor the IO manager ever holds the window in memory, and every
destination receives the same already-typed, duplicate-free file to load in chunks.
"""

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from clevertap_assets.normalise import NormalisedPage

LOAD_CHUNK_ROWS = 50_000
_DEDUPE_MEMORY_LIMIT = "256MB"
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

    Use as a context manager: on an error the directory and every partial file go with it,
    so a failed read leaves nothing that could be loaded; on success the batch owns the
    directory and the IO manager discards it once loaded.
    """

    event_name: str
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="clevertap_")))
    stats: SpoolStats = field(default_factory=SpoolStats)
    _chunks: list[Path] = field(default_factory=list)
    _json_columns: set[str] = field(default_factory=set)

    def __enter__(self) -> "EventSpool":
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def add(self, page: NormalisedPage, received: int, outside_window: int = 0) -> None:
        self.stats.received += received
        self.stats.oversize_records += page.oversize_records
        self.stats.oversize_rows += page.oversize_rows
        self.stats.invalid_ts += page.invalid_ts
        self.stats.outside_window += outside_window
        self.stats.bytes += page.bytes
        if page.frame.height:
            chunk = self.directory / f"chunk_{len(self._chunks):06d}.parquet"
            page.frame.write_parquet(chunk, compression="lz4", statistics=False)
            self._chunks.append(chunk)
            self._json_columns |= page.json_columns

    def finish(self, loaded_at: datetime) -> EventBatch:
        """Deduplicate by `_record_id` across all pages and stamp `_loaded_at`.

        DuckDB does it out of core: the files are unioned by column name (a property whose
        type differs between pages is widened there) and written as one Parquet file. Only
        the key and a row's position go through the aggregate, which spills to disk; a
        `DISTINCT ON` over whole rows keeps every string of the window in memory instead
        (it ran out of a 512 MB limit at 300,000 rows).
        """
        if not self._chunks:
            shutil.rmtree(self.directory, ignore_errors=True)
            return EventBatch(self.event_name, None, 0)
        destination = self.directory / "batch.parquet"
        files = ", ".join(f"'{chunk}'" for chunk in self._chunks)
        with duckdb.connect(config=self._duckdb_config()) as connection:
            connection.execute(
                f"""
                COPY (
                    WITH spooled AS (
                        SELECT *, (file_index::BIGINT << 32) + file_row_number AS _position
                        FROM read_parquet([{files}], union_by_name = true)
                    ),
                    firsts AS (SELECT min(_position) AS _position FROM spooled GROUP BY _record_id)
                    SELECT spooled.* EXCLUDE (_position), $loaded_at::TIMESTAMPTZ AS _loaded_at
                    FROM spooled SEMI JOIN firsts USING (_position)
                ) TO '{destination}' (FORMAT parquet, COMPRESSION {_BATCH_COMPRESSION}, ROW_GROUP_SIZE {LOAD_CHUNK_ROWS})
                """,
                {"loaded_at": loaded_at},
            )
            (rows,) = connection.execute(
                f"SELECT count(*) FROM read_parquet('{destination}')"
            ).fetchone()
        for chunk in self._chunks:
            chunk.unlink()
        return EventBatch(self.event_name, destination, rows, frozenset(self._json_columns))

    def _duckdb_config(self) -> dict[str, str]:
        return {
            "memory_limit": _DEDUPE_MEMORY_LIMIT,
            "temp_directory": str(self.directory / "duckdb_tmp"),
            "preserve_insertion_order": "false",
            "threads": "2",
        }

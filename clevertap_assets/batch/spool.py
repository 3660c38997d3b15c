"""The hand-over between an event asset and its IO manager: one window's rows on local disk.

Pages are spooled to Parquet as they arrive and deduplicated by DuckDB once the window is
complete, so neither the asset nor the IO manager holds the window in memory, and every
destination loads the same typed, duplicate-free file in chunks.

Each spool and batch lives in a folder of its own under `CLEVERTAP_SPOOL_DIR` (default
`<system temp>/clevertap_assets`). Its process holds an exclusive `flock` on the folder's
`owner.lock` until it removes the folder (after a failed read, or once loaded or refused) or
dies; cleanup, run by every new spool, removes only folders whose lock it can take at once, so
nothing leaks past the next run. A flock, unlike a process id, means the same in every
container sharing the directory. Folders are made and locked under a shared lock on the root's
`spools.lock`, which cleanup takes exclusively, so a folder without a lock file is one whose
maker died between `mkdtemp` and its lock.
"""

import fcntl
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from clevertap_assets.batch.kinds import Kind, kind_of, kind_of_polars, widen
from clevertap_assets.batch.page_files import PageFiles, write_page_files
from clevertap_assets.batch.settings import spool_root
from clevertap_assets.naming import quote_identifier
from clevertap_assets.source.normalise import NormalisedPage
from clevertap_assets.source.zone_check import OutsideReach

_FOLDER_PREFIX = "clevertap_spool_"
_OWNER_LOCK = "owner.lock"
_CREATION_LOCK = "spools.lock"

LOAD_CHUNK_ROWS = 50_000
_WRITE_CHUNK_ROWS = 10_000  # rows in flight between DuckDB and the batch file's writer
_DEDUPE_THREADS = 2
DUCKDB_MEMORY_MB = 64
"""DuckDB's memory cap in this project: capped, it spills to disk rather than letting a
step's memory grow with the rows."""
_MB_PER_THREAD = 16
_MB_PER_COLUMN_PER_THREAD = 0.75
_ROW_COPIES_PER_THREAD = 2
BATCH_COMPRESSION = "zstd"
"""The batch file leaves the process (BigQuery loads it as it is): ZSTD, which BigQuery, Snowflake
and Redshift all read; not LZ4, which BigQuery's Parquet loads refuse
(https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-parquet#parquet_compression)."""


def duckdb_memory_mb(columns: int, threads: int, largest_row_bytes: int = 0) -> int:
    """The cap for a DuckDB query over this many columns and rows up to this size: a scan or
    an insert holds buffers for every column on every thread, so a wide event needs more than
    narrow ones, and a large value is held whole, as read and as written, on each thread.
    Memory still stays flat in the number of rows (figures in bench/README.md)."""
    per_thread = (
        _MB_PER_THREAD
        + _MB_PER_COLUMN_PER_THREAD * columns
        + _ROW_COPIES_PER_THREAD * largest_row_bytes / 2**20
    )
    return max(DUCKDB_MEMORY_MB, math.ceil(threads * per_thread))


_SPOOL_TYPES = {
    Kind.BOOLEAN: "BOOLEAN",
    Kind.BIGINT: "BIGINT",
    Kind.DOUBLE: "DOUBLE",
    Kind.TIMESTAMP: "TIMESTAMP",
    Kind.TIMESTAMPTZ: "TIMESTAMPTZ",
    Kind.TEXT: "VARCHAR",
}
"""The batch file's types; JSON is text in Parquet, and each destination parses it."""


Signature = frozenset[tuple[str, Kind | None, str]]
"""A spooled file's columns (the table's name, its kind, the file's name for it): files alike
are read in one scan."""


@dataclass(frozen=True)
class EventBatch:
    """One event's deduplicated rows for one window of days, ready for any destination."""

    event_name: str
    path: Path | None
    rows: int
    json_columns: frozenset[str] = frozenset()
    rows_by_day: Mapping[date, int] = field(default_factory=dict)
    """Deduplicated rows of each local day: what the load writes into that day's partition."""
    duplicates_by_day: Mapping[date, int] = field(default_factory=dict)
    """Copies of records each local day dropped."""
    skipped_by_day: Mapping[date, int] = field(default_factory=dict)
    """Records and rows each local day lost to the size limits."""
    largest_row_bytes: int = 0
    """The largest row's size (see `normalise.PageCounts`), which a database loading the batch
    must hold at once."""
    column_keys: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Each property column and the key path it holds (`naming.ColumnNames.record`), which a
    load stores with the table and reconciles with what is stored there."""

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
            remove_spool_folder(self.path.parent)

    def renamed(self, names: Mapping[str, str]) -> "EventBatch":
        """The batch with columns renamed (`names`: old to new, absent names stay). Only when
        a name of the file changes is it rewritten, in chunks, to a file beside it (removed
        with it by `discard`): this batch stays as it was, so a load that runs again (Redshift
        retries one that met a concurrent load) renames the same file the same way."""
        renamed = replace(
            self,
            json_columns=frozenset(names.get(name, name) for name in self.json_columns),
            column_keys={names.get(name, name): path for name, path in self.column_keys.items()},
        )
        if self.path is None or all(names.get(n, n) == n for n in pq.read_schema(self.path).names):
            return renamed
        rewritten = self.path.with_name("renamed_" + self.path.name)
        with pq.ParquetFile(self.path) as source:
            schema = pa.schema(
                [
                    field.with_name(names.get(field.name, field.name))
                    for field in source.schema_arrow
                ]
            )
            with pq.ParquetWriter(rewritten, schema, compression=BATCH_COMPRESSION) as writer:
                for chunk in source.iter_batches(batch_size=LOAD_CHUNK_ROWS):
                    writer.write_batch(chunk.rename_columns(schema.names))
        return replace(renamed, path=rewritten)

    def preview(self, rows: int = 5) -> pl.DataFrame:
        if self.path is None:
            return pl.DataFrame()
        return pl.scan_parquet(self.path).head(rows).collect()


_owned: dict[Path, int] = {}
"""The folders this process holds, with the descriptor of each one's locked `owner.lock`:
closing the descriptor is what gives a folder up, so it stays open until the folder is gone."""
_owned_guard = threading.Lock()


def remove_stale_spools(root: Path) -> list[Path]:
    """Remove the folders no process holds; return them. The decision is made under the
    exclusive creation lock, the deleting after it, so new spools wait only for the former."""
    with _root_lock(root, fcntl.LOCK_EX):
        claimed = [folder for folder in root.glob("clevertap_*") if _claim(folder)]
    for folder in claimed:
        remove_spool_folder(folder)
    return claimed


def remove_spool_folder(folder: Path) -> None:
    """Delete a folder, then give it up: while its files exist, somebody holds it."""
    shutil.rmtree(folder, ignore_errors=True)
    with _owned_guard:
        descriptor = _owned.pop(folder, None)
    if descriptor is not None:
        os.close(descriptor)


def _claim(folder: Path) -> bool:
    """Hold a folder nobody holds, as its remover; False for one that somebody holds."""
    if not folder.is_dir():
        return False
    try:
        descriptor = os.open(folder / _OWNER_LOCK, os.O_RDWR)
    except FileNotFoundError:
        return True  # its maker died before locking it (see the module docstring)
    except PermissionError:
        return False  # another user's: not ours to judge
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return False
    _hold(folder, descriptor)
    return True


def _hold(folder: Path, descriptor: int) -> None:
    with _owned_guard:
        _owned[folder] = descriptor


@contextmanager
def _root_lock(root: Path, operation: int) -> Iterator[None]:
    """Makers of folders share this lock and cleanup takes it alone (see the module docstring)."""
    descriptor = os.open(root / _CREATION_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, operation)
        yield
    finally:
        os.close(descriptor)


def _scratch_directory() -> Path:
    """A new folder held by this process; made after clearing what nobody holds."""
    root = spool_root()
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_spools(root)
    with _root_lock(root, fcntl.LOCK_SH):
        directory = Path(tempfile.mkdtemp(prefix=_FOLDER_PREFIX, dir=root))
        descriptor = os.open(directory / _OWNER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        _hold(directory, descriptor)
    return directory


@contextmanager
def batch_file_path() -> Iterator[Path]:
    """Where a destination writes rows it reads back for a downstream asset: the returned
    `EventBatch` owns the directory (its `discard` removes it), and a failed write removes it
    at once, as a failed read of CleverTap does."""
    directory = _scratch_directory()
    try:
        yield directory / "batch.parquet"
    except BaseException:
        remove_spool_folder(directory)
        raise


@dataclass
class SpoolStats:
    received: int = 0
    oversize_records: int = 0
    oversize_rows: int = 0
    invalid_ts: int = 0
    largest_row_bytes: int = 0
    outside_window: int = 0
    outside: OutsideReach = field(default_factory=OutsideReach)
    """How far the records outside the window lie from it (see `zone_check`)."""
    bytes: int = 0
    kept_by_day: dict[date, int] = field(default_factory=dict)
    """Rows spooled per local day, copies included."""
    skipped_by_day: dict[date, int] = field(default_factory=dict)
    """Records and rows over the size limits per local day."""


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
    directory: Path = field(default_factory=_scratch_directory)
    stats: SpoolStats = field(default_factory=SpoolStats)
    _chunks: dict[date, list[tuple[Path, Signature]]] = field(default_factory=dict)
    _columns: dict[str, Kind] = field(default_factory=dict)
    _json_columns: set[str] = field(default_factory=set)
    _plain_columns: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pages: int = 0

    def __enter__(self) -> "EventSpool":
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None:
            remove_spool_folder(self.directory)

    def add(self, page: NormalisedPage, received: int, outside_window: int = 0) -> None:
        """A page normalised (and named) in this process: written here, then recorded."""
        files = write_page_files(page, self.directory, self.next_page_number())
        self.add_files(files, received, outside_window)

    def next_page_number(self) -> int:
        """A number for a page's files no other page of this spool has (see `add_files`)."""
        with self._lock:
            self._pages += 1
            return self._pages

    def add_files(
        self,
        page: PageFiles,
        received: int,
        outside_window: int = 0,
        names: Mapping[str, str] | None = None,
        outside: OutsideReach | None = None,
    ) -> None:
        """A page already written into this spool's folder, by `write_page_files` with a
        number from `next_page_number`, possibly in another process. `names` gives the
        table's column of each file column that is named otherwise (by key path, for pages
        parsed elsewhere, see `normalise.column_names`).

        Safe to call from several threads: pages may be spooled in any order, because the
        copies of a record are identical and deduplication keeps any one of them."""
        names = names or {}
        kinds = {
            names.get(column, column): (kind_of_polars(dtype), column)
            for column, dtype in page.schema.items()
        }
        # every day of the page has the page's columns
        signature = frozenset((name, kind, column) for name, (kind, column) in kinds.items())
        json_columns = {names.get(column, column) for column in page.json_columns}
        with self._lock:
            for day, (path, rows) in page.files.items():
                self.stats.kept_by_day[day] = self.stats.kept_by_day.get(day, 0) + rows
                self._chunks.setdefault(day, []).append((path, signature))
            for name, (kind, _) in kinds.items():
                if kind is not None:
                    self._columns[name] = widen(self._columns.get(name, kind), kind)
            self.stats.received += received
            counts = page.counts
            self.stats.oversize_records += counts.oversize_records
            self.stats.oversize_rows += counts.oversize_rows
            self.stats.invalid_ts += counts.invalid_ts
            self.stats.largest_row_bytes = max(
                self.stats.largest_row_bytes, counts.largest_row_bytes
            )
            for day, count in counts.skipped_by_day.items():
                self.stats.skipped_by_day[day] = self.stats.skipped_by_day.get(day, 0) + count
            self.stats.outside_window += outside_window
            if outside is not None:
                self.stats.outside = self.stats.outside.widest(outside)
            self.stats.bytes += counts.bytes
            self._json_columns |= json_columns
            self._plain_columns |= set(kinds) - json_columns

    def finish(self, loaded_at: datetime) -> EventBatch:
        """Deduplicate by `_record_id`, day by day, into one Parquet file stamped `_loaded_at`.

        DuckDB deduplicates one day at a time, so its memory follows the largest day, not
        the window; a day's rows stream into the batch file in small Arrow batches. Within a
        day only the key and a row's position go through the aggregate (a `DISTINCT ON` over
        whole rows keeps every string in memory), the key being the first 128 bits of the
        SHA-256 as a 16-byte integer.

        Files are cast to the window's columns as the pages widened them (see `widen`), in
        groups of files with the same columns and types: DuckDB's own `union_by_name` over
        differing files would turn `true` beside a number into 1 and fail on a date beside
        a number, and its schema scan holds every file of the window at once.
        """
        if not self._chunks:
            remove_spool_folder(self.directory)
            return EventBatch(self.event_name, None, 0, skipped_by_day=self.stats.skipped_by_day)
        destination = self.directory / "batch.parquet"
        rows_by_day = dict.fromkeys(sorted(self._chunks), 0)
        with (
            duckdb.connect(config=self._duckdb_config()) as connection,
            ThreadPoolExecutor(1, thread_name_prefix="clevertap-batch-writer") as writing,
        ):
            writer: pq.ParquetWriter | None = None
            written: Future[None] | None = None
            for day in sorted(self._chunks):
                query = _deduplicated_day(self._chunks[day], self._columns)
                relation = connection.sql(query, params={"loaded_at": loaded_at})
                reader = relation.to_arrow_reader(_WRITE_CHUNK_ROWS)
                writer = writer or pq.ParquetWriter(
                    destination, reader.schema, compression=BATCH_COMPRESSION
                )
                for batch in reader:
                    # DuckDB makes the next rows while the writer compresses these (both
                    # release the GIL); one write in flight keeps memory to two chunks.
                    if written is not None:
                        written.result()
                    written = writing.submit(writer.write_batch, batch)
                    rows_by_day[day] += batch.num_rows
                for chunk, _ in self._chunks[day]:
                    chunk.unlink()
            if written is not None:
                written.result()
            if writer is not None:
                writer.close()
        # A list in one page and a string in another is text: not every value is JSON.
        json_columns = frozenset(self._json_columns - self._plain_columns)
        duplicates = {day: self.stats.kept_by_day[day] - rows for day, rows in rows_by_day.items()}
        rows = sum(rows_by_day.values())
        return EventBatch(
            self.event_name,
            destination,
            rows,
            json_columns,
            rows_by_day,
            duplicates,
            self.stats.skipped_by_day,
            self.stats.largest_row_bytes,
        )

    def _memory_mb(self) -> int:
        return duckdb_memory_mb(len(self._columns), _DEDUPE_THREADS, self.stats.largest_row_bytes)

    def _duckdb_config(self) -> dict[str, str]:
        return {
            "memory_limit": f"{self._memory_mb()}MB",
            "temp_directory": str(self.directory / "duckdb_tmp"),
            "preserve_insertion_order": "false",
            "threads": str(_DEDUPE_THREADS),
        }


def _deduplicated_day(chunks: list[tuple[Path, Signature]], columns: dict[str, Kind]) -> str:
    """One day's first copy of every record, with exactly the window's columns and types.

    A row's position (scan, file in scan, row in file) is unique within the day; the
    aggregate keeps each key's first position, and the rows are read again to pick those."""
    groups: dict[Signature, list[Path]] = {}
    for path, signature in chunks:
        groups.setdefault(signature, []).append(path)
    scans = list(enumerate(groups.items()))
    keys = " UNION ALL ".join(
        f"SELECT _record_id, {_position(index)} FROM {_scan(paths)}" for index, (_, paths) in scans
    )
    rows = " UNION ALL ".join(
        f"SELECT {_casts(signature, columns)}, {_position(index)} FROM {_scan(paths)}"
        for index, (signature, paths) in scans
    )
    names = ", ".join(quote_identifier(name) for name in columns)
    return f"""
        SELECT {names}, $loaded_at::TIMESTAMPTZ AS _loaded_at
        FROM ({rows}) AS spooled
        SEMI JOIN (
            SELECT min(_position) AS _position FROM ({keys})
            GROUP BY ('0x' || left(_record_id, 32))::UHUGEINT
        ) AS firsts USING (_position)
    """


def _scan(paths: list[Path]) -> str:
    files = ", ".join(f"'{path}'" for path in paths)
    return f"read_parquet([{files}], union_by_name = true)"


def _position(scan_index: int) -> str:
    return (
        f"({scan_index}::BIGINT << 48) + (file_index::BIGINT << 32) + file_row_number AS _position"
    )


def _casts(signature: Signature, columns: dict[str, Kind]) -> str:
    present = {name: quote_identifier(column) for name, _, column in signature}
    return ", ".join(
        f"CAST({present.get(name, 'NULL')} AS {_SPOOL_TYPES[kind]}) AS {quote_identifier(name)}"
        for name, kind in columns.items()
    )

"""A normalised page written into a spool folder: one Parquet file per local day it touches.

It runs where the page was parsed, in a parse worker (see `batch.parse_processes`), so only
the files' description travels back to the asset's process, never the rows; it imports
polars alone, to keep the workers small.
"""

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from clevertap_assets.source.normalise import NormalisedPage, PageCounts


@dataclass(frozen=True)
class PageFiles:
    """What `EventSpool` needs to know of a page written to its folder."""

    files: dict[date, tuple[Path, int]]
    """Each local day's file and its rows (copies of records included)."""
    schema: dict[str, pl.DataType]
    """The columns of every file of the page, as the files name them."""
    json_columns: frozenset[str]
    counts: PageCounts


def write_page_files(page: NormalisedPage, directory: Path, number: int) -> PageFiles:
    """Split by local day, as deduplication goes one day at a time; `number` is the page's
    within its spool, so the files of pages written at once never share a name."""
    days = page.frame.with_columns(_day=pl.col("event_time").dt.date()).partition_by(
        "_day", as_dict=True, include_key=False
    )
    files = {}
    for (day,), frame in days.items():
        path = directory / f"{day.isoformat()}_{number:06d}.parquet"
        frame.write_parquet(path, compression="lz4", statistics=False)
        files[day] = (path, frame.height)
    return PageFiles(files, dict(page.frame.schema), page.json_columns, page.counts)

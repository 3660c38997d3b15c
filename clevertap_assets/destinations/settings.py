"""What every destination's settings share: the schema its tables go to and the limits it sets.

Each destination's `settings` module subclasses `DestinationSettings` with its own variables
(`DUCKDB_SCHEMA`, `SNOWFLAKE_SCHEMA`, `BIGQUERY_DATASET`, `REDSHIFT_SCHEMA`, ...) and limits;
`destinations.registry` reads the chosen one when the definitions load and hands the rest a
`Warehouse`, so the core settings only say which destination.
"""

from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from pydantic_settings import BaseSettings, SettingsConfigDict


class DestinationSettings(BaseSettings):
    """A destination's variables; subclasses bind `schema_name` to their schema variable."""

    model_config = SettingsConfigDict(extra="ignore")

    schema_name: str | None = None
    max_row_bytes: ClassVar[int | None] = None
    """The largest row the destination takes, in bytes; None when it sets no limit."""
    table_name_bytes: ClassVar[int | None] = None
    """The longest table name the destination takes, in UTF-8 bytes; None when it sets none."""

    def schema_for(self, pipeline_slug: str) -> str:
        """The schema (dataset) the event tables go to; by default named after the pipeline,
        so two pipelines can share one warehouse."""
        return self.schema_name or pipeline_slug

    def check(self, schema: str) -> None:
        """Refuse, as a `SettingsError`, what the destination cannot take in its own settings
        with this schema; nothing by default."""

    def refuse_run_launcher(self, run_launcher: str | None) -> None:
        """Refuse, as a `SettingsError`, a run launcher under which loads would be lost;
        every launcher is fine by default."""


S = TypeVar("S", bound=DestinationSettings)


@dataclass(frozen=True)
class Warehouse(Generic[S]):
    """The chosen destination's settings, resolved for one pipeline: what its resources and
    check are built from, and what the pipeline's facts take of it."""

    settings: S
    schema: str
    """The schema (dataset) of every table of the pipeline."""
    row_limit_bytes: int
    """MAX_ROW_BYTES, lowered to what the destination takes in one row: a larger row is
    skipped and counted, never left to fail the whole load."""

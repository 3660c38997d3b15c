"""The DuckDB variables: the database file (`DUCKDB_PATH`) and the schema (`DUCKDB_SCHEMA`).

DuckDB sets no limit on a row's size or a table name's length.
"""

from pathlib import Path

from pydantic import Field

from clevertap_assets.destinations.settings import DestinationSettings
from clevertap_assets.errors import SettingsError

RUN_PER_CONTAINER_LAUNCHERS = frozenset(
    {"K8sRunLauncher", "CeleryK8sRunLauncher", "DockerRunLauncher", "EcsRunLauncher"}
)
"""Run launchers that start every run in a container or pod of its own: whatever a run writes
to its local disk goes when the run ends."""


class DuckDBSettings(DestinationSettings):
    """`DUCKDB_PATH` (default `warehouse.duckdb`) and `DUCKDB_SCHEMA`."""

    path: str = Field("warehouse.duckdb", validation_alias="DUCKDB_PATH")
    schema_name: str | None = Field(None, validation_alias="DUCKDB_SCHEMA")

    def check(self, schema: str) -> None:
        """DuckDB names a database file's catalog after its stem; a schema of the same name
        makes every `schema.table` ambiguous, so refuse it here rather than in a run."""
        catalog = Path(self.path).stem
        if catalog == schema:
            raise SettingsError(
                f"DUCKDB_PATH={self.path!r} names the DuckDB catalog {catalog!r}, the same "
                f"as the schema {schema!r}; rename the file or set DUCKDB_SCHEMA"
            )

    def refuse_run_launcher(self, run_launcher: str | None) -> None:
        """A DuckDB file written inside a run's own pod or container is gone when the run
        ends, while the run reports success: refuse that pairing before anything runs."""
        if run_launcher in RUN_PER_CONTAINER_LAUNCHERS:
            raise SettingsError(
                f"DESTINATION='duckdb' cannot load under this instance's {run_launcher}: it runs "
                f"every run in a pod or container of its own, and DUCKDB_PATH="
                f"{self.path!r} would go with it, so every load would be lost; use "
                "DESTINATION=snowflake, bigquery or redshift, or DuckDB on an instance whose runs "
                "share the code server's disk (the default run launcher, as in Docker Compose)"
            )


SETTINGS = DuckDBSettings
"""This destination's settings, as `destinations.registry` reads them."""

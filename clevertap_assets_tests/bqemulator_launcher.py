"""Start bqemulator for the tests, with the few gaps that separate it from BigQuery closed.

Run by the emulator's own interpreter (its sqlglot conflicts with the project's), never
imported by the tests. Arguments are `bqemulator start`'s. Each patch makes the emulator do
what real BigQuery does, so the product's BigQuery SQL and API calls run unchanged:

- no DuckDB extension downloads at start: `spatial` (GEOGRAPHY) and `avro` are not used by
  CleverTap tables, and CI cannot reach DuckDB's extension repository;
- a table update (`tables.patch`/`tables.update`, what `Client.update_table` sends) that
  appends columns adds them to the stored table too, as BigQuery's does; the emulator only
  updated its catalog;
- a table made by SQL (`CREATE OR REPLACE TABLE ... AS SELECT`) reports its JSON columns as
  JSON, as BigQuery's does; the emulator reported them as STRING;
- a multi-statement query binds the job's named query parameters, as BigQuery's scripts
  do (scheduled queries' `@run_time`); the emulator bound them for single statements only.
"""

import contextvars
import sys

from bqemulator.catalog import ddl_sync
from bqemulator.catalog.duckdb_repository import DuckDBCatalogRepository
from bqemulator.catalog.memory_repository import MemoryCatalogRepository
from bqemulator.catalog.models import TableMeta, TableSchema
from bqemulator.cli import main
from bqemulator.jobs import executor
from bqemulator.scripting import interpreter
from bqemulator.storage.engine import DuckDBEngine
from bqemulator.storage.sql_identifiers import quoted_table_ref
from bqemulator.storage.type_map import bq_schema_to_duckdb_columns

DuckDBEngine._load_spatial = lambda self: None
DuckDBEngine._load_format_extensions = lambda self: None

_introspect_schema = ddl_sync._introspect_schema


def _adding_columns(update_table):
    """Wrap a catalog's `update_table` so appended columns reach the stored table."""

    def update(self, table: TableMeta) -> TableMeta:
        _add_columns(self, table)
        return update_table(self, table)

    return update


def _add_columns(self, table: TableMeta) -> None:
    existing = self.get_table(table.project_id, table.dataset_id, table.table_id)
    if existing is not None and table.table_type == "TABLE":
        known = {field.name.lower() for field in existing.schema_.fields}
        added = [f.model_dump() for f in table.schema_.fields if f.name.lower() not in known]
        target = quoted_table_ref(table.project_id, table.dataset_id, table.table_id)
        for name, duckdb_type in bq_schema_to_duckdb_columns(added):
            self._engine.execute(
                f'ALTER TABLE {target} ADD COLUMN IF NOT EXISTS "{name}" {duckdb_type}'
            )


def _introspect_schema_with_json(project_id: str, dataset_id: str, table_id: str, ctx):
    schema = _introspect_schema(project_id, dataset_id, table_id, ctx)
    target = quoted_table_ref(project_id, dataset_id, table_id)
    json_columns = {
        row[1]
        for row in ctx.engine.execute(f"PRAGMA table_info({target})").fetchall()
        if str(row[2]).upper() == "JSON"
    }
    return TableSchema(
        fields=tuple(
            field.model_copy(update={"type": "JSON"}) if field.name in json_columns else field
            for field in schema.fields
        )
    )


for repository in (MemoryCatalogRepository, DuckDBCatalogRepository):
    repository.update_table = _adding_columns(repository.update_table)
ddl_sync._introspect_schema = _introspect_schema_with_json

_QUERY_PARAMETERS = contextvars.ContextVar("query_parameters", default=None)
_run_query_body = executor._run_query_body
_bind_parameters = interpreter.bind_parameters


async def _run_query_body_with_parameters(**kwargs):
    token = _QUERY_PARAMETERS.set(kwargs["query_params"])
    try:
        return await _run_query_body(**kwargs)
    finally:
        _QUERY_PARAMETERS.reset(token)


def _bind_script_parameters(sql: str, query_parameters=None):
    """A script's statement is bound with the job's parameters (the interpreter passes none)."""
    return _bind_parameters(sql, query_parameters or _QUERY_PARAMETERS.get())


executor._run_query_body = _run_query_body_with_parameters
interpreter.bind_parameters = _bind_script_parameters

if __name__ == "__main__":
    sys.argv = ["bqemulator", "start", *sys.argv[1:]]
    main()

"""The warehouses events can land in, one subpackage each, chosen by `DESTINATION`.

`DESTINATION_NAMES` is the one list of them: the settings accept exactly these names and
`destinations.registry` loads each one's subpackage when it is chosen. This module imports
nothing, so the settings can read the names without a cycle.

Every subpackage has the same parts: `settings` (its environment variables, under its own
prefix), `client`, `load` and `io_manager` (connection, window load, type handlers), `stats`
(the shared SQL of `destinations.stats`), `check` and `resources`.
"""

DESTINATION_NAMES = ("duckdb", "snowflake", "bigquery", "redshift")

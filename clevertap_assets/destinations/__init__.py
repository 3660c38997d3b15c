"""The warehouses events can land in, one subpackage each, chosen by `DESTINATION`.

The settings name them (`settings.DESTINATION_NAMES`) and `destinations.registry` loads each
one's subpackage when it is chosen.

Every subpackage has the same parts: `settings` (its environment variables, under its own
prefix: its schema, its connection, its limits, a `destinations.settings.DestinationSettings`),
`client`, `load` and `io_manager` (connection, window load, type handlers), `stats` (the
shared SQL of `destinations.stats`), `check` and `resources`.
"""

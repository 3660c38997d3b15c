"""What the asset checks and the reconciliation sensor ask of a destination, in one SQL text.

Both questions are plain SQL every warehouse here speaks; a destination only says how it
connects, how it names a table (and whether it exists), and how a day is bound as a
parameter (`SqlEventTableStats`'s hooks).
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from clevertap_assets.days import days_between
from clevertap_assets.destinations.column_map import (
    COLUMN_MAP_TABLE,
    column_map,
    stored_columns_sql,
)

DAILY_ROWS = (
    "SELECT CAST(event_time AS DATE) AS day, count(*) AS n, max(_loaded_at) AS loaded_at "
    "FROM {table} WHERE event_time >= {first_day} AND event_time < {end_day} GROUP BY 1"
)
"""Rows per local day and when the newest of them was loaded: `event_time` is the naive
local timestamp of every destination, `_loaded_at` a timestamp with time zone."""
DUPLICATE_RECORD_IDS = (
    "SELECT coalesce(sum(copies - 1), 0) AS n FROM "
    "(SELECT count(*) AS copies FROM {table} "
    "WHERE event_time >= {first_day} AND event_time < {end_day} "
    "GROUP BY _record_id HAVING count(*) > 1) AS repeated"
)
"""Rows beyond the first of each `_record_id` over some days: filtered on the partition
column, so each warehouse reads only those days, and grouped, so only repeated ids are
summed."""


class DayLoad(NamedTuple):
    """A local day's rows in an event table, and when the newest of them was loaded."""

    rows: int
    loaded_at: datetime


class EventTableStats(ABC):
    """What the asset checks and the reconciliation sensor ask of any destination."""

    def daily_row_counts(
        self, schema: str, table: str, first_day: date, last_day: date
    ) -> dict[date, int]:
        """Rows per local day (by `event_time`) between two days, inclusive; absent days are 0."""
        counts = dict.fromkeys(days_between(first_day, last_day), 0)
        loads = self.daily_loads(schema, table, first_day, last_day)
        return counts | {day: load.rows for day, load in loads.items()}

    @abstractmethod
    def daily_loads(
        self, schema: str, table: str, first_day: date, last_day: date
    ) -> dict[date, DayLoad]:
        """The local days (by `event_time`) between two days, inclusive, that hold rows: how
        many, and when the newest was loaded (`_loaded_at`, time zone aware)."""

    @abstractmethod
    def duplicate_record_ids(self, schema: str, table: str, first_day: date, last_day: date) -> int:
        """Rows beyond the first for each `_record_id` between two local days, inclusive; 0
        when those days are exactly-once."""

    @abstractmethod
    def column_keys(self, schema: str, table: str) -> dict[str, list[str]]:
        """The table's columns and the key paths they hold, as stored with the tables
        (`destinations.column_map`); empty before the table's first load."""


class SqlEventTableStats(EventTableStats):
    """Both answers from the shared SQL above, through a destination's hooks."""

    @abstractmethod
    def open_session(self) -> AbstractContextManager[Any]:
        """A short-lived connection (or client) for one question."""

    @abstractmethod
    def table_reference(self, session: Any, schema: str, table: str) -> str | None:
        """The table's quoted name as the destination stores it; None before its first load."""

    @abstractmethod
    def day_parameter(self, name: str) -> str:
        """How the SQL refers to the day parameter `name`, compared with a naive timestamp."""

    @abstractmethod
    def fetch(self, session: Any, sql: str, days: Mapping[str, date]) -> list[tuple]:
        """Run a query with the day parameters bound; its rows as tuples."""

    def daily_loads(
        self, schema: str, table: str, first_day: date, last_day: date
    ) -> dict[date, DayLoad]:
        rows = self._ask_over_days(DAILY_ROWS, schema, table, first_day, last_day)
        return {day: DayLoad(rows, loaded_at) for day, rows, loaded_at in rows or []}

    def duplicate_record_ids(self, schema: str, table: str, first_day: date, last_day: date) -> int:
        rows = self._ask_over_days(DUPLICATE_RECORD_IDS, schema, table, first_day, last_day)
        return int(rows[0][0]) if rows else 0

    def stored_table_name(self, table: str) -> str:
        """The table's name as its loads store it in the column map (as the destination
        spells the table: Snowflake in upper case, Redshift in lower case)."""
        return table

    def column_keys(self, schema: str, table: str) -> dict[str, list[str]]:
        with self.open_session() as session:
            state = self.table_reference(session, schema, COLUMN_MAP_TABLE)
            if state is None:
                return {}
            sql = stored_columns_sql(state, self.stored_table_name(table))
            return column_map(self.fetch(session, sql, {}))

    def _ask_over_days(
        self, sql: str, schema: str, table: str, first_day: date, last_day: date
    ) -> list[tuple] | None:
        """One of the questions above over whole local days; None before the table exists."""
        with self.open_session() as session:
            target = self.table_reference(session, schema, table)
            if target is None:
                return None
            sql = sql.format(
                table=target,
                first_day=self.day_parameter("first_day"),
                end_day=self.day_parameter("end_day"),
            )
            days = {"first_day": first_day, "end_day": last_day + timedelta(days=1)}
            return self.fetch(session, sql, days)

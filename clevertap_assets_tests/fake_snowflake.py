"""Snowflake for the tests: fakesnow (the Python connector and `write_pandas` answered from
an in-memory DuckDB), made as strict as Snowflake where the tests depend on it.

Shared by every Snowflake test module: `fake_snowflake` is the fixture, `query` reads the
fake warehouse directly.
"""

import itertools
import re
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import snowflake.connector
import sqlglot
from dagster import ExecuteInProcessResult
from snowflake.connector import pandas_tools
from sqlglot import exp

from clevertap_assets.destinations.snowflake.load import STAGING_SUFFIX
from clevertap_assets.destinations.snowflake.resources import build_snowflake_resources
from clevertap_assets_tests.harness import Pipeline

try:
    import fakesnow
except ImportError:  # pragma: no cover - the message is the point
    pytest.fail(
        "fakesnow is required for the Snowflake tests: .venv/bin/pip install 'fakesnow==0.12.1'",
        pytrace=False,
    )

PASSWORD = "pw-5ecr3t-never-logged"
DATABASE = "ANALYTICS"
ENV = {
    "SNOWFLAKE_ACCOUNT": "fake-account",
    "SNOWFLAKE_USER": "loader",
    "SNOWFLAKE_PASSWORD": PASSWORD,
    "SNOWFLAKE_DATABASE": DATABASE.lower(),
    "SNOWFLAKE_WAREHOUSE": "loading",
    "SNOWFLAKE_ROLE": "clevertap_loader",
}

ACCOUNT_TIMEZONE = "America/Los_Angeles"
"""Snowflake's default TIMEZONE (https://docs.snowflake.com/en/sql-reference/parameters#timezone)."""
MAX_IDENTIFIER_CHARACTERS = 255
"""https://docs.snowflake.com/en/sql-reference/identifiers-syntax: at most 255 characters."""
MAX_VALUE_BYTES = 134_217_728
"""A VARCHAR value holds at most 134,217,728 bytes
(https://docs.snowflake.com/en/sql-reference/data-types-text), a VARIANT 128 MB
(https://docs.snowflake.com/en/sql-reference/data-types-semistructured)."""
_SET_TIMEZONE = re.compile(r"^\s*ALTER\s+SESSION\s+SET\s+TIMEZONE\s*=\s*'([^']+)'\s*$", re.I)
_PARAMETER = re.compile(r"%(\(\w+\))?s")
_WRITES = (exp.Insert, exp.Update, exp.Copy)
_LOCKING = (exp.Update, exp.Delete, exp.Merge)
_SESSIONS = itertools.count(1)
_DDL = (exp.Create, exp.Alter, exp.Drop)


class TableLocks:
    """Snowflake's table locks, which fakesnow lacks (DuckDB fails the second of two
    conflicting writers, or lets both through when no row is shared): "UPDATE, DELETE, and
    MERGE statements hold locks that generally prevent them from running in parallel with
    other UPDATE, DELETE, and MERGE statements", held until the transaction ends
    (https://docs.snowflake.com/en/sql-reference/transactions#resource-locking). A session
    waits here for a table another session holds.

    Snowflake's statements read what was committed before they began (read committed), so
    the statements after a lock see what its previous holder committed; DuckDB fixes a
    transaction's view when it first reads (fakesnow reads the catalog at BEGIN). So a
    transaction whose first write takes a lock starts afresh in DuckDB once it has it: it
    had read only, so it loses nothing but the stale view."""

    def __init__(self) -> None:
        self._holders: dict[str, object] = {}
        self._open: set[object] = set()
        self._written: set[object] = set()
        self._changed = threading.Condition()

    def before(self, session, tree: exp.Expression) -> None:
        if isinstance(tree, exp.Transaction):
            self._open.add(session)
        if isinstance(tree, _LOCKING) and isinstance(tree.this, exp.Table):
            name = tree.this.name.upper()
            with self._changed:
                while self._holders.get(name, session) is not session:
                    self._changed.wait()
                self._holders[name] = session
            if session in self._open and session not in self._written:
                session._duck_conn.execute("ROLLBACK")
                session._duck_conn.execute("BEGIN TRANSACTION")
        if isinstance(tree, _WRITES + _LOCKING) and session in self._open:
            self._written.add(session)

    def after(self, session, tree: exp.Expression) -> None:
        """Locks end with the explicit transaction (BEGIN ... COMMIT or ROLLBACK); a
        statement outside one is its own."""
        if session in self._open and not isinstance(tree, exp.Commit | exp.Rollback):
            return
        with self._changed:
            self._open.discard(session)
            self._written.discard(session)
            for name in [n for n, holder in self._holders.items() if holder is session]:
                del self._holders[name]
            self._changed.notify_all()


@dataclass
class StrictSnowflake:
    """What fakesnow lets through and Snowflake does not, refused or recorded per statement:
    identifiers over Snowflake's length are refused; each session starts in the account's
    TIMEZONE and `ALTER SESSION SET TIMEZONE` changes it, and every write records the zone
    its session was in, the offset Snowflake gives a `TIMESTAMP_TZ` that arrives without one."""

    write_zones: dict[str, set[str]] = field(default_factory=dict)
    locks: TableLocks = field(default_factory=TableLocks)
    ddl: threading.Lock = field(default_factory=threading.Lock)
    """DDL statements one at a time: two sessions' `CREATE TABLE IF NOT EXISTS` of one table
    make one table on Snowflake; fakesnow's catalog bookkeeping fails the second."""

    def check(self, cursor, command: str) -> exp.Expression | None:
        """The statement, parsed; None for one answered here (the session's time zone)."""
        if match := _SET_TIMEZONE.match(command):
            cursor._conn.clevertap_timezone = match.group(1)
            return None
        tree = sqlglot.parse_one(_PARAMETER.sub("NULL", command), read="snowflake")
        for identifier in tree.find_all(exp.Identifier):
            if len(identifier.name) > MAX_IDENTIFIER_CHARACTERS:
                raise snowflake.connector.errors.ProgrammingError(
                    f"identifier {identifier.name[:40]}... is {len(identifier.name)} characters, "
                    f"over Snowflake's {MAX_IDENTIFIER_CHARACTERS}"
                )
        if isinstance(tree, _WRITES) and (table := tree.find(exp.Table)):
            zone = getattr(cursor._conn, "clevertap_timezone", ACCOUNT_TIMEZONE)
            self.write_zones.setdefault(table.name, set()).add(zone)
        self.locks.before(cursor._conn, tree)
        return tree


@pytest.fixture
def fake_snowflake(monkeypatch: pytest.MonkeyPatch) -> Iterator[StrictSnowflake]:
    """A fresh fake warehouse, reached through the same environment variables as production,
    as strict as `StrictSnowflake` makes it."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    strict = StrictSnowflake()
    execute = fakesnow.cursor.FakeSnowflakeCursor.execute

    def checked(self, command, *args, **kwargs):
        tree = strict.check(self, command)
        if tree is None:
            return self
        try:
            with strict.ddl if isinstance(tree, _DDL) else nullcontext():
                return execute(self, session_staging(self._conn, command), *args, **kwargs)
        finally:
            strict.locks.after(self._conn, tree)

    monkeypatch.setattr(fakesnow.cursor.FakeSnowflakeCursor, "execute", checked)
    targets = ["dagster_snowflake_pandas.snowflake_pandas_type_handler.write_pandas"]
    with fakesnow.patch(extra_targets=targets):
        fake_write = pandas_tools.write_pandas

        def sized_write(connection, frame, *args, table_name, **kwargs):
            refuse_values_over_snowflakes_size(frame)
            table_name = session_staging(connection, table_name)
            return fake_write(connection, frame, *args, table_name=table_name, **kwargs)

        pandas_tools.write_pandas = sized_write
        try:
            yield strict
        finally:
            pandas_tools.write_pandas = fake_write


def session_staging(session: object, text: str) -> str:
    """`text` with the loads' staging tables (`<table>$STAGING`, temporary) named for the
    session: a temporary table belongs to its session, so two sessions' loads each have
    their own (https://docs.snowflake.com/en/user-guide/tables-temp-transient); fakesnow
    keeps one table per name for every session."""
    if not hasattr(session, "clevertap_session"):
        session.clevertap_session = next(_SESSIONS)
    return text.replace(STAGING_SUFFIX, f"{STAGING_SUFFIX}{session.clevertap_session}")


def refuse_values_over_snowflakes_size(frame: pd.DataFrame) -> None:
    """Snowflake refuses a value over `MAX_VALUE_BYTES`; fakesnow stores it."""
    for name in frame.columns:
        values = pa.array(frame[name])
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            largest = pc.max(pc.binary_length(values)).as_py() or 0
            if largest > MAX_VALUE_BYTES:
                raise snowflake.connector.errors.ProgrammingError(
                    f"String of {largest} bytes in {name} is too long and would be truncated"
                )


def load(pipeline: Pipeline, first: date, last: date) -> ExecuteInProcessResult:
    """A run with the resources production builds from the environment."""
    return pipeline.load(first, last, **build_snowflake_resources(pipeline.warehouse))


def query(sql: str, params: tuple = ()) -> list[tuple]:
    with snowflake.connector.connect(
        account="fake-account", user="loader", password=PASSWORD, database=DATABASE
    ) as connection:
        return connection.cursor().execute(sql, params).fetchall()

"""A throwaway PostgreSQL server for tests: the stand-in for Redshift, and Dagster's instance
storage in the deployment tests.

The server runs from the machine's PostgreSQL binaries as an unprivileged OS user (initdb
refuses root), in a temporary directory, on 127.0.0.1 and a free port, without fsync, and is
stopped at the end of the session. TCP connections need the password (scram-sha-256), so
tests exercise real authentication; the Unix socket in the same directory trusts its users,
for fixtures that only set things up. Import the fixture into a test module:

    from clevertap_assets_tests.postgres_server import postgres_server  # noqa: F401
"""

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or under "
    "/usr/lib/postgresql/*/bin; install them with: apt-get update && apt-get install -y postgresql"
)
SERVER_USER = "postgres"
SUPERUSER = "postgres"
_FAST_UNSAFE_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
REDSHIFT_LIKE = """
ALTER DATABASE {database} SET default_transaction_isolation = 'serializable';
CREATE DOMAIN super AS jsonb;
CREATE FUNCTION is_large_string_enabled() RETURNS boolean LANGUAGE sql STABLE
    AS $$ SELECT coalesce(current_setting('redshift.enable_large_strings_opt_in', true), '')
        = 'on' $$;
CREATE FUNCTION json_parse(text) RETURNS super LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    limit_bytes integer := CASE WHEN is_large_string_enabled() THEN 16000000 ELSE 65535 END;
BEGIN
    IF octet_length($1) > limit_bytes THEN
        RAISE EXCEPTION 'JSON_PARSE input of % bytes is over the limit (65535 bytes unless '
            'enable_large_strings_opt_in)', octet_length($1) USING ERRCODE = '22001';
    END IF;
    RETURN $1::jsonb;
END $$;
CREATE FUNCTION json_serialize(super) RETURNS text LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT $1::text $$;
CREATE TYPE varbyte;
CREATE FUNCTION varbyte_in(cstring) RETURNS varbyte LANGUAGE internal IMMUTABLE STRICT
    AS 'byteain';
CREATE FUNCTION varbyte_out(varbyte) RETURNS cstring LANGUAGE internal IMMUTABLE STRICT
    AS 'byteaout';
CREATE FUNCTION varbyte_recv(internal) RETURNS varbyte LANGUAGE internal IMMUTABLE STRICT
    AS 'bytearecv';
CREATE FUNCTION varbyte_send(varbyte) RETURNS bytea LANGUAGE internal IMMUTABLE STRICT
    AS 'byteasend';
CREATE FUNCTION varbyte_typmod_in(cstring[]) RETURNS integer LANGUAGE internal IMMUTABLE STRICT
    AS 'varbittypmodin';
CREATE TYPE varbyte (INPUT = varbyte_in, OUTPUT = varbyte_out, RECEIVE = varbyte_recv,
    SEND = varbyte_send, TYPMOD_IN = varbyte_typmod_in, LIKE = bytea);
CREATE CAST (varbyte AS bytea) WITHOUT FUNCTION;
CREATE FUNCTION json_parse(varbyte) RETURNS super LANGUAGE sql STABLE STRICT
    AS $$ SELECT json_parse(convert_from($1::bytea, 'UTF8')) $$;
"""
"""A database that behaves as a provisioned Redshift cluster where PostgreSQL can:

- every transaction SERIALIZABLE, the default of clusters created before mid-2024
  (https://docs.aws.amazon.com/redshift/latest/dg/c_serial_isolation.html): writers that
  cannot be serialized fail (Redshift's error 1023, PostgreSQL's SQLSTATE 40001), so a loader
  that passes here locks and retries as AWS documents
  (https://docs.aws.amazon.com/redshift/latest/dg/c_serial_isolation-serializable-isolation-troubleshooting.html);
- `SUPER`, `JSON_PARSE(text)` and `JSON_SERIALIZE(super)` as Redshift spells them
  (https://docs.aws.amazon.com/redshift/latest/dg/JSON_PARSE.html), so the Redshift IO
  manager runs its production SQL unchanged;
- `JSON_PARSE` refuses input over 65,535 bytes, over 16,000,000 once the database sets
  `redshift.enable_large_strings_opt_in = on` (the shim's spelling of the cluster's
  `enable_large_strings_opt_in`), and `is_large_string_enabled()` says which
  (https://docs.aws.amazon.com/redshift/latest/dg/r_enable_large_strings_opt_in.html);
- `VARBYTE(n)` with n up to 16,777,216 (https://docs.aws.amazon.com/redshift/latest/dg/r_VARBYTE_type.html),
  a type of its own over `bytea`'s functions (its length taken as bit varying's, which allows
  it, and not enforced), and `JSON_PARSE(varbyte)`, for the S3 path's staging table.

Per database, not per server: the same server also stands in for Dagster's run storage."""


@dataclass(frozen=True)
class PostgresServer:
    """Where the test server listens and who may log in; the password is for TCP logins."""

    host: str
    port: int
    socket_dir: Path
    user: str
    password: str = field(repr=False)

    def conninfo(self, dbname: str = "postgres") -> str:
        """A libpq connection string over TCP, with the password (for clients under test)."""
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, dbname=dbname, user=self.user, password=self.password
        )

    def url(self, dbname: str = "postgres") -> str:
        """A `postgresql://` URL over TCP, for clients that take URLs (SQLAlchemy, Dagster)."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def admin_connect(self, dbname: str = "postgres") -> psycopg.Connection:
        """An autocommit superuser connection over the trusted socket, for setting up tests."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            dbname=dbname,
            user=self.user,
            autocommit=True,
        )

    def create_database(self, dbname: str) -> str:
        with self.admin_connect() as connection:
            connection.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname))
            )
        return dbname

    def create_redshift_database(self, dbname: str) -> str:
        """A database set up as `REDSHIFT_LIKE` describes."""
        self.create_database(dbname)
        with self.admin_connect(dbname) as connection:
            database = psycopg.sql.Identifier(dbname).as_string(connection)
            connection.execute(REDSHIFT_LIKE.format(database=database))
        return dbname


def find_binaries() -> Path:
    """The directory holding initdb and pg_ctl; the failure says how to install them."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    pytest.fail(INSTALL_HINT, pytrace=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as an unprivileged user
    (created if missing, as in a bare container); otherwise run them as ourselves."""
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", SERVER_USER],
            check=True,
            capture_output=True,
        )
    return ["runuser", "-u", SERVER_USER, "--", *command]


def _run(command: list[str], **kwargs: object) -> None:
    result = subprocess.run(_as_server_user(command), capture_output=True, text=True, **kwargs)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, SERVER_USER, SERVER_USER)


def start_server(root: Path, bin_dir: Path) -> PostgresServer:
    """initdb and start, with fsync off."""
    _own(root)
    data, password_file = root / "data", root / "password"
    password = secrets.token_urlsafe(16)
    password_file.write_text(password)
    _own(password_file)
    _run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            "--pwfile",
            str(password_file),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        ]
    )
    password_file.unlink()
    port = _free_port()
    options = " ".join(
        [f"-p {port}", "-h 127.0.0.1", f"-k {root}", *(f"-c {s}" for s in _FAST_UNSAFE_SETTINGS)]
    )
    _run(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        ],
        timeout=60,
    )
    return PostgresServer("127.0.0.1", port, root, SUPERUSER, password)


def stop_server(root: Path, bin_dir: Path) -> None:
    _run([str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "stop"])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL 15 server for the session; tests isolate themselves by database."""
    bin_dir = find_binaries()
    root = Path(tempfile.mkdtemp(prefix="pg_"))
    try:
        server = start_server(root, bin_dir)
        try:
            yield server
        finally:
            stop_server(root, bin_dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)

"""Opening the results database: engines, migrations and the schema check.

SQLite is the default and must take a reader (``monitor compare``) while the
daemon writes, so every SQLite connection runs in WAL mode with a busy timeout
and enforces foreign keys. Postgres connections are checked before use
(``pool_pre_ping``) and give up connecting after a few seconds instead of
hanging on a dead host.

Migrations run through a separate engine. On SQLite it turns foreign keys off,
because a batch migration rebuilds a table by copy, drop and rename, and with
enforcement on the drop would cascade into the child tables; it also emits its
own ``BEGIN IMMEDIATE`` so that a migration is all or nothing, which the
``sqlite3`` driver's legacy transaction handling would not give. On Postgres a
migration holds an advisory lock, so two processes that find a new database at
the same moment do not both create the tables.

Nothing here prints: failures are :class:`DatabaseError` with a one-line message
that renders URLs without their password.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from monitor.errors import DatabaseError, SchemaBehindError
from monitor.settings import REPO_ROOT, MonitorSettings

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = REPO_ROOT / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 10
# Any fixed 64-bit number will do; it only has to be the same in every process.
MIGRATION_LOCK_KEY = 0x5C0_7A1E
ALEMBIC_TABLE = "alembic_version"


# URLs


def parse_url(url: str | URL) -> URL:
    """The URL as SQLAlchemy reads it; plain ``postgresql://`` means psycopg 3."""
    if isinstance(url, URL):
        parsed = url
    else:
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            # The text may hold a password, so it is not repeated here.
            raise DatabaseError(
                "the database URL cannot be parsed: expected sqlite:///PATH or "
                "postgresql+psycopg://USER:PASSWORD@HOST:PORT/NAME "
                "(check MONITOR_DATABASE_URL)"
            ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")

    return parsed


def render_url(url: str | URL) -> str:
    """The URL with its password masked, fit for logs and error messages."""
    return parse_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite URL; ``None`` for in-memory SQLite or another backend."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("uri") == "true":
        return None

    return Path(database)


# Engines


def make_engine(url: str | URL) -> Engine:
    """An engine for the application's reads and writes."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas(foreign_keys=True))
        return engine

    return _create_engine(
        parsed, pool_pre_ping=True, connect_args=_postgres_connect_args(parsed)
    )


def migration_engine(url: str | URL) -> Engine:
    """An engine for running migrations: see the module docstring for why."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return make_engine(parsed)

    engine = _create_engine(parsed)
    event.listen(engine, "connect", _sqlite_pragmas(foreign_keys=False))
    event.listen(engine, "connect", _take_over_sqlite_transactions)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (no reload per attribute)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def _create_engine(url: URL, **options: Any) -> Engine:
    try:
        return create_engine(url, **options)
    except (NoSuchModuleError, ImportError) as error:
        raise DatabaseError(
            f"unsupported database URL scheme {url.drivername!r} ({error}): use "
            "sqlite:///PATH or postgresql+psycopg://..."
        ) from None


def _postgres_connect_args(url: URL) -> dict[str, Any]:
    if "connect_timeout" in url.query:
        return {}

    return {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}


def _sqlite_pragmas(*, foreign_keys: bool) -> Callable[[Any, Any], None]:
    def set_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # The timeout comes first so that switching to WAL waits too.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    return set_pragmas


def _take_over_sqlite_transactions(dbapi_connection: Any, record: Any) -> None:
    # Stop the driver from issuing BEGIN itself: it would skip it before DDL.
    dbapi_connection.isolation_level = None


def _begin_immediate(connection: Connection) -> None:
    # Take the write lock up front, waiting out the busy timeout for it, rather
    # than failing half-way through when a reader's snapshot is stale.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


# Revisions


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config built in code; env.py uses ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection

    return config


def head_revision() -> str:
    """The revision the code expects the database to be at."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise DatabaseError(f"no migrations found under {MIGRATIONS_DIR}")

    return head


def current_revision(connection: Connection) -> str | None:
    """The database's revision; ``None`` when it has never been migrated."""
    heads = MigrationContext.configure(connection).get_current_heads()
    if not heads:
        return None

    return ",".join(sorted(heads))


def check_current(engine: Engine) -> str:
    """Return the head revision, or raise if the database is not at it."""
    shown = render_url(engine.url)
    head = head_revision()
    with _reported(engine.url), engine.connect() as connection:
        current = current_revision(connection)

    if current == head:
        return head
    if current is None:
        raise SchemaBehindError(
            f"the database at {shown} has no monitor tables, the code needs "
            f"revision {head}: run `monitor db upgrade`"
        )
    if not _is_known_revision(current):
        raise DatabaseError(
            f"the database at {shown} is at revision {current}, which this code "
            f"does not know (its newest is {head}): the database was migrated by "
            "a newer monitor; run that version, or downgrade the database with it"
        )

    raise SchemaBehindError(
        f"the database at {shown} is at revision {current}, the code needs "
        f"{head}: run `monitor db upgrade`"
    )


def _is_known_revision(revision: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    try:
        return all(script.get_revision(rev) for rev in revision.split(","))
    except CommandError:
        return False


# Opening and migrating


def open_database(settings: MonitorSettings, *, create: bool) -> Engine:
    """An engine on the configured database, checked to be at the head revision.

    With ``create`` (the first ``monitor run``) a new SQLite file or an empty
    database is migrated to head first; without it (read commands) a missing
    SQLite file or an empty database is an error that says how to make one.
    """
    url = parse_url(settings.sqlalchemy_url)
    path = sqlite_path(url)
    if path is not None and not create and not path.exists():
        raise DatabaseError(
            f"no results database at {path}: run `monitor run --once` first"
        )
    if path is not None:
        ensure_folder(path.parent)

    engine = make_engine(url)
    try:
        if _is_empty(engine):
            _create_schema(engine, create=create)
        check_current(engine)
    except BaseException:
        engine.dispose()
        raise

    return engine


def upgrade_database(url: str, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database up to ``revision``; return (from, to) revisions."""
    before, after = _migrate(url, revision, command.upgrade)
    if after is None:
        raise DatabaseError(
            f"upgrading {render_url(url)} to {revision} left it at no revision"
        )

    return before, after


def downgrade_database(url: str, revision: str) -> tuple[str | None, str | None]:
    """Migrate the database down to ``revision`` (``base`` removes every table)."""
    return _migrate(url, revision, command.downgrade)


def ensure_folder(folder: Path) -> None:
    """Create the data folder, or say in one line why it cannot be used."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise DatabaseError(
            f"cannot create the data folder {folder} ({reason}): set MONITOR_HOME "
            "to a writable folder"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseError(
            f"the data folder {folder} is not writable: set MONITOR_HOME to a "
            "writable folder"
        )


def _is_empty(engine: Engine) -> bool:
    with _reported(engine.url), engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())

    return not tables - {ALEMBIC_TABLE}


def _create_schema(engine: Engine, *, create: bool) -> None:
    shown = render_url(engine.url)
    if not create:
        raise DatabaseError(
            f"the results database at {shown} is empty: run `monitor run --once` first"
        )

    logger.info("creating the results schema in %s", shown)
    if sqlite_path(engine.url) is None and engine.url.get_backend_name() == "sqlite":
        # In-memory SQLite: only this engine's connection sees the database.
        with _reported(engine.url), engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
        return

    upgrade_database(engine.url.render_as_string(hide_password=False))


Migration = Callable[[Config, str], None]


def _migrate(
    url: str, revision: str, migration: Migration
) -> tuple[str | None, str | None]:
    parsed = parse_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        ensure_folder(path.parent)

    engine = migration_engine(parsed)
    try:
        with _reported(parsed), engine.begin() as connection:
            _lock_migrations(connection)
            before = current_revision(connection)
            _run_alembic(migration, alembic_config(connection), revision, parsed)
            after = current_revision(connection)
    finally:
        engine.dispose()

    logger.info("migrated %s from %s to %s", render_url(parsed), before, after)
    return before, after


def _run_alembic(migration: Migration, config: Config, revision: str, url: URL) -> None:
    try:
        migration(config, revision)
    except CommandError as error:
        raise DatabaseError(
            f"cannot migrate the database at {render_url(url)} to {revision}: {error}"
        ) from None


def _lock_migrations(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )


@contextmanager
def _reported(url: URL) -> Iterator[None]:
    """Turn a driver error into one line that names the URL without its password."""
    try:
        yield
    except DBAPIError as error:
        reason = _one_line(error.orig if error.orig is not None else error, url)
        raise DatabaseError(
            f"cannot use the results database at {render_url(url)}: {reason}"
        ) from error


def _one_line(error: BaseException, url: URL) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = " ".join(lines) or type(error).__name__
    if url.password:
        message = message.replace(str(url.password), "***")

    return message

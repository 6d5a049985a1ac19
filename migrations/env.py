"""Alembic environment of the results database.

The monitor runs migrations in code (``monitor db upgrade``, the first
``monitor run``): it passes an open connection in
``config.attributes["connection"]``, or a URL as ``sqlalchemy.url``. A developer
running the ``alembic`` command gets the URL from the monitor's settings;
alembic.ini never holds one. SQLite migrations use batch mode (SQLite cannot
alter most things in place) and end with a foreign-key check, since they run with
enforcement off. New revisions are numbered 0001, 0002, ... automatically.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import TypeDecorator
from sqlalchemy.engine import Connection

from monitor.errors import DatabaseError
from monitor.settings import get_monitor_settings
from monitor.store import db
from monitor.store.models import Base

logger = logging.getLogger("monitor.migrations")

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url

    return get_monitor_settings().sqlalchemy_url


def number_revision(
    migration_context: MigrationContext,
    revision: str | Iterable[str | None] | Iterable[str],
    directives: list[Any],
) -> None:
    """Give a new revision the next four-digit number, and skip empty ones.

    An id chosen by hand (``--rev-id``, or a number passed in code) is kept, and
    so is Alembic's random id when the head is not numbered.
    """
    script: MigrationScript = directives[0]
    autogenerate = getattr(config.cmd_opts, "autogenerate", False)
    if autogenerate and all(ops.is_empty() for ops in script.upgrade_ops_list):
        logger.info("the models match the database: no revision written")
        directives[:] = []
        return

    chosen_by_hand = getattr(config.cmd_opts, "rev_id", None)
    if chosen_by_hand or (script.rev_id or "").isdigit():
        return

    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        script.rev_id = "0001"
    elif head.isdigit():
        script.rev_id = f"{int(head) + 1:04d}"


def render_item(
    type_: str, obj: Any, autogen_context: AutogenContext
) -> str | Literal[False]:
    """Write a custom column type as its plain SQLAlchemy type.

    A migration must keep working when the models change, so it never imports
    them: ``UTCDateTime`` is written as ``sa.DateTime()``, what the table holds.
    """
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl_instance!r}"

    return False


def check_foreign_keys(connection: Connection) -> None:
    """Fail the migration if it left rows that point at nothing (SQLite)."""
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise DatabaseError(
            f"the migration left {len(broken)} rows whose foreign key points at "
            f"nothing (first: {table} row {rowid} -> {parent}); it is rolled back"
        )


def run_migrations_offline() -> None:
    """Write the SQL to stdout instead of running it (``alembic upgrade --sql``)."""
    url = db.parse_url(database_url())
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True,
        render_as_batch=url.get_backend_name() == "sqlite",
        process_revision_directives=number_revision,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        render_as_batch=sqlite,
        # SQLite's DDL is transactional once the engine emits its own BEGIN, as
        # db.migration_engine does; this keeps all steps in one transaction.
        transactional_ddl=True,
        process_revision_directives=number_revision,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            check_foreign_keys(connection)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return

    engine = db.migration_engine(database_url())
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

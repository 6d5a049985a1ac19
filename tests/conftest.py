"""Fixtures for every test: a private data folder, no keys, fresh settings.

Each test gets its own MONITOR_HOME and usage log, and no API key, Langfuse key,
database URL or webhook from the developer's shell or ``.env``, so nothing a test
does can reach a real service or a real results database. The corpus cache is
shared by the whole session, so the local corpus is built once.

Database tests take ``db_url`` (or ``migrated_db_url``) and run twice, with ids
``sqlite`` and ``postgres``. The Postgres case gets a brand-new database on the
server at MONITOR_TEST_POSTGRES_URL, dropped afterwards; when that server cannot
be reached, the case is skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from monitor.settings import MonitorSettings, get_monitor_settings
from monitor.store.db import make_engine, parse_url, render_url, upgrade_database
from scout.config import ScoutSettings, get_settings

DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
POSTGRES_PROBE_TIMEOUT_S = 3
# Variables under these prefixes configure the code under test; the test
# suite's own settings (MONITOR_TEST_*) are kept.
SETTING_PREFIXES = ("SCOUT_", "MONITOR_", "LANGFUSE_")
KEPT_VARIABLES_PREFIX = "MONITOR_TEST_"
SECRET_VARIABLES = ("NVIDIA_API_KEY", "TAVILY_API_KEY")


def clear_settings_caches() -> None:
    get_settings.cache_clear()
    get_monitor_settings.cache_clear()


@pytest.fixture(scope="session")
def scout_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One corpus cache for the whole session."""
    return tmp_path_factory.mktemp("scout-cache")


@pytest.fixture(autouse=True)
def isolated_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, scout_cache_dir: Path
) -> Iterator[None]:
    """Point data at temporary paths and drop every key, URL and webhook."""
    for name in list(os.environ):
        configures = name.startswith(SETTING_PREFIXES) or name in SECRET_VARIABLES
        if configures and not name.startswith(KEPT_VARIABLES_PREFIX):
            monkeypatch.delenv(name)

    monkeypatch.setenv("MONITOR_HOME", str(tmp_path / "monitor-home"))
    monkeypatch.setenv("SCOUT_CACHE_DIR", str(scout_cache_dir))
    monkeypatch.setenv("SCOUT_USAGE_LOG", str(tmp_path / "usage.jsonl"))

    # A developer's .env in the working directory must not reach the tests.
    monkeypatch.setitem(ScoutSettings.model_config, "env_file", None)
    monkeypatch.setitem(MonitorSettings.model_config, "env_file", None)

    clear_settings_caches()
    yield
    clear_settings_caches()


# Databases


def postgres_admin_engine(url: str) -> Engine:
    return create_engine(
        parse_url(url),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": POSTGRES_PROBE_TIMEOUT_S},
    )


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The test server's URL, checked once per session; skips when unreachable."""
    url = os.environ.get("MONITOR_TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL)
    engine = postgres_admin_engine(url)
    try:
        with engine.connect():
            pass
    except DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else error
        pytest.skip(f"Postgres not reachable at {render_url(url)}: {reason}")
    finally:
        engine.dispose()

    return url


def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """Create a database of its own for one test; drop it, connections and all."""
    name = f"monitor_t_{uuid.uuid4().hex[:12]}"
    admin = postgres_admin_engine(admin_url)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = parse_url(admin_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty results database: a new SQLite file, or a new Postgres database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
        return

    admin_url: str = request.getfixturevalue("postgres_admin_url")
    yield from fresh_postgres_database(admin_url)


@pytest.fixture
def migrated_db_url(db_url: str) -> str:
    """``db_url`` migrated up to the head revision."""
    upgrade_database(db_url)
    return db_url


@pytest.fixture
def engine(migrated_db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """An engine on a migrated database that the monitor's settings point at too,
    so commands run in-process read the same database."""
    monkeypatch.setenv("MONITOR_DATABASE_URL", migrated_db_url)
    get_monitor_settings.cache_clear()
    engine = make_engine(migrated_db_url)
    yield engine
    engine.dispose()

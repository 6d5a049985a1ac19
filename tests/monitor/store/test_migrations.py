"""The results database: migrations, the schema check, engines and timestamps.

Every database test runs on SQLite and on Postgres (fixture ids ``sqlite`` and
``postgres``). Tests that need one more revision copy the real migrations into a
temporary folder and add a test-only revision after the current head, numbered
as the next real one would be, so new real migrations do not change these tests.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from string import Template
from typing import Any, NamedTuple

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from monitor.errors import DatabaseError, SchemaBehindError
from monitor.settings import REPO_ROOT, MonitorSettings, get_monitor_settings
from monitor.store import db
from monitor.store.models import (
    METRICS,
    Alert,
    Base,
    Baseline,
    Lease,
    Notification,
    PageText,
    Result,
    Run,
    Score,
    Snapshot,
    SnapshotPage,
    Usage,
    Worker,
)
from scout.config import OFFLINE_MODEL_NAME

NOW = datetime(2025, 6, 2, 9, 30, tzinfo=UTC)
PAGE_HASH = "3f" * 32
WITH_URL = "https://docs.python.org/3/reference/compound_stmts.html#the-with-statement"
PDF_URL = "https://docs.python.org/3/archives/python-3.11.9-docs-pdf-a4.pdf"

# Test-only revisions. ``$revision`` and ``$down_revision`` are filled in by
# ``migrations_with``, so each one follows whatever the real head is.

# A revision that changes a column type of ``runs``. SQLite cannot do that in
# place, so batch mode rebuilds the table (copy, drop, rename) while results,
# scores and alerts point at it.
REBUILD_RUNS = '''
"""Test only: widen runs.owner and add runs.note."""

import sqlalchemy as sa
from alembic import op

revision = "$revision"
down_revision = "$down_revision"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch.alter_column("owner", existing_type=sa.String(200), type_=sa.Text())


def downgrade():
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("owner", existing_type=sa.Text(), type_=sa.String(200))
        batch.drop_column("note")
'''

FAILING = '''
"""Test only: a migration that fails after its first statement."""

import sqlalchemy as sa
from alembic import op

revision = "$revision"
down_revision = "$down_revision"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    op.execute("DELETE FROM pages")
    raise RuntimeError("this migration fails half-way")


def downgrade():
    op.drop_table("half_done")
'''

ORPHAN = '''
"""Test only: a data migration that leaves a usage row without its result."""

from alembic import op

revision = "$revision"
down_revision = "$down_revision"
branch_labels = None
depends_on = None


def upgrade():
    op.execute(
        "INSERT INTO usage (result_id, node, model, calls, calls_without_usage, "
        "seconds) VALUES (999999, 'writer', 'offline/extractive-1', 1, 0, 0.5)"
    )


def downgrade():
    op.execute("DELETE FROM usage WHERE result_id = 999999")
'''


# Helpers


def make_run(run_id: str, **fields: Any) -> Run:
    values: dict[str, Any] = {
        "kind": "scheduled",
        "status": "completed",
        "started_at": NOW,
        "finished_at": NOW + timedelta(minutes=4),
        "prompt_version": "v1",
        "model": OFFLINE_MODEL_NAME,
        "git_sha": "34276e8",
        "git_dirty": True,
        "golden_hash": "a1" * 32,
        "corpus_fingerprint": "pydoc_data/3.11.9/79",
        "judge_model": "offline/judge-1",
        "judge_version": "j1",
        "threshold": 0.70,
    }
    return Run(id=run_id, **(values | fields))


def add_realistic_rows(session: Session) -> None:
    """A row in every table, as the monitor writes them.

    A pass with a good and a failed question, its rescore, an alert with its
    notice, a page the pass read, the daemon that ran the pass and its lease, a
    baseline pinned to the pass, and a snapshot of its sources.
    """
    run = make_run(
        "20250602T093000-3b9c",
        score=0.733,
        metric_means={"grounding": 4.2, "coverage": 2.6, "citations": 4.2},
        questions_total=2,
        questions_failed=1,
        input_tokens=1830,
        output_tokens=412,
        cost=0.0,
        wall_seconds=241.5,
    )
    good = Result(
        run=run,
        question_id="q01",
        question="What does the with statement guarantee about __exit__?",
        status="completed",
        report="__exit__ runs even when the suite raises [1].",
        sources=[{"n": 1, "url": WITH_URL, "content_hash": PAGE_HASH}],
        checks={"non_empty": True, "citations_resolve": True, "dead_citations": []},
        node_visits=["planner", "critic", "supervisor", "searcher", "writer"],
        worker_turns=3,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        duration_seconds=48.25,
        input_tokens=1830,
        output_tokens=412,
        cost=0.0,
        finished_at=NOW + timedelta(minutes=1),
    )
    failed = Result(
        run=run,
        question_id="q02",
        question="How is a decorator expression evaluated?",
        status="failed",
        error="RunLimitError: recursion limit 60 reached for q02",
        sources=None,
        finished_at=NOW + timedelta(minutes=3),
    )
    rescore = make_run("20250603T080000-77de", kind="rescore", parent_run_id=run.id)
    session.add_all([run, good, failed, rescore])
    session.flush()

    for metric, value in zip(METRICS, (5.0, 3.0, None), strict=True):
        session.add(
            Score(
                run_id=run.id,
                result_id=good.id,
                metric=metric,
                value=value,
                rationale=None if value is None else f"{metric}: supported by [1]",
                error="judge answer unparseable after 2 retries"
                if value is None
                else None,
                judge_model="offline/judge-1",
                judge_version="j1",
            )
        )
    session.add(
        Score(
            run_id=rescore.id,
            result_id=good.id,
            metric="grounding",
            value=4.0,
            judge_model="offline/judge-1",
            judge_version="j2",
        )
    )
    for node, calls in (("planner", 1), ("reader", 4), ("writer", 1)):
        session.add(
            Usage(
                result_id=good.id,
                node=node,
                model=OFFLINE_MODEL_NAME,
                calls=calls,
                input_tokens=300 * calls,
                output_tokens=60 * calls,
                seconds=0.4 * calls,
                cost=0.0,
            )
        )

    alert = Alert(
        rule="rolling_score",
        fingerprint="rolling_score:prompt_version=v1",
        state="firing",
        message="rolling score 0.61 < 0.70 over the last 3 runs since 3b9c",
        details={"window": 3, "threshold": 0.7, "runbook": "quality-drop"},
        run_id=run.id,
        created_at=NOW,
        last_seen_at=NOW,
    )
    session.add(alert)
    session.flush()
    session.add(
        Notification(
            alert_id=alert.id,
            sink="webhook",
            kind="fired",
            payload={"text": "ALERT: rolling score 0.61 < 0.70"},
            state="pending",
            attempts=1,
            last_error="HTTP 503 from the webhook",
            created_at=NOW,
        )
    )
    session.add(
        PageText(
            content_hash=PAGE_HASH,
            url=WITH_URL,
            title="8.5. The with statement",
            text="The with statement is used to wrap the execution of a block...",
            first_seen_at=NOW,
        )
    )
    add_daemon_rows(session, last_run_id=run.id)
    add_snapshot_rows(session)
    session.commit()


def add_daemon_rows(session: Session, *, last_run_id: str) -> None:
    """The daemon's heartbeat and its pass lease, and a baseline pinned to a run."""
    worker = Worker(
        id="build-01:4122:5f0c",
        host="build-01",
        pid=4122,
        state="running",
        interval_seconds=4 * 3600.0,
        started_at=NOW - timedelta(hours=8),
        heartbeat_at=NOW + timedelta(minutes=4, seconds=30),
        next_due_at=NOW + timedelta(hours=4),
        stopped_at=None,
        passes=3,
        skipped_ticks=1,
        last_run_id=last_run_id,
    )
    lease = Lease(
        name="pass",
        holder=worker.id,
        acquired_at=NOW,
        expires_at=NOW + timedelta(minutes=15),
    )
    baseline = Baseline(
        version_key="prompt_version",
        version="v1",
        run_ids=[last_run_id],
        created_at=NOW + timedelta(hours=1),
        active=True,
    )
    session.add_all([worker, lease, baseline])


def add_snapshot_rows(session: Session) -> None:
    """A snapshot of two URLs: one stored (its text is the page), one skipped."""
    snapshot = Snapshot(
        created_at=NOW + timedelta(hours=2),
        note="golden subset references and the pages of 3b9c",
    )
    session.add(snapshot)
    session.flush()
    stored = SnapshotPage(
        snapshot_id=snapshot.id,
        url=WITH_URL,
        final_url=WITH_URL,
        status="ok",
        http_status=200,
        content_type="text/html; charset=utf-8",
        content_hash=PAGE_HASH,
        boilerplate_share=0.31,
        fetched_at=NOW + timedelta(hours=2),
    )
    skipped = SnapshotPage(
        snapshot_id=snapshot.id,
        url=PDF_URL,
        status="skipped",
        reason="not an HTML page: application/pdf",
        http_status=200,
        content_type="application/pdf",
        fetched_at=NOW + timedelta(hours=2, seconds=3),
    )
    session.add_all([stored, skipped])


def insert_realistic_rows(url: str) -> None:
    engine = db.make_engine(url)
    try:
        with db.session_factory(engine)() as session:
            add_realistic_rows(session)
    finally:
        engine.dispose()


@contextmanager
def connected(url: str) -> Iterator[Engine]:
    engine = db.make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def table_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every monitor table, as the database returns it."""
    with connected(url) as engine, engine.connect() as connection:
        names = set(inspect(connection).get_table_names()) - {db.ALEMBIC_TABLE}
        return {
            name: [
                dict(row._mapping)
                for row in connection.execute(
                    text(f'SELECT * FROM "{name}" ORDER BY 1')
                )
            ]
            for name in sorted(names)
        }


def revision_of(url: str) -> str | None:
    with connected(url) as engine, engine.connect() as connection:
        return db.current_revision(connection)


def schema_differences(url: str) -> list[Any]:
    with connected(url) as engine, engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


class AddedRevision(NamedTuple):
    """A copy of the migrations with one test-only revision on top of the head."""

    folder: Path
    down_revision: str  # the real head, which the test-only revision follows
    revision: str


def real_revisions() -> list[tuple[str, str | None]]:
    """(revision, down_revision) of every real migration, oldest first."""
    script = ScriptDirectory.from_config(db.alembic_config())
    pairs = []
    for found in script.walk_revisions():
        down = found.down_revision
        assert down is None or isinstance(down, str), f"{found.revision} is a merge"
        pairs.append((found.revision, down))

    return pairs[::-1]


def number_after(revision: str) -> str:
    """The id the numbering in migrations/env.py gives the revision after this one."""
    return f"{int(revision) + 1:04d}"


def copy_migrations(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    shutil.copytree(
        db.MIGRATIONS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder


def version_files(folder: Path) -> list[str]:
    return sorted(path.name for path in (folder / "versions").glob("*.py"))


def migrations_with(tmp_path: Path, template: str) -> AddedRevision:
    """A copy of the real migrations with a test-only revision after the head."""
    head = db.head_revision()
    added = AddedRevision(copy_migrations(tmp_path), head, number_after(head))
    source = Template(template).substitute(
        revision=added.revision, down_revision=added.down_revision
    )
    (added.folder / "versions" / f"{added.revision}_test_only.py").write_text(source)
    return added


def settings_for(monkeypatch: pytest.MonkeyPatch, url: str) -> MonitorSettings:
    monkeypatch.setenv("MONITOR_DATABASE_URL", url)
    get_monitor_settings.cache_clear()
    return get_monitor_settings()


def assert_rows_kept(before: dict[str, list[dict[str, Any]]], url: str) -> None:
    """Each table still present holds the same rows, in the columns it kept."""
    for name, rows in table_rows(url).items():
        assert len(rows) == len(before[name]), name
        for old, new in zip(before[name], rows, strict=True):
            kept = {column: value for column, value in old.items() if column in new}
            assert kept == {column: new[column] for column in kept}, name


# Migrations


def test_the_real_revisions_are_one_chain_numbered_from_0001() -> None:
    revisions = real_revisions()
    numbers = [f"{number:04d}" for number in range(1, len(revisions) + 1)]

    assert revisions == list(zip(numbers, [None, *numbers[:-1]], strict=True))
    assert revisions[-1][0] == db.head_revision()


def test_upgrade_then_downgrade_step_by_step_and_back_keeps_surviving_rows(
    migrated_db_url: str,
) -> None:
    insert_realistic_rows(migrated_db_url)
    before = table_rows(migrated_db_url)
    empty = sorted(name for name in Base.metadata.tables if not before[name])
    assert not empty, f"add rows for the tables {empty} to add_realistic_rows"

    steps = []
    while revision_of(migrated_db_url) is not None:
        steps.append(db.downgrade_database(migrated_db_url, "-1"))
        assert_rows_kept(before, migrated_db_url)

    assert steps == real_revisions()[::-1]
    assert table_rows(migrated_db_url) == {}
    assert db.upgrade_database(migrated_db_url) == (None, db.head_revision())
    assert schema_differences(migrated_db_url) == []


def test_a_table_rebuilt_by_batch_mode_keeps_its_rows_and_its_childrens_rows(
    migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_realistic_rows(migrated_db_url)
    before = table_rows(migrated_db_url)
    added = migrations_with(tmp_path, REBUILD_RUNS)
    monkeypatch.setattr(db, "MIGRATIONS_DIR", added.folder)

    upgraded = db.upgrade_database(migrated_db_url)
    assert upgraded == (added.down_revision, added.revision)
    assert_rows_kept(before, migrated_db_url)
    downgraded = db.downgrade_database(migrated_db_url, added.down_revision)
    assert downgraded == (added.revision, added.down_revision)

    assert table_rows(migrated_db_url) == before


def test_autogenerate_finds_no_difference_between_models_and_migrated_schema(
    migrated_db_url: str,
) -> None:
    assert schema_differences(migrated_db_url) == []


def test_a_failing_migration_leaves_the_database_as_it_was(
    migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_realistic_rows(migrated_db_url)
    before = table_rows(migrated_db_url)
    added = migrations_with(tmp_path, FAILING)
    monkeypatch.setattr(db, "MIGRATIONS_DIR", added.folder)

    with pytest.raises(RuntimeError, match="fails half-way"):
        db.upgrade_database(migrated_db_url)

    assert revision_of(migrated_db_url) == added.down_revision
    assert table_rows(migrated_db_url) == before


def test_a_migration_that_leaves_rows_pointing_at_nothing_is_rolled_back(
    migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    insert_realistic_rows(migrated_db_url)
    before = table_rows(migrated_db_url)
    added = migrations_with(tmp_path, ORPHAN)
    monkeypatch.setattr(db, "MIGRATIONS_DIR", added.folder)

    with pytest.raises(DatabaseError, match="usage"):
        db.upgrade_database(migrated_db_url)

    assert revision_of(migrated_db_url) == added.down_revision
    assert table_rows(migrated_db_url) == before


def test_the_alembic_command_migrates_the_configured_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "by-hand.db"
    monkeypatch.setenv("MONITOR_DATABASE_URL", f"sqlite:///{database}")
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini")]

    subprocess.run([*alembic, "upgrade", "head"], check=True, capture_output=True)

    assert revision_of(f"sqlite:///{database}") == db.head_revision()


def test_new_revisions_are_numbered_after_the_head(
    migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = migrations_with(tmp_path, REBUILD_RUNS)
    monkeypatch.setattr(db, "MIGRATIONS_DIR", added.folder)
    following = number_after(added.revision)

    with connected(migrated_db_url) as engine, engine.connect() as connection:
        config = db.alembic_config(connection)
        config.set_main_option("revision_environment", "true")
        config.cmd_opts = argparse.Namespace(autogenerate=False, rev_id=None)
        script = command.revision(config, message="keep judge notes")

    assert not isinstance(script, list) and script is not None
    assert script.revision == following
    assert script.down_revision == added.revision
    assert (added.folder / "versions" / f"{following}_keep_judge_notes.py").exists()


def test_autogenerate_writes_no_revision_when_the_models_match(
    migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = copy_migrations(tmp_path)
    written = version_files(folder)
    monkeypatch.setattr(db, "MIGRATIONS_DIR", folder)

    with connected(migrated_db_url) as engine, engine.connect() as connection:
        config = db.alembic_config(connection)
        config.cmd_opts = argparse.Namespace(autogenerate=True, rev_id=None)
        command.revision(config, message="nothing", autogenerate=True)

    assert f"{db.head_revision()}_" in " ".join(written)
    assert version_files(folder) == written


# Opening the database


def test_a_database_behind_the_code_says_run_monitor_db_upgrade(
    migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(monkeypatch, migrated_db_url)
    added = migrations_with(tmp_path, REBUILD_RUNS)
    monkeypatch.setattr(db, "MIGRATIONS_DIR", added.folder)
    behind = f"at revision {added.down_revision}, the code needs {added.revision}"

    for create in (False, True):
        with pytest.raises(SchemaBehindError) as caught:
            db.open_database(settings, create=create)
        message = str(caught.value)
        assert behind in message
        assert "run `monitor db upgrade`" in message

    upgraded = db.upgrade_database(migrated_db_url)
    assert upgraded == (added.down_revision, added.revision)
    db.open_database(settings, create=False).dispose()


def test_a_database_ahead_of_the_code_says_it_was_migrated_by_a_newer_monitor(
    migrated_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(monkeypatch, migrated_db_url)
    added = migrations_with(tmp_path, REBUILD_RUNS)
    with monkeypatch.context() as newer_code:
        newer_code.setattr(db, "MIGRATIONS_DIR", added.folder)
        db.upgrade_database(migrated_db_url)

    with pytest.raises(DatabaseError) as caught:
        db.open_database(settings, create=False)

    message = str(caught.value)
    assert not isinstance(caught.value, SchemaBehindError)
    assert f"at revision {added.revision}, which this code does not know" in message
    assert f"its newest is {added.down_revision}" in message
    assert "newer monitor" in message


def test_the_first_run_migrates_an_empty_database_to_head(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.open_database(settings_for(monkeypatch, db_url), create=True)
    try:
        assert db.check_current(engine) == db.head_revision()
        with db.session_factory(engine)() as session:
            add_realistic_rows(session)
            assert session.scalar(select(Run.id).where(Run.kind == "rescore"))
    finally:
        engine.dispose()


def test_the_first_run_creates_the_data_folder_and_a_sqlite_file_at_head(
    tmp_path: Path,
) -> None:
    settings = get_monitor_settings()
    database = tmp_path / "monitor-home" / "monitor.db"
    assert not database.parent.exists()

    engine = db.open_database(settings, create=True)
    engine.dispose()

    assert database.is_file()
    assert revision_of(f"sqlite:///{database}") == db.head_revision()


def test_a_read_on_a_missing_sqlite_file_says_run_monitor_run_once(
    tmp_path: Path,
) -> None:
    database = tmp_path / "monitor-home" / "monitor.db"

    with pytest.raises(DatabaseError) as caught:
        db.open_database(get_monitor_settings(), create=False)

    assert str(caught.value) == (
        f"no results database at {database}: run `monitor run --once` first"
    )
    assert not database.parent.exists()


def test_a_read_on_an_empty_database_says_run_monitor_run_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with connected(db_url) as engine, engine.connect():
        pass  # SQLite creates the (empty) file on first connection

    with pytest.raises(DatabaseError, match=r"is empty: run `monitor run --once`"):
        db.open_database(settings_for(monkeypatch, db_url), create=False)


def test_an_unwritable_data_folder_is_one_line_naming_it_and_monitor_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MONITOR_HOME", str(blocker / "home"))

    with pytest.raises(DatabaseError) as caught:
        db.open_database(get_monitor_settings(), create=True)

    message = str(caught.value)
    assert f"cannot create the data folder {blocker / 'home'}" in message
    assert "MONITOR_HOME" in message
    assert "\n" not in message


@pytest.mark.postgres
def test_an_unreachable_postgres_is_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql+psycopg://u:SECRETPW@127.0.0.1:1/x"

    with pytest.raises(DatabaseError) as caught:
        db.open_database(settings_for(monkeypatch, url), create=True)
    with pytest.raises(DatabaseError) as upgrading:
        db.upgrade_database(url)

    for error in (caught.value, upgrading.value):
        message = str(error)
        assert message.startswith(
            "cannot use the results database at postgresql+psycopg://u:***@127.0.0.1:1/x:"
        )
        assert "\n" not in message
        assert "SECRETPW" not in "".join(traceback.format_exception(error))


def test_a_url_that_cannot_be_parsed_is_reported_without_repeating_it() -> None:
    with pytest.raises(DatabaseError) as caught:
        db.make_engine("postgresql+psycopg://u:SECRETPW@db:notaport/x")

    assert "SECRETPW" not in str(caught.value)
    assert "MONITOR_DATABASE_URL" in str(caught.value)


def test_a_plain_postgresql_url_is_served_by_psycopg_3() -> None:
    engine = db.make_engine("postgresql://monitor:pw@db.internal:5433/results")

    assert engine.url.drivername == "postgresql+psycopg"
    assert engine.dialect.driver == "psycopg"
    assert db.render_url(engine.url) == (
        "postgresql+psycopg://monitor:***@db.internal:5433/results"
    )


# SQLite behaviour


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite results database at head, for what only SQLite does."""
    url = f"sqlite:///{tmp_path / 'results.db'}"
    db.upgrade_database(url)
    return url


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout_and_foreign_keys(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.open_database(settings_for(monkeypatch, sqlite_url), create=False)
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_TIMEOUT_MS
            assert pragma("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_a_sqlite_write_commits_while_a_reader_holds_its_snapshot(
    sqlite_url: str,
) -> None:
    count_pages = "SELECT count(*) FROM pages"
    with connected(sqlite_url) as reader, reader.connect() as reading:
        reading.exec_driver_sql("BEGIN")
        assert reading.exec_driver_sql(count_pages).scalar() == 0

        insert_realistic_rows(sqlite_url)

        # The write did not wait for the reader, which still sees its snapshot.
        assert reading.exec_driver_sql(count_pages).scalar() == 0
        reading.exec_driver_sql("COMMIT")
        assert reading.exec_driver_sql(count_pages).scalar() == 1


# Stored values


def test_utc_datetime_round_trips_aware_datetimes_as_utc(migrated_db_url: str) -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    seen = datetime(2025, 3, 30, 1, 30, 15, 123456, tzinfo=india)

    with connected(migrated_db_url) as engine:
        sessions = db.session_factory(engine)
        with sessions() as session:
            session.add(
                PageText(
                    content_hash=PAGE_HASH,
                    url=WITH_URL,
                    title="t",
                    text="x",
                    first_seen_at=seen,
                )
            )
            session.commit()
        with sessions() as session:
            stored = session.scalars(select(PageText.first_seen_at)).one()
        with engine.connect() as connection:
            raw = connection.exec_driver_sql("SELECT first_seen_at FROM pages").scalar()

    assert stored == seen
    assert stored.tzinfo is UTC
    assert stored.isoformat() == "2025-03-29T20:00:15.123456+00:00"
    assert str(raw).replace("T", " ") == "2025-03-29 20:00:15.123456"


def test_a_naive_datetime_is_refused(migrated_db_url: str) -> None:
    with connected(migrated_db_url) as engine, db.session_factory(engine)() as session:
        session.add(
            PageText(
                content_hash=PAGE_HASH,
                url=WITH_URL,
                title="t",
                text="x",
                first_seen_at=datetime(2025, 3, 30, 1, 30),
            )
        )
        with pytest.raises(StatementError, match="naive datetime"):
            session.flush()


def test_a_json_value_set_to_none_is_stored_as_sql_null(migrated_db_url: str) -> None:
    insert_realistic_rows(migrated_db_url)

    with connected(migrated_db_url) as engine, engine.connect() as connection:
        nulls = connection.execute(
            text("SELECT question_id FROM results WHERE sources IS NULL")
        ).scalars()
        assert list(nulls) == ["q02"]

"""How fast ``monitor compare`` and ``monitor history`` answer on a large database.

Builds a results database of 10,000 runs x 5 questions x 3 scores (plus one
rescore every 20 passes, each with its own 15 scores) on SQLite and on Postgres,
with bulk inserts, then times:

- ``compare`` by prompt version (10 newest runs a side), by model (5,000 runs
  each, 10 newest), by git sha prefix, and by run (a pass against its rescore);
- ``history`` (20 newest passes and their rescores).

Each figure is the median of 7 calls after one warm-up, in-process: the query
and statistics alone, and the whole command (database check, queries,
statistics, JSON rendering to /dev/null). One fresh ``monitor`` process per
command is timed too, for what a user waits including interpreter start.
Target: the command under 0.5 s on both databases.

The queries the commands run are captured as they execute and their plans
printed (EXPLAIN QUERY PLAN on SQLite, EXPLAIN on Postgres), to check that each
uses an index. Run from the repository root:

    .venv/bin/python bench/compare_speed.py [--runs 10000] [--no-postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, event, insert  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from monitor.store.db import make_engine, parse_url, upgrade_database  # noqa: E402
from monitor.store.models import METRICS, Result, Run, Score  # noqa: E402

QUESTIONS = ("with-exit", "default-arguments", "chained-comparisons", "for-else", "x")
RUNS_PER_VERSION = 500
RUNS_PER_SHA = 50
RESCORE_EVERY = 20
FAILED_EVERY = 97
CHUNK = 5_000
TARGET_S = 0.5
REPEATS = 7
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
REPORT = ("The with statement calls __exit__ on the way out [1]. " * 12).strip()
SOURCES = [
    {
        "url": f"https://docs.python.org/3/reference/x.html#s{i}",
        "title": f"S{i}",
        "content_hash": f"{i:064x}",
    }
    for i in range(3)
]
CHECKS = {"non_empty": True, "citations_resolve": True, "two_sources_cited": True}


# Building the database -------------------------------------------------------------


def run_row(index: int, **extra: Any) -> dict[str, Any]:
    version = index // RUNS_PER_VERSION
    started = T0 + timedelta(hours=4 * index)
    return {
        "id": f"run-{index:06d}",
        "kind": "scheduled",
        "status": "failed" if index % FAILED_EVERY == FAILED_EVERY - 1 else "completed",
        "started_at": started,
        "finished_at": started + timedelta(minutes=3),
        "parent_run_id": None,
        "owner": "bench:1",
        "prompt_version": f"v{version}",
        "model": f"model-{index % 2}",
        "model_reported": None,
        "git_sha": f"{index // RUNS_PER_SHA:08x}" + "0" * 32,
        "git_dirty": False,
        "golden_hash": "g" * 64,
        "corpus_fingerprint": "corpus-1",
        "sources_backend": "local",
        "judge_model": "offline/overlap-judge-1",
        "judge_version": "offline-overlap-1",
        "threshold": 0.7,
        "score": 0.8,
        "metric_means": {m: 4.0 for m in METRICS},
        "questions_total": len(QUESTIONS),
        "questions_failed": 0,
        "questions_unscored": 0,
        "input_tokens": 100_000 + index % 1000,
        "output_tokens": 30_000,
        "cost": 0.02,
        "wall_seconds": 180.0,
        "error": None,
    } | extra


def result_rows(run_index: int, first_id: int) -> list[dict[str, Any]]:
    return [
        {
            "id": first_id + q,
            "run_id": f"run-{run_index:06d}",
            "question_id": question,
            "question": f"question {question}?",
            "status": "completed",
            "error": None,
            "report": REPORT,
            "sources": SOURCES,
            "checks": CHECKS,
            "node_visits": ["planner", "critic", "supervisor", "writer"],
            "worker_turns": 4,
            "trace_id": uuid.UUID(int=first_id + q).hex,
            "duration_seconds": 20.0 + (run_index * 7 + q * 3) % 40,
            "input_tokens": None,
            "output_tokens": None,
            "cost": None,
            "finished_at": T0 + timedelta(hours=4 * run_index),
        }
        for q, question in enumerate(QUESTIONS)
    ]


def score_rows(run_id: str, result_ids: range, salt: int) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "result_id": result_id,
            "metric": metric,
            "attempt": 0,
            "value": float(1 + (result_id * 3 + m + salt) % 5),
            "rationale": "bench",
            "error": None,
            "judge_model": "offline/overlap-judge-1",
            "judge_version": "offline-overlap-1",
        }
        for result_id in result_ids
        for m, metric in enumerate(METRICS)
    ]


def rows_for(runs: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Run, result and score rows: passes, then one rescore every 20 passes."""
    run_rows, results, scores = [], [], []
    for index in range(runs):
        run_rows.append(run_row(index))
        first = index * len(QUESTIONS) + 1
        results += result_rows(index, first)
        ids = range(first, first + len(QUESTIONS))
        scores += score_rows(f"run-{index:06d}", ids, salt=index)
        if index % RESCORE_EVERY == 0:
            rescore_id = f"rescore-{index:06d}"
            run_rows.append(
                run_row(
                    index,
                    id=rescore_id,
                    kind="rescore",
                    parent_run_id=f"run-{index:06d}",
                    started_at=T0 + timedelta(hours=4 * index + 1),
                )
            )
            scores += score_rows(rescore_id, ids, salt=index + 1)
    return run_rows, results, scores


def build(url: str, runs: int) -> float:
    """Migrate an empty database and bulk-insert the rows; returns seconds."""
    started = time.perf_counter()
    upgrade_database(url)
    run_rows, results, scores = rows_for(runs)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for table, rows in (
                (Run.__table__, run_rows),
                (Result.__table__, results),
                (Score.__table__, scores),
            ):
                for start in range(0, len(rows), CHUNK):
                    connection.execute(insert(table), rows[start : start + CHUNK])
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(
                    "SELECT setval(pg_get_serial_sequence('results', 'id'), "
                    "(SELECT max(id) FROM results))"
                )
        create_indexes_ahead_of_migrations(engine)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    print(
        f"  built {len(run_rows)} runs, {len(results)} results, {len(scores)} scores "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return time.perf_counter() - started


def create_indexes_ahead_of_migrations(engine: Any) -> None:
    """Create the indexes the models declare that no migration has made yet,
    so the figures are those of the schema the code asks for; say which."""
    from sqlalchemy import inspect

    from monitor.store.models import Base

    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        existing = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in existing:
                index.create(engine)
                print(
                    f"  index {index.name} is in the models, not yet in a "
                    "migration: created here"
                )


# Timing ----------------------------------------------------------------------------


def median_seconds(call: Callable[[], Any]) -> float:
    call()  # warm-up: caches, the first connection
    seconds = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


@contextlib.contextmanager
def database(url: str) -> Iterator[None]:
    """Point the monitor's settings at ``url`` for in-process commands."""
    from monitor.settings import get_monitor_settings

    os.environ["MONITOR_DATABASE_URL"] = url
    get_monitor_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.pop("MONITOR_DATABASE_URL", None)
        get_monitor_settings.cache_clear()


def cases(runs: int) -> dict[str, list[str]]:
    last_version = (runs - 1) // RUNS_PER_VERSION
    newest = runs - 1 - (runs - 1) % RESCORE_EVERY
    return {
        "compare --by prompt_version": [f"v{last_version - 1}", f"v{last_version}"],
        "compare --by prompt_version (oldest)": ["v0", "v1"],
        "compare --by model": ["model-0", "model-1", "--by", "model"],
        "compare --by git_sha (prefix)": [
            f"{(runs - 1) // RUNS_PER_SHA - 1:08x}",
            f"{(runs - 1) // RUNS_PER_SHA:08x}",
            "--by",
            "git_sha",
        ],
        "compare --by run (pass vs rescore)": [
            f"run-{newest:06d}",
            f"rescore-{newest:06d}",
            "--by",
            "run",
        ],
    }


def in_process(argv: list[str]) -> Callable[[], Any]:
    """The command as `monitor` runs it, output discarded."""
    from monitor.cli import app

    def call() -> None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            app(args=[*argv, "--json"], standalone_mode=False)

    return call


def query_only(argv: list[str]) -> Callable[[], Any]:
    """The queries and statistics alone, on an already open engine."""
    from monitor.compare import CompareOptions, compare
    from monitor.settings import get_monitor_settings
    from monitor.store.db import session_factory
    from monitor.store.queries import history_runs

    engine = make_engine(get_monitor_settings().sqlalchemy_url)
    sessions = session_factory(engine)
    by = argv[argv.index("--by") + 1] if "--by" in argv else "prompt_version"

    def call() -> None:
        with sessions() as session:
            if argv[0] == "history":
                history_runs(session, 20)
            else:
                compare(session, argv[1], argv[2], CompareOptions(by=by))

    return call


def process_seconds(argv: list[str], url: str) -> float:
    env = dict(os.environ, MONITOR_DATABASE_URL=url)
    started = time.perf_counter()
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "monitor"), *argv, "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        check=False,
    )
    if done.returncode not in (0, 2):
        raise SystemExit(f"monitor {' '.join(argv)}: {done.stderr.decode()[-400:]}")
    return time.perf_counter() - started


def time_commands(url: str, runs: int) -> None:
    commands = {name: ["compare", *argv] for name, argv in cases(runs).items()} | {
        "history --last 20": ["history", "--last", "20"]
    }
    print(f"  {'command':<38} {'query+stats':>12} {'command':>9} {'process':>9}")
    with database(url):
        for name, argv in commands.items():
            query = median_seconds(query_only(argv))
            whole = median_seconds(in_process(argv))
            process = process_seconds(argv, url)
            flag = "" if whole < TARGET_S else "  OVER TARGET"
            print(
                f"  {name:<38} {query:>10.3f} s {whole:>7.3f} s {process:>7.2f} s{flag}"
            )


# Plans -----------------------------------------------------------------------------


def captured_queries(url: str, runs: int) -> list[tuple[str, Any]]:
    """The statements that compare and history run, as the driver saw them."""
    engine = make_engine(url)
    seen: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if (
            "FROM runs" in statement
            or "FROM scores" in statement
            or "FROM results" in statement
        ):
            seen.append((statement, params))

    from monitor.compare import CompareOptions, compare
    from monitor.store.db import session_factory
    from monitor.store.queries import history_runs

    sessions = session_factory(engine)
    argv = cases(runs)["compare --by prompt_version"]
    compare(sessions(), argv[0], argv[1], CompareOptions())
    argv = cases(runs)["compare --by run (pass vs rescore)"]
    compare(sessions(), argv[0], argv[1], CompareOptions(by="run"))
    history_runs(sessions(), 20)
    engine.dispose()
    return list({statement: (statement, params) for statement, params in seen}.values())


def print_plans(url: str, runs: int) -> None:
    engine = create_engine(parse_url(url), poolclass=NullPool)
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        for statement, params in captured_queries(url, runs):
            print("  --- " + " ".join(statement.split())[:150])
            explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            plan = connection.exec_driver_sql(explain + statement, params).all()
            for row in plan:
                print("      " + (str(row[-1]) if sqlite else str(row[0])))
    engine.dispose()


# Main ------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    name = f"monitor_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        parse_url(admin_url), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield (
            parse_url(admin_url)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def bench(label: str, url: str, runs: int, plans: bool) -> None:
    print(f"\n{label}")
    build(url, runs)
    time_commands(url, runs)
    if plans:
        print("  plans:")
        print_plans(url, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-plans", action="store_true")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("MONITOR_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        help="a server where a scratch database may be created and dropped",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        bench("SQLite", url, args.runs, not args.no_plans)
    if not args.no_postgres:
        with postgres_database(args.postgres_url) as url:
            bench("Postgres", url, args.runs, not args.no_plans)


if __name__ == "__main__":
    main()

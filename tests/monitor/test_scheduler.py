"""The daemon: schedule arithmetic, the pass lease, runs left behind, and the
real process under real signals.

The first part runs in-process with explicit datetimes (daylight-saving changes
in Europe/Berlin local time included). The second starts ``monitor run --every``
as a subprocess with short intervals and JSON logs, makes passes slow or hang
through ``tests.fakes.slow_graph``, and checks what the database holds.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_SUBMITTED,
    JobSubmissionEvent,
)
from sqlalchemy import Engine, select

from monitor.lease import (
    DatabaseLease,
    LeaseHeldError,
    abandon_dead_runs,
    new_worker_id,
    owner_alive,
)
from monitor.logs import JsonFormatter, PlainFormatter, event
from monitor.runner import PassConfig, PreparedPass
from monitor.scheduler import (
    Daemon,
    GridIntervalTrigger,
    Schedule,
    make_trigger,
    next_due,
)
from monitor.settings import DEFAULT_GOLDEN_FILE
from monitor.store.db import make_engine, session_factory, upgrade_database
from monitor.store.models import Lease, Result, Run, Worker
from scout.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
MONITOR = Path(sys.executable).with_name("monitor")
SLOW_GRAPH = "tests.fakes.slow_graph:build_slow_graph"
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0


# Schedule arithmetic -----------------------------------------------------------


def test_the_next_pass_is_due_one_interval_after_the_last_pass_started() -> None:
    last = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
    now = last + timedelta(minutes=5)

    assert next_due(last, 4 * HOUR, now) == datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def test_after_a_long_outage_one_catch_up_pass_is_due_now_not_a_burst() -> None:
    last = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    now = datetime(2026, 5, 4, 9, 17, tzinfo=UTC)  # eighteen intervals later
    due = next_due(last, 4 * HOUR, now)
    trigger = make_trigger(Schedule(4 * HOUR), due)

    after_catch_up = trigger.get_next_fire_time(due, now)

    assert due == now
    assert after_catch_up == now + timedelta(hours=4)


def test_with_no_finished_pass_the_first_pass_is_due_at_once() -> None:
    now = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

    assert next_due(None, 4 * HOUR, now) == now


def test_the_spring_forward_change_neither_stalls_nor_doubles_the_schedule() -> None:
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST.
    last = datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN)
    now = datetime(2026, 3, 29, 3, 10, tzinfo=BERLIN)  # 40 real minutes later

    due = next_due(last, HOUR, now)
    trigger = make_trigger(Schedule(HOUR), due)
    fires = [due]
    for _ in range(3):
        fires.append(trigger.get_next_fire_time(fires[-1], fires[-1]))

    assert due.astimezone(BERLIN).strftime("%H:%M %Z") == "03:30 CEST"
    assert [b - a for a, b in pairwise(fires)] == [timedelta(hours=1)] * 3
    assert fires[0].tzinfo == UTC


def test_the_fall_back_change_does_not_hold_a_due_pass_for_an_extra_hour() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice.
    last = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN)  # the first 02:30, CEST
    now = datetime(2026, 10, 25, 2, 45, fold=1, tzinfo=BERLIN)  # 75 minutes later

    due = next_due(last, HOUR, now)

    # Local wall time says 15 minutes have passed; an hour and a quarter has.
    # (A time in a repeated hour never equals one of another zone: PEP 495.)
    assert due == now.astimezone(UTC)
    assert now - last == timedelta(minutes=15)  # what naive wall time would see
    assert now.astimezone(UTC) - last.astimezone(UTC) == timedelta(minutes=75)


def test_the_trigger_counts_real_hours_through_a_night_with_both_changes() -> None:
    start = datetime(2026, 10, 24, 22, 0, tzinfo=BERLIN)
    trigger = make_trigger(Schedule(HOUR), start)
    fire: datetime = start
    local_now = start
    for _ in range(12):
        local_now = (fire + timedelta(minutes=1)).astimezone(BERLIN)
        fire = trigger.get_next_fire_time(fire, local_now)

    assert fire - start.astimezone(UTC) == timedelta(hours=12)
    assert fire.astimezone(BERLIN).hour == 9  # 22:00 + 12 real hours, one repeated


def test_jitter_delays_each_tick_without_drifting_the_schedule() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    trigger = make_trigger(Schedule(60.0, jitter=20.0), start)
    assert isinstance(trigger, GridIntervalTrigger)

    fire = start
    delays = []
    for step in range(1, 200):
        fire = trigger.get_next_fire_time(fire, fire)
        delays.append((fire - start).total_seconds() - 60.0 * step)

    assert all(0.0 <= delay <= 20.0 for delay in delays)


def test_a_jittered_tick_rounded_to_just_before_its_grid_point_moves_on() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    trigger = make_trigger(Schedule(60.0, jitter=10.0), start)
    rounded_early = start + timedelta(seconds=120) - timedelta(microseconds=1)

    fire = trigger.get_next_fire_time(rounded_early, rounded_early)

    assert fire is not None
    assert start + timedelta(seconds=180) <= fire <= start + timedelta(seconds=190)


def test_a_jitter_over_half_the_interval_is_one_clear_error() -> None:
    with pytest.raises(
        ConfigError, match=r"--jitter 40s is more than half of --every 1m"
    ):
        Schedule(60.0, jitter=40.0)


def test_the_pass_timeout_and_misfire_grace_follow_the_interval() -> None:
    schedule = Schedule(4 * HOUR)

    assert schedule.timeout == pytest.approx(0.8 * 4 * HOUR)
    assert schedule.misfire_grace_time == 2 * 3600
    assert Schedule(1.0).misfire_grace_time == 1
    assert Schedule(HOUR, pass_timeout=600).timeout == 600


# Log lines ---------------------------------------------------------------------


def log_record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(
        "monitor.scheduler", logging.INFO, __file__, 1, message, args, None
    )
    record.created = datetime(2026, 3, 29, 1, 30, 5, 250000, tzinfo=UTC).timestamp()
    record.__dict__.update(extra)
    return record


def test_plain_log_lines_start_with_a_utc_timestamp() -> None:
    line = PlainFormatter().format(log_record("pass %s started", "r-1"))

    assert line == (
        "2026-03-29T01:30:05.250Z INFO    monitor.scheduler: pass r-1 started"
    )


def test_json_log_lines_carry_the_event_and_its_fields() -> None:
    extra = event("pass_finished", run="r-1", score=0.979, seconds=1.5)
    line = JsonFormatter().format(log_record("pass %s finished", "r-1", **extra))

    assert json.loads(line) == {
        "time": "2026-03-29T01:30:05.250Z",
        "level": "INFO",
        "logger": "monitor.scheduler",
        "message": "pass r-1 finished",
        "event": "pass_finished",
        "run": "r-1",
        "score": 0.979,
        "seconds": 1.5,
    }


# The pass lease ----------------------------------------------------------------


@pytest.fixture
def engine(migrated_db_url: str) -> Iterator[Engine]:
    engine = make_engine(migrated_db_url)
    yield engine
    engine.dispose()


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_the_lease_goes_to_one_holder_and_the_other_learns_who(engine: Engine) -> None:
    first = DatabaseLease(engine, "box-a:101:aaaaaa", ttl=60)
    second = DatabaseLease(engine, "box-b:202:bbbbbb", ttl=60)

    assert first.acquire()
    assert not second.acquire()
    with (
        pytest.raises(LeaseHeldError, match="held by box-a:101:aaaaaa"),
        second.held(renew_every=1),
    ):
        pass
    assert first.acquire()  # ours already: still ours


def test_a_holder_that_stopped_renewing_loses_the_lease_at_expiry(
    engine: Engine,
) -> None:
    clock = FakeClock()
    crashed = DatabaseLease(engine, "box-a:101:aaaaaa", ttl=30, clock=clock)
    other = DatabaseLease(engine, "box-b:202:bbbbbb", ttl=30, clock=clock)
    assert crashed.acquire()

    clock.now += timedelta(seconds=29)
    assert not other.acquire()
    clock.now += timedelta(seconds=2)
    assert other.acquire()
    assert not crashed.renew()  # the old holder cannot renew it back
    current = other.current()
    assert current is not None and current.holder == "box-b:202:bbbbbb"


def test_renewing_keeps_the_lease_past_its_first_expiry(engine: Engine) -> None:
    clock = FakeClock()
    holder = DatabaseLease(engine, "box-a:101:aaaaaa", ttl=30, clock=clock)
    other = DatabaseLease(engine, "box-b:202:bbbbbb", ttl=30, clock=clock)
    assert holder.acquire()

    for _ in range(4):
        clock.now += timedelta(seconds=20)
        assert holder.renew()

    assert not other.acquire()
    holder.release()
    assert other.acquire()


def test_holders_racing_for_a_free_lease_let_exactly_one_through(
    engine: Engine,
) -> None:
    contenders = 8
    barrier = threading.Barrier(contenders)
    won: list[str] = []

    def contend(index: int) -> None:
        lease = DatabaseLease(engine, f"box-{index}:{index}:x", ttl=60)
        barrier.wait()
        if lease.acquire():
            won.append(lease.holder)

    for _ in range(3):  # a first-time INSERT race, then two UPDATE races
        won.clear()
        threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1
        with engine.begin() as connection:
            connection.execute(
                Lease.__table__.update().values(
                    expires_at=datetime(2000, 1, 1, tzinfo=UTC)
                )
            )


def test_a_holder_of_this_host_whose_process_is_gone_loses_the_lease_at_once(
    engine: Engine,
) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = f"{socket.gethostname()}:{finished.stdout.strip()}:dead00"
    assert DatabaseLease(engine, dead, ttl=3600).acquire()

    assert DatabaseLease(engine, new_worker_id(), ttl=60).acquire()


# Runs left behind --------------------------------------------------------------


def add_running_run(engine: Engine, run_id: str, owner: str, results: int = 0) -> None:
    now = datetime.now(UTC)
    with session_factory(engine).begin() as session:
        session.add(
            Run(
                id=run_id,
                kind="scheduled",
                status="running",
                started_at=now - timedelta(minutes=3),
                owner=owner,
                prompt_version="v1",
                model="offline/extractive-1",
                git_sha="abc",
                golden_hash="g",
                corpus_fingerprint="c",
                judge_model="offline",
                judge_version="j1",
                threshold=0.7,
                questions_total=5,
            )
        )
        for index in range(results):
            session.add(
                Result(
                    run_id=run_id,
                    question_id=f"q{index}",
                    question="?",
                    status="completed",
                    report="r",
                    finished_at=now,
                )
            )


def add_worker(engine: Engine, worker_id: str, heartbeat_age: float) -> None:
    now = datetime.now(UTC)
    host, pid, _ = worker_id.split(":")
    with session_factory(engine).begin() as session:
        session.add(
            Worker(
                id=worker_id,
                host=host,
                pid=int(pid),
                state="running",
                interval_seconds=60.0,
                started_at=now - timedelta(hours=1),
                heartbeat_at=now - timedelta(seconds=heartbeat_age),
                passes=3,
                skipped_ticks=0,
            )
        )


def statuses(engine: Engine) -> dict[str, str]:
    with session_factory(engine)() as session:
        return {run.id: run.status for run in session.scalars(select(Run))}


def test_a_run_of_a_dead_process_on_this_host_is_abandoned_keeping_its_questions(
    engine: Engine,
) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    add_running_run(
        engine, "r-dead", f"{socket.gethostname()}:{finished.stdout.strip()}", results=2
    )

    assert abandon_dead_runs(engine) == ["r-dead"]

    with session_factory(engine)() as session:
        run = session.get_one(Run, "r-dead")
        kept = session.scalars(select(Result).where(Result.run_id == "r-dead")).all()
    assert run.status == "abandoned" and run.finished_at is not None
    assert "stopped without closing it" in (run.error or "")
    assert len(kept) == 2


def test_a_run_of_a_live_daemon_elsewhere_is_never_abandoned(engine: Engine) -> None:
    add_worker(engine, "box-b:202:bbbbbb", heartbeat_age=1.0)
    add_running_run(engine, "r-live", "box-b:202:bbbbbb")
    add_running_run(engine, "r-leased", "box-c:303:cccccc")
    DatabaseLease(engine, "box-c:303:cccccc", ttl=60).acquire()
    add_running_run(engine, "r-mine", f"{socket.gethostname()}:{os.getpid()}:other")
    mine_alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        add_running_run(engine, "r-sibling", f"{socket.gethostname()}:{mine_alive.pid}")

        abandoned = abandon_dead_runs(engine)
    finally:
        mine_alive.kill()
        mine_alive.wait()

    # r-mine has this process's pid: an earlier life of this pid, so dead.
    assert abandoned == ["r-mine"]
    assert statuses(engine)["r-live"] == "running"
    assert statuses(engine)["r-leased"] == "running"
    assert statuses(engine)["r-sibling"] == "running"


def test_a_run_whose_daemon_elsewhere_stopped_beating_is_abandoned(
    engine: Engine,
) -> None:
    add_worker(engine, "box-b:202:bbbbbb", heartbeat_age=3600.0)
    add_running_run(engine, "r-stale", "box-b:202:bbbbbb")

    with session_factory(engine)() as session:
        run = session.get_one(Run, "r-stale")
        assert not owner_alive(session, run, now=datetime.now(UTC))
    assert abandon_dead_runs(engine) == ["r-stale"]


# One tick ----------------------------------------------------------------------


class TickOnly(Daemon):
    """The daemon's tick decisions, with the pass itself replaced by a count."""

    def __init__(self, engine: Engine, interval: float) -> None:
        config = PassConfig(golden_file=DEFAULT_GOLDEN_FILE)
        super().__init__(engine, config, cast(PreparedPass, None), Schedule(interval))
        self.passes_run = 0

    def _run_pass(self) -> None:
        self.passes_run += 1


def add_finished_pass(engine: Engine, owner: str, started_ago: float) -> None:
    run_id = f"r-{owner[-6:]}-{started_ago:g}"
    add_running_run(engine, run_id, owner)
    with session_factory(engine).begin() as session:
        run = session.get_one(Run, run_id)
        run.status = "completed"
        run.started_at = datetime.now(UTC) - timedelta(seconds=started_ago)


def test_a_tick_skips_when_another_daemon_ran_this_intervals_pass(
    engine: Engine,
) -> None:
    daemon = TickOnly(engine, interval=60.0)
    add_finished_pass(engine, "box-b:202:bbbbbb", started_ago=20.0)

    daemon._tick()

    assert daemon.passes_run == 0 and daemon.counts.covered == 1
    assert daemon.lease.current() is None  # released after the tick


def test_a_tick_runs_when_the_other_daemons_pass_is_an_interval_old(
    engine: Engine,
) -> None:
    daemon = TickOnly(engine, interval=60.0)
    add_finished_pass(engine, "box-b:202:bbbbbb", started_ago=59.0)

    daemon._tick()

    assert daemon.passes_run == 1 and daemon.counts.covered == 0


def test_a_tick_skips_while_another_process_holds_the_lease(engine: Engine) -> None:
    daemon = TickOnly(engine, interval=60.0)
    DatabaseLease(engine, "box-b:202:bbbbbb", ttl=60).acquire()

    daemon._tick()

    assert daemon.passes_run == 0 and daemon.counts.lease_held == 1


def test_ticks_merged_by_coalescing_or_skipped_during_a_pass_are_counted(
    engine: Engine,
) -> None:
    daemon = TickOnly(engine, interval=60.0)
    due = datetime(2026, 1, 1, tzinfo=UTC)
    daemon._first_due = due

    def tick(code: int, minutes: int) -> JobSubmissionEvent:
        return JobSubmissionEvent(
            code, "pass", "default", [due + timedelta(minutes=minutes)]
        )

    daemon._on_job_event(tick(EVENT_JOB_SUBMITTED, 0))
    daemon._on_job_event(tick(EVENT_JOB_MAX_INSTANCES, 1))  # a pass still running
    daemon._on_job_event(tick(EVENT_JOB_SUBMITTED, 5))  # ticks 2-4 came due together

    assert daemon.counts.coalesced == 1 + 3
    assert daemon.counts.skipped == 4


def test_new_alerts_are_logged_raised_and_open_ones_still_firing(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    from monitor.alerts import AlertOutcome, Finding

    old = Finding(rule="cost", message="cost over budget", scenario=3)
    new = Finding(rule="quality", message="score below threshold", scenario=1)
    outcome = AlertOutcome(
        firing=[old, new], opened=[new], delivery_errors=["webhook: HTTP 500"]
    )
    daemon = Daemon(
        engine,
        PassConfig(golden_file=DEFAULT_GOLDEN_FILE),
        cast(PreparedPass, None),
        Schedule(60.0),
        alerts=lambda engine, run: outcome,
    )

    with caplog.at_level(logging.INFO, logger="monitor.scheduler"):
        daemon._raise_alerts(cast(Run, SimpleNamespace(id="r-9")))

    events = [(r.levelname, getattr(r, "event", None)) for r in caplog.records]
    assert events == [
        ("INFO", "alert_firing"),
        ("WARNING", "alert_raised"),
        ("WARNING", "alert_undelivered"),
    ]
    assert new.line in caplog.records[1].getMessage()


# The daemon as a process -------------------------------------------------------


class DaemonProcess:
    """``monitor run --every ...`` with JSON logs, read as they come."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [str(MONITOR), "run", "--log-format", "json", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip())
                if line.startswith("{"):
                    self.events.append(json.loads(line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.events if e.get("event") == name]

    def wait_for(
        self, name: str, count: int = 1, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.named(name)) < count:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    log = "\n".join(self.lines[-40:])
                    pytest.fail(
                        f"no {count} x {name!r} within {timeout} s; log:\n{log}"
                    )
                self._changed.wait(min(left, 0.5))
            return self.named(name)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def start(*args: str, **env: str) -> DaemonProcess:
        full = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MONITOR_GRAPH": SLOW_GRAPH}
        full.update(env)
        daemon = DaemonProcess(list(args), full, tmp_path)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


@pytest.fixture
def home_db() -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{os.environ['MONITOR_HOME']}/monitor.db")
    yield engine
    engine.dispose()


def runs(engine: Engine) -> list[Run]:
    with session_factory(engine)() as session:
        return list(session.scalars(select(Run).order_by(Run.started_at)))


def stored_results(engine: Engine, run_id: str) -> int:
    with session_factory(engine)() as session:
        return len(session.scalars(select(Result).where(Result.run_id == run_id)).all())


@pytest.mark.slow
def test_passes_longer_than_the_interval_run_one_at_a_time(
    launch: Any, home_db: Engine
) -> None:
    daemon = launch("--every", "1s", "--pass-timeout", "20s", MONITOR_TEST_SLEEP="1.2")

    daemon.wait_for("pass_finished", count=2)
    assert daemon.stop() == 0

    passes = [run for run in runs(home_db) if run.status != "aborted"]
    assert len(passes) >= 2
    assert all(run.status == "completed" for run in passes)
    for earlier, later in pairwise(passes):
        assert earlier.finished_at is not None
        assert earlier.finished_at <= later.started_at
    assert daemon.named("tick_coalesced")
    with session_factory(home_db)() as session:
        worker = session.scalars(select(Worker)).one()
    assert worker.skipped_ticks >= 1 and worker.state == "stopped"


@pytest.mark.slow
def test_a_hung_pass_is_stopped_at_its_time_limit_and_the_next_runs(
    launch: Any, home_db: Engine
) -> None:
    # A limit longer than the interval: the hung pass also skips a tick.
    daemon = launch(
        "--every",
        "1s",
        "--pass-timeout",
        "2s",
        MONITOR_TEST_SLEEP="3600",
        MONITOR_TEST_SLEEP_PASSES="1",
    )

    finished = daemon.wait_for("pass_finished", count=2)
    assert daemon.stop() == 0

    assert [event["status"] for event in finished[:2]] == ["failed", "completed"]
    assert "timed out after 2.0 s" in finished[0]["error"]
    hung, normal = runs(home_db)[:2]
    assert hung.status == "failed" and hung.questions_failed == 5
    assert stored_results(home_db, hung.id) == 5
    assert normal.status == "completed" and normal.score is not None


@pytest.mark.slow
def test_sigterm_mid_pass_records_it_aborted_keeps_its_questions_and_exits_0(
    launch: Any, home_db: Engine
) -> None:
    daemon = launch(
        "--every",
        "1m",
        "--grace",
        "0.5s",
        "--concurrency",
        "1",
        MONITOR_TEST_SLEEP="0.6",
    )
    started = daemon.wait_for("pass_started")[0]
    while stored_results(home_db, started["run"]) < 2:
        time.sleep(0.1)

    assert daemon.stop(signal.SIGTERM) == 0

    (run,) = runs(home_db)
    assert run.status == "aborted"
    assert stored_results(home_db, run.id) >= 2
    assert daemon.named("stopping") and daemon.named("stopped")
    (finished,) = daemon.named("pass_finished")
    assert finished["message"].endswith("; the daemon is stopping")
    assert "keeps going" not in "\n".join(daemon.lines)
    assert not any(r.status == "running" for r in runs(home_db))


@pytest.mark.slow
def test_sigint_lets_the_pass_in_flight_finish_and_raise_its_alert_in_the_grace(
    launch: Any, home_db: Engine
) -> None:
    # The offline agent scores about 0.98: a 0.99 threshold raises an alert.
    daemon = launch(
        "--every", "1m", "--grace", "30s", "--threshold", "0.99",
        MONITOR_TEST_SLEEP="1",
    )  # fmt: skip
    daemon.wait_for("pass_started")

    assert daemon.stop(signal.SIGINT) == 0

    (run,) = runs(home_db)
    assert run.status == "completed" and stored_results(home_db, run.id) == 5
    (raised,) = daemon.named("alert_raised")
    assert raised["run"] == run.id and "below threshold 0.99" in raised["alert"]


@pytest.mark.slow
def test_a_pass_killed_with_sigkill_is_abandoned_at_the_next_start(
    launch: Any, home_db: Engine
) -> None:
    killed = launch("--every", "1m", "--concurrency", "1", MONITOR_TEST_SLEEP="0.5")
    started = killed.wait_for("pass_started")[0]
    while stored_results(home_db, started["run"]) < 1:
        time.sleep(0.1)
    killed.stop(signal.SIGKILL)
    kept = stored_results(home_db, started["run"])

    restarted = launch("--every", "1m")
    restarted.wait_for("started")
    restarted.wait_for("pass_finished")
    assert restarted.stop() == 0

    by_id = {run.id: run for run in runs(home_db)}
    assert by_id[started["run"]].status == "abandoned"
    assert stored_results(home_db, started["run"]) == kept >= 1
    assert [run.status for run in by_id.values()].count("completed") == 1


@pytest.mark.slow
def test_a_restart_just_after_a_pass_waits_for_the_interval(
    launch: Any, home_db: Engine
) -> None:
    first = launch("--every", "30s")
    first.wait_for("pass_finished")
    assert first.stop() == 0
    (done,) = runs(home_db)

    second = launch("--every", "30s")
    started = second.wait_for("started")[0]
    time.sleep(1.0)
    assert second.stop() == 0

    due = datetime.fromisoformat(started["next_due"])
    assert due == done.started_at + timedelta(seconds=30)
    assert len(runs(home_db)) == 1
    assert not second.named("pass_started")


@pytest.mark.slow
def test_two_daemons_on_one_database_run_one_pass_per_interval(
    launch: Any, db_url: str
) -> None:
    upgrade_database(db_url)
    engine = make_engine(db_url)
    daemons = [
        launch(
            "--every",
            "1s",
            "--pass-timeout",
            "30s",
            MONITOR_DATABASE_URL=db_url,
            MONITOR_TEST_SLEEP="0.3",
        )
        for _ in range(2)
    ]
    try:
        for daemon in daemons:
            daemon.wait_for("started")
        deadline = time.monotonic() + 30
        while len(runs(engine)) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(daemon.stop() == 0 for daemon in daemons)
        passes = [run for run in runs(engine) if run.status != "aborted"]
    finally:
        engine.dispose()

    # Without the lease and the check for this interval's pass, both daemons
    # would run a pass on every tick: gaps near zero.
    starts = [run.started_at for run in passes]
    gaps = [(b - a).total_seconds() for a, b in pairwise(starts)]
    assert len(passes) >= 3
    assert min(gaps) >= 0.7, gaps
    skipped = [d.named("lease_held") + d.named("tick_covered") for d in daemons]
    assert any(skipped)
    workers = {daemon.named("started")[0]["worker"] for daemon in daemons}
    assert {run.owner for run in passes} <= workers


@pytest.mark.slow
def test_run_once_while_a_daemon_pass_holds_the_lease_exits_1_naming_it(
    launch: Any, tmp_path: Path, home_db: Engine
) -> None:
    daemon = launch("--every", "1m", "--grace", "0.1s", MONITOR_TEST_SLEEP="30")
    worker = daemon.wait_for("started")[0]["worker"]
    daemon.wait_for("pass_started")

    once = subprocess.run(
        [str(MONITOR), "run", "--once"],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert daemon.stop() == 0

    assert once.returncode == 1
    (line,) = once.stderr.strip().splitlines()
    assert f"the lease is held by {worker}" in line
    assert [run.kind for run in runs(home_db)] == ["scheduled"]


@pytest.mark.slow
def test_sigterm_during_run_once_records_the_pass_aborted_and_frees_the_lease(
    tmp_path: Path, home_db: Engine
) -> None:
    once = subprocess.Popen(
        [str(MONITOR), "run", "--once", "--concurrency", "1"],
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "MONITOR_GRAPH": SLOW_GRAPH,
            "MONITOR_TEST_SLEEP": "0.5",
        },
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert once.stdout is not None
    for line in once.stdout:  # the first stored question prints a line
        if line.startswith("  "):
            break

    once.send_signal(signal.SIGTERM)
    _, err = once.communicate(timeout=30)

    assert once.returncode == 130
    assert "interrupted: the pass in flight was recorded aborted" in err
    (run,) = runs(home_db)
    assert run.status == "aborted" and stored_results(home_db, run.id) >= 1
    with session_factory(home_db)() as session:
        assert session.scalars(select(Lease)).all() == []

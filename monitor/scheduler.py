"""The daemon behind ``monitor run --every 4h``: a pass per interval, for months.

APScheduler 3 fires one job on an interval trigger in UTC, so no daylight-saving
change moves or stalls a pass. The job allows one instance (a tick that comes
while a pass runs is skipped, not doubled), coalesces ticks that fall due
together, and has a misfire grace of half the interval: a late tick still runs
when it is nearer to its own time than to the next one. A listener logs and
counts every tick that was missed, skipped or merged.

The schedule survives restarts because it is read from the database: the first
pass is due one interval after the start of the last scheduled pass that ran to
its end (completed or failed), or at once when that time has passed or there is
none, so a restart five minutes after a pass waits, and a restart after a long
outage runs one catch-up pass.

Every tick takes the pass lease (monitor.lease) before it runs a pass, and
skips when another daemon already ran this interval's pass, so two daemons on
one database run one pass per interval between them. (A tick that finds the
lease held by ``monitor run --once`` is skipped too; the next one runs.) A
heartbeat thread renews the lease and the ``workers`` row that ``monitor
status`` reads. A run left ``running`` by a dead process is marked
``abandoned`` when the daemon starts and whenever it takes the lease.

On SIGTERM or SIGINT the daemon stops scheduling and gives the pass in flight
``grace`` seconds to finish; then the runner's cancel event records it aborted,
keeping the questions already stored. A second signal aborts at once. Traces are
flushed and the process exits 0.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from monitor.durations import format_duration
from monitor.lease import (
    DatabaseLease,
    abandon_dead_runs,
    heartbeat_seconds,
    new_worker_id,
    stale_after_seconds,
)
from monitor.logs import event
from monitor.runner import PassConfig, PassRunner, PreparedPass
from monitor.store.db import session_factory
from monitor.store.models import Run, Worker, utcnow
from monitor.store.writes import finish_run
from scout.errors import ConfigError

if TYPE_CHECKING:
    from monitor.alerts import AlertOutcome

logger = logging.getLogger(__name__)

JOB_ID = "pass"
# Runs that count as "the pass of an interval": it ran to its end.
FINISHED_PASS = ("completed", "failed")
DEFAULT_TIMEOUT_SHARE = 0.8
DEFAULT_GRACE_S = 60.0
# After the grace, how long an aborted pass may take to record itself.
ABORT_WAIT_S = 30.0
WORKER_ROWS_KEPT = timedelta(days=30)
GRID_TOLERANCE_S = 0.001

Clock = Callable[[], datetime]
AlertHook = Callable[[Engine, Run], "AlertOutcome"]


@dataclass(frozen=True)
class Schedule:
    """When passes run. Seconds throughout; ``pass_timeout`` None means
    ``DEFAULT_TIMEOUT_SHARE`` of the interval."""

    interval: float
    jitter: float = 0.0
    pass_timeout: float | None = None
    grace: float = DEFAULT_GRACE_S

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ConfigError(f"--every {self.interval} s: give a positive interval")
        if not 0 <= self.jitter <= self.interval / 2:
            raise ConfigError(
                f"--jitter {format_duration(self.jitter)} is more than half of "
                f"--every {format_duration(self.interval)}: give a smaller jitter"
            )

    @property
    def timeout(self) -> float:
        return self.pass_timeout or DEFAULT_TIMEOUT_SHARE * self.interval

    @property
    def misfire_grace_time(self) -> int:
        """APScheduler's grace (whole seconds): half the interval, at least 1 s."""
        return max(1, int(self.interval / 2))

    @property
    def slack(self) -> float:
        """How much earlier than one interval another daemon's pass may have
        started and still be this interval's pass: the jitter plus a little."""
        return self.jitter + min(0.1 * self.interval, 60.0)


# The schedule's arithmetic, all in UTC


def next_due(
    last_pass_start: datetime | None, interval: float, now: datetime
) -> datetime:
    """One interval after the last pass started; ``now`` when that has passed
    or there was none.

    Both are converted to UTC first: Python adds to and compares datetimes of
    one time zone by their wall time, which across a daylight-saving change is
    an hour off (a pass would wait an extra hour, or run an hour early).
    """
    now = now.astimezone(UTC)
    if last_pass_start is None:
        return now

    due = last_pass_start.astimezone(UTC) + timedelta(seconds=interval)
    return max(due, now)


def grid_step(moment: datetime, start: datetime, interval: float) -> int:
    """Which interval after ``start`` a (possibly jittered) tick belongs to. A
    millisecond of tolerance keeps a tick rounded to just before its grid point
    on that point: stepping back would fire the same tick forever."""
    elapsed = (moment - start).total_seconds()
    return math.floor((elapsed + GRID_TOLERANCE_S) / interval)


class GridIntervalTrigger(IntervalTrigger):
    """An interval trigger whose jitter does not accumulate.

    APScheduler 3 adds the jitter to the previous (already jittered) fire time,
    so passes drift later by half the jitter per interval on average. Here each
    fire time is a grid point ``start + k * interval`` plus a fresh delay.
    """

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is None or not self.jitter:
            fire: datetime | None = super().get_next_fire_time(previous_fire_time, now)
            return fire

        step = grid_step(previous_fire_time, self.start_date, self.interval_length) + 1
        fire = self.start_date + timedelta(seconds=step * self.interval_length)
        fire += timedelta(seconds=random.uniform(0, self.jitter))
        if self.end_date and fire > self.end_date:
            return None
        return fire.astimezone(self.timezone)


def make_trigger(schedule: Schedule, first_due: datetime) -> GridIntervalTrigger:
    return GridIntervalTrigger(
        seconds=schedule.interval,
        start_date=first_due,
        timezone=UTC,
        jitter=schedule.jitter or None,
    )


def last_pass_start(session: Session) -> datetime | None:
    """When the newest scheduled pass that ran to its end started."""
    return session.scalars(
        select(Run.started_at)
        .where(Run.kind == "scheduled", Run.status.in_(FINISHED_PASS))
        .order_by(Run.started_at.desc())
        .limit(1)
    ).first()


def pass_of_this_interval(
    session: Session, *, not_owner: str, since: datetime
) -> Run | None:
    """Another daemon's scheduled pass that started at ``since`` or later."""
    return session.scalars(
        select(Run)
        .where(
            Run.kind == "scheduled",
            Run.status.in_(FINISHED_PASS),
            Run.owner != not_owner,
            Run.started_at >= since,
        )
        .order_by(Run.started_at.desc())
        .limit(1)
    ).first()


@dataclass
class TickCounts:
    """What the daemon did with its ticks since it started."""

    passes: int = 0
    failed: int = 0
    missed: int = 0
    coalesced: int = 0
    lease_held: int = 0
    covered: int = 0

    @property
    def skipped(self) -> int:
        """Ticks that APScheduler did not run: missed, or merged into a pass."""
        return self.missed + self.coalesced


def pass_alerts(engine: Engine, run: Run) -> AlertOutcome:
    """The default alert hook: the alert rules with the MONITOR_* alert settings,
    alerts recorded and deduplicated, due notices delivered to the sinks."""
    from monitor.alerts import process_pass_alerts

    return process_pass_alerts(engine, run)


class Daemon:
    """Runs a pass every ``schedule.interval`` until asked to stop.

    ``run()`` blocks in the main thread and returns the exit code; ``start()``
    and ``shutdown()`` are its two halves, for callers with a loop of their own.
    """

    def __init__(
        self,
        engine: Engine,
        config: PassConfig,
        prepared: PreparedPass,
        schedule: Schedule,
        *,
        alerts: AlertHook = pass_alerts,
        clock: Clock = utcnow,
    ) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.config = replace(config, kind="scheduled", pass_timeout=schedule.timeout)
        self.prepared = prepared
        self.schedule = schedule
        self.alerts = alerts
        self.clock = clock
        self.worker_id = new_worker_id()
        self.heartbeat = heartbeat_seconds(schedule.interval)
        self.lease = DatabaseLease(
            engine,
            self.worker_id,
            ttl=stale_after_seconds(schedule.interval),
            clock=clock,
        )
        self.counts = TickCounts()
        self.stop_requested = threading.Event()
        self.cancel = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self._beats_stop = threading.Event()
        self._beats: threading.Thread | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._state = "starting"
        self._stop_reason = "asked to stop"
        self._holding = False
        self._lease_lock = threading.Lock()
        self._current_run: str | None = None
        self._last_run: str | None = None
        self._first_due: datetime | None = None
        self._last_step: int | None = None

    # Lifecycle ---------------------------------------------------------------

    def run(self) -> int:
        """Start, wait for SIGTERM/SIGINT (or ``request_stop``), stop cleanly."""
        self._install_signal_handlers()
        self.start()
        try:
            while not self.stop_requested.wait(1.0):
                pass
        finally:
            self.shutdown()
        return 0

    def start(self) -> None:
        now = self.clock()
        self._prune_workers(now)
        abandon_dead_runs(self.engine, clock=self.clock)
        with self.sessions() as session:
            last = last_pass_start(session)
        due = next_due(last, self.schedule.interval, now)
        self._register(now, due)

        self._first_due = due
        self._scheduler = self._make_scheduler(due)
        self._scheduler.start()
        self._state = "idle"
        self._beats = threading.Thread(
            target=self._beat_until_stopped, name="monitor-heartbeat", daemon=True
        )
        self._beats.start()

        interval = format_duration(self.schedule.interval)
        logger.info(
            "started: worker %s, a pass every %s (timeout %s, jitter %s), "
            "next pass due %s",
            self.worker_id,
            interval,
            format_duration(self.schedule.timeout),
            format_duration(self.schedule.jitter) if self.schedule.jitter else "none",
            _when(due, now),
            extra=event(
                "started",
                worker=self.worker_id,
                interval_seconds=self.schedule.interval,
                next_due=due.isoformat(),
                last_pass_started=last.isoformat() if last else None,
            ),
        )

    def request_stop(self, reason: str = "asked to stop") -> None:
        if not self.stop_requested.is_set():
            self._stop_reason = reason
            self.stop_requested.set()

    def shutdown(self) -> None:
        """Stop scheduling, let the pass in flight finish within the grace,
        abort it after that, flush traces and record the daemon stopped."""
        from scout.observability import flush_traces

        self.request_stop()
        reason = self._stop_reason
        logger.info(
            "stopping (%s): %s",
            reason,
            f"pass {self._current_run} in flight, grace "
            f"{format_duration(self.schedule.grace)}"
            if not self.idle.is_set()
            else "no pass in flight",
            extra=event("stopping", reason=reason, run=self._current_run),
        )
        self._state = "stopping"
        if self._scheduler is not None:
            self._scheduler.remove_all_jobs()

        self._finish_or_abort()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        self._beats_stop.set()
        if self._beats is not None:
            self._beats.join(self.heartbeat + 5.0)
        flush_traces()
        self._state = "stopped"
        # The database may be what failed; stopping must not fail with it.
        _best_effort(lambda: self._write_heartbeat(stopped=True), "record the stop")
        _best_effort(self.lease.release, "release the pass lease")

        counts = self.counts
        logger.info(
            "stopped: %d pass(es) (%d failed), %d tick(s) skipped by the scheduler, "
            "%d while another process held the lease, %d covered by another daemon",
            counts.passes,
            counts.failed,
            counts.skipped,
            counts.lease_held,
            counts.covered,
            extra=event("stopped", **vars(counts)),
        )

    def _finish_or_abort(self) -> None:
        if self.idle.wait(self.schedule.grace):
            return

        logger.warning(
            "pass %s still running after the %s grace: aborting it",
            self._current_run,
            format_duration(self.schedule.grace),
            extra=event("pass_aborting", run=self._current_run),
        )
        self.cancel.set()
        if not self.idle.wait(ABORT_WAIT_S):
            self._record_aborted()

    def _record_aborted(self) -> None:
        """The pass did not stop when cancelled: close its run from here."""
        run_id = self._current_run
        logger.error("pass %s did not stop; recording it aborted", run_id)
        if run_id is None:
            return
        with self.sessions() as session:
            run = session.get(Run, run_id)
            if run is None or run.status != "running":
                return
        finish_run(
            self.sessions,
            run_id,
            status="aborted",
            error="the daemon stopped and the pass did not end when cancelled",
        )

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(number: int, frame: FrameType | None) -> None:
            name = signal.Signals(number).name
            if self.stop_requested.is_set():
                logger.warning("%s again: aborting the pass in flight now", name)
                self.cancel.set()
                return
            self.request_stop(f"{name} received")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    # The scheduler -----------------------------------------------------------

    def _make_scheduler(self, due: datetime) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(max_workers=1)}
        )
        scheduler.add_listener(
            self._on_job_event,
            EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_SUBMITTED,
        )
        scheduler.add_job(
            self._tick,
            trigger=make_trigger(self.schedule, due),  # its grid starts at due
            id=JOB_ID,
            name="monitor pass",
            next_run_time=due,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=self.schedule.misfire_grace_time,
        )
        return scheduler

    def next_run_time(self) -> datetime | None:
        """When the scheduler will next tick; None once it has stopped."""
        if self._scheduler is None or self.stop_requested.is_set():
            return None
        job = self._scheduler.get_job(JOB_ID)
        return None if job is None else job.next_run_time

    def _on_job_event(self, job_event: JobEvent) -> None:
        if isinstance(job_event, JobSubmissionEvent):
            times = list(job_event.scheduled_run_times)
        elif isinstance(job_event, JobExecutionEvent):
            times = [job_event.scheduled_run_time]
        else:
            return
        self._count_merged_ticks(times[0])

        if job_event.code == EVENT_JOB_MAX_INSTANCES:
            self.counts.coalesced += 1
            logger.warning(
                "tick of %s skipped: pass %s is still running (one pass at a time)",
                _utc(times[0]),
                self._current_run,
                extra=event("tick_coalesced", scheduled=times[0].isoformat()),
            )
        elif job_event.code == EVENT_JOB_MISSED:
            self.counts.missed += 1
            logger.warning(
                "tick of %s missed: it came more than %d s late (was the process "
                "suspended?); the next tick runs as usual",
                _utc(times[0]),
                self.schedule.misfire_grace_time,
                extra=event("tick_missed", scheduled=times[0].isoformat()),
            )

    def _count_merged_ticks(self, scheduled: datetime) -> None:
        """Coalescing hands over only the newest of several overdue ticks; count
        the ones in between from the grid steps since the previous tick (the
        jitter, under half an interval, never moves a tick off its step)."""
        if self._first_due is None:
            return
        step = grid_step(scheduled, self._first_due, self.schedule.interval)
        previous, self._last_step = self._last_step, step
        if previous is None:
            return
        merged = step - previous - 1
        if merged > 0:
            self.counts.coalesced += merged
            logger.warning(
                "%d tick(s) before %s came due together (the process was suspended "
                "or the clock jumped): one pass runs for them",
                merged,
                _utc(scheduled),
                extra=event("ticks_coalesced", count=merged),
            )

    # One tick ----------------------------------------------------------------

    def _tick(self) -> None:
        self.idle.clear()
        try:
            if not self.stop_requested.is_set():
                self._tick_with_lease()
        except Exception as error:
            self.counts.failed += 1
            logger.exception(
                "pass failed: %s: %s; %s",
                type(error).__name__,
                error,
                self._what_next(),
                extra=event("pass_failed", error=f"{type(error).__name__}: {error}"),
            )
        finally:
            self._current_run = None
            self._state = "stopping" if self.stop_requested.is_set() else "idle"
            self.idle.set()

    def _tick_with_lease(self) -> None:
        if not self.lease.acquire():
            self.counts.lease_held += 1
            current = self.lease.current()
            holder = current.describe(self.clock()) if current else "another process"
            logger.info(
                "lease held elsewhere: %s; skipping this tick",
                holder,
                extra=event("lease_held", holder=current.holder if current else None),
            )
            return

        self._holding = True
        try:
            # Holding the lease, no live process has a pass in flight: a run
            # still `running` is a dead process's (another daemon killed since).
            abandon_dead_runs(self.engine, clock=self.clock)
            if not self._covered_by_another_daemon():
                self._run_pass()
        finally:
            with self._lease_lock:  # no renewal after the release
                self._holding = False
                self.lease.release()

    def _covered_by_another_daemon(self) -> bool:
        since = self.clock() - timedelta(
            seconds=self.schedule.interval - self.schedule.slack
        )
        with self.sessions() as session:
            other = pass_of_this_interval(
                session, not_owner=self.worker_id, since=since
            )
        if other is None:
            return False

        self.counts.covered += 1
        logger.info(
            "pass %s by %s started at %s covers this interval; skipping this tick",
            other.id,
            other.owner,
            _utc(other.started_at),
            extra=event("tick_covered", run=other.id, owner=other.owner),
        )
        return True

    def _run_pass(self) -> None:
        runner = PassRunner(
            self.engine,
            self.config,
            self.prepared,
            cancel=self.cancel,
            owner=self.worker_id,
        )
        self._current_run = runner.run_id
        self._state = "running"
        logger.info(
            "pass %s started: %d questions, time limit %s",
            runner.run_id,
            runner.total,
            format_duration(self.schedule.timeout),
            extra=event("pass_started", run=runner.run_id),
        )

        run = runner.run().run
        self._last_run = run.id
        self.counts.passes += 1
        self._log_finished(run)
        if run.status in FINISHED_PASS:
            self._raise_alerts(run)
        self._write_heartbeat()

    def _log_finished(self, run: Run) -> None:
        score = "n/a" if run.score is None else f"{run.score:.3f}"
        fields = event(
            "pass_finished",
            run=run.id,
            status=run.status,
            score=run.score,
            seconds=run.wall_seconds,
            failed_questions=run.questions_failed,
            error=run.error,
        )
        if run.status == "completed":
            logger.info(
                "pass %s finished: score %s, %.1f s",
                run.id,
                score,
                run.wall_seconds or 0.0,
                extra=fields,
            )
            return

        if run.status == "failed":
            self.counts.failed += 1
        logger.warning(
            "pass %s %s after %.1f s: %s (score %s of what was stored); %s",
            run.id,
            run.status,
            run.wall_seconds or 0.0,
            run.error,
            score,
            self._what_next(),
            extra=fields,
        )

    def _what_next(self) -> str:
        """The end of a failed or aborted pass's log line."""
        if self.stop_requested.is_set():
            return "the daemon is stopping"
        return "the daemon keeps going"

    def _raise_alerts(self, run: Run) -> None:
        try:
            outcome = self.alerts(self.engine, run)
        except Exception as error:
            logger.exception("the alert rules failed on pass %s: %s", run.id, error)
            return

        opened = {finding.line for finding in outcome.opened}
        for finding in outcome.firing:
            new = finding.line in opened
            logger.log(
                logging.WARNING if new else logging.INFO,
                "alert %s: %s",
                "raised" if new else "still firing",
                finding.line,
                extra=event(
                    "alert_raised" if new else "alert_firing",
                    run=run.id,
                    rule=finding.rule,
                    alert=finding.line,
                ),
            )
        for resolved in outcome.resolved:
            logger.info(
                "alert resolved: %s",
                resolved,
                extra=event("alert_resolved", run=run.id, alert=resolved),
            )
        for problem in outcome.delivery_errors:
            logger.warning(
                "alert notice not delivered, kept for the next pass: %s",
                problem,
                extra=event("alert_undelivered", run=run.id, error=problem),
            )

    # Heartbeat ---------------------------------------------------------------

    def _beat_until_stopped(self) -> None:
        while not self._beats_stop.wait(self.heartbeat):
            try:
                with self._lease_lock:
                    if self._holding and not self.lease.renew():
                        logger.warning("the pass lease was taken over while held")
                self._write_heartbeat()
            except Exception as error:
                logger.warning("heartbeat not recorded: %s", error)

    def _register(self, now: datetime, due: datetime) -> None:
        from monitor.lease import this_process

        host, _, pid = this_process().rpartition(":")
        with self.sessions.begin() as session:
            session.add(
                Worker(
                    id=self.worker_id,
                    host=host,
                    pid=int(pid),
                    state=self._state,
                    interval_seconds=self.schedule.interval,
                    started_at=now,
                    heartbeat_at=now,
                    next_due_at=due,
                    passes=0,
                    skipped_ticks=0,
                )
            )

    def _write_heartbeat(self, *, stopped: bool = False) -> None:
        now = self.clock()
        values: dict[str, Any] = {
            "state": self._state,
            "heartbeat_at": now,
            "next_due_at": self.next_run_time(),
            "passes": self.counts.passes,
            "skipped_ticks": self.counts.skipped,
            "last_run_id": self._last_run,
        }
        if stopped:
            values["stopped_at"] = now
        with self.sessions.begin() as session:
            session.execute(
                update(Worker).where(Worker.id == self.worker_id).values(**values)
            )

    def _prune_workers(self, now: datetime) -> None:
        with self.sessions.begin() as session:
            session.execute(
                delete(Worker).where(Worker.heartbeat_at < now - WORKER_ROWS_KEPT)
            )


def _best_effort(action: Callable[[], None], what: str) -> None:
    try:
        action()
    except Exception as error:
        logger.warning("could not %s: %s: %s", what, type(error).__name__, error)


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _when(due: datetime, now: datetime) -> str:
    wait = (due - now).total_seconds()
    if wait <= 0:
        return f"now ({_utc(due)})"
    return f"at {_utc(due)} (in {format_duration(wait)})"

"""The pass lease, and whether the process that owns a run is still alive.

Every pass, from the daemon or from ``monitor run --once``, runs while its
process holds the row ``pass`` of the ``leases`` table, so two processes on one
database never run passes at the same time. Taking the lease is one conditional
UPDATE (the row is free when it has expired or is already ours) whose row count
says who won; the first time, when there is no row yet, it is an INSERT whose
primary key lets exactly one process through. Both are atomic on SQLite, which
serialises writers, and on Postgres, which re-checks the WHERE clause of an
UPDATE that waited for another one.

The holder renews the lease while it works (the daemon on every heartbeat). A
holder that stops renewing, because it was killed or lost the database, loses
the lease when ``expires_at`` passes. A holder on this host whose process is
gone is recognised at once, so a restart after ``kill -9`` does not wait.

Expiry compares timestamps written by each host's clock, so hosts sharing a
database need synchronised clocks (NTP); a skew eats into the lease's lifetime.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Engine,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from monitor.errors import MonitorError
from monitor.store.db import session_factory
from monitor.store.models import (
    Lease,
    Result,
    Run,
    UTCDateTime,
    Worker,
    utcnow,
)
from monitor.store.writes import finish_run

logger = logging.getLogger(__name__)

PASS_LEASE = "pass"
# `monitor run --once` renews its lease this often; it has no interval to scale by.
ONCE_HEARTBEAT_S = 15.0
STALE_HEARTBEATS = 4
_OWNER = re.compile(r"(?P<host>[^:]+):(?P<pid>\d+)(?::.*)?")

Clock = Callable[[], datetime]


class LeaseHeldError(MonitorError):
    """Another live process holds the pass lease."""


def heartbeat_seconds(interval: float) -> float:
    """How often a daemon with this interval beats: a fifth of it, 0.5-15 s."""
    return min(max(interval / 5, 0.5), 15.0)


def stale_after_seconds(interval: float) -> float:
    """A daemon silent this long is stale, and its lease has expired."""
    return STALE_HEARTBEATS * heartbeat_seconds(interval)


def this_process() -> str:
    """``host:pid``, the owner of a run and the holder id of ``--once``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def new_worker_id() -> str:
    """``host:pid:token``: unique per start even when a container reuses a pid."""
    return f"{this_process()}:{uuid.uuid4().hex[:6]}"


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def gone_from_this_host(owner: str) -> bool:
    """True when ``owner`` was a process on this host that no longer runs
    (its pid is free, or is ours: then it was an earlier life of this pid)."""
    match = _OWNER.fullmatch(owner)
    if match is None or match["host"] != socket.gethostname():
        return False
    pid = int(match["pid"])

    return pid == os.getpid() or not pid_running(pid)


@dataclass(frozen=True)
class LeaseState:
    holder: str
    acquired_at: datetime
    expires_at: datetime

    def describe(self, now: datetime) -> str:
        left = (self.expires_at - now).total_seconds()
        return (
            f"{self.holder} (since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC, "
            f"expires in {max(left, 0.0):.0f} s unless renewed)"
        )


class DatabaseLease:
    """One named lease row, taken and renewed by ``holder`` for ``ttl`` seconds."""

    def __init__(
        self,
        engine: Engine,
        holder: str,
        *,
        ttl: float,
        name: str = PASS_LEASE,
        clock: Clock = utcnow,
    ) -> None:
        self.engine = engine
        self.holder = holder
        self.ttl = timedelta(seconds=ttl)
        self.name = name
        self.clock = clock

    def acquire(self) -> bool:
        """Take the lease if it is free, expired, ours, or held by a process of
        this host that is gone. True when we hold it afterwards."""
        if self._take_over(or_(Lease.expires_at < self.clock(), self._mine())):
            return True
        if self._insert_first():
            return True

        current = self.current()
        if current is not None and gone_from_this_host(current.holder):
            logger.info("taking over the lease of %s, which has exited", current.holder)
            return self._take_over(Lease.holder == current.holder)
        return False

    def renew(self) -> bool:
        """Push the expiry forward; False when the lease is no longer ours."""
        with self.engine.begin() as connection:
            result = connection.execute(
                update(Lease)
                .where(Lease.name == self.name, self._mine())
                .values(expires_at=self.clock() + self.ttl)
            )
        return result.rowcount == 1

    def release(self) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                delete(Lease).where(Lease.name == self.name, self._mine())
            )

    def current(self) -> LeaseState | None:
        with session_factory(self.engine)() as session:
            row = session.get(Lease, self.name)
            if row is None:
                return None
            return LeaseState(row.holder, row.acquired_at, row.expires_at)

    @contextmanager
    def held(self, *, renew_every: float) -> Iterator[None]:
        """Hold the lease for a block, renewing it from a thread; raise
        LeaseHeldError naming the holder when another live process has it."""
        if not self.acquire():
            raise LeaseHeldError(self._held_message())
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew_until, args=(stop, renew_every), daemon=True
        )
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(renew_every + 5.0)
            self.release()

    def _held_message(self) -> str:
        current = self.current()
        holder = current.describe(self.clock()) if current else "another process"
        return (
            f"a pass is already running on this database: the lease is held by "
            f"{holder}; wait for that pass to finish, or stop that process"
        )

    def _renew_until(self, stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            try:
                if not self.renew():
                    logger.warning("lost the %s lease to another process", self.name)
            except Exception as error:
                logger.warning("could not renew the %s lease: %s", self.name, error)

    def _mine(self) -> ColumnElement[bool]:
        return Lease.holder == self.holder

    def _take_over(self, condition: ColumnElement[bool]) -> bool:
        now = self.clock()
        with self.engine.begin() as connection:
            result = connection.execute(
                update(Lease)
                .where(Lease.name == self.name, condition)
                .values(
                    holder=self.holder,
                    acquired_at=case(
                        (self._mine(), Lease.acquired_at),
                        else_=literal(now, UTCDateTime()),
                    ),
                    expires_at=now + self.ttl,
                )
            )
        return result.rowcount == 1

    def _insert_first(self) -> bool:
        now = self.clock()
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(Lease).values(
                        name=self.name,
                        holder=self.holder,
                        acquired_at=now,
                        expires_at=now + self.ttl,
                    )
                )
        except IntegrityError:
            return False
        return True


# Runs left behind


def owner_alive(session: Session, run: Run, *, now: datetime) -> bool:
    """Whether the process that opened ``run`` may still finish it.

    A pass runs only while its process holds the pass lease, so a pass whose
    owner neither holds an unexpired lease nor beats as a live daemon is dead.
    A process of this host is judged by its pid. A rescore takes no lease, so
    one from another host is left alone.
    """
    owner = run.owner or ""
    match = _OWNER.fullmatch(owner)
    if match is not None and match["host"] == socket.gethostname():
        return not gone_from_this_host(owner)

    lease = session.get(Lease, PASS_LEASE)
    if lease is not None and lease.holder == owner and lease.expires_at > now:
        return True
    worker = session.get(Worker, owner)
    if worker is not None and worker.state != "stopped":
        age = (now - worker.heartbeat_at).total_seconds()
        if age <= stale_after_seconds(worker.interval_seconds):
            return True

    return run.kind == "rescore"


def abandon_dead_runs(engine: Engine, *, clock: Clock = utcnow) -> list[str]:
    """Mark every run left ``running`` by a dead process ``abandoned``, keeping
    the questions it stored; return their ids."""
    sessions = session_factory(engine)
    now = clock()
    with sessions() as session:
        running = session.scalars(select(Run).where(Run.status == "running")).all()
        dead = [run for run in running if not owner_alive(session, run, now=now)]
        stored = {run.id: _stored_questions(session, run.id) for run in dead}

    for run in dead:
        finish_run(
            sessions,
            run.id,
            status="abandoned",
            error="its process stopped without closing it (killed, or the host "
            f"went down); marked abandoned at {now:%Y-%m-%d %H:%M:%S} UTC",
        )
        logger.warning(
            "run %s was left running by %s, which is gone: marked abandoned, "
            "keeping its %d stored question(s)",
            run.id,
            run.owner,
            stored[run.id],
        )
    return [run.id for run in dead]


def _stored_questions(session: Session, run_id: str) -> int:
    count = session.scalar(
        select(func.count()).select_from(Result).where(Result.run_id == run_id)
    )
    return int(count or 0)

"""``monitor status``: is the daemon alive, what did the last pass score, what
is due next, which alerts are open.

The daemon is the worker with the newest heartbeat: ``alive`` while it beats,
``stale`` when it has been silent longer than its heartbeat allows (killed,
hung, or cut off from the database), ``stopped`` when it shut down cleanly,
``none`` when no daemon ever ran on this database (a CronJob setup). Exit 1
when it is stale, else 2 when alerts are firing, else 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

EXIT_OK, EXIT_STALE, EXIT_ALERT = 0, 1, 2


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Daemon heartbeat, the last and next pass, open alerts.

    The daemon beats every interval/5 seconds, at least 0.5 s and at most 15 s,
    and is stale once its last heartbeat is older than 4 beats: 60 s for any
    interval of 75 s or more (a 4h interval included), 4/5 of the interval
    below that. A daemon killed with kill -9 shows alive until then.

    Exit 1 when the daemon is stale, else 2 when alerts are firing, else 0.
    """
    raise typer.Exit(status_command(as_json=as_json))


@dataclass
class Status:
    daemon: dict[str, Any]
    last_pass: dict[str, Any] | None
    running_pass: dict[str, Any] | None
    open_alerts: list[dict[str, Any]]

    @property
    def exit_code(self) -> int:
        if self.daemon["state"] == "stale":
            return EXIT_STALE
        return EXIT_ALERT if self.open_alerts else EXIT_OK


def status_command(*, as_json: bool) -> int:
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database, session_factory
    from monitor.store.models import utcnow

    engine = open_database(get_monitor_settings(), create=False)
    try:
        with session_factory(engine)() as session:
            report = read_status(session, utcnow())
    finally:
        engine.dispose()

    if as_json:
        print(json.dumps(_json_ready(report), indent=2))
    else:
        for line in status_lines(report):
            print(line)
    return report.exit_code


def read_status(session: Session, now: datetime) -> Status:
    from sqlalchemy import select

    from monitor.store.models import Alert

    return Status(
        daemon=daemon_state(session, now),
        last_pass=_pass(session, now, running=False),
        running_pass=_pass(session, now, running=True),
        open_alerts=[
            {
                "id": alert.id,
                "rule": alert.rule,
                "message": alert.message,
                "run_id": alert.run_id,
                "since": alert.created_at,
                "last_seen_at": alert.last_seen_at,
            }
            for alert in session.scalars(
                select(Alert).where(Alert.state == "firing").order_by(Alert.created_at)
            )
        ],
    )


def daemon_state(session: Session, now: datetime) -> dict[str, Any]:
    from sqlalchemy import select

    from monitor.lease import stale_after_seconds
    from monitor.store.models import Worker

    worker = session.scalars(
        select(Worker).order_by(Worker.heartbeat_at.desc()).limit(1)
    ).first()
    if worker is None:
        return {"state": "none"}

    # A heartbeat a moment ahead of this clock is a fresh one, not a negative age.
    age = max(0.0, (now - worker.heartbeat_at).total_seconds())
    if worker.state == "stopped":
        state = "stopped"
    elif age > stale_after_seconds(worker.interval_seconds):
        state = "stale"
    else:
        state = "alive"
    return {
        "state": state,
        "worker": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "activity": worker.state,
        "interval_seconds": worker.interval_seconds,
        "started_at": worker.started_at,
        "heartbeat_at": worker.heartbeat_at,
        "heartbeat_age_seconds": round(age, 1),
        "stopped_at": worker.stopped_at,
        "next_due_at": worker.next_due_at if state == "alive" else None,
        "passes": worker.passes,
        "skipped_ticks": worker.skipped_ticks,
        "last_run_id": worker.last_run_id,
    }


def _pass(session: Session, now: datetime, *, running: bool) -> dict[str, Any] | None:
    """The newest pass (not a rescore) that has ended, or the one in flight."""
    from sqlalchemy import select

    from monitor.store.models import Run

    statuses = Run.status == "running" if running else Run.status != "running"
    run = session.scalars(
        select(Run)
        .where(Run.kind != "rescore", statuses)
        .order_by(Run.started_at.desc())
        .limit(1)
    ).first()
    if run is None:
        return None

    return {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "score": run.score,
        "threshold": run.threshold,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "age_seconds": round(
            max(0.0, (now - (run.finished_at or run.started_at)).total_seconds())
        ),
        "error": run.error,
    }


def status_lines(report: Status) -> list[str]:
    from monitor.durations import format_duration

    lines = [_daemon_line(report.daemon)]
    last = report.last_pass
    if last is None:
        lines.append("last pass: none yet")
    else:
        score = "n/a" if last["score"] is None else f"{last['score']:.3f}"
        lines.append(
            f"last pass: {last['id']} {last['status']}, score {score}, "
            f"{format_duration(last['age_seconds'])} ago"
        )
    if report.running_pass is not None:
        lines.append(f"pass in flight: {report.running_pass['id']}")
    due = report.daemon.get("next_due_at")
    lines.append(f"next pass due: {_utc(due) if due else '-'}")
    lines.append(f"open alerts: {len(report.open_alerts) or 'none'}")
    for alert in report.open_alerts:
        message, prefix = alert["message"], f"{alert['rule']}: "
        # The rule's messages already start with its name.
        shown = message if message.startswith(prefix) else prefix + message
        lines.append(f"  {shown} (since {_utc(alert['since'])})")
    return lines


def _daemon_line(daemon: dict[str, Any]) -> str:
    from monitor.durations import format_duration

    state = daemon["state"]
    if state == "none":
        return "daemon: none has run on this database"
    every = format_duration(daemon["interval_seconds"])
    beat = format_duration(daemon["heartbeat_age_seconds"])
    line = (
        f"daemon: {state} ({daemon['worker']}), every {every}, last heartbeat "
        f"{beat} ago, {daemon['passes']} pass(es), "
        f"{daemon['skipped_ticks']} skipped tick(s)"
    )
    if state == "stale":
        line += " - it stopped beating without shutting down: is it hung or killed?"
    return line


def _utc(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _json_ready(report: Status) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, list):
            return [convert(item) for item in value]
        return value

    return {
        "daemon": convert(report.daemon),
        "last_pass": convert(report.last_pass),
        "running_pass": convert(report.running_pass),
        "open_alerts": convert(report.open_alerts),
        "exit_code": report.exit_code,
    }

"""The life of an alert: opened, reminded, resolved; stored before delivered.

After each pass ``process_pass_alerts`` runs the rules, then in one
transaction writes what they found into ``alerts`` and queues the notices
(``notifications``, one row per sink), and only then delivers the queue:

- a check that fires with no open alert of its fingerprint opens one and
  queues a *fired* notice. The fingerprint is the check and the version
  (``quality|prompt_version=v3``), so an alert that stays firing pages once;
- an alert still firing (or held open) after the cool-down since its last
  notice queues a *reminder*;
- a check that clears resolves its alert and queues a *resolved* notice; so
  does an open alert of a check whose version is no longer the one running
  (it is superseded by the new version's own check).

Delivery walks each sink's pending notices oldest first and stops at the first
failure, so a sink that is down keeps its notices pending, in order, for the
next pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from monitor.alerts.options import AlertOptions, alert_options
from monitor.alerts.rules import SCENARIOS, Check, Finding, evaluate_rules
from monitor.alerts.sinks import DeliveryError, Sink, configured_sinks
from monitor.store.db import session_factory
from monitor.store.models import Alert, Notification, Run

logger = logging.getLogger(__name__)

NOTICE_PREFIX = {
    "fired": "ALERT",
    "reminder": "REMINDER",
    "resolved": "RESOLVED",
    "test": "TEST",
}


@dataclass
class AlertOutcome:
    """What one pass's alert processing found and delivered.

    ``firing`` holds every alert open after this pass (opened now or earlier),
    each with the ``line`` to print after ``ALERT: ``.
    """

    firing: list[Finding] = field(default_factory=list)
    opened: list[Finding] = field(default_factory=list)
    reminded: list[Finding] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    notices_sent: int = 0
    notices_pending: int = 0
    delivery_errors: list[str] = field(default_factory=list)


def process_pass_alerts(
    engine: Engine, run: Run, options: AlertOptions | None = None
) -> AlertOutcome:
    """Evaluate the rules on ``run``, record alerts and deliver due notices."""
    options = options or alert_options()
    sessions = session_factory(engine)
    with sessions() as session:
        checks = evaluate_rules(session, run, options)
    sinks = configured_sinks(options)
    with sessions.begin() as session:
        outcome = record_checks(session, checks, options, [s.name for s in sinks])
    sent, errors = deliver_pending(sessions, sinks, options)
    outcome.notices_sent, outcome.delivery_errors = sent, errors
    outcome.notices_pending = count_pending(sessions)

    logger.info(
        "alerts after pass %s: %d firing (%d new, %d reminders, %d resolved); "
        "notices %d sent, %d pending",
        run.id,
        len(outcome.firing),
        len(outcome.opened),
        len(outcome.reminded),
        len(outcome.resolved),
        outcome.notices_sent,
        outcome.notices_pending,
    )
    return outcome


# Recording -------------------------------------------------------------------------


def record_checks(
    session: Session,
    checks: list[Check],
    options: AlertOptions,
    sink_names: list[str],
) -> AlertOutcome:
    """Open, refresh, remind and resolve alerts for these checks; queue notices."""
    now = options.clock()
    outcome = AlertOutcome()
    open_alerts = {
        alert.fingerprint: alert
        for alert in session.scalars(select(Alert).where(Alert.state == "firing"))
    }
    queue = _Queue(session, sink_names, now)

    for check in checks:
        alert = open_alerts.get(check.fingerprint)
        if check.status == "clear":
            if alert is not None:
                _resolve(alert, now, check.reason or "the condition cleared", queue)
                outcome.resolved.append(alert.fingerprint)
            continue
        if alert is None and check.status == "firing" and check.finding is not None:
            alert = _open(session, check.finding, now)
            queue.add(alert, "fired")
            logger.info("alert raised: %s", check.finding.line)
            outcome.opened.append(check.finding)
        elif alert is not None:
            _refresh(alert, check.finding, now)
            if _reminder_due(alert, now, options.cooldown_seconds):
                queue.add(alert, "reminder")
                outcome.reminded.append(stored_finding(alert))
        if alert is not None:
            outcome.firing.append(stored_finding(alert))

    _resolve_superseded(open_alerts, checks, now, queue, outcome)
    return outcome


def _open(session: Session, finding: Finding, now: datetime) -> Alert:
    alert = Alert(
        rule=finding.rule,
        fingerprint=finding.fingerprint,
        state="firing",
        message=finding.message,
        details=finding.details,
        run_id=finding.details.get("run"),
        created_at=now,
        last_seen_at=now,
        last_notified_at=now,
    )
    session.add(alert)
    session.flush()
    return alert


def _refresh(alert: Alert, finding: Finding | None, now: datetime) -> None:
    """Keep the alert's text and figures current while it stays open."""
    alert.last_seen_at = now
    if finding is not None:
        alert.message = finding.message
        alert.details = finding.details
        alert.run_id = finding.details.get("run")


def _reminder_due(alert: Alert, now: datetime, cooldown: float) -> bool:
    last = alert.last_notified_at or alert.created_at
    if (now - last).total_seconds() < cooldown:
        return False
    alert.last_notified_at = now
    return True


def _resolve(alert: Alert, now: datetime, reason: str, queue: _Queue) -> None:
    alert.state = "resolved"
    alert.resolved_at = now
    alert.last_seen_at = now
    alert.details = {**(alert.details or {}), "resolved_because": reason}
    queue.add(alert, "resolved")
    logger.info("alert resolved: %s (%s)", alert.fingerprint, reason)


def _resolve_superseded(
    open_alerts: dict[str, Alert],
    checks: list[Check],
    now: datetime,
    queue: _Queue,
    outcome: AlertOutcome,
) -> None:
    """An open alert of a check that ran, but for another version, is over."""
    current = {check.key: check.fingerprint for check in checks}
    for fingerprint, alert in open_alerts.items():
        key = fingerprint.split("|", 1)[0]
        if alert.state != "firing" or key not in current:
            continue
        if current[key] == fingerprint:
            continue
        version = current[key].split("|", 1)[-1]
        _resolve(alert, now, f"superseded: the passes now run at {version}", queue)
        outcome.resolved.append(fingerprint)


def stored_finding(alert: Alert) -> Finding:
    """The finding an open alert holds, as the rules would have made it."""
    details = alert.details or {}
    return Finding(
        rule=alert.rule,
        message=alert.message,
        scenario=int(details.get("scenario", 1)),
        details=details,
        key=str(details.get("check", alert.rule)),
        fingerprint=alert.fingerprint,
    )


# Notices ---------------------------------------------------------------------------


class _Queue:
    """Queues one notification row per sink for an alert event."""

    def __init__(self, session: Session, sinks: list[str], now: datetime) -> None:
        self.session, self.sinks, self.now = session, sinks, now

    def add(self, alert: Alert, kind: str) -> None:
        payload = notice_payload(alert, kind)
        for sink in self.sinks:
            self.session.add(
                Notification(
                    alert_id=alert.id,
                    sink=sink,
                    kind=kind,
                    payload=payload,
                    state="pending",
                    attempts=0,
                    created_at=self.now,
                )
            )


def notice_payload(alert: Alert, kind: str) -> dict[str, Any]:
    """Slack-compatible ``text`` plus the structured alert."""
    finding = stored_finding(alert)
    if kind == "resolved":
        reason = (alert.details or {}).get("resolved_because", "the condition cleared")
        text = f"RESOLVED: {alert.fingerprint} ({reason}) — was: {alert.message}"
    elif kind == "reminder":
        text = (
            f"REMINDER: still firing since {alert.created_at:%Y-%m-%d %H:%M} UTC: "
            f"{finding.line}"
        )
    else:
        text = f"{NOTICE_PREFIX[kind]}: {finding.line}"
    return {"text": text, "kind": kind, "alert": alert_json(alert)}


def alert_json(alert: Alert) -> dict[str, Any]:
    details = alert.details or {}
    scenario = int(details.get("scenario", 1))
    return {
        "id": alert.id,
        "rule": alert.rule,
        "fingerprint": alert.fingerprint,
        "state": alert.state,
        "message": alert.message,
        "scenario": scenario,
        "runbook": f"runbook.md, scenario {scenario} ({SCENARIOS.get(scenario, '')})",
        "run_id": alert.run_id,
        "created_at": _iso(alert.created_at),
        "last_seen_at": _iso(alert.last_seen_at),
        "resolved_at": _iso(alert.resolved_at),
        "details": details,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def deliver_pending(
    sessions: sessionmaker[Session], sinks: list[Sink], options: AlertOptions
) -> tuple[int, list[str]]:
    """Deliver each sink's pending notices, oldest first, stopping a sink at its
    first failure. Returns (notices delivered, one error line per failed sink)."""
    sent, errors = 0, []
    for sink in sinks:
        with sessions() as session:
            ids = list(
                session.scalars(
                    select(Notification.id)
                    .where(
                        Notification.sink == sink.name, Notification.state == "pending"
                    )
                    .order_by(Notification.id)
                )
            )
        for notice_id in ids:
            error = deliver_one(sessions, sink, notice_id, options)
            if error is not None:
                errors.append(f"{sink.name}: {error}")
                break
            sent += 1
    return sent, errors


def deliver_one(
    sessions: sessionmaker[Session],
    sink: Sink,
    notice_id: int,
    options: AlertOptions,
    *,
    retry: bool = True,
) -> str | None:
    """Send one stored notice; None on success, else the (secret-free) error.
    A failed notice stays pending for the next pass, or with ``retry`` False
    is marked failed for good."""
    with sessions() as session:
        row = session.get_one(Notification, notice_id)
        payload = {**row.payload, "notice_id": notice_id}
    error: str | None = None
    receipt = ""
    try:
        receipt = sink.deliver(payload)
    except DeliveryError as failure:
        error = str(failure)

    with sessions.begin() as session:
        row = session.get_one(Notification, notice_id)
        row.attempts += 1
        if error is None:
            row.state, row.delivered_at, row.last_error = (
                "delivered",
                options.clock(),
                None,
            )
        else:
            row.last_error = error
            if not retry:
                row.state = "failed"
    if error is None:
        logger.debug("notice %d delivered to %s (%s)", notice_id, sink.name, receipt)
    else:
        logger.warning(
            "notice %d to %s not delivered (%s); %s",
            notice_id,
            sink.name,
            error,
            "it stays pending for the next pass" if retry else "it is not retried",
        )
    return error


def count_pending(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Notification)
                .where(Notification.state == "pending")
            )
            or 0
        )


def send_test_notice(
    engine: Engine, options: AlertOptions
) -> list[tuple[str, str | None]]:
    """Store and send a test notice through every configured sink; returns
    (sink, error or None) for each."""
    sessions = session_factory(engine)
    now = options.clock()
    results = []
    for sink in configured_sinks(options):
        payload = {
            "text": "TEST: the Scout monitor can reach this channel.",
            "kind": "test",
            "alert": None,
        }
        with sessions.begin() as session:
            row = Notification(
                alert_id=None,
                sink=sink.name,
                kind="test",
                payload=payload,
                state="pending",
                attempts=0,
                created_at=now,
            )
            session.add(row)
            session.flush()
            notice_id = row.id
        # A test notice is not worth retrying after the next pass.
        error = deliver_one(sessions, sink, notice_id, options, retry=False)
        results.append((sink.name, error))
    return results


# Reading ---------------------------------------------------------------------------


@dataclass
class AlertRow:
    """An alert with the delivery state of its notices, for `monitor alerts list`."""

    alert: Alert
    deliveries: dict[str, dict[str, int]]
    last_error: str | None


def recent_alerts(session: Session, resolved_limit: int) -> list[AlertRow]:
    """Every open alert, then the newest ``resolved_limit`` resolved ones."""
    firing = list(
        session.scalars(
            select(Alert)
            .where(Alert.state == "firing")
            .order_by(Alert.created_at.desc())
        )
    )
    resolved = list(
        session.scalars(
            select(Alert)
            .where(Alert.state != "firing")
            .order_by(Alert.resolved_at.desc(), Alert.id.desc())
            .limit(resolved_limit)
        )
    )
    alerts = [*firing, *resolved]
    notices = session.scalars(
        select(Notification)
        .where(Notification.alert_id.in_([a.id for a in alerts]))
        .order_by(Notification.id)
    ).all()
    rows = []
    for alert in alerts:
        deliveries: dict[str, dict[str, int]] = {}
        last_error = None
        for notice in notices:
            if notice.alert_id != alert.id:
                continue
            states = deliveries.setdefault(notice.sink, {})
            states[notice.state] = states.get(notice.state, 0) + 1
            if notice.state == "pending" and notice.last_error:
                last_error = f"{notice.sink}: {notice.last_error}"
        rows.append(AlertRow(alert=alert, deliveries=deliveries, last_error=last_error))
    return rows

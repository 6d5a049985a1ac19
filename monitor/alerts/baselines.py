"""Baselines of the regression rule: which runs stand for "before".

By default the baseline of a version is the previous version's newest N
completed passes. ``monitor baseline set`` pins a set of runs instead; a pin
is kept per version key and replaces the earlier pin (which stays in the table,
inactive: nothing is overwritten). A pin of the *same* version as the runs
being judged turns the regression rule into a drift check within a version:
the runs after the pin are compared with it.

Only runs graded the same way are comparable: a baseline run must share the
current run's golden subset hash and judge version, or its scores mean
something else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from monitor.alerts.evidence import passes
from monitor.errors import MonitorError, NotFoundError
from monitor.store.models import Baseline, Run, utcnow

logger = logging.getLogger(__name__)

VERSION_KEYS = ("prompt_version", "model", "git_sha")


@dataclass(frozen=True)
class BaselineChoice:
    """The runs the regression rule compares against, and where they came from."""

    version: str
    runs: list[Run]
    pinned: bool


def version_of(run: Run, key: str) -> str:
    check_key(key)
    return str(getattr(run, key))


def check_key(key: str) -> None:
    if key not in VERSION_KEYS:
        raise MonitorError(
            f"version key {key!r} is not one of {', '.join(VERSION_KEYS)}"
        )


def comparable(run: Run) -> list[ColumnElement[bool]]:
    """Conditions for runs graded like ``run``: same golden subset and judge."""
    return [
        Run.golden_hash == run.golden_hash,
        Run.judge_version == run.judge_version,
    ]


def active_pin(session: Session, key: str) -> Baseline | None:
    query = (
        select(Baseline)
        .where(Baseline.version_key == key, Baseline.active.is_(True))
        .order_by(Baseline.created_at.desc(), Baseline.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def choose_baseline(
    session: Session, run: Run, key: str, size: int
) -> BaselineChoice | None:
    """The pinned baseline for ``key`` if there is one, else the newest ``size``
    comparable passes of the version before ``run``'s; None when neither exists."""
    pin = active_pin(session, key)
    if pin is not None:
        runs = _pinned_runs(session, pin, run)
        return (
            BaselineChoice(version=pin.version, runs=runs, pinned=True)
            if runs
            else None
        )

    column = getattr(Run, key)
    previous = passes(
        session,
        column != version_of(run, key),
        Run.started_at <= run.started_at,
        *comparable(run),
        limit=1,
    )
    if not previous:
        return None
    version = version_of(previous[0], key)
    runs = passes(
        session,
        column == version,
        Run.started_at <= run.started_at,
        *comparable(run),
        limit=size,
    )
    return BaselineChoice(version=version, runs=runs, pinned=False)


def _pinned_runs(session: Session, pin: Baseline, run: Run) -> list[Run]:
    ids = [str(run_id) for run_id in pin.run_ids or []]
    found = passes(session, Run.id.in_(ids), *comparable(run), limit=len(ids))
    if len(found) < len(ids):
        logger.warning(
            "pinned baseline %s for %s=%s: %d of %d runs are missing or were "
            "graded differently from run %s; using the rest",
            pin.id,
            pin.version_key,
            pin.version,
            len(ids) - len(found),
            len(ids),
            run.id,
        )
    return found


# Pinning (monitor baseline set/show/clear) -------------------------------------------


def pin_baseline(session: Session, reference: str, key: str, size: int) -> Baseline:
    """Pin a run (with the ``size`` - 1 comparable passes of its version before
    it) or a version (its newest ``size`` passes) as the baseline for ``key``."""
    check_key(key)
    anchor = session.get(Run, reference)
    if anchor is not None:
        if anchor.status != "completed" or anchor.kind == "rescore":
            raise MonitorError(
                f"run {reference!r} is a {anchor.status} {anchor.kind} run: pin a "
                "completed pass (see `monitor history`)"
            )
        version = version_of(anchor, key)
        conditions = [
            getattr(Run, key) == version,
            Run.started_at <= anchor.started_at,
            *comparable(anchor),
        ]
    else:
        version = reference
        conditions = [getattr(Run, key) == version]
    runs = passes(session, *conditions, limit=size)
    if not runs:
        raise NotFoundError(_unknown_reference(session, reference, key))

    session.execute(
        update(Baseline)
        .where(Baseline.version_key == key, Baseline.active.is_(True))
        .values(active=False)
    )
    pin = Baseline(
        version_key=key,
        version=version,
        run_ids=[run.id for run in runs],
        created_at=utcnow(),
        active=True,
    )
    session.add(pin)
    session.flush()
    logger.info("pinned baseline %s=%s: %d runs", key, version, len(runs))
    return pin


def clear_pins(session: Session, key: str) -> list[Baseline]:
    """Deactivate the pinned baseline of ``key``; returns what was cleared."""
    check_key(key)
    pins = list(
        session.scalars(
            select(Baseline).where(
                Baseline.version_key == key, Baseline.active.is_(True)
            )
        )
    )
    for pin in pins:
        pin.active = False
    return pins


def _unknown_reference(session: Session, reference: str, key: str) -> str:
    column = getattr(Run, key)
    known = list(
        session.scalars(
            select(column)
            .where(Run.status == "completed", Run.kind != "rescore")
            .group_by(column)
            .limit(20)
        )
    )
    hint = f"; known {key} values: {', '.join(map(str, known))}" if known else ""
    return (
        f"{reference!r} is neither a run id nor a {key} with completed passes"
        f"{hint} (see `monitor history`)"
    )

"""Read queries over the results database: history, one run, rolling scores."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.errors import NotFoundError
from monitor.store.models import Result, Run, Score, Usage


def recent_runs(session: Session, limit: int = 20) -> list[Run]:
    """The newest runs of every kind, newest first."""
    query = select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)
    return list(session.scalars(query))


def recent_completed_scores(
    session: Session, limit: int, *, exclude_kinds: Sequence[str] = ("rescore",)
) -> list[float | None]:
    """Scores of the newest completed runs (passes, not rescores), newest first."""
    query = (
        select(Run.score)
        .where(Run.status == "completed", Run.kind.not_in(exclude_kinds))
        .order_by(Run.started_at.desc(), Run.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def get_run(session: Session, run_id: str) -> Run:
    """The run with this id; an unknown id names the nearest known ones."""
    run = session.get(Run, run_id)
    if run is not None:
        return run
    known = list(
        session.scalars(select(Run.id).order_by(Run.started_at.desc()).limit(500))
    )
    near = difflib.get_close_matches(run_id, known, n=3, cutoff=0.4)
    hint = f"; nearest: {', '.join(near)}" if near else ""
    if not known:
        hint = "; the database holds no runs yet"
    raise NotFoundError(f"no run with id {run_id!r}{hint} (see `monitor history`)")


@dataclass
class ResultDetail:
    result: Result
    scores: list[Score]
    usage: list[Usage]


def run_details(session: Session, run: Run) -> list[ResultDetail]:
    """Each result a run graded (a rescore's are its parent's), with the
    scores of this grading and the usage of producing the report."""
    owner = run.parent_run_id if run.kind == "rescore" and run.parent_run_id else run.id
    results = list(
        session.scalars(
            select(Result).where(Result.run_id == owner).order_by(Result.id)
        )
    )
    ids = [result.id for result in results]
    scores = session.scalars(
        select(Score)
        .where(Score.run_id == run.id, Score.result_id.in_(ids))
        .order_by(Score.attempt, Score.id)
    ).all()
    usage = session.scalars(
        select(Usage).where(Usage.result_id.in_(ids)).order_by(Usage.id)
    ).all()
    return [
        ResultDetail(
            result=result,
            scores=[s for s in scores if s.result_id == result.id],
            usage=[u for u in usage if u.result_id == result.id],
        )
        for result in results
    ]

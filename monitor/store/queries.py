"""Read queries over the results database: history, one run, rolling scores,
and what `monitor compare` and `monitor rescore` read."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.errors import NotFoundError
from monitor.store.models import PageText, Result, Run, Score, Usage


def recent_runs(session: Session, limit: int = 20) -> list[Run]:
    """The newest runs of every kind, newest first."""
    query = select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)
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


# Compare, rescore and the history view ------------------------------------------
#
# Each query below is served by an index of models.py: the version columns by
# (column, started_at), scores by their (run_id, result_id, metric, attempt)
# unique key, results by (run_id, question_id), rescores by parent_run_id.

VERSION_COLUMNS = {
    "prompt_version": Run.prompt_version,
    "model": Run.model,
    "git_sha": Run.git_sha,
}


def completed_passes_of(
    session: Session, key: str, value: str, limit: int
) -> list[Run]:
    """The newest completed passes (rescores left out) whose ``key`` is ``value``."""
    column = VERSION_COLUMNS[key]
    query = (
        select(Run)
        .where(column == value, Run.status == "completed", Run.kind != "rescore")
        .order_by(Run.started_at.desc(), Run.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def version_is_known(session: Session, key: str, value: str) -> bool:
    """True when any run, of any status, carries ``value`` in column ``key``."""
    column = VERSION_COLUMNS[key]
    return session.scalar(select(Run.id).where(column == value).limit(1)) is not None


def known_versions(session: Session, key: str) -> list[str]:
    """Every value of column ``key``, most recently used first."""
    column = VERSION_COLUMNS[key]
    query = (
        select(column)
        .group_by(column)
        .order_by(func.max(Run.started_at).desc(), column)
    )
    return list(session.scalars(query))


def nearest(value: str, known: Sequence[str], n: int = 3) -> list[str]:
    """The known values closest to ``value``; the newest ones when none is close."""
    close = difflib.get_close_matches(value, known, n=n, cutoff=0.4)
    return close or list(known[:n])


GradedValue = tuple[str, str, str, float | None]
"""(run id, question id, metric, value) of one stored score."""


def graded_values(session: Session, run_ids: Sequence[str]) -> list[GradedValue]:
    """Every score of these gradings with the question it grades."""
    query = (
        select(Score.run_id, Result.question_id, Score.metric, Score.value)
        .join(Result, Result.id == Score.result_id)
        .where(Score.run_id.in_(run_ids))
    )
    return [(r, q, m, v) for r, q, m, v in session.execute(query)]


@dataclass(frozen=True)
class ResultFacts:
    """What compare needs of one stored question: no report, no sources."""

    run_id: str
    question_id: str
    status: str
    checks: dict[str, bool] | None
    duration_seconds: float | None


def result_facts(session: Session, run_ids: Sequence[str]) -> list[ResultFacts]:
    """Status, checks and duration of each question of these runs."""
    query = select(
        Result.run_id,
        Result.question_id,
        Result.status,
        Result.checks,
        Result.duration_seconds,
    ).where(Result.run_id.in_(run_ids))
    return [ResultFacts(*row) for row in session.execute(query)]


def rescores_of(session: Session, run_ids: Sequence[str]) -> list[Run]:
    """The rescores of these runs, newest first."""
    if not run_ids:
        return []
    query = (
        select(Run)
        .where(Run.parent_run_id.in_(run_ids), Run.kind == "rescore")
        .order_by(Run.started_at.desc(), Run.id.desc())
    )
    return list(session.scalars(query))


def history_runs(session: Session, limit: int) -> list[Run]:
    """The newest ``limit`` passes, newest first, each followed by its rescores."""
    passes = list(
        session.scalars(
            select(Run)
            .where(Run.kind != "rescore")
            .order_by(Run.started_at.desc(), Run.id.desc())
            .limit(limit)
        )
    )
    by_parent: dict[str, list[Run]] = {}
    for rescore in rescores_of(session, [run.id for run in passes]):
        by_parent.setdefault(rescore.parent_run_id or "", []).append(rescore)
    ordered: list[Run] = []
    for run in passes:
        ordered.append(run)
        ordered.extend(by_parent.get(run.id, []))
    return ordered


def page_texts(session: Session, content_hashes: Sequence[str]) -> dict[str, str]:
    """The stored text of each page, by content hash; unknown hashes are absent."""
    if not content_hashes:
        return {}
    query = select(PageText.content_hash, PageText.text).where(
        PageText.content_hash.in_(set(content_hashes))
    )
    return {content_hash: text for content_hash, text in session.execute(query)}

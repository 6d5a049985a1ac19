"""Writes of the pass: a run row first, each question as it finishes, then the
aggregate. Every write is its own short transaction, so a crash loses at most
the question in flight and a reader never sees half a question."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from monitor.stats import metric_means, score_of
from monitor.store.models import PageText, Result, Run, Score, Usage, utcnow
from scout.observability import UsageRow
from scout.tasks import Page


def insert_run(sessions: sessionmaker[Session], **fields: Any) -> Run:
    run = Run(status="running", started_at=utcnow(), **fields)
    with sessions.begin() as session:
        session.add(run)
    return run


def usage_by_node(rows: Sequence[UsageRow], result_id: int) -> list[Usage]:
    """Sum usage rows per (node, model); a count stays None when no call gave it."""
    groups: dict[tuple[str, str], list[UsageRow]] = defaultdict(list)
    for row in rows:
        groups[(row.node, row.model)].append(row)
    summed = []
    for (node, model), calls in groups.items():
        summed.append(
            Usage(
                result_id=result_id,
                node=node,
                model=model,
                calls=len(calls),
                calls_without_usage=sum(row.input_tokens is None for row in calls),
                input_tokens=_sum_known(row.input_tokens for row in calls),
                output_tokens=_sum_known(row.output_tokens for row in calls),
                seconds=round(sum(row.seconds for row in calls), 4),
                cost=_sum_known_float(row.cost for row in calls),
            )
        )
    return summed


def _sum_known(values: Any) -> int | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _sum_known_float(values: Any) -> float | None:
    known = [value for value in values if value is not None]
    return float(sum(known)) if known else None


def store_pages(session: Session, pages: Sequence[Page]) -> None:
    """Keep each page text once per content hash, for rescoring later.

    Questions of one pass often read the same page at the same moment, so the
    insert skips a hash that another transaction stored first. Rows go in hash
    order, so two transactions never wait on each other's rows in opposite
    orders (a deadlock on Postgres).
    """
    rows = {
        page["content_hash"]: {
            "content_hash": page["content_hash"],
            "url": page["url"],
            "title": page["title"],
            "text": page["text"],
            "first_seen_at": utcnow(),
        }
        for page in pages
    }
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
    statement = upsert(PageText).on_conflict_do_nothing(
        index_elements=[PageText.content_hash]
    )
    session.execute(statement, [rows[key] for key in sorted(rows)])


def insert_result(
    sessions: sessionmaker[Session],
    result: Result,
    *,
    scores: Sequence[Score] = (),
    usage: Sequence[UsageRow] = (),
    pages: Sequence[Page] = (),
) -> int:
    """Store one question with its scores, usage and page texts in one transaction."""
    with sessions.begin() as session:
        store_pages(session, pages)
        session.add(result)
        session.flush()
        for score in scores:
            score.result_id = result.id
            session.add(score)
        session.add_all(usage_by_node(usage, result.id))
    return result.id


def finish_run(
    sessions: sessionmaker[Session],
    run_id: str,
    *,
    status: str,
    error: str | None = None,
) -> Run:
    """Write the aggregate of everything stored for the run and close it."""
    with sessions.begin() as session:
        run = session.get_one(Run, run_id)
        scores = session.execute(
            select(Score.metric, Score.value).where(Score.run_id == run_id)
        ).all()
        results = _results_graded_by(session, run)
        usage = session.scalars(
            select(Usage).where(Usage.result_id.in_([r.id for r in results]))
        ).all()

        run.status = status
        run.error = error
        run.finished_at = utcnow()
        run.wall_seconds = round((run.finished_at - run.started_at).total_seconds(), 3)
        run.score = score_of(value for _, value in scores)
        run.metric_means = metric_means((metric, value) for metric, value in scores)
        run.questions_failed = sum(r.status == "failed" for r in results)
        run.questions_unscored = _count_unscored(session, run_id)
        run.input_tokens = _sum_known(u.input_tokens for u in usage)
        run.output_tokens = _sum_known(u.output_tokens for u in usage)
        run.cost = _sum_known_float(u.cost for u in usage)
    return run


def _results_graded_by(session: Session, run: Run) -> list[Result]:
    """The results a run graded: its own, or its parent's for a rescore."""
    owner = run.parent_run_id if run.kind == "rescore" and run.parent_run_id else run.id
    return list(session.scalars(select(Result).where(Result.run_id == owner)))


def _count_unscored(session: Session, run_id: str) -> int:
    """Results of this grading with at least one metric the judge could not score."""
    rows = session.scalars(
        select(Score.result_id)
        .where(Score.run_id == run_id, Score.value.is_(None))
        .distinct()
    ).all()
    return len(rows)

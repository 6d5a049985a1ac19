"""``monitor rescore``: grade stored reports again, with no agent call at all.

A rescore reads the reports, sources and page texts a pass stored, grades each
report with the judge configured now (or the one asked for), ``repeat`` times,
and writes a new run of kind ``rescore`` whose scores point at the pass's
results. The pass and its scores are never written to. The agent is not
imported, let alone called: everything the judge sees comes from the database,
and the key points come from the golden file.

Grading the same reports several times measures the judge's own noise: the
spread per metric is the pooled within-question standard deviation over the
attempts, and the largest range any question showed.

``stored_verdict`` is the no-model path (``--stored``): it re-applies a
threshold to the scores a run already has and writes nothing, since nothing new
was graded.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, variance
from typing import Literal, cast

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from monitor.errors import GoldenError, MonitorError
from monitor.golden import GoldenQuestion, GoldenSet, load_golden
from monitor.judge import Grading, GradingInput, Judge, make_judge
from monitor.runner import new_run_id, score_rows
from monitor.stats import score_of
from monitor.store.db import session_factory
from monitor.store.models import METRICS, Run, Score
from monitor.store.queries import ResultDetail, get_run, page_texts, run_details
from monitor.store.writes import finish_run, insert_run
from scout.observability import UsageMeter, in_node, metering, record_scores

logger = logging.getLogger(__name__)

NOTHING_TO_GRADE = "failed in run {run}: no report, nothing to grade"


@dataclass(frozen=True)
class RescoreOptions:
    golden_file: Path
    judge: str = "auto"
    judge_model: str | None = None
    threshold: float | None = None
    repeat: int = 1
    concurrency: int = 5


@dataclass(frozen=True)
class QuestionRegrade:
    """One question of the parent: its stored values and its new ones (1-5)."""

    question_id: str
    graded: bool
    before: dict[str, float | None]
    after: dict[str, float | None]
    attempts: list[dict[str, float | None]] = field(default_factory=list)
    note: str | None = None

    @property
    def score_before(self) -> float | None:
        return score_of(self.before.values())

    @property
    def score_after(self) -> float | None:
        values = [v for attempt in self.attempts for v in attempt.values()]
        return score_of(values) if self.graded else None


@dataclass(frozen=True)
class Spread:
    """How much the judge disagreed with itself over ``attempts`` gradings."""

    name: str
    attempts: int
    pooled_sd: float | None
    max_range: float | None


@dataclass
class RescoreReport:
    run: Run
    parent: Run
    questions: list[QuestionRegrade]
    spread: list[Spread]
    threshold: float | None
    notes: list[str]
    judge_tokens: int | None

    @property
    def below_threshold(self) -> bool:
        return _below(self.run.score, self.threshold)


@dataclass(frozen=True)
class StoredVerdict:
    """A threshold applied to the scores a run already has (``--stored``)."""

    run: Run
    questions: list[QuestionRegrade]
    score: float | None
    threshold: float

    @property
    def below_threshold(self) -> bool:
        return _below(self.score, self.threshold)


def _below(score: float | None, threshold: float | None) -> bool:
    """Below the threshold; no score at all counts as below, as in a pass."""
    if threshold is None:
        return False
    return score is None or score < threshold


# Re-grading ----------------------------------------------------------------------


def rescore(
    engine: Engine,
    run_id: str,
    options: RescoreOptions,
    *,
    on_question: Callable[[QuestionRegrade], None] | None = None,
) -> RescoreReport:
    """Grade the reports of ``run_id`` again and store them as a new run."""
    sessions = session_factory(engine)
    parent, details, pages, notes = _load(sessions, run_id)
    gradable = [d for d in details if _has_report(d)]
    if not gradable:
        raise MonitorError(
            f"run {parent.id!r} has no stored report to grade ({len(details)} "
            "questions stored, none completed): pick a run with scores from "
            "`monitor history`"
        )
    questions, golden_hash, golden_notes = golden_questions(
        options.golden_file, parent, [d.result.question_id for d in gradable]
    )
    judge = make_judge(
        cast(Literal["auto", "offline", "llm"], options.judge),
        model=options.judge_model,
    )

    run = _open_rescore(sessions, parent, judge, golden_hash, options.threshold)
    logger.info("rescore %s of run %s started", run.id, parent.id)
    meter = UsageMeter()
    grader = _Grader(sessions, run.id, judge, options, meter)
    try:
        regrades = grader.grade_all(gradable, questions, pages, on_question)
    except BaseException as failure:
        status = "aborted" if isinstance(failure, KeyboardInterrupt) else "failed"
        finish_run(sessions, run.id, status=status, error=_describe(failure))
        raise
    run = finish_run(sessions, run.id, status="completed")
    logger.info("rescore %s finished: score %s", run.id, run.score)

    regrades += [_not_graded(d, parent.id) for d in details if not _has_report(d)]
    regrades.sort(key=lambda r: _order(details, r.question_id))
    return RescoreReport(
        run=run,
        parent=parent,
        questions=regrades,
        spread=judge_spread(regrades) if options.repeat > 1 else [],
        threshold=options.threshold,
        notes=notes + golden_notes,
        judge_tokens=_tokens(meter),
    )


def _load(
    sessions: sessionmaker[Session], run_id: str
) -> tuple[Run, list[ResultDetail], dict[str, str], list[str]]:
    """The pass to re-grade, its stored results, their page texts, and a note
    when the run named was itself a rescore."""
    with sessions() as session:
        named = get_run(session, run_id)
        parent = graded_pass(session, named)
        details = run_details(session, parent)
        pages = page_texts(session, _content_hashes(details))
    notes = []
    if parent.id != named.id:
        notes.append(f"{named.id} is a rescore: re-grading {parent.id}'s reports")
    return parent, details, pages, notes


def graded_pass(session: Session, run: Run) -> Run:
    """The pass whose reports ``run`` holds: itself, or a rescore's parent.
    A run still in progress is refused: its reports are not all stored."""
    if run.kind == "rescore" and run.parent_run_id:
        run = get_run(session, run.parent_run_id)
    if run.status == "running":
        raise MonitorError(
            f"run {run.id!r} is still running: wait for it to finish (a run left "
            "running by a killed process is marked abandoned at the daemon's start)"
        )
    return run


def golden_questions(
    golden_file: Path, parent: Run, question_ids: Sequence[str]
) -> tuple[dict[str, GoldenQuestion], str, list[str]]:
    """The golden questions (for their key points), the golden hash of the new
    run, and a note when the golden file changed since the parent was replayed.

    Unchanged, the rescore keeps the parent's hash. Changed, it gets the hash of
    the questions it was graded against, so `compare` sees the difference.
    """
    golden = load_golden(golden_file)
    by_id = {question.id: question for question in golden.questions}
    missing = [question_id for question_id in question_ids if question_id not in by_id]
    if missing:
        raise GoldenError(
            f"{golden_file}: no question with id {', '.join(map(repr, missing))}, "
            f"which run {parent.id!r} answered: point MONITOR_GOLDEN_FILE at the "
            "golden file that run used"
        )

    if _subset_hash(golden, parent.questions_total) == parent.golden_hash:
        return by_id, parent.golden_hash, []
    used = tuple(q for q in golden.questions if q.id in set(question_ids))
    changed = GoldenSet(questions=used, path=golden.path).subset_hash(len(used))
    note = (
        f"the golden file {golden_file} changed since run {parent.id} was replayed: "
        "key points come from the file as it is now, and `monitor compare` treats "
        "this rescore as another golden subset"
    )
    return by_id, changed, [note]


def _subset_hash(golden: GoldenSet, size: int) -> str | None:
    try:
        return golden.subset_hash(size)
    except GoldenError:
        return None


def _open_rescore(
    sessions: sessionmaker[Session],
    parent: Run,
    judge: Judge,
    golden_hash: str,
    threshold: float | None,
) -> Run:
    """The rescore's run row: the parent's versions, the new judge."""
    return insert_run(
        sessions,
        id=new_run_id(),
        kind="rescore",
        parent_run_id=parent.id,
        owner=f"{socket.gethostname()}:{os.getpid()}",
        prompt_version=parent.prompt_version,
        model=parent.model,
        model_reported=parent.model_reported,
        git_sha=parent.git_sha,
        git_dirty=parent.git_dirty,
        golden_hash=golden_hash,
        corpus_fingerprint=parent.corpus_fingerprint,
        sources_backend=parent.sources_backend,
        judge_model=judge.model,
        judge_version=judge.version,
        threshold=parent.threshold if threshold is None else threshold,
        questions_total=parent.questions_total,
    )


class _Grader:
    """Grades (question, attempt) pairs concurrently; stores each question in one
    transaction once all its attempts are in, and puts its first attempt's
    scores onto the question's trace."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        run_id: str,
        judge: Judge,
        options: RescoreOptions,
        meter: UsageMeter,
    ) -> None:
        self.sessions = sessions
        self.run_id = run_id
        self.judge = judge
        self.repeat = options.repeat
        self.concurrency = options.concurrency
        self.meter = meter

    def grade_all(
        self,
        details: list[ResultDetail],
        questions: dict[str, GoldenQuestion],
        pages: dict[str, str],
        on_question: Callable[[QuestionRegrade], None] | None,
    ) -> list[QuestionRegrade]:
        items = [grading_input(d, questions, pages) for d in details]
        gradings: dict[int, list[Grading | None]] = {
            d.result.id: [None] * self.repeat for d in details
        }
        regrades = []
        workers = max(1, min(self.concurrency, len(details) * self.repeat))
        with ThreadPoolExecutor(workers, thread_name_prefix="rescore") as pool:
            futures: dict[Future[Grading], tuple[int, int]] = {
                pool.submit(self._grade, item): (detail.result.id, attempt)
                for detail, item in zip(details, items, strict=True)
                for attempt in range(self.repeat)
            }
            try:
                for future in as_completed(futures):
                    result_id, attempt = futures[future]
                    gradings[result_id][attempt] = future.result()
                    if all(g is not None for g in gradings[result_id]):
                        detail = next(d for d in details if d.result.id == result_id)
                        done = cast(list[Grading], gradings[result_id])
                        regrade = self._store(detail, done)
                        regrades.append(regrade)
                        if on_question is not None:
                            on_question(regrade)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return regrades

    def _grade(self, item: GradingInput) -> Grading:
        with metering(self.meter), in_node("judge"):
            try:
                return self.judge.grade(item)
            except Exception as error:  # a judge bug must not lose the others
                logger.exception("the judge raised on question %s", item.question.id)
                return Grading.failed(
                    f"judge raised {type(error).__name__}: {error}",
                    judge_model=self.judge.model,
                    judge_version=self.judge.version,
                )

    def _store(self, detail: ResultDetail, gradings: list[Grading]) -> QuestionRegrade:
        rows: list[Score] = []
        for attempt, grading in enumerate(gradings):
            for row in score_rows(self.run_id, grading, attempt):
                row.result_id = detail.result.id
                rows.append(row)
        with self.sessions.begin() as session:
            session.add_all(rows)

        first = gradings[0]
        if detail.result.trace_id:
            record_scores(
                detail.result.trace_id,
                [
                    (s.metric, s.value, s.rationale)
                    for s in first.scores.values()
                    if s.value is not None
                ],
                judge_version=first.judge_version,
            )
        attempts = [grading.values() for grading in gradings]
        return QuestionRegrade(
            question_id=detail.result.question_id,
            graded=True,
            before=_metric_means(detail.scores),
            after={m: _mean_of(a.get(m) for a in attempts) for m in METRICS},
            attempts=attempts,
            note=first.error,
        )


def grading_input(
    detail: ResultDetail, questions: dict[str, GoldenQuestion], pages: dict[str, str]
) -> GradingInput:
    """What the judge sees: the stored report, its sources and the page texts
    exactly as the agent read them (by content hash); the question as asked."""
    result = detail.result
    golden = questions[result.question_id]
    sources = list(result.sources or [])
    return GradingInput(
        question=GoldenQuestion(
            id=golden.id,
            question=result.question,
            key_points=golden.key_points,
            reference_urls=golden.reference_urls,
        ),
        report=result.report or "",
        sources=sources,
        pages={
            source["url"]: pages[source["content_hash"]]
            for source in sources
            if source.get("content_hash") in pages
        },
    )


def judge_spread(regrades: Sequence[QuestionRegrade]) -> list[Spread]:
    """Per metric and for the score: the judge's disagreement with itself."""
    graded = [r for r in regrades if r.graded and len(r.attempts) > 1]
    spreads = []
    for metric in METRICS:
        per_question = [
            [v for a in r.attempts if (v := a.get(metric)) is not None] for r in graded
        ]
        spreads.append(_spread(metric, per_question))

    attempts = max((len(r.attempts) for r in graded), default=0)
    scores = [
        score_of(v for r in graded for v in r.attempts[i].values())
        for i in range(attempts)
    ]
    spreads.append(_spread("score", [[s for s in scores if s is not None]]))
    return spreads


def _spread(name: str, groups: list[list[float]]) -> Spread:
    """Pooled within-group SD and the largest range, over groups of 2+ values."""
    usable = [group for group in groups if len(group) > 1]
    if not usable:
        return Spread(name, 0, None, None)
    pooled = math.sqrt(fmean(variance(group) for group in usable))
    widest = max(max(group) - min(group) for group in usable)
    return Spread(name, max(len(group) for group in usable), pooled, widest)


# Stored scores, no model ---------------------------------------------------------


def stored_verdict(
    engine: Engine, run_id: str, threshold: float | None
) -> StoredVerdict:
    """Apply ``threshold`` (default: the run's own) to the scores stored for
    ``run_id``. No judge is built and nothing is written."""
    with session_factory(engine)() as session:
        run = get_run(session, run_id)
        if run.status == "running":
            raise MonitorError(
                f"run {run.id!r} is still running: its scores are not all stored yet"
            )
        details = run_details(session, run)

    questions = [
        QuestionRegrade(
            question_id=d.result.question_id,
            graded=bool(d.scores),
            before=_metric_means(d.scores),
            after=_metric_means(d.scores),
            note=None
            if _has_report(d)
            else NOTHING_TO_GRADE.format(run=d.result.run_id),
        )
        for d in details
    ]
    score = score_of([s.value for d in details for s in d.scores])
    if score is None:
        raise MonitorError(
            f"nothing to evaluate: no measured score in run {run.id!r} "
            f"({run.status}; every question failed, went unscored or never ran)"
        )
    return StoredVerdict(
        run=run,
        questions=questions,
        score=score,
        threshold=run.threshold if threshold is None else threshold,
    )


# Helpers -------------------------------------------------------------------------


def _has_report(detail: ResultDetail) -> bool:
    return detail.result.status == "completed" and detail.result.report is not None


def _not_graded(detail: ResultDetail, parent_id: str) -> QuestionRegrade:
    empty: dict[str, float | None] = dict.fromkeys(METRICS)
    return QuestionRegrade(
        question_id=detail.result.question_id,
        graded=False,
        before=empty,
        after=empty,
        note=NOTHING_TO_GRADE.format(run=parent_id),
    )


def _content_hashes(details: Sequence[ResultDetail]) -> list[str]:
    return [
        source["content_hash"]
        for detail in details
        for source in detail.result.sources or []
        if source.get("content_hash")
    ]


def _metric_means(scores: Sequence[Score]) -> dict[str, float | None]:
    by_metric: dict[str, list[float | None]] = defaultdict(list)
    for score in scores:
        by_metric[score.metric].append(score.value)
    return {metric: _mean_of(by_metric.get(metric, [])) for metric in METRICS}


def _mean_of(values: Iterable[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return fmean(measured) if measured else None


def _order(details: Sequence[ResultDetail], question_id: str) -> int:
    ids = [detail.result.question_id for detail in details]
    return ids.index(question_id)


def _tokens(meter: UsageMeter) -> int | None:
    counted = [
        (row.input_tokens or 0) + (row.output_tokens or 0)
        for row in meter.rows
        if row.input_tokens is not None or row.output_tokens is not None
    ]
    return sum(counted) if counted else None


def _describe(failure: BaseException) -> str:
    if isinstance(failure, KeyboardInterrupt):
        return "interrupted before the rescore finished"
    return f"{type(failure).__name__}: {failure}"

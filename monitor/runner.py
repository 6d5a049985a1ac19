"""One pass: golden questions -> Scout's graph -> judge -> results database.

Questions run concurrently in daemon threads, at most ``concurrency`` at a time,
all sharing the process's model client and its rate limiter. Each question is
stored the moment it is graded, so a crash loses at most the questions in flight.
A question that raises, hits its limits or outlives ``question_timeout`` is
stored as failed with its error and the pass goes on. A question thread that
hangs is abandoned (it is a daemon thread and every model call has a finite
timeout), and whichever of the thread and the timeout settles the question
first is the one that stores it.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine

from monitor.golden import GoldenQuestion, load_golden
from monitor.judge import Grading, GradingInput, Judge, make_judge, run_checks
from monitor.store.db import session_factory
from monitor.store.models import METRICS, Result, Run, Score, utcnow
from monitor.store.writes import finish_run, insert_result, insert_run
from scout.agent import AgentRun, make_context, run_question
from scout.config import PROMPT_VERSION, ScoutSettings, get_settings
from scout.errors import ConfigError, ScoutError
from scout.gitinfo import git_revision
from scout.graph import ScoutGraph
from scout.observability import (
    UsageMeter,
    UsageRow,
    in_node,
    metering,
    record_scores,
)
from scout.state import ScoutContext

logger = logging.getLogger(__name__)

GraphFactory = Callable[[], ScoutGraph]
Number = TypeVar("Number", int, float)


@dataclass(frozen=True)
class PassConfig:
    """How one pass runs; the CLI builds it from flags and MONITOR_* settings."""

    golden_file: Path
    subset_size: int = 5
    threshold: float = 0.70
    concurrency: int = 5
    question_timeout: float = 600.0
    pass_timeout: float | None = None
    judge: str = "auto"
    judge_model: str | None = None
    kind: str = "manual"
    graph: str = "scout.graph:build_graph"


@dataclass(frozen=True)
class QuestionReport:
    """What the pass prints and returns for one question."""

    question_id: str
    status: str
    seconds: float
    node_visits: int = 0
    worker_turns: int = 0
    checks: dict[str, bool] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    judge_error: str | None = None


@dataclass
class PassReport:
    run: Run
    questions: list[QuestionReport]


@dataclass
class PreparedPass:
    """Everything a pass needs, loaded before anything is written."""

    questions: list[GoldenQuestion]
    golden_hash: str
    context: ScoutContext
    judge: Judge
    scout_settings: ScoutSettings
    graph_factory: GraphFactory


def load_graph_factory(spec: str) -> GraphFactory:
    """The ``module:function`` that builds the watched graph (MONITOR_GRAPH)."""
    import importlib

    module_name, _, attribute = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute or "")
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"MONITOR_GRAPH={spec!r} cannot be loaded ({error}): "
            "give module:function, e.g. scout.graph:build_graph"
        ) from None
    if not callable(factory):
        raise ConfigError(f"MONITOR_GRAPH={spec!r} is not a function")
    return factory


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def prepare_pass(config: PassConfig) -> PreparedPass:
    """Load the golden subset, the agent's model and source, and the judge.
    Raises a one-line error before the database is touched."""
    golden = load_golden(config.golden_file)
    questions = golden.subset(config.subset_size)
    settings = get_settings()
    return PreparedPass(
        questions=questions,
        golden_hash=golden.subset_hash(config.subset_size),
        context=make_context(settings, auto_approve=True),
        judge=make_judge(
            config.judge,  # type: ignore[arg-type]
            model=config.judge_model,
            scout_settings=settings,
        ),
        scout_settings=settings,
        graph_factory=load_graph_factory(config.graph),
    )


class PassRunner:
    """Runs one pass and stores it. ``on_question`` is called as each question
    is stored (from the calling thread), for progress output."""

    def __init__(
        self,
        engine: Engine,
        config: PassConfig,
        prepared: PreparedPass,
        *,
        on_question: Callable[[QuestionReport], None] | None = None,
        cancel: threading.Event | None = None,
        owner: str | None = None,
    ) -> None:
        self.sessions = session_factory(engine)
        # Who may still finish the run: a restart marks it abandoned only
        # when this process is gone (see monitor.lease.owner_alive).
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.config = config
        self.prepared = prepared
        self.on_question = on_question or (lambda report: None)
        self.cancel = cancel or threading.Event()
        self._settled: set[str] = set()
        self._settle_lock = threading.Lock()
        self.run_id = new_run_id()

    # The run row -------------------------------------------------------------

    def _open_run(self) -> Run:
        sha, dirty = git_revision()
        prepared = self.prepared
        return insert_run(
            self.sessions,
            id=self.run_id,
            kind=self.config.kind,
            owner=self.owner,
            prompt_version=PROMPT_VERSION,
            model=prepared.context.model.name,
            git_sha=sha,
            git_dirty=dirty,
            golden_hash=prepared.golden_hash,
            corpus_fingerprint=prepared.context.source.fingerprint,
            sources_backend=prepared.context.source.name,
            judge_model=prepared.judge.model,
            judge_version=prepared.judge.version,
            threshold=self.config.threshold,
            questions_total=len(prepared.questions),
        )

    def run(self) -> PassReport:
        """Run every question of the subset and return the closed run."""
        self._open_run()
        logger.info("pass %s started (%d questions)", self.run_id, self.total)
        reports: list[QuestionReport] = []
        status, error = "completed", None
        try:
            status, error = self._run_questions(reports)
        except Exception as failure:
            logger.exception("pass %s failed", self.run_id)
            status, error = "failed", f"{type(failure).__name__}: {failure}"
        except BaseException:
            # Ctrl-C or SIGTERM in `monitor run --once`: not a completed pass.
            status, error = "aborted", "interrupted before the pass finished"
            raise
        finally:
            run = finish_run(self.sessions, self.run_id, status=status, error=error)
            self._record_reported_models(run)
        logger.info(
            "pass %s finished: status %s, score %s, %.1f s",
            run.id,
            run.status,
            "n/a" if run.score is None else f"{run.score:.3f}",
            run.wall_seconds or 0.0,
        )
        return PassReport(run=run, questions=reports)

    @property
    def total(self) -> int:
        return len(self.prepared.questions)

    # Scheduling questions ----------------------------------------------------

    def _run_questions(self, reports: list[QuestionReport]) -> tuple[str, str | None]:
        pending = list(self.prepared.questions)
        inflight: dict[str, tuple[GoldenQuestion, float]] = {}
        done: queue.Queue[QuestionReport] = queue.Queue()
        pass_deadline = (
            time.monotonic() + self.config.pass_timeout
            if self.config.pass_timeout
            else None
        )

        while pending or inflight:
            while pending and len(inflight) < self.config.concurrency:
                question = pending.pop(0)
                inflight[question.id] = (question, time.monotonic())
                self._start_question(question, done)

            report = self._next_done(done, inflight, pass_deadline)
            if report is not None:
                inflight.pop(report.question_id, None)
                self._emit(report, reports)
            for report in self._expire_questions(inflight):
                self._emit(report, reports)

            if self.cancel.is_set():
                self._fail_inflight(inflight, reports, "the pass was aborted")
                return "aborted", "stopped before the pass finished"
            if pass_deadline is not None and time.monotonic() >= pass_deadline:
                limit = self.config.pass_timeout
                self._fail_inflight(
                    inflight, reports, f"pass timed out after {limit} s"
                )
                return "failed", f"pass timed out after {limit} s"
        return "completed", None

    def _next_done(
        self,
        done: queue.Queue[QuestionReport],
        inflight: dict[str, tuple[GoldenQuestion, float]],
        pass_deadline: float | None,
    ) -> QuestionReport | None:
        """Wait for the next finished question, but no longer than the nearest
        deadline, and wake up often enough to notice a cancel."""
        now = time.monotonic()
        deadlines = [
            start + self.config.question_timeout for _, start in inflight.values()
        ]
        if pass_deadline is not None:
            deadlines.append(pass_deadline)
        wait = min([0.25, *(max(0.0, d - now) for d in deadlines)])
        try:
            return done.get(timeout=wait)
        except queue.Empty:
            return None

    def _expire_questions(
        self, inflight: dict[str, tuple[GoldenQuestion, float]]
    ) -> list[QuestionReport]:
        now = time.monotonic()
        limit = self.config.question_timeout
        expired = [q for q, start in inflight.values() if now - start >= limit]
        reports = []
        for question in expired:
            inflight.pop(question.id)
            report = self._store_failure(
                question, f"timed out after {limit:g} s", limit
            )
            if report is not None:
                reports.append(report)
        return reports

    def _fail_inflight(
        self,
        inflight: dict[str, tuple[GoldenQuestion, float]],
        reports: list[QuestionReport],
        reason: str,
    ) -> None:
        now = time.monotonic()
        for question, start in list(inflight.values()):
            report = self._store_failure(question, reason, now - start)
            if report is not None:
                self._emit(report, reports)
        inflight.clear()

    def _emit(self, report: QuestionReport, reports: list[QuestionReport]) -> None:
        reports.append(report)
        self.on_question(report)

    def _claim(self, question_id: str) -> bool:
        """True for the first of (question thread, timeout) to settle a question."""
        with self._settle_lock:
            if question_id in self._settled:
                return False
            self._settled.add(question_id)
            return True

    # One question ------------------------------------------------------------

    def _start_question(
        self, question: GoldenQuestion, done: queue.Queue[QuestionReport]
    ) -> None:
        def work() -> None:
            try:
                report = self._answer_and_grade(question)
            except Exception as error:
                # Storing the question failed (the database went away, say):
                # the pass must still hear that this question is over.
                logger.exception("question %s could not be stored", question.id)
                report = QuestionReport(
                    question_id=question.id,
                    status="failed",
                    seconds=0.0,
                    error=f"could not be stored: {type(error).__name__}: {error}",
                )
            if report is not None:
                done.put(report)

        thread = threading.Thread(
            target=work, name=f"question-{question.id}", daemon=True
        )
        thread.start()

    def _answer_and_grade(self, question: GoldenQuestion) -> QuestionReport | None:
        started = time.perf_counter()
        meter = UsageMeter()
        try:
            agent_run = run_question(
                question.question,
                thread_id=f"{self.run_id}:{question.id}",
                context=self.prepared.context,
                settings=self.prepared.scout_settings,
                graph=self.prepared.graph_factory(),
                meter=meter,
            )
        except ScoutError as error:
            return self._store_failure(question, str(error), _since(started), meter)
        except Exception as error:
            logger.exception("question %s raised", question.id)
            reason = f"{type(error).__name__}: {error}"
            return self._store_failure(question, reason, _since(started), meter)
        return self._grade_and_store(question, agent_run, meter, started)

    def _grade_and_store(
        self,
        question: GoldenQuestion,
        agent_run: AgentRun,
        meter: UsageMeter,
        started: float,
    ) -> QuestionReport | None:
        item = GradingInput(
            question=question,
            report=agent_run.report,
            sources=agent_run.sources,
            pages={page["url"]: page["text"] for page in agent_run.pages},
        )
        checks = run_checks(agent_run.report, agent_run.sources)
        grading = self._grade(item, meter)

        seconds = _since(started)
        if not self._claim(question.id):
            return None
        insert_result(
            self.sessions,
            self._result_row(
                question, "completed", seconds, agent_run, checks, usage=meter.rows
            ),
            scores=score_rows(self.run_id, grading),
            usage=meter.rows,
            pages=agent_run.pages,
        )
        if agent_run.trace_id:
            record_scores(
                agent_run.trace_id,
                [
                    (s.metric, s.value, s.rationale)
                    for s in grading.scores.values()
                    if s.value is not None
                ],
                judge_version=grading.judge_version,
            )
        return QuestionReport(
            question_id=question.id,
            status="completed",
            seconds=seconds,
            node_visits=len(agent_run.node_visits),
            worker_turns=agent_run.worker_turns,
            checks=checks,
            scores={metric: s.value for metric, s in grading.scores.items()},
            judge_error=grading.error,
        )

    def _grade(self, item: GradingInput, meter: UsageMeter) -> Grading:
        """The judge's grading; a judge that raises leaves the report unscored."""
        judge = self.prepared.judge
        try:
            with metering(meter), in_node("judge"):
                return judge.grade(item)
        except Exception as error:
            logger.exception("the judge raised on %s", item.question.id)
            return Grading.failed(
                f"judge failed: {type(error).__name__}: {error}",
                judge_model=judge.model,
                judge_version=judge.version,
            )

    def _result_row(
        self,
        question: GoldenQuestion,
        status: str,
        seconds: float,
        agent_run: AgentRun | None = None,
        checks: dict[str, bool] | None = None,
        error: str | None = None,
        usage: Sequence[UsageRow] = (),
    ) -> Result:
        """The result row; its tokens and cost are those of its usage rows
        (the agent's calls and the judge's), unknown when no call reported them."""
        return Result(
            run_id=self.run_id,
            question_id=question.id,
            question=question.question,
            status=status,
            error=error,
            report=agent_run.report if agent_run else None,
            sources=list(agent_run.sources) if agent_run else None,
            checks=checks,
            node_visits=agent_run.node_visits if agent_run else None,
            worker_turns=agent_run.worker_turns if agent_run else None,
            trace_id=agent_run.trace_id if agent_run else None,
            duration_seconds=round(seconds, 3),
            input_tokens=_known_sum(row.input_tokens for row in usage),
            output_tokens=_known_sum(row.output_tokens for row in usage),
            cost=_known_sum(row.cost for row in usage),
            finished_at=utcnow(),
        )

    def _store_failure(
        self,
        question: GoldenQuestion,
        reason: str,
        seconds: float,
        meter: UsageMeter | None = None,
    ) -> QuestionReport | None:
        if not self._claim(question.id):
            return None
        logger.warning("question %s failed: %s", question.id, reason)
        usage = list(meter.rows) if meter else []
        insert_result(
            self.sessions,
            self._result_row(question, "failed", seconds, error=reason, usage=usage),
            usage=usage,
        )
        return QuestionReport(
            question_id=question.id, status="failed", seconds=seconds, error=reason
        )

    def _record_reported_models(self, run: Run) -> None:
        reported = getattr(self.prepared.context.model, "reported_models", None)
        if not reported:
            return
        with self.sessions.begin() as session:
            stored = session.get_one(Run, run.id)
            stored.model_reported = ", ".join(sorted(reported))[:400]
        run.model_reported = ", ".join(sorted(reported))[:400]


def score_rows(run_id: str, grading: Grading, attempt: int = 0) -> list[Score]:
    """One row per metric; an unscored metric keeps value None and its error."""
    rows = []
    for metric in METRICS:
        score = grading.scores[metric]
        rows.append(
            Score(
                run_id=run_id,
                metric=metric,
                attempt=attempt,
                value=score.value,
                rationale=score.rationale,
                error=score.error or (grading.error if score.value is None else None),
                judge_model=grading.judge_model,
                judge_version=grading.judge_version,
            )
        )
    return rows


def _known_sum(values: Iterable[Number | None]) -> Number | None:
    """The sum of the known values; None when none is known (never a made-up 0)."""
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _since(started: float) -> float:
    return time.perf_counter() - started

"""One pass of the monitor (PassRunner) against the real results database.

The pass replays the golden subset through Scout with the offline model. Tests
that need a question to break, hang or wait for the others swap the watched
graph through the same door as MONITOR_GRAPH: ``PassConfig(graph=...)`` names
:func:`scripted_graph` below, which wraps Scout's real graph and follows the
module-level :data:`SCRIPT` that a fixture resets for each test.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest
from sqlalchemy import select

from monitor.golden import load_golden
from monitor.judge import (
    METRICS,
    Grading,
    GradingInput,
    LLMJudge,
    OfflineJudge,
)
from monitor.runner import (
    PassConfig,
    PassReport,
    PassRunner,
    QuestionReport,
    prepare_pass,
)
from monitor.settings import DEFAULT_GOLDEN_FILE
from monitor.store.db import make_engine, session_factory, upgrade_database
from monitor.store.models import Result, Run, Score, Usage
from scout.config import OFFLINE_MODEL_NAME, PROMPT_VERSION, ScoutSettings
from scout.gitinfo import git_revision
from scout.graph import NODE_NAMES, build_graph
from scout.llm import make_client
from tests.fakes.openai_server import FakeOpenAI, completion

SCRIPTED_GRAPH = f"{__name__}:scripted_graph"
SUBSET = [q.id for q in load_golden(DEFAULT_GOLDEN_FILE).subset(5)]
GATE_TIMEOUT_S = 5.0


# The scripted graph ------------------------------------------------------------


@dataclass
class Script:
    """What the scripted graph does per question id, and what it saw."""

    raise_on: set[str] = field(default_factory=set)
    hang_on: set[str] = field(default_factory=set)
    # Hold each question until this many run at once (or all that are left do).
    gate: int | None = None
    total: int = 5
    release: threading.Event = field(default_factory=threading.Event)
    hanging: set[str] = field(default_factory=set)
    thread_ids: list[str] = field(default_factory=list)
    active: int = 0
    most_active: int = 0
    finished: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)

    def enter(self, thread_id: str) -> None:
        with self.changed:
            self.thread_ids.append(thread_id)
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.changed.notify_all()
            if self.gate is not None:
                gate = self.gate
                self.changed.wait_for(
                    lambda: self.active >= min(gate, self.total - self.finished),
                    timeout=GATE_TIMEOUT_S,
                )

    def leave(self) -> None:
        with self.changed:
            self.active -= 1
            self.finished += 1
            self.changed.notify_all()

    def hang(self, question_id: str) -> None:
        with self.changed:
            self.hanging.add(question_id)
        self.release.wait()
        with self.changed:
            self.hanging.discard(question_id)
        raise RuntimeError(f"{question_id} released after the test")


SCRIPT = Script()


class ScriptedGraph:
    """Scout's real graph, except where :data:`SCRIPT` says otherwise."""

    def __init__(self) -> None:
        self.graph = build_graph()

    def invoke(self, graph_input: Any, config: Any = None, **kwargs: Any) -> Any:
        script = SCRIPT
        thread_id = str(config["configurable"]["thread_id"])
        question_id = thread_id.rsplit(":", 1)[-1]
        script.enter(thread_id)
        try:
            if question_id in script.raise_on:
                raise RuntimeError(f"graph broke on {question_id}")
            if question_id in script.hang_on:
                script.hang(question_id)
            return self.graph.invoke(graph_input, config, **kwargs)
        finally:
            script.leave()


def scripted_graph() -> Any:
    """The graph factory that PassConfig(graph=SCRIPTED_GRAPH) loads."""
    return ScriptedGraph()


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Iterator[Script]:
    fresh = Script()
    monkeypatch.setattr(sys.modules[__name__], "SCRIPT", fresh)
    yield fresh
    fresh.release.set()  # let hung question threads end


# Judges ------------------------------------------------------------------------


class RaisingJudge:
    """The offline judge, except that it raises on one question."""

    model = "test/raising-judge"
    version = "raising-1"

    def __init__(self, question_id: str) -> None:
        self.question_id = question_id
        self.inner = OfflineJudge()

    def grade(self, item: GradingInput) -> Grading:
        if item.question.id == self.question_id:
            raise RuntimeError("the judge crashed")
        grading = self.inner.grade(item)
        return dataclasses.replace(
            grading, judge_model=self.model, judge_version=self.version
        )


def verdict_responder(garbled_question: str) -> Callable[[dict[str, Any]], Any]:
    """An LLM judge endpoint: a valid verdict, except prose for one question."""

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        user = str(request["messages"][1]["content"])
        asked = re.search(r"Question the agent was asked:\n(.*)", user)
        if asked and asked.group(1).strip() == garbled_question:
            return completion("I would rate this report quite highly overall.")
        verdict = {
            metric: {"score": 4, "rationale": f"{metric} is fine"} for metric in METRICS
        }
        return completion(json.dumps(verdict))

    return respond


# Running and reading a pass ------------------------------------------------------


def pass_config(**overrides: Any) -> PassConfig:
    return PassConfig(golden_file=DEFAULT_GOLDEN_FILE, **overrides)


def run_pass(
    db_url: str,
    config: PassConfig,
    *,
    judge: Any = None,
    on_question: Callable[[QuestionReport], None] | None = None,
    cancel: threading.Event | None = None,
) -> PassReport:
    prepared = prepare_pass(config)
    if judge is not None:
        prepared = dataclasses.replace(prepared, judge=judge)
    engine = make_engine(db_url)
    try:
        runner = PassRunner(
            engine, config, prepared, on_question=on_question, cancel=cancel
        )
        return runner.run()
    finally:
        engine.dispose()


@dataclass
class Stored:
    run: Run
    results: dict[str, Result]
    scores: dict[str, list[Score]]
    usage: dict[str, list[Usage]]

    def values(self) -> list[float | None]:
        return [score.value for rows in self.scores.values() for score in rows]


def stored(db_url: str, run_id: str) -> Stored:
    """The run as a fresh connection reads it back."""
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as session:
            run = session.get_one(Run, run_id)
            results = list(
                session.scalars(select(Result).where(Result.run_id == run_id))
            )
            by_id = {result.id: result.question_id for result in results}
            scores: dict[str, list[Score]] = {r.question_id: [] for r in results}
            for score in session.scalars(select(Score).where(Score.run_id == run_id)):
                scores[by_id[score.result_id]].append(score)
            usage: dict[str, list[Usage]] = {r.question_id: [] for r in results}
            for row in session.scalars(
                select(Usage).where(Usage.result_id.in_(list(by_id)))
            ):
                usage[by_id[row.result_id]].append(row)
    finally:
        engine.dispose()
    return Stored(run, {r.question_id: r for r in results}, scores, usage)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database, for tests where the backend does not matter."""
    url = f"sqlite:///{tmp_path / 'results.db'}"
    upgrade_database(url)
    return url


# A complete pass ----------------------------------------------------------------


def test_a_pass_stores_five_graded_results_and_the_run_versions(
    migrated_db_url: str,
) -> None:
    config = pass_config(threshold=0.65)
    printed: list[QuestionReport] = []

    report = run_pass(migrated_db_url, config, on_question=printed.append)

    saved = stored(migrated_db_url, report.run.id)
    run = saved.run
    assert run.status == "completed" and run.error is None
    assert sorted(saved.results) == sorted(SUBSET)
    assert sorted(item.question_id for item in printed) == sorted(SUBSET)
    for question_id, result in saved.results.items():
        assert result.status == "completed", result.error
        assert result.report and result.sources and result.checks
        assert set(result.node_visits or []) == set(NODE_NAMES)
        assert result.worker_turns and result.duration_seconds
        assert sorted(s.metric for s in saved.scores[question_id]) == sorted(METRICS)
    values = saved.values()
    assert None not in values
    assert run.score == pytest.approx(fmean(v for v in values if v is not None) / 5)

    sha, dirty = git_revision()
    golden = load_golden(DEFAULT_GOLDEN_FILE)
    prepared = prepare_pass(config)
    assert (run.prompt_version, run.model) == (PROMPT_VERSION, OFFLINE_MODEL_NAME)
    assert (run.judge_model, run.judge_version) == (
        OfflineJudge.model,
        OfflineJudge.version,
    )
    assert (run.git_sha, run.git_dirty) == (sha, dirty)
    assert run.golden_hash == golden.subset_hash(5)
    assert run.corpus_fingerprint == prepared.context.source.fingerprint
    assert run.threshold == 0.65
    assert run.questions_total == 5
    assert (run.questions_failed, run.questions_unscored) == (0, 0)
    assert run.wall_seconds and run.wall_seconds > 0
    usage = [row for rows in saved.usage.values() for row in rows]
    assert run.input_tokens == sum(row.input_tokens or 0 for row in usage) > 0
    assert run.output_tokens == sum(row.output_tokens or 0 for row in usage) > 0


def test_each_result_carries_the_tokens_and_cost_of_its_usage_rows(
    migrated_db_url: str,
) -> None:
    report = run_pass(migrated_db_url, pass_config(subset_size=2))

    saved = stored(migrated_db_url, report.run.id)
    for question_id, result in saved.results.items():
        rows = saved.usage[question_id]
        assert {row.node for row in rows} >= {"planner", "reader", "writer"}
        assert result.input_tokens == sum(row.input_tokens or 0 for row in rows) > 0
        assert result.output_tokens == sum(row.output_tokens or 0 for row in rows)
        assert result.cost == pytest.approx(sum(row.cost or 0.0 for row in rows))


def test_each_question_runs_in_its_own_thread_named_after_run_and_question(
    script: Script, sqlite_url: str
) -> None:

    report = run_pass(sqlite_url, pass_config(graph=SCRIPTED_GRAPH))

    expected = {f"{report.run.id}:{question_id}" for question_id in SUBSET}
    assert sorted(script.thread_ids) == sorted(expected)


# Questions that fail --------------------------------------------------------------


def test_a_question_whose_graph_raises_is_stored_failed_and_the_rest_are_graded(
    migrated_db_url: str, script: Script
) -> None:
    broken = SUBSET[1]
    script.raise_on = {broken}

    report = run_pass(migrated_db_url, pass_config(graph=SCRIPTED_GRAPH))

    saved = stored(migrated_db_url, report.run.id)
    assert saved.run.status == "completed"
    assert saved.run.questions_failed == 1
    failed = saved.results[broken]
    assert failed.status == "failed"
    assert failed.error == f"RuntimeError: graph broke on {broken}"
    assert failed.report is None and saved.scores[broken] == []
    others = {qid: r for qid, r in saved.results.items() if qid != broken}
    assert len(others) == 4
    assert all(result.status == "completed" for result in others.values())
    assert all(len(saved.scores[qid]) == 3 for qid in others)
    assert saved.run.score is not None


def test_a_question_that_hits_its_recursion_limit_is_stored_failed_with_why(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("SCOUT_RECURSION_LIMIT", "5")

    report = run_pass(sqlite_url, pass_config(subset_size=2))

    saved = stored(sqlite_url, report.run.id)
    assert saved.run.questions_failed == 2
    for result in saved.results.values():
        assert result.status == "failed"
        assert "recursion limit of 5" in (result.error or "")
    assert saved.run.score is None


# The limits below give the real questions (a fraction of a second each with the
# offline model) several times what they need, so a loaded machine does not fail
# them; the hung question would wait forever.


def test_a_question_that_outlives_its_timeout_is_failed_without_waiting_for_it(
    script: Script, sqlite_url: str
) -> None:
    hung = SUBSET[0]
    script.hang_on = {hung}
    config = pass_config(graph=SCRIPTED_GRAPH, subset_size=2, question_timeout=2.0)

    report = run_pass(sqlite_url, config)

    # The pass is over while the hung call is still blocked: it did not wait.
    assert script.hanging == {hung}
    saved = stored(sqlite_url, report.run.id)
    assert saved.run.status == "completed"
    assert saved.results[hung].status == "failed"
    assert saved.results[hung].error == "timed out after 2 s"
    assert saved.results[SUBSET[1]].status == "completed"


def test_the_pass_timeout_fails_the_pass_and_keeps_what_was_stored(
    script: Script, sqlite_url: str
) -> None:
    script.hang_on = {SUBSET[2]}
    config = pass_config(graph=SCRIPTED_GRAPH, subset_size=3, pass_timeout=3.0)

    report = run_pass(sqlite_url, config)

    assert script.hanging == {SUBSET[2]}
    saved = stored(sqlite_url, report.run.id)
    assert saved.run.status == "failed"
    assert saved.run.error == "pass timed out after 3.0 s"
    assert saved.results[SUBSET[2]].status == "failed"
    assert "pass timed out" in (saved.results[SUBSET[2]].error or "")
    for kept in SUBSET[:2]:
        assert saved.results[kept].status == "completed"
        assert len(saved.scores[kept]) == 3
    assert saved.run.score is not None and saved.run.finished_at is not None


def test_a_cancelled_pass_is_stored_aborted(script: Script, sqlite_url: str) -> None:
    script.hang_on = set(SUBSET[1:])
    cancel = threading.Event()

    report = run_pass(
        sqlite_url,
        pass_config(graph=SCRIPTED_GRAPH),
        cancel=cancel,
        on_question=lambda _: cancel.set(),
    )

    saved = stored(sqlite_url, report.run.id)
    assert saved.run.status == "aborted"
    assert saved.run.finished_at is not None
    assert saved.results[SUBSET[0]].status == "completed"
    for question_id in SUBSET[1:]:
        assert saved.results[question_id].status == "failed"
        assert saved.results[question_id].error == "the pass was aborted"


# Questions that cannot be graded --------------------------------------------------


def test_unparseable_verdict_is_unscored_not_zero(migrated_db_url: str) -> None:
    golden = load_golden(DEFAULT_GOLDEN_FILE)
    garbled = golden.subset(5)[3]
    with FakeOpenAI(verdict_responder(garbled.question)) as fake:
        settings = ScoutSettings(
            base_url=fake.base_url, api_key="sk-judge", rate_limit_rpm=60_000
        )
        judge = LLMJudge(make_client(settings), model="judge/model-1")

        report = run_pass(migrated_db_url, pass_config(), judge=judge)

    saved = stored(migrated_db_url, report.run.id)
    assert saved.results[garbled.id].status == "completed"
    unscored = saved.scores[garbled.id]
    assert [s.value for s in unscored] == [None, None, None]
    assert all("after one re-ask" in (s.error or "") for s in unscored)
    graded = [v for v in saved.values() if v is not None]
    assert len(graded) == 12
    assert saved.run.score == pytest.approx(fmean(graded) / 5) == pytest.approx(0.8)
    assert saved.run.questions_unscored == 1
    assert saved.run.metric_means == {metric: 4.0 for metric in METRICS}
    printed = {item.question_id: item for item in report.questions}
    assert printed[garbled.id].judge_error


def test_a_judge_that_raises_leaves_its_question_unscored(sqlite_url: str) -> None:
    crashed = SUBSET[2]

    report = run_pass(sqlite_url, pass_config(), judge=RaisingJudge(crashed))

    saved = stored(sqlite_url, report.run.id)
    assert saved.run.status == "completed"
    assert saved.results[crashed].status == "completed"
    assert [s.value for s in saved.scores[crashed]] == [None, None, None]
    assert all("the judge crashed" in (s.error or "") for s in saved.scores[crashed])
    graded = [v for v in saved.values() if v is not None]
    assert len(graded) == 12
    assert saved.run.score == pytest.approx(fmean(graded) / 5)
    assert saved.run.questions_unscored == 1


# Concurrency ----------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [5, 2])
def test_questions_run_concurrently_up_to_the_concurrency_setting(
    script: Script, sqlite_url: str, concurrency: int
) -> None:
    script.gate = concurrency

    report = run_pass(
        sqlite_url, pass_config(graph=SCRIPTED_GRAPH, concurrency=concurrency)
    )

    assert script.most_active == concurrency
    assert report.run.status == "completed"
    assert report.run.questions_failed == 0

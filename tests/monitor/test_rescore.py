"""``monitor rescore``: re-grading stored reports with no agent call.

The parent pass is real: Scout's offline backend answers three golden questions
once per module (real reports, real pages from the bundled corpus), and each
test stores them through the monitor's own pass runner and offline judge. From
then on the agent is booby-trapped: any call into it fails the test. The LLM
judge talks real HTTP to a local fake OpenAI server. Every database test runs on
SQLite and Postgres.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

import monitor.rescore as rescore_module
import scout.agent
import scout.config
import scout.graph
import scout.llm
import scout.observability
from monitor import cli, runner
from monitor.commands.rescore import rescore_command, stored_command
from monitor.errors import MonitorError
from monitor.golden import GoldenQuestion, load_golden
from monitor.judge import (
    METRICS,
    Grading,
    GradingInput,
    LLMJudge,
    MetricScore,
    OfflineJudge,
)
from monitor.rescore import NOTHING_TO_GRADE as NOTHING
from monitor.rescore import RescoreOptions, rescore
from monitor.settings import DEFAULT_GOLDEN_FILE
from monitor.store.db import session_factory
from monitor.store.models import PageText, Result, Run, Score, Usage, utcnow
from monitor.store.queries import history_runs
from scout.agent import AgentRun, make_context, run_question
from scout.config import ScoutSettings
from scout.state import ScoutContext
from tests.fakes.openai_server import FakeOpenAI, completion

SUBSET = 3


@dataclass
class Answers:
    """Real offline answers to the first golden questions, made once."""

    questions: list[GoldenQuestion]
    runs: dict[str, AgentRun]
    context: ScoutContext
    settings: ScoutSettings


@pytest.fixture(scope="module")
def answers(scout_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Answers:
    # Built from explicit values: no environment reaches a module fixture's setup.
    settings = ScoutSettings.model_validate(
        {
            "backend": "offline",
            "cache_dir": str(scout_cache_dir),
            "usage_log": str(tmp_path_factory.mktemp("usage") / "usage.jsonl"),
        }
    )
    context = make_context(settings)
    questions = load_golden(DEFAULT_GOLDEN_FILE).subset(SUBSET)
    runs = {
        q.question: run_question(
            q.question, thread_id=f"fixture:{q.id}", context=context, settings=settings
        )
        for q in questions
    }
    return Answers(questions, runs, context, settings)


def agent_called(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the agent was called during a rescore")


def store_pass(
    engine: Engine, answers: Answers, monkeypatch: pytest.MonkeyPatch
) -> Run:
    """A pass stored by the real runner and offline judge; the agent's answers
    are the module's, and afterwards every way into the agent raises."""
    monkeypatch.setattr(
        runner, "run_question", lambda question, **_: answers.runs[question]
    )
    prepared = runner.PreparedPass(
        questions=answers.questions,
        golden_hash=load_golden(DEFAULT_GOLDEN_FILE).subset_hash(SUBSET),
        context=answers.context,
        judge=OfflineJudge(),
        scout_settings=answers.settings,
        graph_factory=lambda: None,  # type: ignore[arg-type,return-value]
    )
    config = runner.PassConfig(
        golden_file=DEFAULT_GOLDEN_FILE, subset_size=SUBSET, judge="offline"
    )
    run = runner.PassRunner(engine, config, prepared).run().run

    for module, name in (
        (runner, "run_question"),
        (scout.agent, "run_question"),
        (scout.agent, "build_graph"),
        (scout.graph, "build_graph"),
    ):
        monkeypatch.setattr(module, name, agent_called)
    return run


@pytest.fixture
def parent(engine: Engine, answers: Answers, monkeypatch: pytest.MonkeyPatch) -> Run:
    return store_pass(engine, answers, monkeypatch)


def options(**overrides: Any) -> RescoreOptions:
    values: dict[str, Any] = {"golden_file": DEFAULT_GOLDEN_FILE, "judge": "offline"}
    return RescoreOptions(**(values | overrides))


class FixedJudge:
    """A judge that gives every metric the same value: a stand-in for a model."""

    model = "fixed/judge-1"
    version = "fixed-1"

    def __init__(self, value: float) -> None:
        self.value = value
        self.seen: list[GradingInput] = []

    def grade(self, item: GradingInput) -> Grading:
        self.seen.append(item)
        scores = {m: MetricScore(m, self.value, f"fixed {self.value}") for m in METRICS}
        return Grading(scores, self.model, self.version)


def use_judge(monkeypatch: pytest.MonkeyPatch, judge: FixedJudge) -> None:
    monkeypatch.setattr(rescore_module, "make_judge", lambda *a, **k: judge)


def rows(session: Session, model: type, *where: Any) -> list[dict[str, Any]]:
    """Every column of every matching row, for before/after comparisons."""
    columns = model.__table__.columns  # type: ignore[attr-defined]
    found = session.scalars(select(model).where(*where)).all()
    return sorted(
        ({c.key: getattr(row, c.key) for c in columns} for row in found),
        key=lambda row: str(row.get("id", row.get("content_hash"))),
    )


def snapshot(engine: Engine, run_id: str) -> dict[str, list[dict[str, Any]]]:
    with session_factory(engine)() as session:
        result_ids = select(Result.id).where(Result.run_id == run_id)
        return {
            "runs": rows(session, Run, Run.id == run_id),
            "results": rows(session, Result, Result.run_id == run_id),
            "scores": rows(session, Score, Score.run_id == run_id),
            "usage": rows(session, Usage, Usage.result_id.in_(result_ids)),
            "pages": rows(session, PageText),
        }


def scores_of(engine: Engine, run_id: str) -> list[Score]:
    with session_factory(engine)() as session:
        return list(session.scalars(select(Score).where(Score.run_id == run_id)))


def count_runs(engine: Engine) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(Run)) or 0)


# Re-grading ------------------------------------------------------------------------


def test_rescore_writes_a_new_run_linked_to_its_parent_with_no_agent_call(
    engine: Engine, parent: Run
) -> None:
    report = rescore(engine, parent.id, options())

    run = report.run
    assert run.kind == "rescore" and run.parent_run_id == parent.id
    assert run.status == "completed"
    assert run.judge_version == OfflineJudge.version
    assert (run.prompt_version, run.model, run.golden_hash) == (
        parent.prompt_version,
        parent.model,
        parent.golden_hash,
    )
    # Same deterministic judge, same stored inputs: the very same grades,
    # which shows the judge saw the reports and page texts the pass graded.
    new = {(s.result_id, s.metric): s.value for s in scores_of(engine, run.id)}
    old = {(s.result_id, s.metric): s.value for s in scores_of(engine, parent.id)}
    assert new == old and len(new) == SUBSET * len(METRICS)
    assert run.score == pytest.approx(parent.score)


def test_rescore_leaves_the_parents_rows_exactly_as_they_were(
    engine: Engine, parent: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_judge(monkeypatch, FixedJudge(1.0))
    before = snapshot(engine, parent.id)

    report = rescore(engine, parent.id, options())

    assert snapshot(engine, parent.id) == before
    assert report.run.score == pytest.approx(0.2)
    parent_results = {row["id"] for row in before["results"]}
    new_scores = scores_of(engine, report.run.id)
    assert {s.result_id for s in new_scores} == parent_results
    assert {s.value for s in new_scores} == {1.0}


def test_the_judge_gets_the_stored_pages_and_the_golden_key_points(
    engine: Engine, parent: Run, monkeypatch: pytest.MonkeyPatch, answers: Answers
) -> None:
    judge = FixedJudge(3.0)
    use_judge(monkeypatch, judge)

    rescore(engine, parent.id, options())

    seen = {item.question.id: item for item in judge.seen}
    for question in answers.questions:
        agent_run = answers.runs[question.question]
        item = seen[question.id]
        assert item.report == agent_run.report
        assert item.question.key_points == question.key_points
        assert item.pages == {page["url"]: page["text"] for page in agent_run.pages}


def test_repeat_stores_k_attempts_and_measures_the_judges_spread(
    engine: Engine, parent: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    grounding = iter([3, 4, 5] * SUBSET)

    def verdict(request: dict[str, Any]) -> dict[str, Any]:
        scores = {"grounding": next(grounding), "coverage": 4, "citations": 5}
        body = {m: {"score": s, "rationale": "r"} for m, s in scores.items()}
        return completion(json.dumps(body))

    with FakeOpenAI(verdict) as fake:
        monkeypatch.setenv("SCOUT_BASE_URL", fake.base_url)
        monkeypatch.setenv("SCOUT_API_KEY", "test-key")
        monkeypatch.setenv("SCOUT_RATE_LIMIT_RPM", "60000")
        monkeypatch.setenv("SCOUT_MAX_RETRIES", "0")
        scout.config.get_settings.cache_clear()
        # One grading at a time, so each question gets 3, 4 and 5 in turn.
        report = rescore(
            engine, parent.id, options(judge="llm", repeat=3, concurrency=1)
        )
        prompts = [str(r["messages"][-1]["content"]) for r in fake.requests]

    assert len(prompts) == SUBSET * 3
    assert report.run.judge_version.startswith("llm-judge-")
    attempts = {
        (s.result_id, s.metric, s.attempt) for s in scores_of(engine, report.run.id)
    }
    assert {a for _, _, a in attempts} == {0, 1, 2}
    assert len(attempts) == SUBSET * len(METRICS) * 3
    spread = {s.name: s for s in report.spread}
    assert spread["grounding"].pooled_sd == pytest.approx(1.0)
    assert spread["grounding"].max_range == pytest.approx(2.0)
    assert spread["coverage"].pooled_sd == pytest.approx(0.0)
    # Attempt scores 12/15, 13/15, 14/15: one fifteenth apart.
    assert spread["score"].pooled_sd == pytest.approx(1 / 15)
    assert report.run.score == pytest.approx((4 + 4 + 5) / 3 / 5)


def test_threshold_applies_the_quality_rule_to_the_new_grading(
    engine: Engine,
    parent: Run,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use_judge(monkeypatch, FixedJudge(2.0))  # score 0.4

    assert rescore_command(parent.id, options(threshold=0.5), as_json=False) == 2
    assert "ALERT: rescore" in capsys.readouterr().err
    assert rescore_command(parent.id, options(threshold=0.3), as_json=False) == 0
    assert "OK: score 0.400 is at or above threshold 0.30" in capsys.readouterr().out
    assert rescore_command(parent.id, options(), as_json=True) == 0  # no gate
    printed = json.loads(capsys.readouterr().out)
    assert printed["run"]["parent_run_id"] == parent.id
    assert printed["run"]["score"] == pytest.approx(0.4)


def test_a_failed_question_has_nothing_to_grade_and_the_rescore_says_so(
    engine: Engine,
    parent: Run,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with session_factory(engine).begin() as session:
        session.add(
            Result(
                run_id=parent.id,
                question_id="for-else",
                question="When is the else clause of a for loop executed?",
                status="failed",
                error="timed out after 600 s",
                finished_at=utcnow(),
            )
        )
    use_judge(monkeypatch, FixedJudge(4.0))

    code = rescore_command(parent.id, options(), as_json=False)

    out = capsys.readouterr().out
    assert code == 0
    line = next(line for line in out.splitlines() if "for-else" in line)
    assert line.split() == ["for-else", *NOTHING.format(run=parent.id).split()]
    with session_factory(engine)() as session:
        failed_id = session.scalar(
            select(Result.id).where(Result.question_id == "for-else")
        )
        rescore_id = session.scalar(select(Run.id).where(Run.kind == "rescore"))
    graded = {s.result_id for s in scores_of(engine, str(rescore_id))}
    assert failed_id not in graded and len(graded) == SUBSET


def test_a_run_with_no_report_to_grade_is_refused_and_writes_nothing(
    engine: Engine, parent: Run
) -> None:
    with session_factory(engine).begin() as session:
        session.execute(
            update(Result)
            .where(Result.run_id == parent.id)
            .values(status="failed", report=None)
        )
    runs = count_runs(engine)

    with pytest.raises(MonitorError, match="has no stored report to grade"):
        rescore(engine, parent.id, options())
    assert count_runs(engine) == runs


def test_rescoring_a_rescore_regrades_the_original_pass(
    engine: Engine, parent: Run
) -> None:
    first = rescore(engine, parent.id, options()).run

    second = rescore(engine, first.id, options())

    assert second.run.parent_run_id == parent.id
    assert any("is a rescore" in note for note in second.notes)


def test_a_changed_golden_file_is_noted_and_changes_the_golden_hash(
    engine: Engine, parent: Run, tmp_path: Path
) -> None:
    changed = tmp_path / "questions.toml"
    text = DEFAULT_GOLDEN_FILE.read_text(encoding="utf-8")
    changed.write_text(text.replace("will always be called", "is always called"))

    report = rescore(engine, parent.id, options(golden_file=changed))

    assert report.run.golden_hash != parent.golden_hash
    assert any("changed since run" in note for note in report.notes)


# Langfuse --------------------------------------------------------------------------


def set_trace_ids(engine: Engine, run_id: str) -> dict[int, str]:
    with session_factory(engine).begin() as session:
        results = session.scalars(select(Result).where(Result.run_id == run_id)).all()
        for result in results:
            result.trace_id = f"{result.id:032x}"
        return {result.id: str(result.trace_id) for result in results}


def test_new_scores_go_onto_the_original_traces_tagged_with_the_judge_version(
    engine: Engine, parent: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    traces = set_trace_ids(engine, parent.id)
    recorded: list[tuple[str, list[Any], str]] = []
    monkeypatch.setattr(
        rescore_module,
        "record_scores",
        lambda trace, scores, judge_version: recorded.append(
            (trace, scores, judge_version)
        ),
    )
    use_judge(monkeypatch, FixedJudge(3.0))

    rescore(engine, parent.id, options())

    assert sorted(trace for trace, _, _ in recorded) == sorted(traces.values())
    assert {version for _, _, version in recorded} == {FixedJudge.version}
    assert all(
        sorted(name for name, _, _ in scores) == sorted(METRICS)
        for _, scores, _ in recorded
    )


class BrokenLangfuse:
    def create_score(self, **_: Any) -> None:
        raise ConnectionError("langfuse is down")


def test_a_failure_to_write_scores_to_langfuse_is_logged_and_not_fatal(
    engine: Engine,
    parent: Run,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    set_trace_ids(engine, parent.id)
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-test")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-test")
    monkeypatch.setattr(scout.observability, "_client", lambda: BrokenLangfuse())

    with caplog.at_level(logging.WARNING):
        report = rescore(engine, parent.id, options())

    assert report.run.status == "completed"
    assert caplog.text.count("could not record 3 scores") == SUBSET
    assert "sk-lf-test" not in caplog.text


# Stored scores ---------------------------------------------------------------------


def test_stored_reapplies_a_threshold_with_no_model_call_and_no_new_run(
    engine: Engine,
    parent: Run,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(rescore_module, "make_judge", agent_called)
    monkeypatch.setattr(scout.llm, "make_client", agent_called)
    monkeypatch.setattr(OfflineJudge, "grade", agent_called)
    monkeypatch.setattr(LLMJudge, "grade", agent_called)
    runs = count_runs(engine)
    assert parent.score is not None and 0.5 < parent.score < 0.99

    assert stored_command(parent.id, 0.99, as_json=False) == 2
    assert "ALERT: stored scores of run" in capsys.readouterr().err
    assert stored_command(parent.id, 0.5, as_json=False) == 0
    assert stored_command(parent.id, None, as_json=True) == 0  # the run's own 0.70
    assert count_runs(engine) == runs


def test_stored_on_a_run_with_no_measured_score_says_nothing_to_evaluate(
    engine: Engine, parent: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    with session_factory(engine).begin() as session:
        session.execute(update(Score).values(value=None, error="unparsable verdict"))
        session.execute(update(Run).values(status="aborted", score=None))

    code = exit_code(["rescore", parent.id, "--stored", "--threshold", "0.5"])

    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.count("\n") == 1
    assert f"nothing to evaluate: no measured score in run '{parent.id}'" in (
        captured.err
    )
    assert "ALERT" not in captured.err + captured.out
    assert "Score:" not in captured.out


# History and the command line ------------------------------------------------------


def test_history_shows_rescores_under_their_parent(
    engine: Engine,
    parent: Run,
    answers: Answers,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rescored = rescore(engine, parent.id, options()).run
    newer = store_pass(engine, answers, monkeypatch)

    with session_factory(engine)() as session:
        order = [run.id for run in history_runs(session, 10)]
    assert order == [newer.id, parent.id, rescored.id]

    assert exit_code(["history", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [run["id"] for run in listed] == order
    assert listed[2]["parent_run_id"] == parent.id


def exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    return int(stopped.value.code or 0)


def test_the_command_line_rescores_and_gates_and_refuses_bad_flags(
    engine: Engine, parent: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["rescore", parent.id, "--judge", "offline"]) == 0
    assert exit_code(["rescore", parent.id, "--stored", "--threshold", "0.99"]) == 2
    assert exit_code(["rescore", parent.id, "--stored", "--repeat", "2"]) == 64
    assert exit_code(["rescore", parent.id, "--judge", "gpt"]) == 64
    assert exit_code(["rescore", parent.id[:-1] + "X"]) == 1
    err = capsys.readouterr().err
    assert f"nearest: {parent.id}" in err
    assert "Traceback" not in err

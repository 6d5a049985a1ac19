"""The alert rules on a synthetic history, on SQLite and on Postgres.

The history is written through the store's own writes (results, scores, usage,
then ``finish_run`` for the aggregates), one pass every four hours. The helpers
here (``History``, ``noisy``, ``options``) serve the lifecycle and command tests
too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine

from monitor.alerts import AlertOptions, process_pass_alerts
from monitor.alerts import rules as rules_module
from monitor.alerts.baselines import pin_baseline
from monitor.alerts.evidence import Evidence
from monitor.alerts.rules import Check, evaluate_rules
from monitor.store.db import session_factory
from monitor.store.models import METRICS, Result, Run, Score
from monitor.store.writes import finish_run, insert_result
from scout.observability import UsageRow

QUESTIONS = ("q1", "q2", "q3", "q4", "q5")
START = datetime(2026, 1, 5, tzinfo=UTC)
PASS_INTERVAL = timedelta(hours=4)
SECRET_PATH = "/services/T0SECRET/B0SECRET/xoxb-do-not-leak"

Values = float | Mapping[str, Sequence[float]]


# A synthetic history -----------------------------------------------------------------


@dataclass
class History:
    """Writes passes one pass interval apart, as the runner would store them."""

    engine: Engine
    count: int = 0
    runs: list[Run] = field(default_factory=list)

    def add(
        self,
        values: Values = 4.0,
        *,
        version: str = "v1",
        status: str = "completed",
        failed: Sequence[str] = (),
        unscored: Sequence[str] = (),
        tokens: tuple[int, int] = (100, 50),
        writer_tokens: tuple[int, int] = (200, 100),
        cost: float = 0.001,
        seconds: float = 1.0,
        content_hash: str = "h1",
        threshold: float = 0.70,
        corpus: str = "corpus-1",
        backend: str = "local",
    ) -> Run:
        """One pass; ``values`` are the metric values (1-5) of every question,
        or per question the values of (grounding, coverage, citations)."""
        sessions = session_factory(self.engine)
        run_id = f"run-{self.count:03d}"
        with sessions.begin() as session:
            session.add(
                Run(
                    id=run_id,
                    kind="scheduled",
                    status="running",
                    started_at=START + self.count * PASS_INTERVAL,
                    prompt_version=version,
                    model="test/model-1",
                    git_sha="abc123",
                    golden_hash="golden-1",
                    corpus_fingerprint=corpus,
                    sources_backend=backend,
                    judge_model="test/judge-1",
                    judge_version="judge-v1",
                    threshold=threshold,
                    questions_total=len(QUESTIONS),
                )
            )
        for question in QUESTIONS:
            self._question(
                sessions,
                run_id,
                question,
                values,
                failed=question in failed,
                unscored=question in unscored,
                usage=[
                    UsageRow("planner", "test/model-1", *tokens, seconds / 2, cost),
                    UsageRow(
                        "writer", "test/model-1", *writer_tokens, seconds / 2, cost
                    ),
                ],
                seconds=seconds,
                content_hash=content_hash,
            )
        run = finish_run(sessions, run_id, status=status)
        self.count += 1
        self.runs.append(run)
        return run

    def _question(
        self,
        sessions: Any,
        run_id: str,
        question: str,
        values: Values,
        *,
        failed: bool,
        unscored: bool,
        usage: list[UsageRow],
        seconds: float,
        content_hash: str,
    ) -> None:
        result = Result(
            run_id=run_id,
            question_id=question,
            question=f"What about {question}?",
            status="failed" if failed else "completed",
            error="ScoutError: the model timed out" if failed else None,
            report=None if failed else f"A report on {question} [1].",
            sources=None
            if failed
            else [
                {
                    "url": f"https://docs.example/{question}",
                    "title": question,
                    "content_hash": content_hash,
                }
            ],
            duration_seconds=seconds,
            finished_at=START,
        )
        scores = [] if failed else self._scores(run_id, question, values, unscored)
        insert_result(sessions, result, scores=scores, usage=usage)

    def _scores(
        self, run_id: str, question: str, values: Values, unscored: bool
    ) -> list[Score]:
        if isinstance(values, int | float):
            per_metric: Sequence[float] = [float(values)] * len(METRICS)
        else:
            per_metric = values[question]
        return [
            Score(
                run_id=run_id,
                metric=metric,
                value=None if unscored else value,
                error="the verdict could not be parsed" if unscored else None,
                judge_model="test/judge-1",
                judge_version="judge-v1",
            )
            for metric, value in zip(METRICS, per_metric, strict=True)
        ]


def noisy(
    rng: np.random.Generator, level: float, sd: float = 0.15, **shift: float
) -> dict[str, list[float]]:
    """Metric values around ``level`` per question; ``shift`` moves one metric."""
    return {
        question: [
            float(np.clip(level + shift.get(metric, 0.0) + rng.normal(0, sd), 1, 5))
            for metric in METRICS
        ]
        for question in QUESTIONS
    }


@pytest.fixture
def history(engine: Engine) -> History:
    return History(engine)


class Clock:
    """A settable clock for the lifecycle: reminders depend on elapsed time."""

    def __init__(self) -> None:
        self.now = START + timedelta(days=30)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def options(clock: Clock | None = None, **overrides: Any) -> AlertOptions:
    base = AlertOptions(webhook_backoff=0.0, webhook_timeout=5.0)
    if clock is not None:
        base = base.with_overrides(clock=clock)
    return base.with_overrides(**overrides)


def checks_for(engine: Engine, run: Run, **overrides: Any) -> dict[str, Check]:
    with session_factory(engine)() as session:
        found = evaluate_rules(session, run, options(**overrides))
    return {check.key: check for check in found}


# Quality -------------------------------------------------------------------------


def test_quality_fires_when_the_rolling_score_is_confidently_below_threshold(
    engine: Engine, history: History
) -> None:
    rng = np.random.default_rng(1)
    for _ in range(3):
        run = history.add(noisy(rng, 3.0))

    check = checks_for(engine, run)["quality"]

    assert check.status == "firing"
    assert check.finding is not None
    figures = check.finding.details["figures"]
    assert figures["rolling_score"] == pytest.approx(0.6, abs=0.03)
    assert figures["upper_bound"] < 0.70
    assert figures["window_runs"] == 3
    assert check.fingerprint == "quality|prompt_version=v1"
    line = check.finding.line
    assert f"rolling score {figures['rolling_score']:.3f}" in line
    assert "threshold 0.70" in line
    assert "90% upper bound" in line and "runbook.md, scenario 1" in line


def test_quality_holds_when_the_rolling_score_dips_within_its_noise(
    engine: Engine, history: History
) -> None:
    # Run scores 0.74, 0.62, 0.70: a mean of 0.687, below 0.70, but the spread
    # puts the 90% upper bound above it.
    for level in (3.7, 3.1, 3.5):
        run = history.add(level)

    check = checks_for(engine, run)["quality"]

    assert check.status == "hold"
    assert check.finding is not None
    assert check.finding.details["figures"]["rolling_score"] < 0.70
    assert check.finding.details["figures"]["upper_bound"] > 0.70


def test_quality_clears_when_the_rolling_score_is_at_or_above_threshold(
    engine: Engine, history: History
) -> None:
    for level in (3.5, 3.5, 3.5):
        run = history.add(level)

    assert checks_for(engine, run)["quality"].status == "clear"


def test_quality_names_the_metric_that_dropped_and_a_changed_source(
    engine: Engine, history: History
) -> None:
    rng = np.random.default_rng(2)
    for _ in range(3):
        history.add(noisy(rng, 4.0))
    for _ in range(3):
        run = history.add(noisy(rng, 3.5, coverage=-1.5), content_hash="h2")

    check = checks_for(engine, run)["quality"]

    assert check.status == "firing"
    assert check.finding is not None
    evidence = check.finding.details["evidence"]
    assert evidence["metric_drop"]["metric"] == "coverage"
    assert "https://docs.example/q1" in evidence["sources_changed"]
    assert "coverage dropped most" in check.finding.line
    assert "5 source page(s) changed content" in check.finding.line
    assert "no version marker changed" in check.finding.line


def test_quality_names_a_corpus_or_sources_backend_change_in_its_window(
    engine: Engine, history: History
) -> None:
    history.add(3.0)
    history.add(3.0, corpus="corpus-2")
    run = history.add(3.0, corpus="corpus-2", backend="snapshot:1")

    check = checks_for(engine, run)["quality"]

    assert check.finding is not None
    changed = check.finding.details["evidence"]["changed"]
    assert changed["corpus_fingerprint"] == ["corpus-1", "corpus-2"]
    assert changed["sources_backend"] == ["local", "snapshot:1"]
    assert "corpus_fingerprint corpus-1 -> corpus-2" in check.finding.line
    assert "sources_backend local -> snapshot:1" in check.finding.line
    assert "no version marker changed" not in check.finding.line


def test_evidence_says_no_metric_dropped_when_none_fell() -> None:
    steady = Evidence(
        metric_drop={"metric": "grounding", "before": 4.8412, "after": 4.8391}
    )
    fell = Evidence(metric_drop={"metric": "coverage", "before": 4.5, "after": 3.9})

    assert "no metric dropped" in steady.summary()
    assert "dropped most" not in steady.summary()
    assert "coverage dropped most (4.50 -> 3.90)" in fell.summary()


# Regression ------------------------------------------------------------------------


def test_regression_fires_when_a_new_version_drops_beyond_the_margin(
    engine: Engine, history: History
) -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        history.add(noisy(rng, 4.2), version="v1")
    for _ in range(3):
        run = history.add(noisy(rng, 4.2, citations=-2.0), version="v2")

    check = checks_for(engine, run)["regression"]

    assert check.status == "firing"
    assert check.fingerprint == "regression|prompt_version=v2"
    assert check.finding is not None
    figures = check.finding.details["figures"]
    assert figures["delta"] < -0.05 and figures["upper_bound"] < 0
    assert figures["baseline_version"] == "v1"
    assert len(figures["baseline_runs"]) == 5 and len(figures["current_runs"]) == 3
    assert (
        figures["metrics"]["citations"]["delta"]
        < figures["metrics"]["coverage"]["delta"]
    )
    line = check.finding.line
    assert "prompt_version=v2" in line and "prompt_version=v1" in line
    assert "citations dropped most" in line
    assert "prompt_version v1 -> v2" in line
    assert "smallest detectable drop" in line


def test_regression_waits_for_three_runs_of_the_new_version(
    engine: Engine, history: History
) -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        history.add(noisy(rng, 4.2), version="v1")
    for _ in range(2):
        run = history.add(noisy(rng, 2.5), version="v2")

    check = checks_for(engine, run)["regression"]

    assert check.status == "hold"
    assert "2 of 3 runs" in check.reason


def test_regression_clears_when_the_new_version_scores_the_same(
    engine: Engine, history: History
) -> None:
    rng = np.random.default_rng(5)
    for _ in range(5):
        history.add(noisy(rng, 4.0), version="v1")
    for _ in range(3):
        run = history.add(noisy(rng, 4.0), version="v2")

    assert checks_for(engine, run)["regression"].status == "clear"


def test_regression_follows_the_chosen_version_key(
    engine: Engine, history: History
) -> None:
    rng = np.random.default_rng(6)
    for _ in range(5):
        history.add(noisy(rng, 4.2), version="v1")
    for _ in range(3):
        run = history.add(noisy(rng, 3.0), version="v2")

    # Every run has the same model, so by model there is no earlier version.
    check = checks_for(engine, run, version_key="model")["regression"]

    assert check.status == "hold"
    assert check.fingerprint == "regression|model=test/model-1"


def test_a_pinned_baseline_of_the_same_version_catches_drift_within_it(
    engine: Engine, history: History
) -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        history.add(noisy(rng, 4.2))
    with session_factory(engine).begin() as session:
        pin_baseline(session, "v1", "prompt_version", 5)
    for _ in range(3):
        run = history.add(noisy(rng, 3.4))

    check = checks_for(engine, run)["regression"]

    assert check.status == "firing"
    assert check.finding is not None
    figures = check.finding.details["figures"]
    assert figures["baseline_pinned"] is True
    assert figures["baseline_runs"] == [r.id for r in history.runs[:5]][::-1]
    assert "pinned baseline" in check.finding.line


# Budget ----------------------------------------------------------------------------


def test_budget_fires_above_the_token_and_cost_limits_and_names_the_node(
    engine: Engine, history: History
) -> None:
    for _ in range(3):
        history.add()
    run = history.add(writer_tokens=(2000, 1000), cost=0.01)

    checks = checks_for(engine, run, max_tokens=5000, max_cost=0.05)

    tokens, cost = checks["budget:tokens"], checks["budget:cost"]
    assert tokens.status == "firing" and cost.status == "firing"
    assert tokens.finding is not None and cost.finding is not None
    assert tokens.finding.details["figures"]["tokens"] == 5 * (150 + 3000)
    assert tokens.finding.details["figures"]["median_before"] == 5 * (150 + 300)
    assert tokens.finding.details["evidence"]["node_growth"]["node"] == "writer"
    assert "scenario 3 (cost per run rising)" in tokens.finding.line
    assert "node writer grew most" in tokens.finding.line
    assert cost.finding.details["figures"]["cost"] == pytest.approx(0.1)


def test_budget_stays_quiet_within_its_limits_and_without_limits(
    engine: Engine, history: History
) -> None:
    run = history.add()

    within = checks_for(engine, run, max_tokens=5000, max_cost=1.0, max_p95=5.0)
    unset = checks_for(engine, run)

    for key in ("budget:tokens", "budget:cost", "budget:p95"):
        assert within[key].status == "clear"
        assert unset[key].status == "clear"
        assert unset[key].reason == "no limit set"


def test_budget_fires_when_p95_latency_over_recent_runs_exceeds_its_limit(
    engine: Engine, history: History
) -> None:
    for _ in range(10):
        history.add(seconds=1.0)
    quiet = checks_for(engine, history.runs[-1], max_p95=10.0)["budget:p95"]
    for _ in range(3):
        run = history.add(seconds=30.0)

    check = checks_for(engine, run, max_p95=10.0)["budget:p95"]

    assert quiet.status == "clear"
    assert check.status == "firing"
    assert check.finding is not None
    figures = check.finding.details["figures"]
    assert figures["p95_seconds"] == pytest.approx(30.0)
    assert figures["p95_before"] == pytest.approx(1.0)
    assert figures["questions"] == 50
    assert "scenario 2 (p95 latency rising)" in check.finding.line
    assert "p95 question latency 30 s" in check.finding.line
    assert "above the limit 10 s; 1 s over the 3 passes before" in (check.finding.line)


def test_a_small_p95_limit_is_shown_with_its_digits(
    engine: Engine, history: History
) -> None:
    run = history.add(seconds=0.3)

    check = checks_for(engine, run, max_p95=0.01)["budget:p95"]

    assert check.finding is not None
    assert "above the limit 0.01 s" in check.finding.line
    assert "0.0 s" not in check.finding.line


# Failures --------------------------------------------------------------------------


def test_failures_fire_on_a_failed_question_and_on_an_unscored_one(
    engine: Engine, history: History
) -> None:
    history.add()
    run = history.add(failed=["q2"], unscored=["q3"])

    checks = checks_for(engine, run)

    tasks, judge = checks["failures:tasks"], checks["failures:judge"]
    assert tasks.status == "firing" and judge.status == "firing"
    assert tasks.finding is not None and judge.finding is not None
    assert tasks.finding.details["figures"]["success_rate"] == pytest.approx(0.8)
    assert "1 of 5 questions produced no graded report" in tasks.finding.line
    assert "q2: ScoutError: the model timed out" in tasks.finding.line
    assert judge.finding.details["figures"]["unscored_questions"] == ["q3"]
    assert "scenario 4 (passes failing)" in judge.finding.line


def test_a_lower_success_minimum_lets_one_failed_question_pass(
    engine: Engine, history: History
) -> None:
    run = history.add(failed=["q2"])

    assert checks_for(engine, run)["failures:tasks"].status == "firing"
    relaxed = checks_for(engine, run, min_success_rate=0.8)
    assert relaxed["failures:tasks"].status == "clear"


def test_an_aborted_pass_opens_no_alert(engine: Engine, history: History) -> None:
    run = history.add(failed=list(QUESTIONS), status="aborted")

    outcome = process_pass_alerts(engine, run, options())

    assert outcome.firing == [] and outcome.opened == []


def test_a_rule_that_raises_is_skipped_and_the_others_still_run(
    engine: Engine, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx: Any) -> list[Check]:
        raise RuntimeError("a bug in one rule")

    rules = dict(rules_module.RULES)
    rules["quality"] = broken
    monkeypatch.setattr(rules_module, "RULES", tuple(rules.items()))
    run = history.add(failed=["q1"])

    checks = checks_for(engine, run)

    assert "quality" not in checks
    assert checks["failures:tasks"].status == "firing"

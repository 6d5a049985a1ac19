"""``monitor compare``: verdicts, intervals, refusals and exit codes.

Runs are written through the store's own write path (insert_run, insert_result,
finish_run) with scores chosen so that the right answer is known: a clear drop,
a clear gain, or noise alone. Every database test runs on SQLite and Postgres.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import fmean
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from monitor import cli
from monitor.commands.compare import compare_command
from monitor.compare import (
    IMPROVED,
    NO_CHANGE,
    REGRESSED,
    CompareOptions,
    compare,
    compare_metric,
)
from monitor.errors import MonitorError, NotFoundError
from monitor.store.db import session_factory
from monitor.store.models import METRICS, Result, Run, Score
from monitor.store.writes import finish_run, insert_result, insert_run
from scout.observability import UsageRow

QUESTIONS = ("q1", "q2", "q3", "q4", "q5")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHA_A = "a" * 40
SHA_B = "b1" + "c" * 38
ALL_PASS = {"non_empty": True, "citations_resolve": True}


@dataclass
class Spec:
    """One synthetic run: a value per question (every metric gets it)."""

    run_id: str
    values: dict[str, float]
    minutes: int
    prompt_version: str = "v1"
    model: str = "model-a"
    git_sha: str = SHA_A
    kind: str = "manual"
    status: str = "completed"
    parent: str | None = None
    golden_hash: str = "gold-1"
    judge_version: str = "judge-1"
    judge_model: str = "judge/model-1"
    tokens: int = 1000
    cost: float = 0.01
    seconds: float = 2.0
    checks: dict[str, dict[str, bool]] = field(default_factory=dict)
    failed: tuple[str, ...] = ()


def add_run(sessions: sessionmaker[Session], spec: Spec) -> None:
    """Store a run as a pass stores it (a rescore grades its parent's results)."""
    insert_run(
        sessions,
        id=spec.run_id,
        kind=spec.kind,
        parent_run_id=spec.parent,
        prompt_version=spec.prompt_version,
        model=spec.model,
        git_sha=spec.git_sha,
        golden_hash=spec.golden_hash,
        corpus_fingerprint="corpus-1",
        judge_model=spec.judge_model,
        judge_version=spec.judge_version,
        threshold=0.7,
        questions_total=len(QUESTIONS),
    )
    if spec.kind == "rescore":
        _add_rescore_scores(sessions, spec)
    else:
        for question in QUESTIONS:
            _add_result(sessions, spec, question)
    finish_run(sessions, spec.run_id, status=spec.status)
    with sessions.begin() as session:
        session.execute(
            update(Run)
            .where(Run.id == spec.run_id)
            .values(started_at=T0 + timedelta(minutes=spec.minutes))
        )


def _scores(spec: Spec, question: str) -> list[Score]:
    return [
        Score(
            run_id=spec.run_id,
            metric=metric,
            value=spec.values[question],
            judge_model=spec.judge_model,
            judge_version=spec.judge_version,
        )
        for metric in METRICS
    ]


def _add_result(sessions: sessionmaker[Session], spec: Spec, question: str) -> None:
    failed = question in spec.failed
    result = Result(
        run_id=spec.run_id,
        question_id=question,
        question=f"question {question}?",
        status="failed" if failed else "completed",
        report=None if failed else f"report on {question}",
        checks=None if failed else spec.checks.get(question, ALL_PASS),
        duration_seconds=spec.seconds,
        finished_at=T0,
    )
    usage = UsageRow(
        node="writer",
        model=spec.model,
        input_tokens=spec.tokens // len(QUESTIONS),
        output_tokens=0,
        seconds=spec.seconds,
        cost=spec.cost / len(QUESTIONS),
    )
    insert_result(
        sessions,
        result,
        scores=[] if failed else _scores(spec, question),
        usage=[usage],
    )


def _add_rescore_scores(sessions: sessionmaker[Session], spec: Spec) -> None:
    with sessions.begin() as session:
        results = session.query(Result).filter(Result.run_id == spec.parent).all()
        for result in results:
            for score in _scores(spec, result.question_id):
                score.result_id = result.id
                session.add(score)


def store(engine: Engine, *specs: Spec) -> None:
    sessions = session_factory(engine)
    for spec in specs:
        add_run(sessions, spec)


def side(version: str, base: float, spread: float, runs: int, start: int) -> list[Spec]:
    """``runs`` runs of ``version``: question i scores base + offset, with a
    within-question wobble of +-spread from run to run."""
    specs = []
    for r in range(runs):
        wobble = spread if r % 2 else -spread
        values = {q: base + 0.1 * i + wobble for i, q in enumerate(QUESTIONS)}
        specs.append(Spec(f"{version}-r{r}", values, start + r, prompt_version=version))
    return specs


def expected_delta(first: list[Spec], second: list[Spec]) -> float:
    """V2 - V1 on the 0-1 scale, worked out from the specs, question by question."""
    return fmean(
        fmean(s.values[q] for s in second) / 5 - fmean(s.values[q] for s in first) / 5
        for q in QUESTIONS
    )


def run_compare(engine: Engine, v1: str, v2: str, **options: Any) -> dict[str, Any]:
    with session_factory(engine)() as session:
        report = compare(session, v1, v2, CompareOptions(**options))
    return dict(json.loads(json.dumps(report.as_json())))  # as --json prints it


# Verdicts and exit codes -----------------------------------------------------------


def test_a_clear_drop_is_a_regression_and_the_command_exits_2(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after = side("v1", 4.5, 0.1, 3, 0), side("v2", 3.0, 0.1, 3, 10)
    store(engine, *before, *after)

    code = compare_command("v1", "v2", CompareOptions(), as_json=True)

    report = json.loads(capsys.readouterr().out)
    assert code == 2
    assert report["verdict"] == REGRESSED and report["regressed"] is True
    overall = report["metrics"][0]
    assert overall["metric"] == "overall"
    assert overall["delta"] == pytest.approx(expected_delta(before, after))
    assert overall["high"] < 0 and overall["low"] < overall["delta"]
    assert overall["v1_runs"] == overall["v2_runs"] == 3
    assert overall["v2_mean"] - overall["v1_mean"] == pytest.approx(overall["delta"])
    assert [m["verdict"] for m in report["metrics"][1:]] == [REGRESSED] * 3
    assert report["metrics"][1]["delta"] == pytest.approx(-1.5)


def test_a_clear_gain_is_an_improvement_and_exits_0(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    store(engine, *side("v1", 3.0, 0.1, 3, 0), *side("v2", 4.5, 0.1, 3, 10))

    code = compare_command("v1", "v2", CompareOptions(), as_json=True)

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["verdict"] == IMPROVED
    assert report["metrics"][0]["low"] > 0


def test_noise_alone_is_no_significant_change_and_exits_0(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # Same level on both sides; run-to-run wobble larger than the tiny offset.
    store(engine, *side("v1", 4.0, 0.5, 4, 0), *side("v2", 3.95, 0.5, 4, 10))

    code = compare_command("v1", "v2", CompareOptions(), as_json=True)

    overall = json.loads(capsys.readouterr().out)["metrics"][0]
    assert code == 0
    assert overall["verdict"] == NO_CHANGE
    assert overall["low"] < 0 < overall["high"]
    assert overall["detectable"] > abs(overall["delta"])


def test_one_run_a_side_over_five_questions_can_never_be_significant() -> None:
    # Even a drop from 5 to 1 on every question: 2^5 relabellings only.
    high = [dict.fromkeys(QUESTIONS, 5.0)]
    low = [dict.fromkeys(QUESTIONS, 1.0)]

    result = compare_metric("grounding", high, low)

    assert result.delta == pytest.approx(-4.0)
    assert result.relabellings == 32
    assert result.can_be_significant is False
    assert result.verdict == NO_CHANGE


def test_last_n_takes_the_newest_completed_passes_of_each_side(
    engine: Engine,
) -> None:
    old = side("v1", 2.0, 0.0, 2, 0)
    new = [Spec(f"v1-new{r}", dict.fromkeys(QUESTIONS, 4.0), 5 + r) for r in range(2)]
    failed = Spec("v1-failed", dict.fromkeys(QUESTIONS, 1.0), 9, status="failed")
    rescore = Spec(
        "v1-rescore",
        dict.fromkeys(QUESTIONS, 1.0),
        10,
        kind="rescore",
        parent="v1-new1",
    )
    store(engine, *old, *new, failed, rescore, *side("v2", 4.0, 0.0, 2, 20))

    report = run_compare(engine, "v1", "v2", last=2)

    assert report["v1"]["runs"] == ["v1-new1", "v1-new0"]
    assert report["metrics"][0]["v1_mean"] == pytest.approx(0.8)


def test_by_run_compares_two_runs_and_accepts_a_rescore(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = Spec("pass-1", dict.fromkeys(QUESTIONS, 4.0), 0)
    rescore = Spec(
        "rescore-1", dict.fromkeys(QUESTIONS, 3.0), 1, kind="rescore", parent="pass-1"
    )
    store(engine, parent, rescore)

    code = compare_command(
        "pass-1", "rescore-1", CompareOptions(by="run"), as_json=False
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "overall (0-1)" in out and "grounding (1-5)" in out
    assert "-0.200" in out  # (3 - 4) / 5
    assert "no change can be significant" in out
    assert "those of the pass it re-grades" in out


def test_git_sha_sides_take_a_unique_prefix(engine: Engine) -> None:
    store(
        engine,
        Spec("a", dict.fromkeys(QUESTIONS, 4.0), 0, git_sha=SHA_A),
        Spec("b", dict.fromkeys(QUESTIONS, 4.0), 1, git_sha=SHA_B),
    )

    report = run_compare(engine, SHA_A[:8], "b1cc", by="git_sha")

    assert report["v1"]["runs"] == ["a"] and report["v2"]["runs"] == ["b"]


# Refusals --------------------------------------------------------------------------


def test_an_unknown_version_is_refused_naming_the_nearest_known_ones(
    engine: Engine,
) -> None:
    store(engine, *side("v1.2", 4.0, 0.0, 1, 0), *side("v2.0", 4.0, 0.0, 1, 5))

    with pytest.raises(
        NotFoundError, match=r"no run has prompt_version 'v1\.3'.*v1\.2"
    ):
        run_compare(engine, "v1.3", "v2.0")


def test_an_unknown_run_is_refused_naming_the_nearest_known_ones(
    engine: Engine,
) -> None:
    store(engine, Spec("20260101-000000-abcdef", dict.fromkeys(QUESTIONS, 4.0), 0))

    with pytest.raises(NotFoundError, match="nearest: 20260101-000000-abcdef"):
        run_compare(engine, "20260101-000000-abcdeX", "other", by="run")


def test_a_side_with_no_completed_runs_is_refused(engine: Engine) -> None:
    failed = Spec("v2-r0", dict.fromkeys(QUESTIONS, 4.0), 5, prompt_version="v2")
    failed.status = "failed"
    store(engine, *side("v1", 4.0, 0.0, 1, 0), failed)

    with pytest.raises(MonitorError, match="prompt_version 'v2' has no completed runs"):
        run_compare(engine, "v1", "v2")
    with pytest.raises(MonitorError, match="run 'v2-r0' is failed, not completed"):
        run_compare(engine, "v1-r0", "v2-r0", by="run")


def test_different_golden_subsets_are_refused_unless_allowed(engine: Engine) -> None:
    other = side("v2", 4.0, 0.0, 1, 5)
    other[0].golden_hash = "gold-2"
    store(engine, *side("v1", 4.0, 0.0, 1, 0), *other)

    with pytest.raises(MonitorError, match=r"different golden subsets.*gold-1.*gold-2"):
        run_compare(engine, "v1", "v2")
    report = run_compare(engine, "v1", "v2", allow_different_golden=True)
    assert any("different golden subsets" in note for note in report["notes"])


def test_different_judges_are_refused_unless_allowed(engine: Engine) -> None:
    other = side("v2", 4.0, 0.0, 1, 5)
    other[0].judge_version = "judge-2"
    store(engine, *side("v1", 4.0, 0.0, 1, 0), *other)

    with pytest.raises(MonitorError, match=r"different judges.*judge-1.*judge-2"):
        run_compare(engine, "v1", "v2")
    report = run_compare(engine, "v1", "v2", allow_different_judge=True)
    assert any("different judges" in note for note in report["notes"])
    assert exit_code(["compare", "v1", "v2"]) == 1
    assert exit_code(["compare", "v1", "v2", "--allow-different-judge"]) == 0


def test_the_same_version_on_both_sides_is_refused(engine: Engine) -> None:
    store(engine, *side("v1", 4.0, 0.0, 1, 0))

    with pytest.raises(MonitorError, match="V1 and V2 are both 'v1'"):
        run_compare(engine, "v1", "v1")


# Per question and usage ------------------------------------------------------------


def test_questions_come_biggest_mover_first_with_the_checks_that_differ(
    engine: Engine,
) -> None:
    before = dict.fromkeys(QUESTIONS, 4.0)
    after = before | {"q3": 2.0, "q5": 3.5}
    broken = {"q3": {"non_empty": True, "citations_resolve": False}}
    store(
        engine,
        Spec("v1-r0", before, 0),
        Spec("v2-r0", after, 5, prompt_version="v2", checks=broken, failed=("q4",)),
    )

    report = run_compare(engine, "v1", "v2")

    order = [move["question_id"] for move in report["questions"]]
    assert order[:2] == ["q3", "q5"]
    assert order[-1] == "q4"  # no score on V2: not a mover, listed last
    q3 = report["questions"][0]
    assert q3["delta"] == pytest.approx(-0.4)
    assert q3["metric_deltas"]["coverage"] == pytest.approx(-2.0)
    assert q3["checks"] == [{"check": "citations_resolve", "v1": [1, 1], "v2": [0, 1]}]
    q4 = report["questions"][-1]
    assert {"check": "produced_report", "v1": [1, 1], "v2": [0, 1]} in q4["checks"]


def test_usage_gives_tokens_cost_and_p95_latency_per_side_with_deltas(
    engine: Engine,
) -> None:
    cheap = [
        Spec(f"v1-r{r}", dict.fromkeys(QUESTIONS, 4.0), r, tokens=1000, cost=0.01)
        for r in range(2)
    ]
    dear = [
        Spec(
            f"v2-r{r}",
            dict.fromkeys(QUESTIONS, 4.0),
            5 + r,
            prompt_version="v2",
            tokens=1500,
            cost=0.03,
            seconds=float(1 + r * 9),
        )
        for r in range(2)
    ]
    store(engine, *cheap, *dear)

    usage = run_compare(engine, "v1", "v2")["usage"]

    assert usage["tokens_per_run"]["v1"] == 1000
    assert usage["tokens_per_run"]["delta"] == 500
    assert usage["tokens_per_run"]["relative"] == pytest.approx(0.5)
    assert usage["cost_per_run"]["delta"] == pytest.approx(0.02)
    # Ten durations, five of 1 s and five of 10 s: the 95th percentile is 10 s.
    assert usage["p95_latency_seconds"]["v2"] == pytest.approx(10.0)
    assert usage["p95_latency_seconds"]["delta"] == pytest.approx(8.0)


def test_the_printed_report_has_metrics_questions_usage_and_the_verdict(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    store(engine, *side("v1", 4.5, 0.1, 3, 0), *side("v2", 3.0, 0.1, 3, 10))

    code = compare_command("v1", "v2", CompareOptions(), as_json=False)

    out = capsys.readouterr().out
    assert code == 2
    for heading in ("per metric", "per question", "usage per run", "p95 latency"):
        assert heading in out
    assert "Smallest overall drop these runs detect" in out
    assert out.rstrip().endswith("Verdict: overall REGRESSED.")


# The command line ------------------------------------------------------------------


def exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    return int(stopped.value.code or 0)


def test_the_command_line_exits_2_0_1_and_64_as_documented(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    store(
        engine,
        *side("v1", 4.5, 0.1, 3, 0),
        *side("v2", 3.0, 0.1, 3, 10),
        *side("v3", 4.5, 0.1, 3, 20),
    )

    assert exit_code(["compare", "v1", "v2", "--json"]) == 2
    assert exit_code(["compare", "v1", "v3"]) == 0
    assert exit_code(["compare", "v1", "v9"]) == 1
    assert exit_code(["compare", "v1", "v2", "--by", "colour"]) == 64
    err = capsys.readouterr().err
    assert "error: no run has prompt_version 'v9'" in err
    assert "use prompt_version, model, git_sha, run, sources" in err
    assert "Traceback" not in err


def test_compare_by_sources_of_a_version_no_run_has_is_one_line_exit_1(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    store(engine, *side("v1", 4.5, 0.1, 3, 0), *side("v2", 3.0, 0.1, 3, 10))

    assert exit_code(["compare", "v8", "v9", "--by", "sources"]) == 1
    assert exit_code(["compare", "v1", "v9", "--by", "sources"]) == 1

    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 2 and captured.out == ""
    assert lines[0].startswith("error: no run has prompt_version 'v8'; nearest: ")
    assert lines[1].startswith("error: no run has prompt_version 'v9'; nearest: ")

"""``monitor compare``: did V2 regress against V1, as a query over stored results.

Each side is a set of completed runs: the newest ``last`` passes of one version
(prompt version, model or git sha; rescores left out, since they re-grade
reports another pass produced), or one run named by id, a rescore included.
Runs are the replicates and questions the strata, as in
:func:`monitor.stats.stratified_permutation_test`: each metric, and the overall
score, gets the mean of each side, the delta (V2 - V1), a two-sided 95% interval
and a verdict. A delta is a regression or an improvement only when its interval
excludes zero; with few runs the interval is wide, and the report says how large
a change the data could have detected rather than hiding it. One run a side with
five questions can never be significant: that is the data, not a bug.

Metric values are on the judge's 1-5 scale, the overall score on 0-1, as
everywhere else in the monitor. A side mean is the mean, over the questions both
sides scored, of each question's mean over runs, so the two means differ by
exactly the delta. A question that failed has no score and is left out of the
means; the per-question table shows it under ``produced_report``.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import fmean
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from monitor.errors import MonitorError, NotFoundError
from monitor.stats import SCALE_MAX, RunScores, stratified_permutation_test
from monitor.store import queries
from monitor.store.models import METRICS, Run

logger = logging.getLogger(__name__)

VERSION_KEYS = ("prompt_version", "model", "git_sha", "run")
OVERALL = "overall"
REGRESSED, IMPROVED = "regressed", "improved"
NO_CHANGE, NOT_MEASURED = "no significant change", "not measured"
PRODUCED_REPORT = "produced_report"
CONFIDENCE = 0.95
# Fields that should match between the sides when only the compared one moves.
CONTEXT_FIELDS = (
    "prompt_version",
    "model",
    "git_sha",
    "corpus_fingerprint",
    "sources_backend",
)

# run id -> question id -> metric -> the measured values (every attempt)
SideValues = dict[str, dict[str, dict[str, list[float]]]]


@dataclass(frozen=True)
class CompareOptions:
    by: str = "prompt_version"
    last: int = 10
    allow_different_golden: bool = False
    allow_different_judge: bool = False
    confidence: float = CONFIDENCE


@dataclass
class Side:
    """The runs standing for one version and what was stored for them."""

    label: str
    runs: list[Run]
    values: SideValues
    facts: list[queries.ResultFacts]

    @property
    def run_ids(self) -> list[str]:
        return [run.id for run in self.runs]


@dataclass(frozen=True)
class MetricComparison:
    """One metric (or the overall score), V2 minus V1."""

    metric: str
    scale: str
    v1_mean: float | None
    v2_mean: float | None
    v1_runs: int
    v2_runs: int
    delta: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None
    detectable: float | None = None
    questions: int = 0
    relabellings: int = 0
    confidence: float = CONFIDENCE
    verdict: str = NOT_MEASURED

    @property
    def can_be_significant(self) -> bool:
        """Whether these runs allow any result at all to be significant: the
        observed labelling and its mirror image are the most extreme there are."""
        alpha = 1 - self.confidence
        return self.relabellings > 0 and 2 / self.relabellings <= alpha


@dataclass(frozen=True)
class CheckChange:
    """A check whose pass count differs: (passed, out of) on each side."""

    check: str
    v1: tuple[int, int]
    v2: tuple[int, int]


@dataclass(frozen=True)
class QuestionMove:
    question_id: str
    v1: float | None
    v2: float | None
    delta: float | None
    metric_deltas: dict[str, float | None]
    checks: list[CheckChange]


@dataclass(frozen=True)
class UsageSummary:
    """Per-run usage of one side; p95 is over the questions' durations."""

    runs: int
    tokens_per_run: float | None
    cost_per_run: float | None
    p95_latency_seconds: float | None


@dataclass
class CompareReport:
    by: str
    v1: Side
    v2: Side
    metrics: list[MetricComparison]
    questions: list[QuestionMove]
    usage: tuple[UsageSummary, UsageSummary]
    notes: list[str]
    confidence: float

    @property
    def overall(self) -> MetricComparison:
        return self.metrics[0]

    @property
    def regressed(self) -> bool:
        return self.overall.verdict == REGRESSED

    def as_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "confidence": self.confidence,
            "v1": _side_json(self.v1, self.usage[0]),
            "v2": _side_json(self.v2, self.usage[1]),
            "verdict": self.overall.verdict,
            "regressed": self.regressed,
            "metrics": [
                asdict(metric) | {"can_be_significant": metric.can_be_significant}
                for metric in self.metrics
            ],
            "questions": [asdict(move) for move in self.questions],
            "usage": usage_deltas(*self.usage),
            "notes": self.notes,
        }


def _side_json(side: Side, usage: UsageSummary) -> dict[str, Any]:
    return {
        "label": side.label,
        "runs": side.run_ids,
        "golden_hashes": sorted({run.golden_hash for run in side.runs}),
        "judges": sorted(_judges(side.runs)),
        "usage": asdict(usage),
    }


# The comparison ------------------------------------------------------------------


def compare(
    session: Session, v1: str, v2: str, options: CompareOptions
) -> CompareReport:
    """Compare V2 against V1; refusals are :class:`MonitorError` in one line."""
    if options.by not in VERSION_KEYS:
        raise MonitorError(
            f"--by {options.by!r} is not a version key: use {', '.join(VERSION_KEYS)}"
        )
    if v1 == v2:
        raise MonitorError(f"V1 and V2 are both {v1!r}: give two different values")

    v1_runs = select_runs(session, options.by, v1, options.last)
    v2_runs = select_runs(session, options.by, v2, options.last)
    notes = check_comparable(v1_runs, v2_runs, options)
    notes += context_notes(v1_runs, v2_runs, options.by)
    first, second = load_side(session, v1, v1_runs), load_side(session, v2, v2_runs)

    per_metric = {
        metric: (run_scores(first, metric), run_scores(second, metric))
        for metric in (OVERALL, *METRICS)
    }
    metrics = [
        compare_metric(metric, *scores, confidence=options.confidence)
        for metric, scores in per_metric.items()
    ]
    logger.debug("compared %s %s with %s: %s", options.by, v1, v2, metrics[0])
    return CompareReport(
        by=options.by,
        v1=first,
        v2=second,
        metrics=metrics,
        questions=question_moves(first, second, per_metric),
        usage=(usage_summary(first), usage_summary(second)),
        notes=notes,
        confidence=options.confidence,
    )


def compare_metric(
    metric: str,
    v1: list[RunScores],
    v2: list[RunScores],
    *,
    confidence: float = CONFIDENCE,
) -> MetricComparison:
    """Means, delta, interval and verdict of one metric."""
    scale = "0-1" if metric == OVERALL else "1-5"
    shared = sorted(_scored_questions(v1) & _scored_questions(v2))
    if not shared:
        return MetricComparison(metric, scale, None, None, len(v1), len(v2))

    result = stratified_permutation_test(v1, v2, confidence=confidence)
    if result.high < 0:
        verdict = REGRESSED
    elif result.low > 0:
        verdict = IMPROVED
    else:
        verdict = NO_CHANGE
    return MetricComparison(
        metric=metric,
        scale=scale,
        v1_mean=_stratified_mean(v1, shared),
        v2_mean=_stratified_mean(v2, shared),
        v1_runs=len(v1),
        v2_runs=len(v2),
        delta=result.delta,
        low=result.low,
        high=result.high,
        p_value=result.p_value,
        detectable=result.detectable,
        questions=result.questions,
        relabellings=relabellings(v1, v2, shared),
        confidence=confidence,
        verdict=verdict,
    )


def relabellings(
    v1: Sequence[RunScores], v2: Sequence[RunScores], questions: Sequence[str]
) -> int:
    """How many ways runs can be relabelled within the questions' strata."""
    total = 1
    for question in questions:
        first = sum(question in run for run in v1)
        second = sum(question in run for run in v2)
        total *= math.comb(first + second, first)
    return total


def _scored_questions(runs: Sequence[RunScores]) -> set[str]:
    return {question for run in runs for question in run}


def _stratified_mean(runs: Sequence[RunScores], questions: Sequence[str]) -> float:
    return fmean(_question_mean(runs, question) or 0.0 for question in questions)


def _question_mean(runs: Sequence[RunScores], question: str) -> float | None:
    values = [run[question] for run in runs if question in run]
    return fmean(values) if values else None


# Choosing and checking the sides -------------------------------------------------


def select_runs(session: Session, by: str, value: str, last: int) -> list[Run]:
    """The runs of one side, newest first; refuses an unknown or empty side."""
    if by == "run":
        run = queries.get_run(session, value)
        if run.status != "completed":
            raise MonitorError(
                f"run {value!r} is {run.status}, not completed: compare completed "
                "runs (see `monitor history`)"
            )
        return [run]

    version = resolve_version(session, by, value)
    runs = queries.completed_passes_of(session, by, version, last)
    if not runs:
        raise MonitorError(
            f"{by} {value!r} has no completed runs: nothing to compare "
            "(see `monitor history`)"
        )
    return runs


def resolve_version(session: Session, by: str, value: str) -> str:
    """``value`` if some run carries it; a git sha may be a unique prefix.
    Otherwise a :class:`NotFoundError` naming the nearest known values."""
    if queries.version_is_known(session, by, value):
        return value

    known = queries.known_versions(session, by)
    if by == "git_sha" and len(value) >= 4:
        matches = [sha for sha in known if sha.startswith(value.lower())]
        if len(matches) == 1:
            return matches[0]
        if matches:
            shown = ", ".join(sha[:12] for sha in matches[:3])
            raise MonitorError(
                f"git sha {value!r} is ambiguous ({shown}): give more characters"
            )
    near = queries.nearest(value, known)
    hint = f"; nearest: {', '.join(near)}" if near else "; the database has no runs"
    raise NotFoundError(f"no run has {by} {value!r}{hint} (see `monitor history`)")


def check_comparable(
    v1: list[Run], v2: list[Run], options: CompareOptions
) -> list[str]:
    """Refuse sides on different golden subsets or judges unless allowed;
    an allowed difference comes back as a note for the report."""
    notes = []
    golden = ({r.golden_hash for r in v1}, {r.golden_hash for r in v2})
    if len(golden[0] | golden[1]) > 1:
        shown = f"V1: {_short(golden[0])}; V2: {_short(golden[1])}"
        if not options.allow_different_golden:
            raise MonitorError(
                f"the sides replayed different golden subsets ({shown}): compare "
                "runs of one subset, or pass --allow-different-golden"
            )
        notes.append(f"the sides replayed different golden subsets ({shown})")

    judges = (_judges(v1), _judges(v2))
    if len(judges[0] | judges[1]) > 1:
        shown = (
            f"V1: {', '.join(sorted(judges[0]))}; V2: {', '.join(sorted(judges[1]))}"
        )
        if not options.allow_different_judge:
            raise MonitorError(
                f"the sides were graded by different judges ({shown}): re-grade one "
                "side with the other's judge (`monitor rescore RUN --judge ...`), "
                "or pass --allow-different-judge"
            )
        notes.append(f"the sides were graded by different judges ({shown})")
    return notes


def context_notes(v1: list[Run], v2: list[Run], by: str) -> list[str]:
    """What else changed between the sides besides the compared key."""
    notes = []
    for name in CONTEXT_FIELDS:
        if name == by:
            continue
        first = {str(getattr(run, name)) for run in v1}
        second = {str(getattr(run, name)) for run in v2}
        if first != second:
            notes.append(f"{name} differs too: {_short(first)} -> {_short(second)}")
    if any(run.kind == "rescore" for run in v1 + v2):
        notes.append(
            "a rescore's tokens, cost and latency are those of the pass it re-grades"
        )
    return notes


def _judges(runs: Sequence[Run]) -> set[str]:
    return {f"{run.judge_version} ({run.judge_model})" for run in runs}


def _short(values: set[str], width: int = 12) -> str:
    return ", ".join(
        value if len(value) <= width else value[:width] + "…"
        for value in sorted(values)
    )


# Loading a side ------------------------------------------------------------------


def load_side(session: Session, label: str, runs: list[Run]) -> Side:
    """Scores of these gradings, and the facts of the results they graded."""
    values: SideValues = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run_id, question, metric, value in queries.graded_values(
        session, [run.id for run in runs]
    ):
        if value is not None:
            values[run_id][question][metric].append(value)

    owners = sorted({_owner(run) for run in runs})
    return Side(label, runs, values, queries.result_facts(session, owners))


def _owner(run: Run) -> str:
    """The run whose results a run graded: its own, or a rescore's parent."""
    return run.parent_run_id if run.kind == "rescore" and run.parent_run_id else run.id


def run_scores(side: Side, metric: str) -> list[RunScores]:
    """Per run, each question's mean value of ``metric`` over its attempts
    (``overall``: of every metric, on the 0-1 scale)."""
    scores: list[RunScores] = []
    for run in side.runs:
        per_question: RunScores = {}
        for question, by_metric in side.values.get(run.id, {}).items():
            if metric == OVERALL:
                measured = [v for values in by_metric.values() for v in values]
            else:
                measured = by_metric.get(metric, [])
            if measured:
                scale = SCALE_MAX if metric == OVERALL else 1.0
                per_question[question] = fmean(measured) / scale
        scores.append(per_question)
    return scores


# Per question and usage ----------------------------------------------------------


def question_moves(
    v1: Side,
    v2: Side,
    per_metric: dict[str, tuple[list[RunScores], list[RunScores]]],
) -> list[QuestionMove]:
    """Every question of either side, biggest movers first; unscored ones last."""
    questions = {fact.question_id for fact in v1.facts + v2.facts}
    moves = []
    for question in questions:
        means = {
            metric: (_question_mean(a, question), _question_mean(b, question))
            for metric, (a, b) in per_metric.items()
        }
        first, second = means[OVERALL]
        moves.append(
            QuestionMove(
                question_id=question,
                v1=first,
                v2=second,
                delta=_difference(first, second),
                metric_deltas={m: _difference(*means[m]) for m in METRICS},
                checks=check_changes(v1, v2, question),
            )
        )
    moves.sort(
        key=lambda m: (
            m.delta is None,
            -abs(m.delta or 0.0),
            -len(m.checks),
            m.question_id,
        )
    )
    return moves


def _difference(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else second - first


def check_changes(v1: Side, v2: Side, question: str) -> list[CheckChange]:
    """Checks of ``question`` that passed in a different share of runs."""
    first, second = _check_counts(v1, question), _check_counts(v2, question)
    changes = []
    for check in sorted(set(first) | set(second)):
        a, b = first.get(check, (0, 0)), second.get(check, (0, 0))
        if a[1] == 0 or b[1] == 0 or a[0] / a[1] != b[0] / b[1]:
            changes.append(CheckChange(check, a, b))
    return changes


def _check_counts(side: Side, question: str) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for fact in side.facts:
        if fact.question_id != question:
            continue
        counts[PRODUCED_REPORT][0] += fact.status == "completed"
        counts[PRODUCED_REPORT][1] += 1
        for check, passed in (fact.checks or {}).items():
            counts[check][0] += bool(passed)
            counts[check][1] += 1
    return {check: (passed, total) for check, (passed, total) in counts.items()}


def usage_summary(side: Side) -> UsageSummary:
    tokens = [
        (run.input_tokens or 0) + (run.output_tokens or 0)
        for run in side.runs
        if run.input_tokens is not None or run.output_tokens is not None
    ]
    costs = [run.cost for run in side.runs if run.cost is not None]
    durations = [
        fact.duration_seconds
        for fact in side.facts
        if fact.status == "completed" and fact.duration_seconds is not None
    ]
    return UsageSummary(
        runs=len(side.runs),
        tokens_per_run=fmean(tokens) if tokens else None,
        cost_per_run=fmean(costs) if costs else None,
        p95_latency_seconds=(
            float(np.percentile(durations, 95)) if durations else None
        ),
    )


def usage_deltas(v1: UsageSummary, v2: UsageSummary) -> dict[str, dict[str, Any]]:
    """Each usage figure on both sides, with the delta and the relative change."""
    figures = {}
    for name in ("tokens_per_run", "cost_per_run", "p95_latency_seconds"):
        first, second = getattr(v1, name), getattr(v2, name)
        delta = _difference(first, second)
        relative = delta / first if delta is not None and first else None
        figures[name] = {
            "v1": first,
            "v2": second,
            "delta": delta,
            "relative": relative,
        }
    return figures

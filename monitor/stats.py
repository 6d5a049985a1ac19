"""Aggregates of graded runs.

The monitor score of a run is the mean of every scored metric value of every
question, divided by 5 (so 4.2, 2.6 and 4.2 give 0.733). Unscored values (the
judge failed) are left out, never counted as zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import fmean

import numpy as np

from monitor.store.models import METRICS

SCALE_MAX = 5.0


def score_of(values: Iterable[float | None]) -> float | None:
    """Mean of the measured values on the 0-1 scale; None when none was measured."""
    measured = [value for value in values if value is not None]
    if not measured:
        return None
    return fmean(measured) / SCALE_MAX


def metric_means(
    scores: Iterable[tuple[str, float | None]],
) -> dict[str, float | None]:
    """Mean value (1-5) per metric, None for a metric with no measured value."""
    by_metric: dict[str, list[float]] = {metric: [] for metric in METRICS}
    for metric, value in scores:
        if value is not None:
            by_metric.setdefault(metric, []).append(value)
    return {
        metric: (fmean(values) if values else None)
        for metric, values in by_metric.items()
    }


def rolling_score(run_scores: Sequence[float | None], window: int) -> float | None:
    """Mean of the newest ``window`` run scores (newest first), once there are
    that many measured; None before that."""
    measured = [score for score in run_scores if score is not None][:window]
    if len(measured) < window:
        return None
    return fmean(measured)


# Drift statistics --------------------------------------------------------------
#
# The five golden questions are fixed on purpose, so they are strata, not a
# sample: what varies from pass to pass is the agent, the judge and the sources.
# A run is a replicate; its value for a question is that question's score in
# the run. Under "no change", the runs of the two sides are exchangeable within
# each question, so the reference distribution comes from shuffling side labels
# among runs independently per question (a stratified permutation test). With
# three runs a side that gives (6 choose 3)^5 relabellings even though a plain
# permutation over whole runs would give only 20.

RunScores = dict[str, float]
"""One run: question id -> that question's score (0-1 scale) in the run."""


@dataclass(frozen=True)
class Comparison:
    """Current side minus baseline side, on the 0-1 score scale."""

    delta: float
    low: float
    high: float
    p_value: float
    detectable: float
    baseline_runs: int
    current_runs: int
    questions: int
    confidence: float
    alternative: str

    @property
    def excludes_zero(self) -> bool:
        return self.high < 0 or self.low > 0


def _side_values(
    runs: Sequence[RunScores], questions: Sequence[str]
) -> list[np.ndarray]:
    return [
        np.array([run[q] for run in runs if q in run and run[q] is not None], float)
        for q in questions
    ]


def stratified_permutation_test(
    baseline: Sequence[RunScores],
    current: Sequence[RunScores],
    *,
    confidence: float = 0.95,
    alternative: str = "two-sided",
    resamples: int = 4000,
    seed: int = 0,
) -> Comparison:
    """Compare two sets of runs question by question.

    ``delta`` is the mean over questions of (current mean - baseline mean).
    ``p_value`` is for ``alternative`` ("two-sided", or "less" for a drop).
    The interval inverts the test under a shift model: the permutation
    distribution of delta under "no change" is taken as the distribution of
    (estimate - true delta), which is exact for a pure shift and close otherwise.
    ``detectable`` is the smallest true drop this design detects with 80% power
    at this confidence (normal approximation to the permutation distribution).
    Questions present on only one side are left out.
    """
    shared = sorted(
        {q for run in baseline for q in run} & {q for run in current for q in run}
    )
    base, cur = _side_values(baseline, shared), _side_values(current, shared)
    strata = [(b, c) for b, c in zip(base, cur, strict=True) if len(b) and len(c)]
    if not strata:
        raise ValueError("the two sides share no scored question")

    observed = float(np.mean([c.mean() - b.mean() for b, c in strata]))
    null = _permutation_deltas(strata, resamples, np.random.default_rng(seed))
    alpha = 1.0 - confidence
    centred = null - null.mean()
    if alternative == "less":
        p_value = (1 + np.sum(null <= observed)) / (1 + len(null))
        low, high = -np.inf, observed - float(np.quantile(centred, alpha))
        z = _normal_quantile(1 - alpha)
    else:
        extreme = np.abs(null - null.mean()) >= abs(observed - null.mean())
        p_value = (1 + np.sum(extreme)) / (1 + len(null))
        low = observed - float(np.quantile(centred, 1 - alpha / 2))
        high = observed - float(np.quantile(centred, alpha / 2))
        z = _normal_quantile(1 - alpha / 2)
    detectable = (z + _normal_quantile(0.8)) * float(null.std())

    return Comparison(
        delta=observed,
        low=float(low),
        high=float(high),
        p_value=float(p_value),
        detectable=detectable,
        baseline_runs=len(baseline),
        current_runs=len(current),
        questions=len(strata),
        confidence=confidence,
        alternative=alternative,
    )


def _permutation_deltas(
    strata: list[tuple[np.ndarray, np.ndarray]],
    resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """delta under random relabelling of runs, independently within each question."""
    total = np.zeros(resamples)
    for base, cur in strata:
        pooled = np.concatenate([base, cur])
        order = np.argsort(rng.random((resamples, len(pooled))), axis=1)
        shuffled = pooled[order]
        n_cur = len(cur)
        total += shuffled[:, :n_cur].mean(axis=1) - shuffled[:, n_cur:].mean(axis=1)
    return total / len(strata)


def _normal_quantile(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))

"""Aggregates of graded runs.

The monitor score of a run is the mean of every scored metric value of every
question, divided by 5 (so 4.2, 2.6 and 4.2 give 0.733). Unscored values (the
judge failed) are left out, never counted as zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean
from typing import Any

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
    return NormalDist().inv_cdf(p)


# Alert statistics --------------------------------------------------------------
#
# The quality rule pages only when it is confident the rolling score is below
# the threshold: when the one-sided upper confidence bound of the rolling mean
# is. Its standard error comes from how much each question's score varies from
# run to run (within question strata, over the last K runs), because the rolling
# mean varies only through that: the questions are fixed.


@dataclass(frozen=True)
class RollingBound:
    """The rolling mean of the newest run scores and how sure it is.

    ``upper`` is the one-sided upper confidence bound; None (like ``se``) when
    no question has two runs to show its spread. ``detectable`` is how far
    below a threshold the true score must be for the bound to fall below it
    with 80% probability at one evaluation.
    """

    mean: float
    upper: float | None
    se: float | None
    window_runs: int
    spread_runs: int
    confidence: float
    detectable: float | None


def rolling_standard_errors(
    question_scores: np.ndarray, window_runs: int | np.ndarray
) -> np.ndarray:
    """SE of a mean of ``window_runs`` run scores, from (..., K, Q) question scores.

    Each question's variance across the K runs (NaN marks a missing score;
    a question needs two) is summed over questions: the variance of one run's
    score, the mean over Q questions, is that sum over Q squared. NaN where no
    question has two scores.
    """
    present = ~np.isnan(question_scores)
    values = np.where(present, question_scores, 0.0)
    counts = present.sum(axis=-2)
    means = values.sum(axis=-2) / np.maximum(counts, 1)
    squares = (np.where(present, values - means[..., None, :], 0.0) ** 2).sum(axis=-2)
    usable = counts >= 2
    variances = np.where(usable, squares / np.maximum(counts - 1, 1), 0.0)
    questions = usable.sum(axis=-1)
    run_variance = variances.sum(axis=-1) / np.maximum(questions, 1) ** 2
    se = np.sqrt(run_variance / window_runs)
    return np.where(questions > 0, se, np.nan)


def upper_bounds(means: Any, standard_errors: Any, confidence: float) -> Any:
    """One-sided upper confidence bounds (normal approximation), elementwise."""
    return np.asarray(means) + _normal_quantile(confidence) * np.asarray(
        standard_errors
    )


def rolling_bound(
    window_scores: Sequence[float],
    spread: Sequence[RunScores],
    confidence: float,
) -> RollingBound:
    """Rolling mean of ``window_scores`` (the newest W run scores) with its
    one-sided upper bound; ``spread`` holds the question scores of the newest
    K runs (K >= W gives the SE more degrees of freedom)."""
    if not window_scores:
        raise ValueError("the rolling window holds no scored run")

    questions = sorted({q for run in spread for q in run})
    table = np.array(
        [[run.get(q, np.nan) for q in questions] for run in spread], float
    ).reshape(len(spread), len(questions))
    se = float(rolling_standard_errors(table, len(window_scores)))
    mean = fmean(window_scores)
    known = not np.isnan(se)
    z = _normal_quantile(confidence)

    return RollingBound(
        mean=mean,
        upper=float(upper_bounds(mean, se, confidence)) if known else None,
        se=se if known else None,
        window_runs=len(window_scores),
        spread_runs=len(spread),
        confidence=confidence,
        detectable=(z + _normal_quantile(0.8)) * se if known else None,
    )


def stratified_permutation_batch(
    baseline: np.ndarray,
    current: np.ndarray,
    *,
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``stratified_permutation_test(..., alternative="less")`` for many data
    sets at once, for simulation: returns (delta, high) per data set.

    ``baseline`` is (T, runs, Q) and ``current`` (T, runs, Q) question scores,
    none missing. A random relabelling within a question is a uniformly drawn
    split of its pooled runs, so the splits are enumerated once (C(n, k) of
    them: keep the sides small) and each resample draws one per question; the
    same draws serve every data set. The bound is computed as in
    ``stratified_permutation_test``.
    """
    from itertools import combinations

    n_base, n_cur = baseline.shape[1], current.shape[1]
    pooled = np.concatenate([baseline, current], axis=1)
    splits = np.array(list(combinations(range(n_base + n_cur), n_cur)))
    chosen = pooled[:, splits, :].sum(axis=2)  # (T, splits, Q)
    total = pooled.sum(axis=1)[:, None, :]
    split_deltas = chosen / n_cur - (total - chosen) / n_base

    questions = pooled.shape[2]
    draws = rng.integers(0, len(splits), size=(resamples, questions))
    null = np.zeros((pooled.shape[0], resamples))
    for q in range(questions):
        null += split_deltas[:, draws[:, q], q]
    null /= questions

    observed = (current.mean(axis=1) - baseline.mean(axis=1)).mean(axis=1)
    centred = null - null.mean(axis=1, keepdims=True)
    high = observed - np.quantile(centred, 1.0 - confidence, axis=1)
    return observed, high

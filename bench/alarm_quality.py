"""Alarm quality of the alert rules: how often they page falsely, how fast
they catch a real drop.

Prints the four figures the alert rules are held to, at the defaults (or at
the settings given), against their targets:

- regression rule, no true effect: share of new versions that fire within
  three passes (target <= 5%);
- regression rule, true drop of 0.1: share caught within three passes
  (target >= 90%);
- quality rule at true score 0.733, threshold 0.70, six passes a day: false
  pages per 30 days (target <= 1);
- quality rule, true score dropping to 0.633: share caught within three
  passes (target >= 90%).

``--sweep`` adds the tables the defaults were chosen from: the regression
rule for baseline sizes 3-6 and several confidence levels, and the quality
rule for several confidence levels. ``--exact N`` re-runs N regression trials
per case through ``stratified_permutation_test`` itself (4,000 resamples each,
about 10 ms a call), to check the vectorised simulation against the function
the rule calls. The model of the judge and what a trial is are described in
``monitor/alerts/simulate.py``.

Run from the repository root: ``.venv/bin/python bench/alarm_quality.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from monitor.alerts.options import AlertOptions
from monitor.alerts.rules import regression_fires, regression_ready
from monitor.alerts.simulate import (
    DEFAULT_SEED,
    JudgeModel,
    alarm_figures,
    quality_detection_rate,
    quality_false_pages,
    regression_fire_rate,
)
from monitor.stats import stratified_permutation_test


def print_figures(options: AlertOptions, seed: int) -> None:
    started = time.perf_counter()
    figures = alarm_figures(options, seed=seed)
    seconds = time.perf_counter() - started
    rows = [
        (
            "regression false alarm (no effect)",
            figures.regression_false_alarm,
            "<= 0.05",
            figures.regression_false_alarm <= 0.05,
        ),
        (
            "regression detection (drop 0.1)",
            figures.regression_detection,
            ">= 0.90",
            figures.regression_detection >= 0.90,
        ),
        (
            "quality false pages per 30 days",
            figures.quality_false_pages_per_30_days,
            "<= 1",
            figures.quality_false_pages_per_30_days <= 1.0,
        ),
        (
            "quality detection (0.733 -> 0.633)",
            figures.quality_detection,
            ">= 0.90",
            figures.quality_detection >= 0.90,
        ),
    ]
    print(
        f"baseline_runs={options.baseline_runs} "
        f"regression_min_runs={options.regression_min_runs} "
        f"regression_confidence={options.regression_confidence} "
        f"margin={options.regression_margin} window={options.window} "
        f"quality_confidence={options.quality_confidence} "
        f"quality_spread_runs={options.quality_spread_runs} seed={seed}"
    )
    print(
        f"trials: regression {figures.regression_trials} per case, quality "
        f"{figures.quality_months} months and {figures.quality_trials} drops "
        f"({seconds:.1f} s)"
    )
    for label, value, target, met in rows:
        verdict = "met" if met else "MISSED"
        print(f"  {label:<38} {value:6.3f}   target {target:<8} {verdict}")


def print_sweep(seed: int) -> None:
    rng = np.random.default_rng(seed)
    print("\nregression: false alarm / detection, 8000 trials per cell")
    confidences = (0.90, 0.93, 0.95, 0.97)
    print("  baseline min_runs " + "".join(f"  conf {c:<11}" for c in confidences))
    for baseline in (3, 4, 5, 6):
        for min_runs in (1, 3):
            cells = []
            for confidence in confidences:
                options = AlertOptions(
                    baseline_runs=baseline,
                    regression_min_runs=min_runs,
                    regression_confidence=confidence,
                )
                false = regression_fire_rate(options, drop=0.0, trials=8000, rng=rng)
                caught = regression_fire_rate(options, drop=0.1, trials=8000, rng=rng)
                cells.append(f"  {false:.3f} / {caught:.3f}  ")
            print(f"  {baseline:>8} {min_runs:>8}" + "".join(cells))

    print("\nquality: false pages per 30 days / detection within 3 passes")
    for confidence in (0.5, 0.8, 0.9, 0.95):
        options = AlertOptions(quality_confidence=confidence)
        pages = quality_false_pages(options, months=400, rng=rng)
        caught = quality_detection_rate(options, trials=4000, rng=rng)
        print(f"  confidence {confidence:<5} {pages:6.2f} / {caught:.3f}")


def exact_regression(options: AlertOptions, trials: int, seed: int) -> None:
    """The regression trial through stratified_permutation_test itself."""
    rng = np.random.default_rng(seed)
    judge = JudgeModel()
    questions = [f"q{i}" for i in range(judge.shape.shape[0])]
    print(f"\nregression through stratified_permutation_test, {trials} trials per case")
    for label, drop in (("false alarm", 0.0), ("detection", 0.1)):
        base = judge.question_scores(rng, trials, options.baseline_runs, 0.733)
        new = judge.question_scores(rng, trials, 3, 0.733 - drop)
        fired = 0
        for trial in range(trials):
            for runs in range(1, 4):
                if not regression_ready(runs, options):
                    continue
                comparison = stratified_permutation_test(
                    [dict(zip(questions, row, strict=True)) for row in base[trial]],
                    [
                        dict(zip(questions, row, strict=True))
                        for row in new[trial, :runs]
                    ],
                    confidence=options.regression_confidence,
                    alternative="less",
                    seed=trial,
                )
                if regression_fires(
                    comparison.delta, comparison.high, options.regression_margin
                ):
                    fired += 1
                    break
        print(f"  {label:<12} {fired / trials:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--baseline-runs", type=int)
    parser.add_argument("--regression-min-runs", type=int)
    parser.add_argument("--regression-confidence", type=float)
    parser.add_argument("--quality-confidence", type=float)
    parser.add_argument("--sweep", action="store_true", help="print the trade-offs")
    parser.add_argument("--exact", type=int, default=0, metavar="N")
    args = parser.parse_args()

    options = AlertOptions().with_overrides(
        baseline_runs=args.baseline_runs,
        regression_min_runs=args.regression_min_runs,
        regression_confidence=args.regression_confidence,
        quality_confidence=args.quality_confidence,
    )
    print_figures(options, args.seed)
    if args.sweep:
        print_sweep(args.seed)
    if args.exact:
        exact_regression(options, args.exact, args.seed)


if __name__ == "__main__":
    main()

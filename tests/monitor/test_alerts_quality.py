"""Alarm quality of the statistical rules, simulated with a fixed seed.

The simulation (``monitor/alerts/simulate.py``) runs the rules' own decisions
vectorised over thousands of trials; these tests hold the defaults to the
targets and check that the simulation would notice a worse rule. The figures
at the defaults sit at least three Monte Carlo standard errors inside their
targets (see the module docstring of ``simulate``), so a fixed seed is not
what makes them pass.
"""

from __future__ import annotations

import numpy as np
import pytest

from monitor.alerts.options import AlertOptions
from monitor.alerts.simulate import (
    JudgeModel,
    alarm_figures,
    quality_false_pages,
    regression_fire_rate,
)
from monitor.settings import MonitorSettings
from monitor.stats import (
    rolling_bound,
    stratified_permutation_batch,
    stratified_permutation_test,
)


def test_the_default_rules_meet_all_four_alarm_quality_targets() -> None:
    figures = alarm_figures()

    assert figures.regression_false_alarm <= 0.05
    assert figures.regression_detection >= 0.90
    assert figures.quality_false_pages_per_30_days <= 1.0
    assert figures.quality_detection >= 0.90


def test_the_settings_defaults_are_the_simulated_ones() -> None:
    settings = MonitorSettings()
    simulated = AlertOptions()

    assert settings.quality_confidence == simulated.quality_confidence
    assert settings.quality_spread_runs == simulated.quality_spread_runs
    assert settings.rolling_window == simulated.window
    assert settings.baseline_runs == simulated.baseline_runs
    assert settings.regression_min_runs == simulated.regression_min_runs
    assert settings.regression_confidence == simulated.regression_confidence
    assert settings.regression_margin == simulated.regression_margin


def test_paging_on_every_dip_below_the_threshold_pages_many_times_a_month() -> None:
    every_dip = AlertOptions(quality_confidence=0.5)

    pages = quality_false_pages(every_dip, months=100, rng=np.random.default_rng(1))

    assert pages > 4.0


def test_looking_after_every_pass_against_three_baseline_runs_alarms_too_often() -> (
    None
):
    eager = AlertOptions(baseline_runs=3, regression_min_runs=1)

    false_alarm = regression_fire_rate(
        eager, drop=0.0, trials=4000, rng=np.random.default_rng(2)
    )

    assert false_alarm > 0.07


def test_the_judge_model_is_calibrated_to_the_expected_measured_score() -> None:
    judge = JudgeModel()
    rng = np.random.default_rng(3)

    for score in (0.733, 0.633):
        measured = judge.question_scores(rng, 4000, 3, score).mean()
        assert judge.expected_score(judge.true_values_for(score)) == pytest.approx(
            score, abs=1e-9
        )
        assert measured == pytest.approx(score, abs=0.003)


def test_the_vectorised_permutation_test_agrees_with_the_rules_own() -> None:
    rng = np.random.default_rng(4)
    questions = [f"q{i}" for i in range(5)]
    base = rng.normal(0.73, 0.05, (40, 5, 5))
    current = rng.normal(0.68, 0.05, (40, 3, 5))

    delta, high = stratified_permutation_batch(
        base, current, confidence=0.95, resamples=4000, rng=rng
    )

    for trial in range(40):
        comparison = stratified_permutation_test(
            [dict(zip(questions, row, strict=True)) for row in base[trial]],
            [dict(zip(questions, row, strict=True)) for row in current[trial]],
            confidence=0.95,
            alternative="less",
        )
        assert delta[trial] == pytest.approx(comparison.delta, abs=1e-12)
        assert high[trial] == pytest.approx(comparison.high, abs=0.006)


def test_the_rolling_bound_takes_its_error_from_each_questions_spread() -> None:
    spread = [{"a": 0.6, "b": 0.8}, {"a": 0.7, "b": 0.8}, {"a": 0.8, "b": 0.8}]

    bound = rolling_bound([0.7, 0.75, 0.8], spread, confidence=0.9)

    # Question a varies with variance 0.01, b not at all: a run score (the mean
    # of two questions) has variance 0.01 / 4, and the mean of three runs a
    # third of that.
    se = (0.01 / 4 / 3) ** 0.5
    assert bound.mean == pytest.approx(0.75)
    assert bound.se == pytest.approx(se)
    assert bound.upper == pytest.approx(0.75 + 1.2815516 * se)
    assert bound.detectable == pytest.approx((1.2815516 + 0.8416212) * se)


def test_one_run_gives_a_rolling_score_without_a_bound() -> None:
    bound = rolling_bound([0.6], [{"a": 0.6}], confidence=0.9)

    assert bound.mean == pytest.approx(0.6)
    assert bound.upper is None and bound.se is None

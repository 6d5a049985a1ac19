"""The alert rules, evaluated after every pass.

Each rule looks at the pass just stored and the history before it, and says
for each condition it watches (a *check*, keyed like ``quality`` or
``budget:tokens``) one of three things:

- ``firing``: the condition holds; an alert opens, or stays open.
- ``clear``: the condition is over; an open alert resolves.
- ``hold``: the evidence is not decisive either way (not enough runs yet, or
  a score below the threshold but not confidently so); an open alert stays
  open, no new one opens.

The statistical rules page on confidence and resolve on the point estimate, so
an alert does not flap when the figure hovers near its limit:

- **quality** fires when the one-sided upper confidence bound of the rolling
  score of the last W passes is below the threshold, and clears when the
  rolling score itself is back at or above it. With one pass, or no question
  scored twice, there is no spread to go on and the rolling score is compared
  as it is.
- **regression** compares the current version's passes (at least
  ``regression_min_runs``, at most ``CURRENT_RUNS_CAP``, all after the baseline)
  with the baseline (the previous version's newest N passes, or a pin) by
  ``stratified_permutation_test(alternative="less")``: runs are replicates,
  questions are strata. It fires when the drop exceeds the margin and the
  one-sided interval excludes zero, and clears when the drop is within the
  margin. It fires on the overall score; each metric's comparison is reported
  as evidence, not paged on, because three more tests would multiply the
  false alarms while a drop confined to one metric still moves the overall
  score by a third of its size.
- **budget** fires when the pass's tokens or cost exceed their limit, or the
  p95 of question latency over the last ``latency_runs`` passes exceeds its
  limit; an unset limit is a rule switched off.
- **failures** fires when the pass's task success rate (questions that
  produced a graded report) is below the minimum, or the judge could not score
  a question.

Why the defaults are what they are (confidence levels, baseline size, the
minimum current runs) is in ``monitor/alerts/simulate.py``, which measures the
false-alarm rate and the detection rate these rules give.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any, Literal

import numpy as np
from sqlalchemy.orm import Session

from monitor.alerts.baselines import choose_baseline, comparable, version_of
from monitor.alerts.evidence import (
    FINISHED,
    Evidence,
    gather_evidence,
    largest_metric_drop,
    largest_node_growth,
    passes,
    question_scores,
    result_durations,
    run_results,
    unscored_questions,
)
from monitor.alerts.options import AlertOptions
from monitor.stats import Comparison, rolling_bound, stratified_permutation_test
from monitor.store.models import METRICS, Run

logger = logging.getLogger(__name__)

SCENARIO_QUALITY = 1
SCENARIO_LATENCY = 2
SCENARIO_COST = 3
SCENARIO_FAILING = 4
SCENARIOS = {
    SCENARIO_QUALITY: "eval score dropping",
    SCENARIO_LATENCY: "p95 latency rising",
    SCENARIO_COST: "cost per run rising",
    SCENARIO_FAILING: "passes failing",
}
CURRENT_RUNS_CAP = 10
BUDGET_HISTORY_RUNS = 5
SHOWN_ERRORS = 3
# Scores are means of small integers: a rolling score "at" the threshold may
# come out a rounding error below it, and must count as at it.
TOLERANCE = 1e-9

Status = Literal["firing", "hold", "clear"]


@dataclass(frozen=True)
class Finding:
    """One alert condition as found: ``line`` is printed after ``ALERT: ``."""

    rule: str
    message: str
    scenario: int
    details: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    fingerprint: str = ""

    @property
    def line(self) -> str:
        return (
            f"{self.message} — open runbook.md, scenario {self.scenario} "
            f"({SCENARIOS[self.scenario]})."
        )


@dataclass(frozen=True)
class Check:
    """A rule's verdict on one condition for one pass (see the module docstring)."""

    key: str
    fingerprint: str
    status: Status
    finding: Finding | None = None
    reason: str = ""


@dataclass
class RuleContext:
    session: Session
    run: Run
    options: AlertOptions

    @property
    def version(self) -> str:
        return version_of(self.run, self.options.version_key)

    @property
    def version_label(self) -> str:
        return f"{self.options.version_key}={self.version}"

    @property
    def threshold(self) -> float:
        chosen = self.options.threshold
        return self.run.threshold if chosen is None else chosen

    def check(
        self,
        key: str,
        status: Status,
        finding: Finding | None = None,
        reason: str = "",
    ) -> Check:
        return Check(
            key=key,
            fingerprint=f"{key}|{self.version_label}",
            status=status,
            finding=finding,
            reason=reason,
        )

    def finding(
        self,
        key: str,
        message: str,
        scenario: int,
        figures: dict[str, Any],
        evidence: Evidence,
    ) -> Finding:
        rule = key.split(":", 1)[0]
        details = {
            "rule": rule,
            "check": key,
            "run": self.run.id,
            "version_key": self.options.version_key,
            "version": self.version,
            "figures": _plain(figures),
            "evidence": _plain(evidence.as_dict()),
            "scenario": scenario,
            "runbook": f"runbook.md, scenario {scenario} ({SCENARIOS[scenario]})",
        }
        return Finding(
            rule=rule,
            message=f"{message}; {evidence.summary()}",
            scenario=scenario,
            details=details,
            key=key,
            fingerprint=f"{key}|{self.version_label}",
        )


# Decisions, shared with the alarm-quality simulation --------------------------------


def quality_fires(mean: Any, upper: Any, threshold: float) -> Any:
    """Page when the upper bound (or, without one, the mean) is below the threshold."""
    bound = np.where(np.isnan(np.asarray(upper, float)), mean, upper)
    return bound < threshold - TOLERANCE


def quality_clears(mean: Any, threshold: float) -> Any:
    return np.asarray(mean) >= threshold - TOLERANCE


def regression_ready(current_runs: int, options: AlertOptions) -> bool:
    return current_runs >= options.regression_min_runs


def regression_fires(delta: Any, high: Any, margin: float) -> Any:
    """The drop is larger than the margin and the one-sided bound excludes zero."""
    return (np.asarray(delta) < -margin) & (np.asarray(high) < 0)


def regression_clears(delta: Any, margin: float) -> Any:
    return np.asarray(delta) >= -margin


# The rules -------------------------------------------------------------------------


def quality_checks(ctx: RuleContext) -> list[Check]:
    """The rolling score of the last W passes against the threshold."""
    options, key = ctx.options, "quality"
    spread_size = max(options.quality_spread_runs, 2 * options.window)
    recent = passes(ctx.session, scored=True, limit=spread_size)
    if not recent:
        return [ctx.check(key, "hold", reason="no scored pass yet")]

    window = recent[: options.window]
    spread = recent[: max(options.quality_spread_runs, options.window)]
    scores, _ = question_scores(ctx.session, [run.id for run in spread])
    bound = rolling_bound(
        [float(run.score or 0.0) for run in window],
        [scores[run.id] for run in spread],
        options.quality_confidence,
    )
    if bool(quality_clears(bound.mean, ctx.threshold)):
        reason = (
            f"rolling score {bound.mean:.3f} is at or above threshold "
            f"{ctx.threshold:.2f}"
        )
        return [ctx.check(key, "clear", reason=reason)]

    before = recent[options.window : 2 * options.window]
    evidence = gather_evidence(
        ctx.session, [*window, *before[:1]], before=before, after=window
    )
    finding = ctx.finding(
        key,
        _quality_message(ctx, bound.mean, bound.upper, bound.detectable, window),
        SCENARIO_QUALITY,
        {
            "rolling_score": bound.mean,
            "upper_bound": bound.upper,
            "standard_error": bound.se,
            "confidence": bound.confidence,
            "threshold": ctx.threshold,
            "window_runs": bound.window_runs,
            "spread_runs": bound.spread_runs,
            "detectable_below_threshold": bound.detectable,
            "since_run": window[-1].id,
        },
        evidence,
    )
    nan = np.nan if bound.upper is None else bound.upper
    fires = bool(quality_fires(bound.mean, nan, ctx.threshold))
    reason = "" if fires else "below the threshold, but not confidently"
    return [ctx.check(key, "firing" if fires else "hold", finding, reason)]


def _quality_message(
    ctx: RuleContext,
    mean: float,
    upper: float | None,
    detectable: float | None,
    window: Sequence[Run],
) -> str:
    if upper is None:
        sureness = "no run-to-run spread to bound it yet"
    else:
        sureness = (
            f"{ctx.options.quality_confidence:.0%} upper bound {upper:.3f}; "
            f"smallest detectable shortfall {detectable or 0.0:.3f}"
        )
    return (
        f"quality: rolling score {mean:.3f} of the last {len(window)} pass(es) "
        f"(since run {window[-1].id}) is below threshold {ctx.threshold:.2f} "
        f"({sureness}) at {ctx.version_label}"
    )


def regression_checks(ctx: RuleContext) -> list[Check]:
    """The current version's passes against the baseline, questions as strata."""
    options, run, key = ctx.options, ctx.run, "regression"
    if run.status != "completed":
        return [ctx.check(key, "hold", reason=f"run {run.id} is {run.status}")]
    choice = choose_baseline(
        ctx.session, run, options.version_key, options.baseline_runs
    )
    if choice is None:
        return [ctx.check(key, "hold", reason="no baseline: no earlier version")]

    base = choice.runs
    current = passes(
        ctx.session,
        getattr(Run, options.version_key) == ctx.version,
        Run.started_at > max(r.started_at for r in base),
        Run.id.not_in([r.id for r in base]),
        *comparable(run),
        limit=CURRENT_RUNS_CAP,
    )
    if not regression_ready(len(current), options):
        reason = f"{len(current)} of {options.regression_min_runs} runs so far"
        return [ctx.check(key, "hold", reason=reason)]

    overall, metrics = question_scores(ctx.session, [r.id for r in [*base, *current]])
    try:
        comparison = _compare(overall, base, current, options)
    except ValueError as error:
        return [ctx.check(key, "hold", reason=str(error))]
    if bool(regression_clears(comparison.delta, options.regression_margin)):
        reason = (
            f"change {comparison.delta:+.3f} against {choice.version} is within "
            f"the margin {options.regression_margin:.2f}"
        )
        return [ctx.check(key, "clear", reason=reason)]

    per_metric = {
        metric: _compare(metrics[metric], base, current, options)
        for metric in METRICS
        if _shares_questions(metrics.get(metric, {}), base, current)
    }
    finding = _regression_finding(
        ctx, choice.version, choice.pinned, base, current, comparison, per_metric
    )
    fires = bool(
        regression_fires(comparison.delta, comparison.high, options.regression_margin)
    )
    reason = "" if fires else "drop above the margin, but the interval includes zero"
    return [ctx.check(key, "firing" if fires else "hold", finding, reason)]


def _compare(
    scores: dict[str, dict[str, float]],
    base: Sequence[Run],
    current: Sequence[Run],
    options: AlertOptions,
) -> Comparison:
    return stratified_permutation_test(
        [scores.get(r.id, {}) for r in base],
        [scores.get(r.id, {}) for r in current],
        confidence=options.regression_confidence,
        alternative="less",
    )


def _shares_questions(
    scores: dict[str, dict[str, float]], base: Sequence[Run], current: Sequence[Run]
) -> bool:
    before = {q for r in base for q in scores.get(r.id, {})}
    return bool(before & {q for r in current for q in scores.get(r.id, {})})


def _regression_finding(
    ctx: RuleContext,
    base_version: str,
    pinned: bool,
    base: Sequence[Run],
    current: Sequence[Run],
    comparison: Comparison,
    per_metric: dict[str, Comparison],
) -> Finding:
    options = ctx.options
    base_mean = float(np.mean([r.score for r in base if r.score is not None]))
    cur_mean = float(np.mean([r.score for r in current if r.score is not None]))
    evidence = gather_evidence(
        ctx.session, [*base, *current], before=base, after=current
    )
    source = "pinned baseline" if pinned else "previous version"
    message = (
        f"regression: {ctx.version_label} scores {cur_mean:.3f} vs {source} "
        f"{options.version_key}={base_version} {base_mean:.3f} "
        f"(drop {-comparison.delta:.3f} > margin {options.regression_margin:.2f}, "
        f"{options.regression_confidence:.0%} one-sided bound "
        f"{comparison.high:+.3f}; {len(current)} vs {len(base)} runs; smallest "
        f"detectable drop {comparison.detectable:.3f})"
    )
    figures = {
        "delta": comparison.delta,
        "upper_bound": comparison.high,
        "p_value": comparison.p_value,
        "detectable": comparison.detectable,
        "margin": options.regression_margin,
        "confidence": options.regression_confidence,
        "baseline_version": base_version,
        "baseline_pinned": pinned,
        "baseline_runs": [r.id for r in base],
        "current_runs": [r.id for r in current],
        "baseline_score": base_mean,
        "current_score": cur_mean,
        "questions": comparison.questions,
        "metrics": {
            metric: {"delta": c.delta, "upper_bound": c.high, "p_value": c.p_value}
            for metric, c in per_metric.items()
        },
    }
    return ctx.finding("regression", message, SCENARIO_QUALITY, figures, evidence)


def budget_checks(ctx: RuleContext) -> list[Check]:
    """Tokens and cost of the pass, and p95 question latency of recent passes."""
    run, options = ctx.run, ctx.options
    tokens = None
    if run.input_tokens is not None or run.output_tokens is not None:
        tokens = (run.input_tokens or 0) + (run.output_tokens or 0)
    return [
        _limit_check(ctx, "tokens", tokens, options.max_tokens, "{:,.0f}"),
        _limit_check(ctx, "cost", run.cost, options.max_cost, "${:.4f}"),
        _latency_check(ctx),
    ]


def _limit_check(
    ctx: RuleContext,
    name: str,
    value: float | None,
    limit: float | None,
    shown: str,
) -> Check:
    key = f"budget:{name}"
    if limit is None:
        return ctx.check(key, "clear", reason="no limit set")
    if value is None:
        return ctx.check(key, "hold", reason=f"the pass reported no {name}")
    if value <= limit:
        reason = f"{name} {shown.format(value)} is within {shown.format(limit)}"
        return ctx.check(key, "clear", reason=reason)

    earlier = passes(
        ctx.session,
        Run.started_at < ctx.run.started_at,
        statuses=FINISHED,
        limit=BUDGET_HISTORY_RUNS,
    )
    history = [_run_value(r, name) for r in earlier]
    known = [v for v in history if v is not None]
    typical = median(known) if known else None
    evidence = gather_evidence(ctx.session, [*earlier[:1], ctx.run])
    evidence.node_growth = largest_node_growth(
        ctx.session, [r.id for r in earlier], ctx.run.id, name
    )
    typical_text = (
        f"; median of the {len(known)} passes before: {shown.format(typical)}"
        if typical is not None
        else ""
    )
    message = (
        f"budget: {name} of pass {ctx.run.id} {shown.format(value)} is above the "
        f"limit {shown.format(limit)}{typical_text} at {ctx.version_label}"
    )
    figures = {name: value, "limit": limit, "median_before": typical}
    finding = ctx.finding(key, message, SCENARIO_COST, figures, evidence)
    return ctx.check(key, "firing", finding)


def _run_value(run: Run, name: str) -> float | None:
    if name == "cost":
        return run.cost
    if run.input_tokens is None and run.output_tokens is None:
        return None
    return float((run.input_tokens or 0) + (run.output_tokens or 0))


def _secs(value: float) -> str:
    """Seconds with three significant digits, so a small limit (0.01) shows."""
    return f"{value:.3g} s"


def _latency_check(ctx: RuleContext) -> Check:
    key, options = "budget:p95", ctx.options
    if options.max_p95 is None:
        return ctx.check(key, "clear", reason="no limit set")
    recent = passes(ctx.session, statuses=FINISHED, limit=options.latency_runs)
    durations = result_durations(ctx.session, [r.id for r in recent])
    if not durations:
        return ctx.check(key, "hold", reason="no question durations yet")
    p95 = float(np.percentile(durations, 95))
    if p95 <= options.max_p95:
        reason = f"p95 latency {_secs(p95)} is within {_secs(options.max_p95)}"
        return ctx.check(key, "clear", reason=reason)

    earlier = passes(
        ctx.session,
        Run.started_at < recent[-1].started_at,
        statuses=FINISHED,
        limit=options.latency_runs,
    )
    before = result_durations(ctx.session, [r.id for r in earlier])
    p95_before = float(np.percentile(before, 95)) if before else None
    evidence = gather_evidence(ctx.session, [*recent, *earlier[:1]])
    evidence.node_growth = largest_node_growth(
        ctx.session,
        [r.id for r in earlier[:BUDGET_HISTORY_RUNS]],
        ctx.run.id,
        "seconds",
    )
    before_text = (
        f"; {_secs(p95_before)} over the {len(earlier)} passes before"
        if p95_before is not None
        else ""
    )
    message = (
        f"budget: p95 question latency {_secs(p95)} over the last {len(recent)} "
        f"pass(es) is above the limit {_secs(options.max_p95)}{before_text} at "
        f"{ctx.version_label}"
    )
    figures = {
        "p95_seconds": p95,
        "limit": options.max_p95,
        "p95_before": p95_before,
        "questions": len(durations),
        "runs": [r.id for r in recent],
    }
    finding = ctx.finding(key, message, SCENARIO_LATENCY, figures, evidence)
    return ctx.check(key, "firing", finding)


def failures_checks(ctx: RuleContext) -> list[Check]:
    """Questions without a graded report, and questions the judge left unscored."""
    return [_task_check(ctx), _judge_check(ctx)]


def _task_check(ctx: RuleContext) -> Check:
    key, run = "failures:tasks", ctx.run
    results = run_results(ctx.session, run.id)
    total = max(run.questions_total or 0, len(results))
    if total == 0:
        return ctx.check(key, "hold", reason="the pass holds no question")
    failed = [r for r in results if r.status != "completed"]
    succeeded = len(results) - len(failed)
    rate = succeeded / total
    if rate >= ctx.options.min_success_rate:
        reason = f"{succeeded} of {total} questions produced a graded report"
        return ctx.check(key, "clear", reason=reason)

    errors = "; ".join(
        f"{r.question_id}: {_short(r.error or 'no error recorded')}"
        for r in failed[:SHOWN_ERRORS]
    )
    missing = total - len(results)
    missing_text = f", {missing} never stored" if missing else ""
    pass_text = f" (pass {run.status}: {_short(run.error)})" if run.error else ""
    message = (
        f"failures: {total - succeeded} of {total} questions produced no graded "
        f"report in pass {run.id}{missing_text}{pass_text}; success rate "
        f"{rate:.2f} < minimum {ctx.options.min_success_rate:.2f} at "
        f"{ctx.version_label}" + (f" ({errors})" if errors else "")
    )
    figures = {
        "success_rate": rate,
        "minimum": ctx.options.min_success_rate,
        "failed_questions": [r.question_id for r in failed],
        "questions_total": total,
        "pass_status": run.status,
    }
    finding = ctx.finding(key, message, SCENARIO_FAILING, figures, _around(ctx))
    return ctx.check(key, "firing", finding)


def _judge_check(ctx: RuleContext) -> Check:
    key = "failures:judge"
    unscored = unscored_questions(ctx.session, ctx.run.id)
    if not unscored:
        return ctx.check(key, "clear", reason="the judge scored every question")

    errors = "; ".join(
        f"{question}: {_short(error)}"
        for question, error in list(unscored.items())[:SHOWN_ERRORS]
    )
    message = (
        f"failures: the judge ({ctx.run.judge_model}) could not score "
        f"{len(unscored)} question(s) in pass {ctx.run.id} at {ctx.version_label}; "
        f"they are left out of the score ({errors})"
    )
    figures = {"unscored_questions": sorted(unscored), "judge": ctx.run.judge_model}
    finding = ctx.finding(key, message, SCENARIO_FAILING, figures, _around(ctx))
    return ctx.check(key, "firing", finding)


def _around(ctx: RuleContext) -> Evidence:
    """Evidence over the pass before this one and this one."""
    earlier = passes(
        ctx.session, Run.started_at < ctx.run.started_at, statuses=FINISHED, limit=1
    )
    evidence = gather_evidence(ctx.session, [*earlier, ctx.run])
    if earlier:
        evidence.metric_drop = largest_metric_drop(earlier, [ctx.run])
    return evidence


# Running the rules -----------------------------------------------------------------

Rule = Callable[[RuleContext], list[Check]]
RULES: tuple[tuple[str, Rule], ...] = (
    ("quality", quality_checks),
    ("regression", regression_checks),
    ("budget", budget_checks),
    ("failures", failures_checks),
)


def evaluate_rules(session: Session, run: Run, options: AlertOptions) -> list[Check]:
    """Every rule's checks for ``run``. A rule that raises is logged and skipped,
    so its open alerts stay as they are and the other rules still run. A rescore
    or a still-running run is not a pass to judge; an aborted pass (the daemon
    was stopped) only holds what is open."""
    if run.kind == "rescore" or run.status == "running":
        return []
    ctx = RuleContext(session=session, run=run, options=options)
    checks: list[Check] = []
    for name, rule in RULES:
        try:
            found = rule(ctx)
        except Exception:
            logger.exception("alert rule %s failed on run %s", name, run.id)
            continue
        if run.status == "aborted":
            found = [
                ctx.check(c.key, "hold", c.finding, "the pass was aborted")
                for c in found
            ]
        checks.extend(found)
    return checks


def _short(text: str | None, limit: int = 120) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _plain(value: Any) -> Any:
    """JSON-ready: numpy numbers become floats, NaN and infinities None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value

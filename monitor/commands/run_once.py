"""``monitor run --once``: one pass, printed as it goes, then the verdict."""

from __future__ import annotations

import logging
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.runner import (
    PassConfig,
    PassReport,
    PassRunner,
    PreparedPass,
    QuestionReport,
)

if TYPE_CHECKING:
    from monitor.alerts import AlertOutcome

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_ALERT = 0, 1, 2


def pass_config(
    *,
    threshold: float | None,
    concurrency: int | None,
    judge: str | None,
    judge_model: str | None,
    golden: Path | None,
    question_timeout: float | None,
    kind: str = "manual",
    pass_timeout: float | None = None,
) -> PassConfig:
    """Flags over MONITOR_* settings over defaults."""
    from monitor.settings import get_monitor_settings

    settings = get_monitor_settings()
    return PassConfig(
        golden_file=golden or settings.golden_file,
        subset_size=settings.subset_size,
        threshold=settings.threshold if threshold is None else threshold,
        concurrency=concurrency or settings.concurrency,
        question_timeout=question_timeout or settings.question_timeout,
        pass_timeout=pass_timeout,
        judge=judge or settings.judge,
        judge_model=judge_model or settings.judge_model,
        kind=kind,
        graph=settings.graph,
    )


def format_question(report: QuestionReport) -> str:
    """One line per question: duration, visits, turns, checks, scores."""
    if report.status == "failed":
        return (
            f"  {report.question_id:<24} FAILED after {report.seconds:.1f} s: "
            f"{report.error}"
        )
    passed = sum(report.checks.values())
    scores = " ".join(
        f"{metric}={'-' if value is None else f'{value:g}'}"
        for metric, value in report.scores.items()
    )
    line = (
        f"  {report.question_id:<24} {report.seconds:5.1f} s  "
        f"{report.node_visits:2d} visits  {report.worker_turns:2d} turns  "
        f"checks {passed}/{len(report.checks)}  {scores}"
    )
    if report.judge_error:
        line += f"  (unscored: {report.judge_error})"
    return line


def print_summary(report: PassReport) -> None:
    run = report.run
    means = run.metric_means or {}
    print(
        "Means: "
        + ", ".join(
            f"{metric} {'n/a' if value is None else f'{value:.2f}'}"
            for metric, value in means.items()
        )
    )
    if run.questions_unscored:
        print(
            f"Unscored: {run.questions_unscored} question(s) (judge errors, not zeros)"
        )
    if run.questions_failed:
        print(f"Failed: {run.questions_failed} question(s)")
    tokens = (run.input_tokens or 0) + (run.output_tokens or 0)
    cost = "n/a" if run.cost is None else f"${run.cost:.4f}"
    print(
        f"Usage: {tokens} tokens, est. {cost} (illustrative prices), "
        f"{run.wall_seconds or 0:.1f} s"
    )
    score = "n/a" if run.score is None else f"{run.score:.3f}"
    print(f"Monitor score: {score} (threshold {run.threshold:.2f}, run '{run.id}')")


def _progress(total: int) -> tuple[AbstractContextManager[Any], Any]:
    """A progress bar on a terminal; nothing otherwise (lines are printed anyway)."""
    if not sys.stdout.isatty():
        return nullcontext(), None
    from rich.progress import Progress

    progress = Progress(transient=True)
    return progress, progress


def run_once_command(
    *,
    window: int | None = None,
    quality_confidence: float | None = None,
    version_key: str | None = None,
    baseline_runs: int | None = None,
    regression_margin: float | None = None,
    regression_confidence: float | None = None,
    max_tokens: int | None = None,
    max_cost: float | None = None,
    max_p95: float | None = None,
    min_success_rate: float | None = None,
    prepared: PreparedPass | None = None,
    **flags: Any,
) -> int:
    """One pass, then the alert rules. The keyword arguments before ``flags``
    override the MONITOR_* alert settings (None keeps the setting); ``flags``
    are those of :func:`pass_config`."""
    from monitor.alerts import alert_options, process_pass_alerts
    from monitor.runner import prepare_pass
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database
    from scout.models import describe_backend
    from scout.observability import flush_traces

    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    settings = get_monitor_settings()
    config = pass_config(**flags)
    prepared = prepared or prepare_pass(config)
    engine = open_database(settings, create=True)

    print(describe_backend(prepared.scout_settings))
    print(f"judge: {prepared.judge.model} ({prepared.judge.version})")
    print(f"prompt_version: {_prompt_version()}; {len(prepared.questions)} questions")

    holder, progress = _progress(len(prepared.questions))
    try:
        with holder:
            task = (
                progress.add_task("pass", total=len(prepared.questions))
                if progress
                else None
            )

            def on_question(report: QuestionReport) -> None:
                line = format_question(report)
                if progress is not None:
                    progress.console.print(line, highlight=False, markup=False)
                    progress.advance(task)
                else:
                    print(line, flush=True)

            result = PassRunner(engine, config, prepared, on_question=on_question).run()
    finally:
        flush_traces()

    print_summary(result)
    options = alert_options(
        window=window,
        quality_confidence=quality_confidence,
        version_key=version_key,
        baseline_runs=baseline_runs,
        regression_margin=regression_margin,
        regression_confidence=regression_confidence,
        max_tokens=max_tokens,
        max_cost=max_cost,
        max_p95=max_p95,
        min_success_rate=min_success_rate,
    )
    outcome = process_pass_alerts(engine, result.run, options)
    code = report_alerts(outcome)
    if result.run.status == "failed":
        print(f"error: the pass failed: {result.run.error}", file=sys.stderr)
        return EXIT_FAILED
    return code


def report_alerts(outcome: AlertOutcome) -> int:
    """``ALERT:`` lines on stderr, a one-line notice summary; the exit code."""
    for finding in outcome.firing:
        print(f"ALERT: {finding.line}", file=sys.stderr)
    for error in outcome.delivery_errors:
        print(
            f"warning: notice not delivered, kept for the next pass: {error}",
            file=sys.stderr,
        )
    if (
        outcome.firing
        or outcome.opened
        or outcome.reminded
        or outcome.resolved
        or outcome.notices_pending
    ):
        print(
            f"Alerts: {len(outcome.firing)} firing ({len(outcome.opened)} new, "
            f"{len(outcome.reminded)} reminders, {len(outcome.resolved)} resolved); "
            f"notices {outcome.notices_sent} sent, {outcome.notices_pending} pending"
        )
    if outcome.firing:
        return EXIT_ALERT
    print("OK: no alert firing.")
    return EXIT_OK


def _prompt_version() -> str:
    from scout.config import PROMPT_VERSION

    return PROMPT_VERSION

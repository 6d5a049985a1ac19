"""``monitor rescore RUN_ID``: grade a run's stored reports again, no agent call.

Exit 2 when ``--threshold`` is given and the grading is below it (with
``--stored``, the run's own threshold applies when none is given); 0 otherwise;
1 on error.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from monitor.rescore import (
        QuestionRegrade,
        RescoreOptions,
        RescoreReport,
        StoredVerdict,
    )

EXIT_OK, EXIT_ALERT = 0, 2
JUDGES = ("auto", "offline", "llm")


def rescore(
    run_id: Annotated[str, typer.Argument(help="Run id (see `monitor history`).")],
    judge: Annotated[
        str | None,
        typer.Option(help="auto, offline or llm (default: MONITOR_JUDGE)."),
    ] = None,
    judge_model: Annotated[
        str | None, typer.Option(help="Model of the LLM judge.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Exit 2 when the score is below (0-1)."),
    ] = None,
    stored: Annotated[
        bool,
        typer.Option(
            "--stored",
            help="Apply the threshold (default: the run's) to the stored scores: "
            "no model call, nothing written.",
        ),
    ] = False,
    repeat: Annotated[
        int,
        typer.Option(min=1, max=50, help="Grade each report K times; show the spread."),
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-grade a run's stored reports without the agent, as a new rescore run."""
    if stored and (judge is not None or judge_model is not None or repeat != 1):
        raise typer.BadParameter(
            "--stored grades nothing: drop --judge, --judge-model and --repeat"
        )
    if judge is not None and judge not in JUDGES:
        raise typer.BadParameter(f"--judge {judge!r}: use auto, offline or llm")
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if stored:
        raise typer.Exit(stored_command(run_id, threshold, as_json=as_json))
    raise typer.Exit(
        rescore_command(
            run_id,
            rescore_options(judge, judge_model, threshold, repeat),
            as_json=as_json,
        )
    )


def rescore_options(
    judge: str | None, judge_model: str | None, threshold: float | None, repeat: int
) -> RescoreOptions:
    """Flags over MONITOR_* settings."""
    from monitor.rescore import RescoreOptions
    from monitor.settings import get_monitor_settings

    settings = get_monitor_settings()
    return RescoreOptions(
        golden_file=settings.golden_file,
        judge=judge or settings.judge,
        judge_model=judge_model or settings.judge_model,
        threshold=threshold,
        repeat=repeat,
        concurrency=settings.concurrency,
    )


def rescore_command(run_id: str, options: RescoreOptions, *, as_json: bool) -> int:
    """Re-grade, print, and return the exit code."""
    from monitor.rescore import rescore as regrade
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database
    from scout.observability import flush_traces

    engine = open_database(get_monitor_settings(), create=False)
    on_question = None if as_json else (lambda q: print(_question_line(q)))
    try:
        report = regrade(engine, run_id, options, on_question=on_question)
    finally:
        flush_traces()
        engine.dispose()

    if as_json:
        print(json.dumps(_report_json(report), indent=2))
    else:
        _print_report(report)
    return _verdict(
        report.below_threshold,
        f"rescore {report.run.id} of run {report.parent.id}",
        report.run.score,
        report.threshold,
        quiet=as_json,
    )


def stored_command(run_id: str, threshold: float | None, *, as_json: bool) -> int:
    """Apply a threshold to stored scores, print, and return the exit code."""
    from monitor.rescore import stored_verdict
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database

    engine = open_database(get_monitor_settings(), create=False)
    try:
        verdict = stored_verdict(engine, run_id, threshold)
    finally:
        engine.dispose()

    if as_json:
        print(json.dumps(_stored_json(verdict), indent=2))
    else:
        _print_stored(verdict)
    return _verdict(
        verdict.below_threshold,
        f"stored scores of run {verdict.run.id}",
        verdict.score,
        verdict.threshold,
        quiet=as_json,
    )


def _verdict(
    below: bool, what: str, score: float | None, threshold: float | None, *, quiet: bool
) -> int:
    """The exit code; the ALERT line goes to stderr even with --json."""
    from monitor.alerts import SCENARIO_QUALITY

    if threshold is None:
        return EXIT_OK
    if below:
        shown = "no score" if score is None else f"score {score:.3f}"
        print(
            f"ALERT: {what}: {shown} is below threshold {threshold:.2f} — open "
            f"runbook.md, scenario {SCENARIO_QUALITY}.",
            file=sys.stderr,
        )
        return EXIT_ALERT
    if not quiet:
        print(f"OK: score {score:.3f} is at or above threshold {threshold:.2f}.")
    return EXIT_OK


# Printing ------------------------------------------------------------------------


def _num(value: float | None, spec: str = "g") -> str:
    return "-" if value is None else format(value, spec)


def _question_line(question: QuestionRegrade) -> str:
    if not question.graded:
        return f"  {question.question_id:<24} {question.note}"
    metrics = "  ".join(
        f"{metric} {_num(before, '.2g')}->{_num(question.after[metric], '.2g')}"
        for metric, before in question.before.items()
    )
    line = (
        f"  {question.question_id:<24} {metrics}  score "
        f"{_num(question.score_before, '.3f')}->{_num(question.score_after, '.3f')}"
    )
    return line + (f"  (unscored: {question.note})" if question.note else "")


def _print_report(report: RescoreReport) -> None:
    run, parent = report.run, report.parent
    for question in report.questions:
        if not question.graded:
            print(_question_line(question))
    for note in report.notes:
        print(f"note: {note}")
    print(
        f"Judge: {run.judge_model} ({run.judge_version}), no agent call. "
        f"Score: {_num(parent.score, '.3f')} -> {_num(run.score, '.3f')} "
        f"(run {parent.id} -> rescore {run.id})"
    )
    if report.spread:
        print(
            "Judge spread over repeated gradings (pooled SD within question; "
            "largest range):"
        )
        for spread in report.spread:
            print(
                f"  {spread.name:<10} {_num(spread.pooled_sd, '.3f')}  "
                f"{_num(spread.max_range, '.3f')}  ({spread.attempts} attempts)"
            )
    if report.judge_tokens is not None:
        print(f"Judge usage: {report.judge_tokens} tokens (not stored in usage)")
    print(
        f"Stored as run {run.id} (parent {parent.id}): `monitor show {run.id}`, "
        f"`monitor compare {parent.id} {run.id} --by run`"
    )


def _print_stored(verdict: StoredVerdict) -> None:
    run = verdict.run
    print(f"Stored scores of run {run.id} ({run.judge_version}), no model call:")
    for question in verdict.questions:
        if question.note:
            print(f"  {question.question_id:<24} {question.note}")
        else:
            score = _num(question.score_before, ".3f")
            print(f"  {question.question_id:<24} score {score}")
    print(f"Score: {_num(verdict.score, '.3f')} (threshold {verdict.threshold:.2f})")


def _question_json(question: QuestionRegrade) -> dict[str, Any]:
    return {
        "question_id": question.question_id,
        "graded": question.graded,
        "before": question.before,
        "after": question.after,
        "score_before": question.score_before,
        "score_after": question.score_after,
        "attempts": question.attempts,
        "note": question.note,
    }


def _report_json(report: RescoreReport) -> dict[str, Any]:
    from dataclasses import asdict

    from monitor.commands.read import run_summary

    return {
        "run": run_summary(report.run),
        "parent": run_summary(report.parent),
        "threshold": report.threshold,
        "below_threshold": report.below_threshold,
        "questions": [_question_json(q) for q in report.questions],
        "spread": [asdict(spread) for spread in report.spread],
        "judge_tokens": report.judge_tokens,
        "notes": report.notes,
    }


def _stored_json(verdict: StoredVerdict) -> dict[str, Any]:
    from monitor.commands.read import run_summary

    return {
        "run": run_summary(verdict.run),
        "score": verdict.score,
        "threshold": verdict.threshold,
        "below_threshold": verdict.below_threshold,
        "questions": [_question_json(q) for q in verdict.questions],
    }

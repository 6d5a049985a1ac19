"""``monitor compare V1 V2``: per metric, per question and usage, V2 against V1.

Exit 2 when the overall score regressed significantly (a deploy can gate on it),
0 otherwise; refusals and errors exit 1 with one line.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from monitor.compare import CompareOptions, CompareReport, MetricComparison

EXIT_OK, EXIT_ALERT = 0, 2


def compare(
    v1: Annotated[
        str, typer.Argument(help="Baseline: a version, or a run id with --by run.")
    ],
    v2: Annotated[
        str, typer.Argument(help="Candidate: a version, or a run id with --by run.")
    ],
    by: Annotated[
        str,
        typer.Option(
            help="prompt_version, model, git_sha, run, or sources (live-page "
            "passes against snapshot passes of prompt versions V1 and V2)."
        ),
    ] = "prompt_version",
    last: Annotated[
        int, typer.Option(min=1, help="Newest completed runs per side (not --by run).")
    ] = 10,
    allow_different_golden: Annotated[
        bool,
        typer.Option(
            "--allow-different-golden",
            help="Compare sides replayed on different golden subsets.",
        ),
    ] = False,
    allow_different_judge: Annotated[
        bool,
        typer.Option(
            "--allow-different-judge", help="Compare sides graded by different judges."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Did V2 regress against V1? Exit 2 when the overall score dropped."""
    from monitor.compare import VERSION_KEYS, CompareOptions

    if by == "sources":
        raise typer.Exit(sources_command(v1, v2, as_json=as_json))
    if by not in VERSION_KEYS:
        known = ", ".join((*VERSION_KEYS, "sources"))
        raise typer.BadParameter(f"--by {by!r}: use {known}")
    options = CompareOptions(
        by=by,
        last=last,
        allow_different_golden=allow_different_golden,
        allow_different_judge=allow_different_judge,
    )
    raise typer.Exit(compare_command(v1, v2, options, as_json=as_json))


def compare_command(v1: str, v2: str, options: CompareOptions, *, as_json: bool) -> int:
    """Compare, print, and return the exit code."""
    from monitor.compare import compare
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database, session_factory

    engine = open_database(get_monitor_settings(), create=False)
    try:
        with session_factory(engine)() as session:
            report = compare(session, v1, v2, options)
    finally:
        engine.dispose()

    if as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print_report(report)
    return EXIT_ALERT if report.regressed else EXIT_OK


def sources_command(v1: str, v2: str, *, as_json: bool) -> int:
    """Live passes against snapshot passes: did the pages or the agent drift?
    With V1 equal to V2, the newest passes of each kind against the ones before.
    Exit 2 when either kind of pass dropped beyond the margin."""
    from monitor.compare import resolve_version
    from monitor.settings import get_monitor_settings
    from monitor.snapshots import compare_live_vs_snapshot
    from monitor.store.db import open_database, session_factory

    engine = open_database(get_monitor_settings(), create=False)
    old, new = (None, None) if v1 == v2 else (v1, v2)
    try:
        with session_factory(engine)() as session:
            if old is not None and new is not None:
                # An unknown version is one line naming the nearest, as with
                # the other --by keys, not two empty sides.
                old = resolve_version(session, "prompt_version", old)
                new = resolve_version(session, "prompt_version", new)
            result = compare_live_vs_snapshot(session, old=old, new=new)
    finally:
        engine.dispose()

    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        for side in (result.live, result.snapshot):
            print(
                f"{side.kind:<9} baseline {_num(side.baseline_score, '.3f')} "
                f"({len(side.baseline_runs)} runs) -> recent "
                f"{_num(side.recent_score, '.3f')} ({len(side.recent_runs)} runs)"
            )
        print(f"Verdict: {result.verdict}: {result.explanation}")
    return EXIT_ALERT if result.verdict in ("sources", "agent") else EXIT_OK


# Printing ------------------------------------------------------------------------


def _console() -> Console:
    from rich.console import Console

    # Piped output is not cut to 80 columns: the tables stay readable in CI logs.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: CompareReport) -> None:
    console = _console()
    overall = report.overall
    console.print(
        f"[bold]compare {report.by}[/]: V1 {report.v1.label} "
        f"({len(report.v1.runs)} runs) -> V2 {report.v2.label} "
        f"({len(report.v2.runs)} runs); {report.confidence:.0%} intervals with "
        f"runs as replicates and {overall.questions} questions as strata"
    )
    _print_metrics(console, report)
    console.print(_power_line(overall), markup=False)
    _print_questions(console, report)
    _print_usage(console, report)
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
    verdict = "REGRESSED" if report.regressed else overall.verdict
    console.print(f"Verdict: overall {verdict}.")


def _power_line(overall: MetricComparison) -> str:
    """What these runs could have found: said plainly, since it is often little."""
    if overall.delta is None:
        return "No question was scored on both sides: nothing was measured."
    if not overall.can_be_significant:
        return (
            f"With these runs no change can be significant at {overall.confidence:.0%}"
            f" (only {overall.relabellings} relabellings of runs): compare more runs"
            " per side (--last, or versions instead of single runs)."
        )
    if not overall.detectable:
        return "The scores did not vary within the sides: no noise to measure."
    return (
        f"Smallest overall drop these runs detect with 80% power: "
        f"{overall.detectable:.3f}"
    )


def _print_metrics(console: Console, report: CompareReport) -> None:
    from rich.table import Table

    table = Table(title="per metric (V2 - V1)")
    for column in ("metric", "V1 (runs)", "V2 (runs)", "delta", "interval", "verdict"):
        table.add_column(column)
    for m in report.metrics:
        spec = ".3f" if m.scale == "0-1" else ".2f"
        interval = "-"
        if m.low is not None and m.high is not None:
            interval = f"[{m.low:+{spec}}, {m.high:+{spec}}]"
        table.add_row(
            f"{m.metric} ({m.scale})",
            f"{_num(m.v1_mean, spec)} ({m.v1_runs})",
            f"{_num(m.v2_mean, spec)} ({m.v2_runs})",
            _num(m.delta, "+" + spec),
            interval,
            m.verdict,
        )
    console.print(table)


def _print_questions(console: Console, report: CompareReport) -> None:
    from rich.table import Table

    from monitor.store.models import METRICS

    table = Table(title="per question, biggest movers first")
    for column in ("question", "V1", "V2", "delta", "grnd", "cov", "cite", "checks"):
        table.add_column(column)
    for move in report.questions:
        changed = "; ".join(
            f"{c.check} {c.v1[0]}/{c.v1[1]}->{c.v2[0]}/{c.v2[1]}" for c in move.checks
        )
        table.add_row(
            move.question_id,
            _num(move.v1, ".3f"),
            _num(move.v2, ".3f"),
            _num(move.delta, "+.3f"),
            *(_num(move.metric_deltas.get(m), "+.2f") for m in METRICS),
            changed or "same",
        )
    console.print(table)


def _print_usage(console: Console, report: CompareReport) -> None:
    from rich.table import Table

    from monitor.compare import usage_deltas

    table = Table(title="usage per run")
    for column in ("", "V1", "V2", "delta"):
        table.add_column(column)
    labels = {
        "tokens_per_run": ("tokens", ".0f"),
        "cost_per_run": ("cost ($)", ".4f"),
        "p95_latency_seconds": ("p95 latency (s)", ".2f"),
    }
    for name, figure in usage_deltas(*report.usage).items():
        label, spec = labels[name]
        relative = figure["relative"]
        delta = _num(figure["delta"], "+" + spec)
        if relative is not None:
            delta += f" ({relative:+.0%})"
        table.add_row(label, _num(figure["v1"], spec), _num(figure["v2"], spec), delta)
    console.print(table)

"""``monitor history``, ``monitor show`` and ``monitor db upgrade``."""

from __future__ import annotations

import json
import sys
from typing import Any

from monitor.store.models import Run
from monitor.store.queries import ResultDetail

EXIT_OK = 0


def run_summary(run: Run) -> dict[str, Any]:
    """The JSON form of a run, as `history --json` and `show --json` give it."""
    return {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "parent_run_id": run.parent_run_id,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "score": run.score,
        "metric_means": run.metric_means,
        "threshold": run.threshold,
        "prompt_version": run.prompt_version,
        "model": run.model,
        "model_reported": run.model_reported,
        "judge_model": run.judge_model,
        "judge_version": run.judge_version,
        "git_sha": run.git_sha,
        "git_dirty": run.git_dirty,
        "golden_hash": run.golden_hash,
        "corpus_fingerprint": run.corpus_fingerprint,
        "sources_backend": run.sources_backend,
        "questions_total": run.questions_total,
        "questions_failed": run.questions_failed,
        "questions_unscored": run.questions_unscored,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cost": run.cost,
        "wall_seconds": run.wall_seconds,
        "error": run.error,
    }


def version_marker(run: Run, older: Run | None) -> str:
    """Which version fields changed since the previous (older) run; "corpus"
    when the corpus fingerprint or the sources backend did."""
    if older is None:
        return ""
    changed = [
        label
        for label, new, old in (
            ("prompt", run.prompt_version, older.prompt_version),
            ("model", run.model, older.model),
            ("sha", run.git_sha, older.git_sha),
            ("judge", run.judge_version, older.judge_version),
            (
                "corpus",
                (run.corpus_fingerprint, run.sources_backend),
                (older.corpus_fingerprint, older.sources_backend),
            ),
        )
        if new != old
    ]
    return "◆ " + ",".join(changed) if changed else ""


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def history_command(*, limit: int, as_json: bool) -> int:
    from rich.console import Console
    from rich.table import Table

    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database, session_factory
    from monitor.store.queries import history_runs

    engine = open_database(get_monitor_settings(), create=False)
    with session_factory(engine)() as session:
        runs = history_runs(session, limit)

    if as_json:
        print(json.dumps([run_summary(run) for run in runs], indent=2))
        return EXIT_OK

    passes = [run for run in runs if run.kind != "rescore"]
    table = Table(title=f"last {len(passes)} runs, newest first, rescores under them")
    for column in (
        "started (UTC)",
        "id",
        "kind",
        "status",
        "score",
        "grnd",
        "cov",
        "cite",
        "prompt",
        "model",
        "sha",
        "change",
    ):
        table.add_column(column)
    for run in runs:
        older = _compared_with(run, runs, passes)
        means = run.metric_means or {}
        rescore = run.kind == "rescore"
        table.add_row(
            f"{run.started_at:%Y-%m-%d %H:%M}",
            ("  ↳ " if rescore else "") + run.id,
            run.kind,
            run.status,
            _fmt(run.score),
            _fmt(means.get("grounding"), ".2f"),
            _fmt(means.get("coverage"), ".2f"),
            _fmt(means.get("citations"), ".2f"),
            run.prompt_version,
            run.model,
            run.git_sha[:8] + ("*" if run.git_dirty else ""),
            version_marker(run, older),
        )
    # Piped output is not cut to 80 columns, so the ids stay whole in logs.
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return EXIT_OK


def _compared_with(run: Run, runs: list[Run], passes: list[Run]) -> Run | None:
    """What a row's version marker compares with: a pass, the next older pass;
    a rescore, the pass it re-grades (so a judge change shows)."""
    if run.kind == "rescore":
        return next((r for r in runs if r.id == run.parent_run_id), None)
    index = passes.index(run)
    return passes[index + 1] if index + 1 < len(passes) else None


def detail_json(detail: ResultDetail) -> dict[str, Any]:
    result = detail.result
    return {
        "question_id": result.question_id,
        "question": result.question,
        "status": result.status,
        "error": result.error,
        "checks": result.checks,
        "scores": {
            score.metric: {
                "value": score.value,
                "rationale": score.rationale,
                "error": score.error,
                "attempt": score.attempt,
            }
            for score in detail.scores
            if score.attempt == 0
        },
        "sources": result.sources,
        "node_visits": result.node_visits,
        "worker_turns": result.worker_turns,
        "duration_seconds": result.duration_seconds,
        "trace_id": result.trace_id,
        "usage": [
            {
                "node": u.node,
                "model": u.model,
                "calls": u.calls,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "seconds": u.seconds,
                "cost": u.cost,
            }
            for u in detail.usage
        ],
        "report": result.report,
    }


def show_command(run_id: str, *, as_json: bool) -> int:
    from monitor.settings import get_monitor_settings
    from monitor.snapshots import source_drift
    from monitor.store.db import open_database, session_factory
    from monitor.store.queries import get_run, run_details

    engine = open_database(get_monitor_settings(), create=False)
    with session_factory(engine)() as session:
        run = get_run(session, run_id)
        details = run_details(session, run)
        drift = source_drift(session, run)

    if as_json:
        results = [
            detail_json(d) | {"source_drift": drift.get(d.result.question_id)}
            for d in details
        ]
        print(json.dumps(run_summary(run) | {"results": results}, indent=2))
        return EXIT_OK
    _print_run(run, details, drift)
    return EXIT_OK


def drift_line(drift: dict[str, Any] | None) -> str | None:
    """Source drift of one question: pages changed since the baseline pass, and
    how much of the fetched markup was boilerplate (web pages only)."""
    if not drift or not drift.get("sources"):
        return None
    line = f"  sources: {drift['sources']} read"
    if drift.get("baseline_run_id"):
        line += (
            f", {drift['changed']} of {drift['compared']} changed content since "
            f"run {drift['baseline_run_id']}"
        )
    if drift.get("boilerplate_share") is not None:
        line += f", boilerplate {drift['boilerplate_share']:.0%} of the page text"
    return line


def _print_run(
    run: Run, details: list[ResultDetail], drift: dict[str, dict[str, Any]]
) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    console.print(
        f"[bold]run {run.id}[/] {run.kind} {run.status}  score {_fmt(run.score)}  "
        f"prompt {run.prompt_version}  model {run.model}  judge {run.judge_version}"
    )
    for detail in details:
        result = detail.result
        console.print(
            f"\n[bold]{result.question_id}[/] {result.status}  "
            f"{_fmt(result.duration_seconds, '.1f')} s  trace {result.trace_id or '-'}"
        )
        sources = drift_line(drift.get(result.question_id))
        if sources:
            console.print(sources, markup=False)
        if result.error:
            console.print(f"  error: {result.error}", markup=False)
        for name, ok in (result.checks or {}).items():
            console.print(f"  check {name}: {'pass' if ok else 'FAIL'}")
        for score in detail.scores:
            value = "unscored" if score.value is None else f"{score.value:g}"
            why = score.rationale or score.error or ""
            console.print(f"  {score.metric}: {value}  {why}", markup=False)
        for u in detail.usage:
            console.print(
                f"  usage {u.node}: {u.calls} calls, in {_count(u.input_tokens)}, "
                f"out {_count(u.output_tokens)}, {u.seconds:.2f} s",
                markup=False,
            )


def _count(tokens: int | None) -> str:
    """A token count, or '?' when the server did not report it (never 0)."""
    return "?" if tokens is None else str(tokens)


def db_upgrade_command() -> int:
    from monitor.settings import get_monitor_settings
    from monitor.store.db import ensure_folder, upgrade_database

    settings = get_monitor_settings()
    if settings.database_url is None:
        ensure_folder(settings.home)
    before, after = upgrade_database(settings.sqlalchemy_url)
    if before == after:
        print(f"database already at revision {after}")
    else:
        print(f"database upgraded from {before or 'empty'} to {after}")
    return EXIT_OK

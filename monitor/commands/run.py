"""``monitor run``: the command line of a pass (``--once``) or the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run(
    once: Annotated[
        bool, typer.Option("--once", help="Run one pass and exit.")
    ] = False,
    every: Annotated[
        str | None, typer.Option(help="Run as a daemon, e.g. 4h, 30m, 1h30m.")
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Alert below this score (0-1)."),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Questions replayed at once.")
    ] = None,
    judge: Annotated[str | None, typer.Option(help="auto, offline or llm.")] = None,
    judge_model: Annotated[
        str | None, typer.Option(help="Model of the LLM judge.")
    ] = None,
    golden: Annotated[Path | None, typer.Option(help="Golden set file (TOML).")] = None,
    question_timeout: Annotated[
        float | None, typer.Option(min=0.001, help="Seconds allowed per question.")
    ] = None,
) -> None:
    """Replay the golden subset through the agent, grade it, store it, alert."""
    from monitor.commands.run_once import run_once_command

    if every is not None and once:
        raise typer.BadParameter("give --once or --every, not both")
    if every is not None:
        raise typer.BadParameter("--every is not available in this build; use --once")
    if judge is not None and judge not in ("auto", "offline", "llm"):
        raise typer.BadParameter(f"--judge {judge!r}: use auto, offline or llm")
    code = run_once_command(
        threshold=threshold,
        concurrency=concurrency,
        judge=judge,
        judge_model=judge_model,
        golden=golden,
        question_timeout=question_timeout,
    )
    raise typer.Exit(code)

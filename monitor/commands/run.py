"""``monitor run``: one pass (``--once``) or the daemon (``--every 4h``).

Both take the pass lease in the database, so a pass by hand or from a CronJob
never overlaps a daemon's pass on the same database: while another process
holds the lease, ``--once`` says who in one line and exits 1. Both also mark
runs left ``running`` by a dead process as abandoned before they start.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from monitor.logs import LogFormat
    from monitor.scheduler import Schedule

logger = logging.getLogger(__name__)

LOG_FORMATS = ("plain", "json")
VERSION_KEYS = ("prompt_version", "model", "git_sha")
EXIT_INTERRUPTED = 130


def run(
    once: Annotated[
        bool, typer.Option("--once", help="Run one pass and exit.")
    ] = False,
    every: Annotated[
        str | None, typer.Option(help="Run as a daemon, e.g. 4h, 30m, 1h30m.")
    ] = None,
    jitter: Annotated[
        str | None,
        typer.Option(help="Delay each daemon pass by up to this, e.g. 5m."),
    ] = None,
    pass_timeout: Annotated[
        str | None,
        typer.Option(help="Time limit of a pass, e.g. 20m (daemon: 0.8 x --every)."),
    ] = None,
    grace: Annotated[
        str,
        typer.Option(help="On SIGTERM, time the pass in flight gets to finish."),
    ] = "60s",
    log_format: Annotated[
        str, typer.Option(help="Log lines: plain (timestamped) or json.")
    ] = "plain",
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
    window: Annotated[
        int | None, typer.Option(min=1, help="Runs in the rolling quality score.")
    ] = None,
    quality_confidence: Annotated[
        float | None,
        typer.Option(min=0.5, max=0.999, help="How sure before a quality page."),
    ] = None,
    version_key: Annotated[
        str | None, typer.Option(help="Regression by prompt_version, model, git_sha.")
    ] = None,
    baseline_runs: Annotated[
        int | None, typer.Option(min=1, help="Previous version's runs compared.")
    ] = None,
    regression_margin: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Smallest drop that pages.")
    ] = None,
    regression_confidence: Annotated[
        float | None,
        typer.Option(min=0.5, max=0.999, help="How sure before a regression page."),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=1, help="Budget: tokens per pass.")
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option(min=0.0, help="Budget: est. cost per pass.")
    ] = None,
    max_p95: Annotated[
        float | None, typer.Option(min=0.0, help="Budget: p95 seconds per question.")
    ] = None,
    min_success_rate: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Share of questions that must grade."),
    ] = None,
) -> None:
    """Replay the golden subset through the agent, grade it, store it, alert."""
    if every is not None and once:
        raise typer.BadParameter("give --once or --every, not both")
    if every is None and jitter is not None:
        raise typer.BadParameter("--jitter needs --every")
    if judge is not None and judge not in ("auto", "offline", "llm"):
        raise typer.BadParameter(f"--judge {judge!r}: use auto, offline or llm")
    if log_format not in LOG_FORMATS:
        raise typer.BadParameter(f"--log-format {log_format!r}: use plain or json")
    if version_key is not None and version_key not in VERSION_KEYS:
        raise typer.BadParameter(
            f"--version-key {version_key!r}: use {', '.join(VERSION_KEYS)}"
        )
    alert_flags: dict[str, Any] = {
        "window": window,
        "quality_confidence": quality_confidence,
        "version_key": version_key,
        "baseline_runs": baseline_runs,
        "regression_margin": regression_margin,
        "regression_confidence": regression_confidence,
        "max_tokens": max_tokens,
        "max_cost": max_cost,
        "max_p95": max_p95,
        "min_success_rate": min_success_rate,
    }

    flags: dict[str, Any] = {
        "threshold": threshold,
        "concurrency": concurrency,
        "judge": judge,
        "judge_model": judge_model,
        "golden": golden,
        "question_timeout": question_timeout,
    }
    timeout = _duration(pass_timeout, "--pass-timeout")
    if every is None:
        raise typer.Exit(once_command(log_format, timeout, flags, alert_flags))

    schedule = _schedule(every, jitter, timeout, grace)
    raise typer.Exit(
        daemon_command(
            schedule, log_format=log_format, flags=flags, alert_flags=alert_flags
        )
    )


def _duration(text: str | None, option: str) -> float | None:
    """A duration flag; a bad one is a bad command line, not a failed run."""
    from monitor.durations import parse_duration
    from scout.errors import ConfigError

    if text is None:
        return None
    try:
        return parse_duration(text, option=option)
    except ConfigError as error:
        raise typer.BadParameter(str(error)) from None


def _schedule(
    every: str, jitter: str | None, timeout: float | None, grace: str
) -> Schedule:
    from monitor.scheduler import Schedule
    from scout.errors import ConfigError

    try:
        return Schedule(
            interval=_duration(every, "--every") or 0.0,
            jitter=_duration(jitter, "--jitter") or 0.0,
            pass_timeout=timeout,
            grace=_duration(grace, "--grace") or 0.0,
        )
    except ConfigError as error:
        raise typer.BadParameter(str(error)) from None


def once_command(
    log_format: str,
    pass_timeout: float | None,
    flags: dict[str, Any],
    alert_flags: dict[str, Any],
) -> int:
    """One pass under the pass lease. The golden set, settings, model and judge
    are checked before the database is opened, so a bad input writes nothing."""
    from monitor.commands.run_once import pass_config, run_once_command
    from monitor.lease import (
        ONCE_HEARTBEAT_S,
        STALE_HEARTBEATS,
        DatabaseLease,
        abandon_dead_runs,
        this_process,
    )
    from monitor.logs import configure_logging
    from monitor.runner import prepare_pass
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database

    configure_logging(cast("LogFormat", log_format), lifecycle_level=logging.WARNING)
    _interrupt_on_sigterm()
    if pass_timeout is not None:
        flags = {**flags, "pass_timeout": pass_timeout}
    prepared = prepare_pass(pass_config(**flags))
    engine = open_database(get_monitor_settings(), create=True)
    lease = DatabaseLease(
        engine, this_process(), ttl=STALE_HEARTBEATS * ONCE_HEARTBEAT_S
    )
    try:
        with lease.held(renew_every=ONCE_HEARTBEAT_S):
            abandon_dead_runs(engine)
            return run_once_command(prepared=prepared, **alert_flags, **flags)
    except KeyboardInterrupt:
        print(
            "error: interrupted: the pass in flight was recorded aborted, "
            "keeping the questions it stored",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        engine.dispose()


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a CronJob's pod being stopped) ends a pass the way Ctrl-C does:
    the run is recorded aborted with what it stored, the lease is released."""
    import signal

    def interrupt(number: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def daemon_command(
    schedule: Schedule,
    *,
    log_format: str,
    flags: dict[str, Any],
    alert_flags: dict[str, Any],
) -> int:
    """Run passes on a schedule until SIGTERM or SIGINT; exit 0 when stopped."""
    from functools import partial

    from monitor.alerts import alert_options, process_pass_alerts
    from monitor.commands.run_once import pass_config
    from monitor.logs import configure_logging
    from monitor.runner import prepare_pass
    from monitor.scheduler import Daemon
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database

    configure_logging(cast("LogFormat", log_format))
    config = pass_config(**flags, kind="scheduled")
    prepared = prepare_pass(config)
    engine = open_database(get_monitor_settings(), create=True)
    options = alert_options(**alert_flags)
    alerts = partial(process_pass_alerts, options=options)
    daemon = Daemon(engine, config, prepared, schedule, alerts=alerts)
    code = daemon.run()
    if not daemon.idle.is_set():
        # The pass thread ignored its cancel; its pool would block the exit.
        logging.shutdown()
        os._exit(code)
    engine.dispose()
    return code

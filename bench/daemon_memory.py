"""Resident memory of the daemon over many passes: does a month of passes leak?

Runs the real daemon (monitor.scheduler.Daemon: APScheduler, lease, heartbeat,
the pass runner, the alert rules) in this process on a one-second interval with
the offline model and judge, in a temporary MONITOR_HOME, until it has run the
requested number of passes (200 by default, a little over three minutes). It
samples the resident set size (VmRSS) as passes complete and prints the growth
after a warm-up of ten passes, when caches (corpus, prompts, SQLAlchemy's
statement cache) have filled. Target: under 20 MB over 200 passes.

Run from the repository root: ``.venv/bin/python bench/daemon_memory.py``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitor.scheduler import Daemon

REPO = Path(__file__).resolve().parents[1]
TARGET_MB = 20.0
WARM_UP_PASSES = 10


def resident_mb() -> float:
    """Current resident set size; the peak where /proc is missing (not Linux)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def offline_home() -> Path:
    """A fresh data folder, no keys, no .env: the offline model and judge."""
    home = Path(tempfile.mkdtemp(prefix="daemon-memory-"))
    for name in list(os.environ):
        if name.startswith(("SCOUT_", "MONITOR_", "LANGFUSE_")) or name in (
            "NVIDIA_API_KEY",
            "TAVILY_API_KEY",
        ):
            del os.environ[name]
    os.environ.update(
        {
            "MONITOR_HOME": str(home / "var"),
            "MONITOR_JUDGE": "offline",
            "SCOUT_BACKEND": "offline",
            "SCOUT_USAGE_LOG": str(home / "usage.jsonl"),
        }
    )
    os.chdir(home)
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=200)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    home = offline_home()

    from monitor.logs import configure_logging
    from monitor.runner import PassConfig, prepare_pass
    from monitor.scheduler import Daemon, Schedule
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database

    configure_logging("plain", lifecycle_level=logging.WARNING)
    settings = get_monitor_settings()
    config = PassConfig(golden_file=settings.golden_file, judge="offline")
    prepared = prepare_pass(config)
    engine = open_database(settings, create=True)
    # A generous time limit: the figure is about memory, not about timeouts.
    schedule = Schedule(interval=args.interval, pass_timeout=60.0)
    daemon = Daemon(engine, config, prepared, schedule)

    print(f"daemon memory: {args.passes} offline passes every {args.interval:g} s")
    print(f"data folder: {home}")
    print(f"before start: {resident_mb():7.1f} MB")
    samples = sample_while_running(daemon, args.passes)
    daemon.request_stop("benchmark done")
    daemon.shutdown()
    report(samples, daemon.counts.failed)


def sample_while_running(daemon: Daemon, passes: int) -> dict[int, float]:
    checkpoints = sorted({1, WARM_UP_PASSES, *range(25, passes + 1, 25), passes})
    samples: dict[int, float] = {}
    started = time.monotonic()
    daemon.start()
    while daemon.counts.passes < passes:
        time.sleep(0.05)
        done = daemon.counts.passes
        if done in checkpoints and done not in samples and daemon.idle.is_set():
            gc.collect()
            samples[done] = resident_mb()
            elapsed = time.monotonic() - started
            print(
                f"after {done:4d} passes: {samples[done]:7.1f} MB  ({elapsed:5.0f} s)"
            )
    if passes not in samples:  # the last pass ended between two looks
        gc.collect()
        samples[passes] = resident_mb()
        elapsed = time.monotonic() - started
        print(
            f"after {passes:4d} passes: {samples[passes]:7.1f} MB  ({elapsed:5.0f} s)"
        )
    return samples


def report(samples: dict[int, float], failed: int) -> None:
    last = max(samples)
    base = samples.get(WARM_UP_PASSES, samples[min(samples)])
    growth = samples[last] - base
    verdict = "within" if growth < TARGET_MB else "OVER"
    print(
        f"growth from pass {WARM_UP_PASSES} to pass {last}: {growth:+.1f} MB "
        f"({verdict} the {TARGET_MB:g} MB target); from pass 1: "
        f"{samples[last] - samples[min(samples)]:+.1f} MB; failed passes: {failed}"
    )


if __name__ == "__main__":
    main()

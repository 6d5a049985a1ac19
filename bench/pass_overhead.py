"""The monitor's own cost: what a pass spends outside model calls, and how fast
``monitor --help`` answers.

With the offline model and the offline judge, a pass makes no network call, so
its wall time is the monitor's own work (golden set, graph, checks, judge,
database writes) plus the offline model's work. Each model call records its
seconds in the usage rows; the overhead is the pass's wall time minus those
seconds, measured at concurrency 1 so that the two add up. Corpus searches are
counted as overhead (they are not model calls).

Figures:

- ``monitor --help`` wall time, a fresh process each time, median of 5
  (target < 0.5 s: heavy imports are lazy);
- the imports a pass needs, in a fresh interpreter, median of 3;
- ``monitor run --once`` as a fresh process in an empty MONITOR_HOME (imports,
  database creation and migration, the pass, the summary), median of 3;
- a warm in-process pass (PassRunner, SQLite in a temporary folder), median of 3:
  setup (golden, model, source, judge), database open, the pass, and the
  overhead per pass (target < 2 s).

Run from the repository root: ``.venv/bin/python bench/pass_overhead.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HELP_TARGET_S = 0.5
OVERHEAD_TARGET_S = 2.0


@dataclass(frozen=True)
class PassFigures:
    setup: float
    open_db: float
    wall: float
    model_seconds: float
    calls: int
    status: str

    @property
    def overhead(self) -> float:
        return self.wall - self.model_seconds


def offline_environment(home: Path) -> dict[str, str]:
    """This process's environment with no keys: the offline model and judge."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SCOUT_", "MONITOR_", "LANGFUSE_"))
        and name != "NVIDIA_API_KEY"
    }
    env.update(
        {
            "MONITOR_HOME": str(home),
            "SCOUT_USAGE_LOG": str(home / "usage.jsonl"),
        }
    )
    return env


def timed_process(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 2):
        raise SystemExit(f"{' '.join(args)} exited {done.returncode}: {done.stderr}")
    return seconds


def help_seconds(workdir: Path, repeats: int) -> list[float]:
    env = offline_environment(workdir / "help-home")
    return [
        timed_process([str(BIN / "monitor"), "--help"], env) for _ in range(repeats)
    ]


def import_seconds(workdir: Path, repeats: int) -> list[float]:
    """A fresh interpreter importing what a pass needs, minus an empty start."""
    env = offline_environment(workdir / "import-home")
    python = str(BIN / "python")
    bare = median([timed_process([python, "-c", "pass"], env) for _ in range(3)])
    code = "import monitor.runner, monitor.commands.run_once"
    return [timed_process([python, "-c", code], env) - bare for _ in range(repeats)]


def run_once_seconds(workdir: Path, repeats: int) -> list[float]:
    seconds = []
    for attempt in range(repeats):
        env = offline_environment(workdir / f"cli-home-{attempt}")
        seconds.append(timed_process([str(BIN / "monitor"), "run", "--once"], env))
    return seconds


def model_seconds(engine: Any, run_id: str) -> tuple[float, int]:
    """Seconds and count of the model calls (agent and judge) of one run."""
    from sqlalchemy import select

    from monitor.store.db import session_factory
    from monitor.store.models import Result, Usage
    from scout.config import SOURCE_CALL_PREFIX

    with session_factory(engine)() as session:
        rows = session.execute(
            select(Usage.model, Usage.calls, Usage.seconds)
            .join(Result, Usage.result_id == Result.id)
            .where(Result.run_id == run_id)
        ).all()
    model_rows = [row for row in rows if not row[0].startswith(SOURCE_CALL_PREFIX)]
    return sum(row[2] for row in model_rows), sum(row[1] for row in model_rows)


def in_process_pass(home: Path, concurrency: int) -> PassFigures:
    """One offline pass in this process, on a new SQLite file under ``home``."""
    os.environ.clear()
    os.environ.update(offline_environment(home))
    from monitor.runner import PassConfig, PassRunner, prepare_pass
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database
    from scout.config import get_settings

    get_settings.cache_clear()
    get_monitor_settings.cache_clear()

    started = time.perf_counter()
    settings = get_monitor_settings()
    config = PassConfig(golden_file=settings.golden_file, concurrency=concurrency)
    prepared = prepare_pass(config)
    setup = time.perf_counter() - started

    started = time.perf_counter()
    engine = open_database(settings, create=True)
    open_db = time.perf_counter() - started

    started = time.perf_counter()
    report = PassRunner(engine, config, prepared).run()
    wall = time.perf_counter() - started

    seconds, calls = model_seconds(engine, report.run.id)
    engine.dispose()
    return PassFigures(setup, open_db, wall, seconds, calls, report.run.status)


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="passes per figure")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="pass-overhead-") as name:
        workdir = Path(name)
        helps = help_seconds(workdir, 5)
        print(
            f"monitor --help: median {median(helps):.3f} s of 5 "
            f"(min {min(helps):.3f}, max {max(helps):.3f}; target < {HELP_TARGET_S} s)"
        )
        imports = import_seconds(workdir, args.repeats)
        print(
            f"imports a pass needs (fresh interpreter, less its start-up): median "
            f"{median(imports):.2f} s of {len(imports)}"
        )
        runs = run_once_seconds(workdir, args.repeats)
        print(
            f"monitor run --once, fresh process and empty MONITOR_HOME: median "
            f"{median(runs):.2f} s of {len(runs)}"
        )

        first = in_process_pass(workdir / "first", 1)
        print(
            f"first in-process pass (corpus opened, imports excluded): setup "
            f"{first.setup:.3f} s, database create {first.open_db:.3f} s, "
            f"pass {first.wall:.3f} s"
        )
        for concurrency in (1, 5):
            passes = [
                in_process_pass(workdir / f"c{concurrency}-{n}", concurrency)
                for n in range(args.repeats)
            ]
            print_passes(concurrency, passes)
    return 0


def print_passes(concurrency: int, passes: list[PassFigures]) -> None:
    statuses = ",".join(sorted({figures.status for figures in passes}))
    print(
        f"warm in-process pass, concurrency {concurrency} ({statuses}), median of "
        f"{len(passes)}: setup {median([p.setup for p in passes]):.3f} s, "
        f"database open {median([p.open_db for p in passes]):.3f} s, "
        f"pass {median([p.wall for p in passes]):.3f} s, "
        f"model calls {median([p.model_seconds for p in passes]):.3f} s "
        f"({passes[0].calls} calls)"
    )
    if concurrency == 1:
        overhead = median([p.overhead + p.setup + p.open_db for p in passes])
        print(
            f"  overhead per pass (setup + database + pass - model calls): "
            f"{overhead:.3f} s (target < {OVERHEAD_TARGET_S} s)"
        )


if __name__ == "__main__":
    sys.exit(main())

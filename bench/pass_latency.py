"""How close a pass comes to the fastest it could possibly be.

A pass (PassRunner in-process, SQLite in a temporary folder, the chat backend and
the LLM judge) runs against a local OpenAI-compatible server that answers every
call after a fixed latency. No pass can beat the larger of two bounds:

- the serial bound: the question with the most model calls, each waiting the
  full latency, one after the other (a question's calls depend on each other);
- the rate bound: all the pass's calls at the client-side rate limit.

Variants (the default run takes about two and a half minutes):

- ``rate-bound``: SCOUT_RATE_LIMIT_RPM=40 (the free NIM tier), concurrency 5;
- ``latency-bound``: a rate high enough not to matter, concurrency 5;
- ``one-at-a-time``: the same, concurrency 1, for comparison (about 5x);
- ``rate-bound-serial`` (with ``--all``): 40 rpm at concurrency 1, which is rate
  bound too, so it barely differs from ``rate-bound`` (another two minutes).

Target: wall time within 1.25x of the bound. Run from the repository root:

    .venv/bin/python bench/pass_latency.py [--latency 0.3] [--rpm 40] [--all]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for tests.fakes, when run as a script

FAST_RPM = 6000.0
TARGET_RATIO = 1.25
METRICS = ("grounding", "coverage", "citations")


@dataclass(frozen=True)
class Variant:
    name: str
    rpm: float
    concurrency: int


@dataclass(frozen=True)
class Figures:
    variant: Variant
    status: str
    wall: float
    calls: int
    served: int
    most_calls: int
    latency: float

    @property
    def serial_bound(self) -> float:
        return self.most_calls * self.latency

    @property
    def rate_bound(self) -> float:
        return self.calls / (self.variant.rpm / 60.0)

    @property
    def bound(self) -> float:
        return max(self.serial_bound, self.rate_bound)

    @property
    def ratio(self) -> float:
        return self.wall / self.bound


def responder(latency: float) -> Any:
    """Scout's tasks answered as a working model would, and the judge's verdict,
    each after ``latency`` seconds."""
    from tests.fakes.openai_server import (
        FakeResponse,
        completion,
        scout_task_responder,
    )

    verdict = {m: {"score": 4, "rationale": f"{m} holds up"} for m in METRICS}

    def respond(request: dict[str, Any]) -> FakeResponse:
        prompt = str(request["messages"][-1]["content"])
        if prompt.startswith("Question the agent was asked"):
            body = completion(json.dumps(verdict), model=str(request["model"]))
        else:
            body = scout_task_responder(request)
        return FakeResponse(body=body, delay=latency)

    return respond


def configure(base_url: str, rpm: float, home: Path) -> None:
    """Point Scout and the monitor at the fake endpoint, data in ``home``."""
    for name in list(os.environ):
        if name.startswith(("SCOUT_", "MONITOR_", "LANGFUSE_")):
            del os.environ[name]
    os.environ.update(
        {
            "SCOUT_BACKEND": "chat",
            "SCOUT_BASE_URL": base_url,
            "SCOUT_API_KEY": "bench-key",
            "SCOUT_MODEL": "bench/model-1",
            "SCOUT_RATE_LIMIT_RPM": str(rpm),
            "SCOUT_USAGE_LOG": str(home / "usage.jsonl"),
            "MONITOR_HOME": str(home),
            "MONITOR_JUDGE": "llm",
        }
    )

    from monitor.settings import get_monitor_settings
    from scout.config import get_settings

    get_settings.cache_clear()
    get_monitor_settings.cache_clear()


def model_calls_per_question(engine: Any, run_id: str) -> dict[str, int]:
    """Model calls (agent and judge) per question, from the stored usage rows;
    searches of the local corpus are not model calls."""
    from sqlalchemy import select

    from monitor.store.db import session_factory
    from monitor.store.models import Result, Usage
    from scout.config import SOURCE_CALL_PREFIX

    calls: dict[str, int] = {}
    with session_factory(engine)() as session:
        rows = session.execute(
            select(Result.question_id, Usage.model, Usage.calls)
            .join(Usage, Usage.result_id == Result.id)
            .where(Result.run_id == run_id)
        ).all()
    for question_id, model, count in rows:
        if not model.startswith(SOURCE_CALL_PREFIX):
            calls[question_id] = calls.get(question_id, 0) + count
    return calls


def run_variant(variant: Variant, latency: float, workdir: Path) -> Figures:
    """One pass against a fresh fake server (a fresh rate limiter per endpoint)."""
    from monitor.runner import PassConfig, PassRunner, prepare_pass
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database
    from tests.fakes.openai_server import FakeOpenAI

    home = workdir / variant.name
    with FakeOpenAI(responder(latency)) as fake:
        configure(fake.base_url, variant.rpm, home)
        settings = get_monitor_settings()
        config = PassConfig(
            golden_file=settings.golden_file,
            concurrency=variant.concurrency,
            judge="llm",
        )
        prepared = prepare_pass(config)
        engine = open_database(settings, create=True)

        started = time.perf_counter()
        report = PassRunner(engine, config, prepared).run()
        wall = time.perf_counter() - started

        calls = model_calls_per_question(engine, report.run.id)
        served = len(fake.requests)
        engine.dispose()

    return Figures(
        variant=variant,
        status=report.run.status,
        wall=wall,
        calls=sum(calls.values()),
        served=served,
        most_calls=max(calls.values(), default=0),
        latency=latency,
    )


def print_row(figures: Figures) -> None:
    variant = figures.variant
    if variant.concurrency == 1:
        verdict = "(for comparison)"
    else:
        verdict = "ok" if figures.ratio <= TARGET_RATIO else "OVER TARGET"
    print(
        f"{variant.name:<18} {variant.rpm:>6g} {variant.concurrency:>4d} "
        f"{figures.calls:>5d} {figures.wall:>8.1f} {figures.serial_bound:>8.1f} "
        f"{figures.rate_bound:>8.1f} {figures.bound:>8.1f} {figures.ratio:>6.2f}x  "
        f"{figures.status} {verdict}",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.3, help="s per call")
    parser.add_argument("--rpm", type=float, default=40.0, help="rate limit")
    parser.add_argument(
        "--all", action="store_true", help="also the rate-bound pass at concurrency 1"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    variants = [
        Variant("rate-bound", args.rpm, 5),
        Variant("latency-bound", FAST_RPM, 5),
        Variant("one-at-a-time", FAST_RPM, 1),
    ]
    if args.all:
        variants.append(Variant("rate-bound-serial", args.rpm, 1))

    print(f"pass latency: {args.latency:g} s per model call, 5 questions, LLM judge")
    print(
        f"{'variant':<18} {'rpm':>6} {'conc':>4} {'calls':>5} {'wall s':>8} "
        f"{'serial':>8} {'rate':>8} {'bound':>8} {'ratio':>7}"
    )
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="pass-latency-") as workdir:
        for variant in variants:
            figures = run_variant(variant, args.latency, Path(workdir))
            if figures.served != figures.calls:
                print(
                    f"  note: the server saw {figures.served} calls, the usage "
                    f"rows count {figures.calls}"
                )
            print_row(figures)
            results[variant.name] = figures

    parallel, serial = results["latency-bound"], results["one-at-a-time"]
    print(
        f"concurrency 1 vs 5 at {FAST_RPM:g} rpm: {serial.wall:.1f} s vs "
        f"{parallel.wall:.1f} s = {serial.wall / parallel.wall:.1f}x"
    )
    print(f"target: wall within {TARGET_RATIO}x of max(serial, calls / rate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scout's graph, made slow or hung on demand, for the daemon's tests.

Point ``MONITOR_GRAPH=tests.fakes.slow_graph:build_slow_graph`` at it (with the
repository on ``PYTHONPATH``). Each question then sleeps before the graph runs,
the way a model call that takes long, or never returns, holds a question:

- ``MONITOR_TEST_SLEEP``: seconds each question sleeps (default 0);
- ``MONITOR_TEST_SLEEP_PASSES``: only the first N passes of the process sleep
  (default: every pass), so a hung pass can be followed by a normal one.

The rest is Scout's real graph on the offline model, so a pass stores real
reports and real scores.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from scout.graph import build_graph

_passes_seen: list[str] = []
_lock = threading.Lock()


class SlowGraph:
    """Wraps a compiled graph; ``invoke`` sleeps first when this pass should."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph

    def invoke(self, graph_input: Any, config: Any = None, **kwargs: Any) -> Any:
        seconds = float(os.environ.get("MONITOR_TEST_SLEEP", "0"))
        if seconds and _pass_sleeps(_run_id(config)):
            time.sleep(seconds)
        return self.graph.invoke(graph_input, config, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.graph, name)


def _run_id(config: Any) -> str:
    thread_id = str((config or {}).get("configurable", {}).get("thread_id", ""))
    return thread_id.split(":")[0]


def _pass_sleeps(run_id: str) -> bool:
    limit = os.environ.get("MONITOR_TEST_SLEEP_PASSES")
    with _lock:
        if run_id not in _passes_seen:
            _passes_seen.append(run_id)
        return limit is None or _passes_seen.index(run_id) < int(limit)


def build_slow_graph() -> Any:
    return SlowGraph(build_graph())

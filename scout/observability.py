"""Metering and tracing for Scout's nodes.

Every model call, from either backend, ends in :func:`record_usage`, which adds one
row to the meter that is active for the current run, attributed to the node that
is running. The node comes from a context variable that :func:`trace_node` sets,
so the attribution survives thread hops that copy the context.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scout.config import get_settings

_current_node: ContextVar[str] = ContextVar("scout_current_node", default="unknown")
_active_meter: ContextVar[UsageMeter | None] = ContextVar(
    "scout_active_meter", default=None
)


@dataclass(frozen=True)
class UsageRow:
    """One model call. Token counts are ``None`` when the server did not say."""

    node: str
    model: str
    input_tokens: int | None
    output_tokens: int | None
    seconds: float
    cost: float | None


@dataclass
class UsageMeter:
    """Collects the usage rows of one run; optionally appends them to a JSONL log."""

    log_path: Path | None = None
    rows: list[UsageRow] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, row: UsageRow) -> None:
        with self._lock:
            self.rows.append(row)
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as log:
                    log.write(json.dumps(asdict(row)) + "\n")

    def start_log(self) -> None:
        """Truncate the log so that it holds this run only."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text("", encoding="utf-8")


def estimate_cost(
    model: str, input_tokens: int | None, output_tokens: int | None
) -> float | None:
    """Illustrative cost in dollars; ``None`` when the price or a count is unknown."""
    price = get_settings().price_of(model)
    if price is None or input_tokens is None or output_tokens is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


def record_usage(
    *,
    model: str,
    input_tokens: int | None,
    output_tokens: int | None,
    seconds: float,
) -> UsageRow:
    """Record one model call against the running node and the active meter."""
    row = UsageRow(
        node=_current_node.get(),
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        seconds=round(seconds, 4),
        cost=estimate_cost(model, input_tokens, output_tokens),
    )
    meter = _active_meter.get()
    if meter is not None:
        meter.add(row)
    return row


@contextmanager
def metering(meter: UsageMeter) -> Iterator[UsageMeter]:
    """Make ``meter`` the one that model calls in this context record into."""
    token = _active_meter.set(meter)
    try:
        yield meter
    finally:
        _active_meter.reset(token)


@contextmanager
def in_node(name: str) -> Iterator[None]:
    """Attribute the model calls made inside this block to node ``name``."""
    token = _current_node.set(name)
    try:
        yield
    finally:
        _current_node.reset(token)


def langfuse_enabled() -> bool:
    """True when both Langfuse keys are set; without them nothing imports langfuse."""
    import os

    return bool(os.environ.get("LANGFUSE_PUBLIC_KEY")) and bool(
        os.environ.get("LANGFUSE_SECRET_KEY")
    )

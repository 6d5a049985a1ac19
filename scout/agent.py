"""Run one question through Scout's graph and collect what the caller needs.

Both ``python -m scout`` and the monitor's pass go through :func:`run_question`,
so the agent that is monitored is exactly the agent that users run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from langgraph.errors import GraphRecursionError

from scout.config import PROMPT_VERSION, ScoutSettings, get_settings
from scout.errors import ConfigError, RunLimitError
from scout.gitinfo import git_revision
from scout.graph import ScoutGraph, build_graph
from scout.models import make_task_model
from scout.observability import UsageMeter, UsageRow, instrument_graph, metering
from scout.sources import open_source
from scout.state import ScoutContext
from scout.tasks import Page, SourceRef


@dataclass
class AgentRun:
    """The outcome of one question: the report and what it took to write it."""

    thread_id: str
    status: str  # completed, rejected, awaiting_approval
    report: str
    sources: list[SourceRef]
    pages: list[Page]
    node_visits: list[str]
    worker_turns: int
    trace_id: str | None
    seconds: float
    usage: list[UsageRow] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def make_context(
    settings: ScoutSettings | None = None, *, auto_approve: bool = True
) -> ScoutContext:
    """The model, the source and the limits that the settings ask for."""
    settings = settings or get_settings()
    return ScoutContext(
        model=make_task_model(settings),
        source=open_source(settings),
        max_worker_turns=settings.max_worker_turns,
        max_pages=settings.max_pages,
        auto_approve=auto_approve,
    )


def trace_metadata(context: ScoutContext) -> dict[str, str]:
    sha, dirty = git_revision()
    return {
        "model": context.model.name,
        "prompt_version": PROMPT_VERSION,
        "git_sha": f"{sha}{'-dirty' if dirty else ''}",
        "sources": context.source.name,
    }


def checked_question(question: str) -> str:
    """The question without surrounding blanks; an empty one is a ConfigError."""
    if not question.strip():
        raise ConfigError("the question is empty: pass the question to research")
    return question.strip()


def run_question(
    question: str,
    *,
    thread_id: str,
    context: ScoutContext,
    settings: ScoutSettings | None = None,
    graph: ScoutGraph | None = None,
    meter: UsageMeter | None = None,
    resume: Any = None,
) -> AgentRun:
    """Invoke the graph for ``question`` (or resume ``thread_id`` with a plan
    decision) and return the outcome. Raises :class:`RunLimitError` when the run
    hits its recursion limit."""
    question = checked_question(question)
    settings = settings or get_settings()
    graph = graph if graph is not None else build_graph()
    meter = meter if meter is not None else UsageMeter()
    traced = instrument_graph(graph, metadata=trace_metadata(context))
    config: Any = {
        "configurable": {"thread_id": thread_id},
        "recursion_limit": settings.recursion_limit,
    }
    graph_input: Any = {"question": question}
    if resume is not None:
        from langgraph.types import Command

        graph_input = Command(resume=resume)

    started = time.perf_counter()
    try:
        with metering(meter):
            state = traced.invoke(graph_input, config, context=context)
    except GraphRecursionError as error:
        raise RunLimitError(
            f"run {thread_id} hit its recursion limit of {settings.recursion_limit} "
            "graph steps before writing a report (raise SCOUT_RECURSION_LIMIT or "
            "lower SCOUT_MAX_WORKER_TURNS)"
        ) from error

    return _outcome(thread_id, state, meter, time.perf_counter() - started)


def _outcome(
    thread_id: str, state: dict[str, Any], meter: UsageMeter, seconds: float
) -> AgentRun:
    if state.get("__interrupt__"):
        status = "awaiting_approval"
    elif state.get("plan_status") == "rejected":
        status = "rejected"
    else:
        status = "completed"
    return AgentRun(
        thread_id=thread_id,
        status=status,
        report=state.get("report", ""),
        sources=list(state.get("sources", [])),
        pages=list(state.get("pages", [])),
        node_visits=list(state.get("node_visits", [])),
        worker_turns=state.get("worker_turns", 0),
        trace_id=state.get("trace_id"),
        seconds=seconds,
        usage=list(meter.rows),
        state=state,
    )

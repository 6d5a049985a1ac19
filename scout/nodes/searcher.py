"""The searcher runs the next query of the plan against the source."""

from __future__ import annotations

import logging
import time
from typing import Any

from langgraph.runtime import Runtime

from scout.config import SOURCE_CALL_PREFIX
from scout.errors import SourceError
from scout.observability import record_usage, trace_node
from scout.state import ScoutContext, ScoutState

logger = logging.getLogger(__name__)


def next_query(state: ScoutState) -> str:
    """The first planned query not yet run; the question itself once all ran."""
    done = set(state.get("queries_run", []))
    for query in state["plan"]["queries"]:
        if query not in done:
            return query
    return state["question"]


@trace_node("searcher")
def searcher(state: ScoutState, runtime: Runtime[ScoutContext]) -> dict[str, Any]:
    query = next_query(state)
    source = runtime.context.source
    started = time.perf_counter()
    try:
        hits = source.search(query, runtime.context.hits_per_query)
    except SourceError as error:
        logger.warning("search for %r failed: %s", query, error)
        hits = []
    record_usage(
        model=f"{SOURCE_CALL_PREFIX}{source.name}",
        input_tokens=0,
        output_tokens=0,
        seconds=time.perf_counter() - started,
    )
    return {"queries_run": [query], "hits": hits, "worker_turns": 1}

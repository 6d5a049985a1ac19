"""The searcher runs the next query of the plan against the source."""

from __future__ import annotations

import logging
from typing import Any

from langgraph.runtime import Runtime

from scout.errors import SourceError
from scout.observability import trace_node
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
    try:
        hits = runtime.context.source.search(query, runtime.context.hits_per_query)
    except SourceError as error:
        logger.warning("search for %r failed: %s", query, error)
        hits = []
    return {"queries_run": [query], "hits": hits, "worker_turns": 1}

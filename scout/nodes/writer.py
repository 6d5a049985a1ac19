"""The writer turns the verified notes into a cited markdown report."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from scout.observability import trace_node
from scout.state import ScoutContext, ScoutState
from scout.tasks import SourceRef


def sources_to_cite(state: ScoutState) -> list[SourceRef]:
    """The pages that gave verified notes, in reading order; all pages read when
    none did, so the report can still say what was consulted."""
    sources = state.get("sources", [])
    useful = {note["source_url"] for note in state.get("notes", []) if note["verified"]}
    cited = [source for source in sources if source["url"] in useful]
    return cited or sources


@trace_node("writer")
def writer(state: ScoutState, runtime: Runtime[ScoutContext]) -> dict[str, Any]:
    sources = sources_to_cite(state)
    cited_urls = {source["url"] for source in sources}
    notes = [
        note
        for note in state.get("notes", [])
        if note["verified"] and note["source_url"] in cited_urls
    ]
    report = runtime.context.model.write(state["question"], notes, sources)
    return {"report": report}

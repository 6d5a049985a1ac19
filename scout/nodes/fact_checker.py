"""The fact-checker verifies each unchecked note against the page it came from."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from scout.observability import trace_node
from scout.state import ScoutContext, ScoutState


@trace_node("fact_checker")
def fact_checker(state: ScoutState, runtime: Runtime[ScoutContext]) -> dict[str, Any]:
    unchecked = [note for note in state.get("notes", []) if note["verified"] is None]
    if not unchecked:
        return {"worker_turns": 1}

    urls = {note["source_url"] for note in unchecked}
    pages = [page for page in state.get("pages", []) if page["url"] in urls]
    checked = runtime.context.model.check(state["question"], unchecked, pages)

    # A note the model did not return stays unverified rather than unchecked, so
    # the supervisor does not send the fact-checker back for it forever.
    returned = {(note["source_url"], note["text"]) for note in checked}
    dropped = [
        {**note, "verified": False}
        for note in unchecked
        if (note["source_url"], note["text"]) not in returned
    ]
    return {"notes": [*checked, *dropped], "worker_turns": 1}

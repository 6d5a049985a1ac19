"""The planner drafts sub-questions and search queries, or revises them once."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from scout.observability import trace_node
from scout.state import ScoutContext, ScoutState


@trace_node("planner")
def planner(state: ScoutState, runtime: Runtime[ScoutContext]) -> dict[str, Any]:
    critique = state.get("critique")
    revising = critique is not None and not critique["approved"]
    feedback = critique["feedback"] if revising and critique else None

    plan = runtime.context.model.plan(state["question"], feedback)

    revisions = state.get("plan_revisions", 0) + (1 if revising else 0)
    return {"plan": plan, "plan_revisions": revisions, "plan_status": "pending"}

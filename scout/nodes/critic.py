"""The critic approves the plan or asks the planner for one revision."""

from __future__ import annotations

from typing import Any, Literal

from langgraph.runtime import Runtime

from scout.observability import trace_node
from scout.state import ScoutContext, ScoutState

MAX_PLAN_REVISIONS = 1


@trace_node("critic")
def critic(state: ScoutState, runtime: Runtime[ScoutContext]) -> dict[str, Any]:
    critique = runtime.context.model.critique(state["question"], state["plan"])
    return {"critique": critique}


def after_critic(state: ScoutState) -> Literal["planner", "supervisor"]:
    """Back to the planner for the one allowed revision, else on to approval."""
    critique = state["critique"]
    if not critique["approved"] and state.get("plan_revisions", 0) < MAX_PLAN_REVISIONS:
        return "planner"
    return "supervisor"

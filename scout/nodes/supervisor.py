"""The supervisor holds the plan for approval, then routes the worker turns.

The approval is a LangGraph interrupt. A resume re-enters this node from the top,
so nothing before the interrupt has side effects: the model is only asked to
route once the plan is approved.
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from scout.errors import ConfigError
from scout.observability import trace_node
from scout.state import NextStep, ScoutContext, ScoutState
from scout.tasks import Plan, Progress


def _ask_for_approval(state: ScoutState) -> dict[str, Any]:
    """Interrupt with the plan; the resume value is approve, edit or reject."""
    decision = interrupt({"plan": state["plan"], "critique": state.get("critique")})
    if isinstance(decision, str):
        decision = {"action": decision}
    action = decision.get("action") if isinstance(decision, dict) else None

    if action == "approve":
        return {"plan_status": "approved"}
    if action == "edit":
        return {"plan_status": "approved", "plan": _edited_plan(decision.get("plan"))}
    if action == "reject":
        reason = str(decision.get("reason") or "rejected by the reviewer")
        return {"plan_status": "rejected", "rejection": reason, "next_step": "end"}
    raise ConfigError(
        f"unknown plan decision {decision!r}: resume with approve, edit or reject"
    )


def _edited_plan(plan: object) -> Plan:
    if not isinstance(plan, dict) or not plan.get("queries"):
        raise ConfigError("an edited plan needs a non-empty 'queries' list")
    queries = [str(query) for query in plan["queries"]]
    sub_questions = [str(item) for item in plan.get("sub_questions") or queries]
    return {"sub_questions": sub_questions, "queries": queries}


def progress_of(state: ScoutState, context: ScoutContext) -> Progress:
    """The counts the model routes on."""
    queries_run = set(state.get("queries_run", []))
    read = {page["url"] for page in state.get("pages", [])}
    notes = state.get("notes", [])
    return {
        "question": state["question"],
        "worker_turns": state.get("worker_turns", 0),
        "max_worker_turns": context.max_worker_turns,
        "queries_pending": sum(q not in queries_run for q in state["plan"]["queries"]),
        "hits_unread": sum(hit["url"] not in read for hit in state.get("hits", [])),
        "pages_read": len(read),
        "notes_unchecked": sum(note["verified"] is None for note in notes),
        "notes_verified": sum(note["verified"] is True for note in notes),
    }


@trace_node("supervisor")
def supervisor(state: ScoutState, runtime: Runtime[ScoutContext]) -> dict[str, Any]:
    update: dict[str, Any] = {}
    if state.get("plan_status") != "approved":
        if runtime.context.auto_approve:
            update = {"plan_status": "approved"}
        else:
            update = _ask_for_approval(state)
        if update["plan_status"] == "rejected":
            return update

    merged: ScoutState = {**state, **update}  # type: ignore[typeddict-item]
    if merged.get("worker_turns", 0) >= runtime.context.max_worker_turns:
        next_step: NextStep = "writer"
    else:
        next_step = runtime.context.model.route(progress_of(merged, runtime.context))

    update["next_step"] = next_step
    return update


def after_supervisor(state: ScoutState) -> NextStep:
    return state.get("next_step", "writer")

"""Scout's graph: plan, critique, approve, gather evidence, write.

    planner -> critic -> (planner, once) -> supervisor
    supervisor -> searcher | reader | fact_checker -> supervisor ... -> writer -> END

The supervisor holds the plan for approval (a LangGraph interrupt, unless the
caller's context auto-approves) and then routes worker turns until the model says
the evidence suffices or the turn limit is reached.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from scout.nodes.critic import after_critic, critic
from scout.nodes.fact_checker import fact_checker
from scout.nodes.planner import planner
from scout.nodes.reader import reader
from scout.nodes.searcher import searcher
from scout.nodes.supervisor import after_supervisor, supervisor
from scout.nodes.writer import writer
from scout.state import ScoutContext, ScoutState

NODE_NAMES = (
    "planner",
    "critic",
    "supervisor",
    "searcher",
    "reader",
    "fact_checker",
    "writer",
)

ScoutGraph = CompiledStateGraph[ScoutState, ScoutContext, Any, Any]


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> ScoutGraph:
    """Compile Scout's graph. A checkpointer is needed only to pause for a human
    approval of the plan and resume it; auto-approved runs work without one."""
    builder = StateGraph(ScoutState, context_schema=ScoutContext)
    builder.add_node("planner", planner)
    builder.add_node("critic", critic)
    builder.add_node("supervisor", supervisor)
    builder.add_node("searcher", searcher)
    builder.add_node("reader", reader)
    builder.add_node("fact_checker", fact_checker)
    builder.add_node("writer", writer)

    builder.add_edge(START, "planner")
    builder.add_edge("planner", "critic")
    builder.add_conditional_edges("critic", after_critic, ["planner", "supervisor"])
    builder.add_conditional_edges(
        "supervisor",
        after_supervisor,
        {
            "searcher": "searcher",
            "reader": "reader",
            "fact_checker": "fact_checker",
            "writer": "writer",
            "end": END,
        },
    )
    for worker in ("searcher", "reader", "fact_checker"):
        builder.add_edge(worker, "supervisor")
    builder.add_edge("writer", END)

    return builder.compile(checkpointer=checkpointer, name="scout")

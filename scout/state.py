"""Scout's graph state and the context every node receives.

State is plain JSON (TypedDicts of lists and strings) so it checkpoints and stores
as is. Every list key that more than one node writes has a reducer, so two
updates in one step merge instead of one silently replacing the other.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Literal, TypedDict

from scout.sources.base import Source
from scout.tasks import Critique, Hit, Note, Page, Plan, SourceRef, TaskModel

PlanStatus = Literal["pending", "approved", "rejected"]
NextStep = Literal["searcher", "reader", "fact_checker", "writer", "end"]


def merge_by_url(left: list[Hit], right: list[Hit]) -> list[Hit]:
    """Keep the first record of each URL, in arrival order."""
    seen = {item["url"] for item in left}
    merged = list(left)
    for item in right:
        if item["url"] not in seen:
            seen.add(item["url"])
            merged.append(item)
    return merged


def merge_pages(left: list[Page], right: list[Page]) -> list[Page]:
    seen = {page["url"] for page in left}
    return [*left, *(page for page in right if page["url"] not in seen)]


def merge_sources(left: list[SourceRef], right: list[SourceRef]) -> list[SourceRef]:
    seen = {source["url"] for source in left}
    return [*left, *(source for source in right if source["url"] not in seen)]


def merge_notes(left: list[Note], right: list[Note]) -> list[Note]:
    """Add new notes; a note seen again (same page, same text) takes the newer
    ``verified`` verdict, which is how the fact-checker's results land."""
    merged = {(note["source_url"], note["text"]): note for note in left}
    for note in right:
        merged[(note["source_url"], note["text"])] = note
    return list(merged.values())


class ScoutState(TypedDict, total=False):
    question: str
    plan: Plan
    critique: Critique
    plan_revisions: int
    plan_status: PlanStatus
    rejection: str
    next_step: NextStep
    queries_run: Annotated[list[str], operator.add]
    hits: Annotated[list[Hit], merge_by_url]
    pages: Annotated[list[Page], merge_pages]
    sources: Annotated[list[SourceRef], merge_sources]
    skipped: Annotated[list[dict[str, str]], operator.add]
    notes: Annotated[list[Note], merge_notes]
    worker_turns: Annotated[int, operator.add]
    node_visits: Annotated[list[str], operator.add]
    report: str


@dataclass(frozen=True)
class ScoutContext:
    """What the nodes need that is not state: the model, the source and limits."""

    model: TaskModel
    source: Source
    max_worker_turns: int = 8
    max_pages: int = 6
    pages_per_turn: int = 2
    hits_per_query: int = 5
    auto_approve: bool = False

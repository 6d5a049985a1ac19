"""The reader fetches the best unread hits and takes notes from each page."""

from __future__ import annotations

import logging
from typing import Any

from langgraph.runtime import Runtime

from scout.errors import SourceError
from scout.observability import trace_node
from scout.state import ScoutContext, ScoutState
from scout.tasks import Hit, Note, Page, SourceRef

logger = logging.getLogger(__name__)


def unread_hits(state: ScoutState, limit: int) -> list[Hit]:
    """The highest-scoring hits whose page has not been read or skipped yet."""
    done = {page["url"] for page in state.get("pages", [])}
    done |= {item["url"] for item in state.get("skipped", [])}
    fresh = [hit for hit in state.get("hits", []) if hit["url"] not in done]
    return sorted(fresh, key=lambda hit: -hit["score"])[:limit]


def source_ref(page: Page) -> SourceRef:
    """What the run keeps of a page; a web page also keeps how much of its
    markup was boilerplate, a figure of source drift."""
    ref: SourceRef = {
        "url": page["url"],
        "title": page["title"],
        "content_hash": page["content_hash"],
    }
    share = page.get("boilerplate_share")
    if share is not None:
        ref["boilerplate_share"] = share  # type: ignore[typeddict-unknown-key]
    return ref


@trace_node("reader")
def reader(state: ScoutState, runtime: Runtime[ScoutContext]) -> dict[str, Any]:
    context = runtime.context
    room = context.max_pages - len(state.get("pages", []))
    pages: list[Page] = []
    notes: list[Note] = []
    skipped: list[dict[str, str]] = []

    for hit in unread_hits(state, min(context.pages_per_turn, max(room, 0))):
        try:
            page = context.source.fetch(hit["url"])
        except SourceError as error:
            logger.info("skipped %s: %s", hit["url"], error)
            skipped.append({"url": hit["url"], "reason": str(error)})
            continue
        pages.append(page)
        passages = context.model.read(state["question"], page)
        notes += [
            {"source_url": page["url"], "text": text, "verified": None}
            for text in passages
        ]

    sources = [source_ref(page) for page in pages]
    return {
        "pages": pages,
        "sources": sources,
        "notes": notes,
        "skipped": skipped,
        "worker_turns": 1,
    }

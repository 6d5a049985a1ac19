"""The small task interface that every node talks to, and the records it passes.

Two backends implement :class:`TaskModel`: the chat backend (``scout.chat``), which
prompts an OpenAI-compatible endpoint, and the offline backend (``scout.offline``),
which does the same work deterministically on the text itself. Records are
TypedDicts so that graph state stays plain JSON: it checkpoints and stores as is.
"""

from __future__ import annotations

from typing import Literal, Protocol, TypedDict


class Plan(TypedDict):
    sub_questions: list[str]
    queries: list[str]


class Critique(TypedDict):
    approved: bool
    feedback: str


class Hit(TypedDict):
    """A search result not yet read."""

    url: str
    title: str
    snippet: str
    score: float


class Page(TypedDict):
    """A page that was read in full; ``content_hash`` is sha256 of ``text``."""

    url: str
    title: str
    text: str
    content_hash: str


class SourceRef(TypedDict):
    """What a run keeps of a page it read: enough to see that the page changed."""

    url: str
    title: str
    content_hash: str


class Note(TypedDict):
    """A piece of evidence taken from one page, and whether it was verified."""

    source_url: str
    text: str
    verified: bool | None


Worker = Literal["searcher", "reader", "fact_checker"]
Route = Literal["searcher", "reader", "fact_checker", "writer"]


class Progress(TypedDict):
    """What the supervisor sees when it picks the next worker turn."""

    question: str
    worker_turns: int
    max_worker_turns: int
    queries_pending: int
    hits_unread: int
    pages_read: int
    notes_unchecked: int
    notes_verified: int


class TaskModel(Protocol):
    """The tasks a model performs for Scout's nodes.

    ``name`` is the model as configured (``offline/extractive-1`` for the offline
    backend). Implementations record one usage row per model call through
    :func:`scout.observability.record_usage`.
    """

    name: str

    def plan(self, question: str, feedback: str | None = None) -> Plan: ...

    def critique(self, question: str, plan: Plan) -> Critique: ...

    def route(self, progress: Progress) -> Route: ...

    def read(self, question: str, page: Page) -> list[str]:
        """The passages of ``page`` that bear on ``question`` (may be empty)."""
        ...

    def check(self, question: str, notes: list[Note], pages: list[Page]) -> list[Note]:
        """``notes`` with ``verified`` set against the page each came from."""
        ...

    def write(self, question: str, notes: list[Note], sources: list[SourceRef]) -> str:
        """A markdown report citing ``sources`` as ``[n]`` (1-based), with a
        ``## Sources`` list at the end."""
        ...

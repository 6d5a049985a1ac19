"""The chat backend: Scout's tasks asked of an OpenAI-compatible model.

Each structured task (plan, critique, route, read, check) is one JSON call
validated by a pydantic schema whose limits are the task's limits; ``write`` is
one free-text call. Page text and notes reach the model fenced as untrusted data
(see ``scout/prompts/system.txt``), with the fence markers neutralised inside
them so a page cannot close its own fence.

The report's ``## Sources`` section is built here from the sources given, never
taken from the model, so its numbering always matches what was read.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Annotated, Any, TypeVar

import openai
from pydantic import BaseModel, Field, StringConstraints, field_validator

from scout.config import ScoutSettings, get_settings
from scout.llm import Messages, complete_json, complete_text, make_client
from scout.prompts import SYSTEM, load_prompt, render_prompt
from scout.tasks import Critique, Note, Page, Plan, Progress, Route, SourceRef

logger = logging.getLogger(__name__)

SchemaT = TypeVar("SchemaT", bound=BaseModel)
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

# Budgets for untrusted text, in characters (about 4 per token). They keep one
# call within small context windows and the free tier's token quotas: the reader
# sees only the first READ_PAGE_CHARS of a long page; the fact-checker shares
# CHECK_PAGES_CHARS between the pages it checks, taking the parts of each page
# around the notes it came with.
READ_PAGE_CHARS = 12_000
CHECK_PAGES_CHARS = 16_000
MIN_EXCERPT_CHARS = 600

# A line that is only a heading such as "## Sources", "**References:**" or
# "Sources:"; everything from the last such line on is the model's own list.
_SOURCES_HEADING = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*|__)?[ \t]*"
    r"(?:sources|references|bibliography|works cited|citations)"
    r"[ \t]*:?[ \t]*(?:\*\*|__)?[ \t]*:?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)


class PlanAnswer(BaseModel):
    sub_questions: list[Text] = Field(min_length=1, max_length=5)
    queries: list[Text] = Field(min_length=1, max_length=6)


class CritiqueAnswer(BaseModel):
    approved: bool
    feedback: str = ""


class RouteAnswer(BaseModel):
    next: Route

    @field_validator("next", mode="before")
    @classmethod
    def _tidy(cls, value: object) -> object:
        # "Fact checker", " Writer" and the like name a step all the same.
        if isinstance(value, str):
            return value.strip().lower().replace(" ", "_").replace("-", "_")
        return value


class ReadAnswer(BaseModel):
    passages: list[Text] = Field(default_factory=list, max_length=6)


class Verdict(BaseModel):
    note: int = Field(ge=1)
    supported: bool


class CheckAnswer(BaseModel):
    verdicts: list[Verdict]


def defang(text: str) -> str:
    """``text`` with fence markers broken, so untrusted text stays inside."""
    return text.replace("<<<", "< < <").replace(">>>", "> > >")


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text

    return f"{text[:limit]}\n[... {len(text) - limit} more characters not shown]"


def excerpt(text: str, passages: list[str], budget: int) -> str:
    """The parts of ``text`` around each passage, about ``budget`` characters in
    all (at least MIN_EXCERPT_CHARS per passage); the start of ``text`` when no
    passage is found in it."""
    if len(text) <= budget:
        return text
    share = max(budget // max(len(passages), 1), MIN_EXCERPT_CHARS)
    spans: list[tuple[int, int]] = []
    for passage in passages:
        at = text.find(passage[:80])
        if at >= 0:
            start = max(0, at - share // 4)
            spans.append((start, min(len(text), start + share)))
    if not spans:
        return truncate(text, budget)

    merged = [sorted(spans)[0]]
    for start, end in sorted(spans)[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return "\n[...]\n".join(text[start:end] for start, end in merged)


def strip_sources_section(report: str) -> str:
    """``report`` without a sources or references section the model wrote."""
    matches = list(_SOURCES_HEADING.finditer(report))
    if not matches:
        return report.rstrip()

    return report[: matches[-1].start()].rstrip()


def sources_section(sources: list[SourceRef]) -> str:
    """``## Sources`` with one ``[n] Title — URL`` line per source."""
    lines = [
        f"[{n}] {_one_line(source['title'] or source['url'])} — {source['url']}"
        for n, source in enumerate(sources, 1)
    ]
    return "## Sources\n\n" + "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


class ChatModel:
    """Scout's :class:`scout.tasks.TaskModel` over an OpenAI-compatible endpoint.

    ``name`` is the model as configured; ``reported_models`` collects the names
    the server reported (thread-safe), which can differ (an alias resolved to a
    dated snapshot), so the monitor can store both.
    """

    def __init__(
        self, settings: ScoutSettings | None = None, client: openai.OpenAI | None = None
    ) -> None:
        self.settings = settings or get_settings()
        self.name = self.settings.model
        self.client = client or make_client(self.settings)
        self.reported_models: set[str] = set()
        self._lock = threading.Lock()

    # -- calls --------------------------------------------------------------

    def _messages(self, task: str, **values: object) -> Messages:
        return [
            {"role": "system", "content": load_prompt(SYSTEM)},
            {"role": "user", "content": render_prompt(task, **values)},
        ]

    def _saw(self, reported: str) -> None:
        with self._lock:
            self.reported_models.add(reported)

    def _ask(self, task: str, schema: type[SchemaT], **values: object) -> SchemaT:
        answer, reported = complete_json(
            self.client,
            model=self.name,
            messages=self._messages(task, **values),
            schema=schema,
            json_mode=self.settings.json_mode,
            max_tokens=self.settings.max_tokens,
        )
        self._saw(reported)
        return answer

    # -- tasks --------------------------------------------------------------

    def plan(self, question: str, feedback: str | None = None) -> Plan:
        note = ""
        if feedback:
            note = f"\nA reviewer asked for changes to an earlier plan: {feedback}\n"
        answer = self._ask("plan", PlanAnswer, question=question, feedback=note)

        return {"sub_questions": answer.sub_questions, "queries": answer.queries}

    def critique(self, question: str, plan: Plan) -> Critique:
        answer = self._ask(
            "critique",
            CritiqueAnswer,
            question=question,
            sub_questions=_bullets(plan["sub_questions"]),
            queries=_bullets(plan["queries"]),
        )

        return {"approved": answer.approved, "feedback": answer.feedback.strip()}

    def route(self, progress: Progress) -> Route:
        values: dict[str, Any] = dict(progress)
        return self._ask("route", RouteAnswer, **values).next

    def read(self, question: str, page: Page) -> list[str]:
        answer = self._ask(
            "read",
            ReadAnswer,
            question=question,
            title=defang(page["title"]),
            url=page["url"],
            document=defang(truncate(page["text"], READ_PAGE_CHARS)),
        )

        return answer.passages

    def check(self, question: str, notes: list[Note], pages: list[Page]) -> list[Note]:
        by_url = {page["url"]: page for page in pages}

        # A note whose page is not at hand cannot be checked: it stays unverified.
        askable: list[Note] = []
        numbers: dict[int, int] = {}
        for index, note in enumerate(notes):
            if note["source_url"] in by_url:
                askable.append(note)
                numbers[index] = len(askable)
        verdicts = self._verdicts(question, askable, by_url) if askable else {}

        return [
            {**note, "verified": verdicts.get(numbers.get(index, 0), False)}
            for index, note in enumerate(notes)
        ]

    def _verdicts(
        self, question: str, notes: list[Note], by_url: dict[str, Page]
    ) -> dict[int, bool]:
        """Verdict per 1-based note number; notes the model skipped are absent."""
        urls = list(dict.fromkeys(note["source_url"] for note in notes))
        label = {url: f"D{n}" for n, url in enumerate(urls, 1)}
        budget = CHECK_PAGES_CHARS // len(urls)
        documents = []
        for url in urls:
            page = by_url[url]
            passages = [note["text"] for note in notes if note["source_url"] == url]
            text = defang(excerpt(page["text"], passages, budget))
            documents.append(
                f"[{label[url]}] {defang(page['title'])} — {url}\n"
                f"<<<DOCUMENT\n{text}\nDOCUMENT>>>"
            )
        listed = "\n".join(
            f"{n}. ({label[note['source_url']]}) {defang(note['text'])}"
            for n, note in enumerate(notes, 1)
        )
        answer = self._ask(
            "check",
            CheckAnswer,
            question=question,
            documents="\n\n".join(documents),
            notes=listed,
        )

        verdicts = {
            v.note: v.supported for v in answer.verdicts if v.note <= len(notes)
        }
        if len(verdicts) < len(notes):
            logger.info(
                "model %s gave %d verdicts for %d notes; the rest count as unverified",
                self.name,
                len(verdicts),
                len(notes),
            )
        return verdicts

    def write(self, question: str, notes: list[Note], sources: list[SourceRef]) -> str:
        number: dict[str, int] = {}
        for n, source in enumerate(sources, 1):
            number.setdefault(source["url"], n)
        listed = "\n".join(
            f"[{n}] {defang(_one_line(source['title'] or source['url']))} — "
            f"{source['url']}"
            for n, source in enumerate(sources, 1)
        )
        cited = "\n".join(
            f"[{number[note['source_url']]}] {defang(note['text'])}"
            for note in notes
            if note["source_url"] in number
        )
        text, reported = complete_text(
            self.client,
            model=self.name,
            messages=self._messages(
                "write",
                question=question,
                sources=listed or "(none)",
                notes=cited or "(no verified notes)",
            ),
            max_tokens=self.settings.max_tokens,
            stream=self.settings.stream,
            stream_usage=self.settings.stream_usage,
        )
        self._saw(reported)

        return f"{strip_sources_section(text)}\n\n{sources_section(sources)}\n"

"""The LLM judge: a chat model grades through Scout's client, JSON checked."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from string import Template
from typing import cast

import openai
from pydantic import BaseModel, ConfigDict, Field

from monitor.judge.base import Grading, GradingInput, MetricScore
from monitor.judge.offline import _clip
from monitor.judge.report import (
    _ReadSources,
    _resolve,
    normalize_url,
    parse_report,
)
from monitor.judge.text import content_stems, report_sentences
from monitor.store.models import METRICS
from scout.errors import ConfigError, ModelError
from scout.llm import complete_json
from scout.observability import in_node

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).parents[1] / "prompts" / "judge.txt"
DEFAULT_PAGE_BUDGET = 24_000  # characters of page text per grading request
DEFAULT_REPORT_BUDGET = 16_000  # characters of report per grading request


class MetricVerdict(BaseModel):
    model_config = ConfigDict(extra="ignore")

    score: int = Field(ge=1, le=5)
    rationale: str = Field(min_length=1)


class JudgeVerdict(BaseModel):
    """The JSON the LLM judge must answer with; a score outside 1-5 is invalid."""

    model_config = ConfigDict(extra="ignore")

    grounding: MetricVerdict
    coverage: MetricVerdict
    citations: MetricVerdict


# Page and report text is data, never instructions: any line that imitates the
# prompt's fence markers is defused before it is placed between them.
_FAKE_FENCE = re.compile(r"<<<[^<>\n]*UNTRUSTED[^<>\n]*>>>", re.IGNORECASE)
_USER_SECTION = "\n[user]\n"


def load_template(path: Path = TEMPLATE_PATH) -> str:
    return path.read_text(encoding="utf-8")


def judge_version(template: str) -> str:
    """``llm-judge-`` and 8 hex digits of the template's sha256: an edit shows."""
    return "llm-judge-" + hashlib.sha256(template.encode("utf-8")).hexdigest()[:8]


def _split_template(template: str) -> tuple[str, Template]:
    """The system text and the user template of a ``[system]``/``[user]`` file."""
    head, separator, user = template.partition(_USER_SECTION)
    if not separator or not head.lstrip().startswith("[system]"):
        raise ConfigError(
            "judge prompt template must start with a [system] line and contain a "
            "[user] line; fix monitor/prompts/judge.txt"
        )
    system = head.lstrip().removeprefix("[system]").strip()
    return system, Template(user.strip())


class LLMJudge:
    """Asks a chat model for the three scores, through Scout's client.

    The request carries the question, the key points, the report and the text of
    the pages the agent read. Report and pages are fenced as untrusted data and
    the model is told to ignore instructions inside them; the list of sources
    read gives URLs only, since a web page's title is as untrusted as its text.
    Pages are cut to a character budget: a long page keeps the paragraphs that
    share most words with the report sentences citing it, and the prompt says
    that it was cut. A verdict that is not valid JSON of the expected shape is
    re-asked once (by ``complete_json``); after that the grading is recorded as
    unscored, with the error, and never as zeros.
    """

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        model: str,
        json_mode: bool = True,
        max_tokens: int = 1024,
        template: str | None = None,
        page_budget: int = DEFAULT_PAGE_BUDGET,
        report_budget: int = DEFAULT_REPORT_BUDGET,
    ) -> None:
        self.template = load_template() if template is None else template
        self._system, self._user = _split_template(self.template)
        self.model = model
        self.version = judge_version(self.template)
        self._client = client
        self._json_mode = json_mode
        self._max_tokens = max_tokens
        self._page_budget = page_budget
        self._report_budget = report_budget

    def grade(self, item: GradingInput) -> Grading:
        messages = self.messages(item)
        try:
            with in_node("judge"):
                verdict, _raw = complete_json(
                    self._client,
                    model=self.model,
                    messages=messages,
                    schema=JudgeVerdict,
                    json_mode=self._json_mode,
                    max_tokens=self._max_tokens,
                )
        except (ModelError, openai.OpenAIError) as error:
            logger.warning(
                "judge %s left question %s unscored: %s",
                self.model,
                item.question.id,
                error,
            )
            return Grading.failed(
                f"judge failed: {error}",
                judge_model=self.model,
                judge_version=self.version,
            )

        return self._grading(cast(JudgeVerdict, verdict))

    def messages(self, item: GradingInput) -> list[dict[str, str]]:
        """The chat messages of one grading request (system, then user)."""
        pages, page_note = self._pages_text(item)
        report = _clip_with_note(item.report, self._report_budget, "report")
        user = self._user.substitute(
            question=item.question.question.strip(),
            key_points="\n".join(f"- {point}" for point in item.question.key_points)
            or "- (none given)",
            sources=_defuse(
                "\n".join(f"- {_clip(s['url'], 300)}" for s in item.sources)
                or "- (none)"
            ),
            report=_defuse(report),
            page_note=page_note,
            pages=_defuse(pages),
        )
        return [
            {"role": "system", "content": self._system},
            {"role": "user", "content": user},
        ]

    def _pages_text(self, item: GradingInput) -> tuple[str, str]:
        """Every read page's text within the budget, and a note saying what was cut."""
        texts = _read_page_texts(item)
        if not texts:
            return "(no page text was kept)", "No page text is available."

        shares = _share_budget([len(text) for _, _, text in texts], self._page_budget)
        claims = _claims_by_page(item)
        report_stems = content_stems(item.report)
        blocks: list[str] = []
        cut = 0
        for (number, url, text), share in zip(texts, shares, strict=True):
            wanted = claims.get(normalize_url(url)) or report_stems
            excerpt = _excerpt(text, share, wanted)
            cut += excerpt != text
            blocks.append(f"--- page {number}: {url} ---\n{excerpt}")

        note = (
            f"{cut} of {len(texts)} pages were cut to fit a budget of "
            f"{self._page_budget} characters; each keeps the paragraphs that share "
            "the most words with the report sentences citing it, and cuts are "
            "marked [...]."
            if cut
            else "Every page is shown in full."
        )
        return "\n\n".join(blocks), note

    def _grading(self, verdict: JudgeVerdict) -> Grading:
        scores = {
            metric: MetricScore(
                metric,
                float(getattr(verdict, metric).score),
                _clip(getattr(verdict, metric).rationale, 400),
            )
            for metric in METRICS
        }
        return Grading(scores, self.model, self.version)


def _read_page_texts(item: GradingInput) -> list[tuple[int, str, str]]:
    """(number, url, text) of the pages read, in reading order, then any others."""
    by_url = {normalize_url(url): (url, text) for url, text in item.pages.items()}
    order = [normalize_url(source["url"]) for source in item.sources]
    order += [url for url in by_url if url not in order]
    texts = [by_url[url] for url in dict.fromkeys(order) if url in by_url]
    return [(n, url, text) for n, (url, text) in enumerate(texts, start=1)]


def _claims_by_page(item: GradingInput) -> dict[str, set[str]]:
    """The words of the report sentences that cite each read page, by URL."""
    parsed = parse_report(item.report)
    read = _ReadSources(item.sources)
    claims: dict[str, set[str]] = {}
    for sentence in report_sentences(parsed.body):
        for number in sentence.markers:
            url = _resolve(parsed, read, number)
            if url is not None:
                claims.setdefault(url, set()).update(sentence.stems)
    return claims


def _share_budget(lengths: list[int], budget: int) -> list[int]:
    """Split ``budget`` so short pages keep all their text and long ones share."""
    shares = [0] * len(lengths)
    remaining = budget
    pending = sorted(range(len(lengths)), key=lambda i: lengths[i])
    while pending:
        fair = remaining // len(pending)
        index = pending.pop(0)
        shares[index] = min(lengths[index], fair)
        remaining -= shares[index]
    return shares


def _excerpt(text: str, budget: int, wanted: set[str]) -> str:
    """``text`` within ``budget`` characters: the paragraphs nearest the claims.

    The first paragraph (the section title) is always kept; the rest are taken by
    how many ``wanted`` words they share, then put back in page order, with [...]
    where text was left out.
    """
    if len(text) <= budget:
        return text

    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    ranked = sorted(
        range(1, len(paragraphs)),
        key=lambda i: (-len(content_stems(paragraphs[i]) & wanted), i),
    )
    keep = {0}
    used = len(paragraphs[0]) if paragraphs else 0
    for index in ranked:
        if used + len(paragraphs[index]) + 8 <= budget:
            keep.add(index)
            used += len(paragraphs[index]) + 8

    parts: list[str] = []
    for index, paragraph in enumerate(paragraphs):
        if index in keep:
            parts.append(paragraph[:budget])
        elif not parts or parts[-1] != "[...]":
            parts.append("[...]")
    return "\n\n".join(parts)


def _clip_with_note(text: str, budget: int, what: str) -> str:
    if len(text) <= budget:
        return text
    return text[:budget] + f"\n[... {what} cut at {budget} of {len(text)} characters]"


def _defuse(text: str) -> str:
    return _FAKE_FENCE.sub("[fence marker removed]", text)

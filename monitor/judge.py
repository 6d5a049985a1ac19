"""Grading of Scout's reports: deterministic checks, an offline judge, an LLM judge.

Every report gets the same treatment whichever judge runs:

- :func:`run_checks` answers yes/no questions about the report's form (is there a
  body, does every ``[n]`` resolve to a source the agent read, ...). They need no
  model and never change, so a failed check is always the agent's doing.
- a :class:`Judge` scores three metrics (:data:`METRICS`) from 1 to 5 with a
  one-sentence rationale each. :class:`OfflineJudge` does it by text overlap, with
  no model and no network; :class:`LLMJudge` asks a chat model through Scout's
  client. The judge's ``model`` and ``version`` are stored with every score, so
  scores from different judges are never compared as if they were one series.

A metric that could not be graded has the value ``None`` and says why; it is left
out of every mean. It is never a zero: a judge that failed to answer says nothing
about the report, and counting it as the worst score would raise false alarms.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Literal, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

import openai
from pydantic import BaseModel, ConfigDict, Field

from monitor.golden import GoldenQuestion
from monitor.settings import MonitorSettings, get_monitor_settings
from monitor.store.models import METRICS
from scout.config import DEFAULT_BASE_URL, ScoutSettings, get_settings
from scout.errors import ConfigError, ModelError
from scout.llm import complete_json, make_client
from scout.observability import in_node
from scout.tasks import SourceRef

logger = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "Grading",
    "GradingInput",
    "Judge",
    "LLMJudge",
    "MetricScore",
    "OfflineJudge",
    "judge_version",
    "make_judge",
    "parse_report",
    "run_checks",
]

CHECKS = ("non_empty", "citations_resolve", "two_sources_cited", "no_unread_sources")
OFFLINE_JUDGE_MODEL = "offline/overlap-judge-1"
OFFLINE_JUDGE_VERSION = "offline-overlap-1"
TEMPLATE_PATH = Path(__file__).parent / "prompts" / "judge.txt"
DEFAULT_PAGE_BUDGET = 24_000  # characters of page text per grading request
DEFAULT_REPORT_BUDGET = 16_000  # characters of report per grading request


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricScore:
    """One metric of one grading. ``value`` is 1..5, or ``None`` with ``error``."""

    metric: str
    value: float | None
    rationale: str | None
    error: str | None = None


@dataclass(frozen=True)
class Grading:
    """A judge's scores for one report: always one :class:`MetricScore` per metric."""

    scores: dict[str, MetricScore]
    judge_model: str
    judge_version: str
    error: str | None = None

    @property
    def scored(self) -> bool:
        """True when the judge answered and at least one metric has a value."""
        if self.error is not None:
            return False
        return any(score.value is not None for score in self.scores.values())

    def values(self) -> dict[str, float | None]:
        return {metric: score.value for metric, score in self.scores.items()}

    @classmethod
    def failed(cls, error: str, *, judge_model: str, judge_version: str) -> Grading:
        """A grading in which the judge failed: every metric unscored, none zero."""
        scores = {metric: MetricScore(metric, None, None, error) for metric in METRICS}
        return cls(scores, judge_model, judge_version, error)


@dataclass(frozen=True)
class GradingInput:
    """What a judge sees: the question, the report and the pages behind it."""

    question: GoldenQuestion
    report: str
    sources: list[SourceRef]
    pages: dict[str, str]


class Judge(Protocol):
    """Scores one report on :data:`METRICS`; never raises for a bad answer."""

    model: str
    version: str

    def grade(self, item: GradingInput) -> Grading: ...


def to_scale(ratio: float) -> float:
    """A ratio in [0, 1] as a 1..5 score with one decimal."""
    ratio = min(1.0, max(0.0, ratio))
    return round(1 + 4 * ratio, 1)


# --------------------------------------------------------------------------
# Reading a report: body, Sources list, citation markers
# --------------------------------------------------------------------------

_SOURCES_HEADING = re.compile(
    r"^[ \t]{0,3}(?:#{1,6}[ \t]*)?[*_]{0,2}[ \t]*"
    r"(?:sources|references|sources read|works cited|bibliography)"
    r"[ \t]*:?[ \t]*[*_]{0,2}:?[ \t]*#*[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}(?:[ \t]|$)")
_FENCED_CODE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.DOTALL | re.M)
_INLINE_CODE = re.compile(r"`+[^`\n]*`+")
# One or more adjacent bracket groups of numbers: [1], [1, 2], [1][3], [2-4].
# Not preceded by a word character, so ``items[1]`` in prose is not a citation.
_CITATION_GROUP = re.compile(
    r"(?<![\w)\]])(?:\[[ \t]*\d+(?:[ \t]*(?:[,;]|[-–])[ \t]*\d+)*[ \t]*\])+"
)
_BRACKET = re.compile(r"\[([^\]]*)\]")
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\(\s*<?([^)\s>]+)>?[^)]*\)")
_ANGLE_URL = re.compile(r"<(https?://[^>\s]+)>")
_BARE_URL = re.compile(r"https?://[^\s<>\"'\]\[]+")
_ENTRY_NUMBER = re.compile(r"^(?:\[\^?(\d+)\]:?|(\d+)[.)]|\((\d+)\))\s*")
_BULLET = re.compile(r"^[-*+•]\s+")
_MAX_RANGE = 50


@dataclass(frozen=True)
class SourceEntry:
    """One line of a report's Sources list."""

    number: int
    title: str
    url: str | None


@dataclass(frozen=True)
class ParsedReport:
    """A report split into its body, its Sources list and its citation markers."""

    body: str
    has_sources_section: bool
    entries: dict[int, SourceEntry]
    markers: list[int]


def normalize_url(url: str) -> str:
    """A URL in the form used to compare cited and read sources.

    Scheme and host are lower-cased and a trailing slash is dropped; the fragment
    is kept, since one page of the reference holds many sections.
    """
    url = url.strip().strip("<>").rstrip(".,;:")
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    path = parts.path.rstrip("/") if parts.path != "/" else ""
    return urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), path, parts.query, parts.fragment)
    )


def parse_report(report: str) -> ParsedReport:
    """Split ``report`` into body and Sources list, and find its ``[n]`` markers."""
    body, section = _split_sources(report)
    entries = _parse_entries(section.splitlines()) if section is not None else {}
    return ParsedReport(
        body=body,
        has_sources_section=section is not None,
        entries=entries,
        markers=citation_markers(body),
    )


def _split_sources(report: str) -> tuple[str, str | None]:
    """The body and the text of the last Sources section (``None`` if absent)."""
    headings = list(_SOURCES_HEADING.finditer(report))
    if not headings:
        return report, None

    start = headings[-1]
    rest = report[start.end() :]
    end = len(rest)
    for line in re.finditer(r"^.*$", rest, re.MULTILINE):
        if _HEADING.match(line.group()):
            end = line.start()
            break
    body = report[: start.start()] + rest[end:]
    return body, rest[:end]


def _parse_entries(lines: Iterable[str]) -> dict[int, SourceEntry]:
    """Entries of a Sources list, tolerant of the usual markdown shapes.

    Numbered lines (``[1] Title — URL``, ``1. Title - URL``, ``[1]: URL``) keep
    their number; bullet lines without one are numbered by position. A line with
    only a URL completes the entry above it when that entry has none.
    """
    entries: dict[int, SourceEntry] = {}
    last: int | None = None
    for raw in lines:
        line = _BULLET.sub("", raw.strip())
        if not line:
            continue

        number_match = _ENTRY_NUMBER.match(line)
        text = line[number_match.end() :] if number_match else line
        url, title = _url_and_title(text)
        follows_bare_entry = last is not None and entries[last].url is None
        if number_match:
            number = int(next(group for group in number_match.groups() if group))
        elif _BULLET.match(raw.strip()) or (url is not None and not follows_bare_entry):
            number = max(entries, default=0) + 1
        elif url is not None and last is not None:
            entries[last] = SourceEntry(last, entries[last].title, url)
            continue
        else:
            continue

        entries.setdefault(number, SourceEntry(number, title, url))
        last = number
    return entries


def _url_and_title(text: str) -> tuple[str | None, str]:
    """The URL of one Sources line and the title around it."""
    link = _MARKDOWN_LINK.search(text)
    if link is not None:
        rest = text[: link.start()] + " " + link.group(1) + " " + text[link.end() :]
        return link.group(2), _strip_title(rest)

    angle = _ANGLE_URL.search(text)
    if angle is not None:
        return angle.group(1), _strip_title(text[: angle.start()] + text[angle.end() :])

    bare = _BARE_URL.search(text)
    if bare is not None:
        url = bare.group(0).rstrip(".,;:!?)")
        return url, _strip_title(text[: bare.start()] + text[bare.end() :])
    return None, _strip_title(text)


def _strip_title(rest: str) -> str:
    title = re.sub(r"[\s—–:|*_\"“”-]+$", "", rest.strip())
    title = re.sub(r"^[\s—–:|*_\"“”-]+", "", title)
    return title


def citation_markers(text: str) -> list[int]:
    """Every citation number in ``text``, in order; code spans are not prose."""
    masked = _mask_code(text)
    numbers: list[int] = []
    for group in _CITATION_GROUP.finditer(masked):
        for bracket in _BRACKET.finditer(group.group()):
            numbers.extend(_bracket_numbers(bracket.group(1)))
    return numbers


def _bracket_numbers(inside: str) -> list[int]:
    numbers: list[int] = []
    for part in re.split(r"[,;]", inside):
        bounds = [int(n) for n in re.findall(r"\d+", part)]
        if len(bounds) == 2 and 0 < bounds[1] - bounds[0] <= _MAX_RANGE:
            numbers.extend(range(bounds[0], bounds[1] + 1))
        else:
            numbers.extend(bounds)
    return numbers


def _mask_code(text: str) -> str:
    text = _FENCED_CODE.sub(" ", text)
    return _INLINE_CODE.sub(" ", text)


# --------------------------------------------------------------------------
# Deterministic checks
# --------------------------------------------------------------------------


class _ReadSources:
    """The sources the agent read, looked up by URL (or by title without one)."""

    def __init__(self, sources: list[SourceRef]) -> None:
        self.urls = {normalize_url(source["url"]) for source in sources}
        self.titles = {source["title"].strip().lower() for source in sources}

    def url_of(self, entry: SourceEntry) -> str | None:
        """The read source an entry names, as a normalised URL; None if unread."""
        if entry.url is not None:
            url = normalize_url(entry.url)
            return url if url in self.urls else None
        return (
            f"title:{entry.title.lower()}"
            if entry.title.lower() in self.titles
            else None
        )


def run_checks(report: str, sources: list[SourceRef]) -> dict[str, bool]:
    """The deterministic checks of one report against the sources the agent read.

    - ``non_empty``: the body has words beyond its headings.
    - ``citations_resolve``: every ``[n]`` names entry n of the Sources list and
      that entry is a source the agent read (a report that cites without a
      Sources section fails).
    - ``two_sources_cited``: the body cites at least two distinct sources.
    - ``no_unread_sources``: every entry of the Sources list was read.
    """
    parsed = parse_report(report)
    read = _ReadSources(sources)
    resolved = [_resolve(parsed, read, number) for number in parsed.markers]
    cited = {
        parsed.entries[n].url or f"#{n}" for n in parsed.markers if n in parsed.entries
    }
    return {
        "non_empty": _has_words(parsed.body),
        "citations_resolve": all(url is not None for url in resolved),
        "two_sources_cited": len({normalize_url(url) for url in cited}) >= 2,
        "no_unread_sources": all(
            read.url_of(entry) is not None for entry in parsed.entries.values()
        ),
    }


def _resolve(parsed: ParsedReport, read: _ReadSources, number: int) -> str | None:
    entry = parsed.entries.get(number)
    return None if entry is None else read.url_of(entry)


def _has_words(body: str) -> bool:
    prose = [line for line in body.splitlines() if not _HEADING.match(line)]
    return re.search(r"[^\W\d_]{2,}", "\n".join(prose)) is not None


# --------------------------------------------------------------------------
# Text overlap: tokens, stems, sentences
# --------------------------------------------------------------------------

_STOPWORD_TEXT = """
    a about above after again against all also am an and any are as at be because
    been before being below between both but by can could did do does doing down
    during each either else few for from further had has have having he her here
    hers him his how however i if in into is it its itself just may me might more
    most must my no nor not now of off on once only or other our ours out over own
    per same shall she should so some such than that the their theirs them then
    there these they this those through thus to too under until up upon us very
    via was we were what when where whether which while who whom whose why will
    with within without would yet you your"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\[(\"'“‘`*_A-Z0-9])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")


def stem(word: str) -> str:
    """A light suffix stripper, so "raises", "raised" and "raise" meet."""
    if word.endswith(("ies", "ied")) and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "xes", "zes", "ches", "shes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        word = word[:-1]
    if word.endswith("ing") and len(word) > 5:
        word = word[:-3]
    elif word.endswith("ed") and len(word) > 4:
        word = word[:-2]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def content_stems(text: str) -> set[str]:
    """The content words of ``text``, lower-cased and stemmed, stop words out."""
    words = _WORD.findall(text.lower())
    return {
        stem(word)
        for word in words
        if word not in _STOPWORDS and (len(word) > 1 or word.isdigit())
    }


def split_sentences(text: str) -> list[str]:
    """Sentences of plain or markdown text; each list item starts a new one."""
    sentences: list[str] = []
    for block in _blocks(text):
        sentences.extend(part for part in _SENTENCE_END.split(block) if part.strip())
    return sentences


def _blocks(text: str) -> list[str]:
    """Paragraphs and list items, with their lines joined."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.strip() or _HEADING.match(line) or _LIST_ITEM.match(line):
            blocks.append([])
        if line.strip() and not _HEADING.match(line):
            blocks[-1].append(_LIST_ITEM.sub("", line).strip())
    return [" ".join(block) for block in blocks if block]


@dataclass(frozen=True)
class _Sentence:
    text: str
    stems: frozenset[str]
    markers: tuple[int, ...]


def report_sentences(body: str) -> list[_Sentence]:
    """The body's sentences, each with the citation markers that belong to it.

    A marker written after the full stop ("... block. [1]") is moved back to the
    sentence it follows.
    """
    sentences: list[_Sentence] = []
    for text in split_sentences(_FENCED_CODE.sub(" ", body)):
        leading = re.match(r"^(?:\s*\[[\d,;\s–-]+\])+", text)
        if leading is not None and sentences:
            moved = citation_markers(leading.group())
            last = sentences[-1]
            sentences[-1] = _Sentence(
                last.text, last.stems, last.markers + tuple(moved)
            )
            text = text[leading.end() :]
        prose = _CITATION_GROUP.sub(" ", text)
        sentences.append(
            _Sentence(
                text, frozenset(content_stems(prose)), tuple(citation_markers(text))
            )
        )
    return sentences


class _PageIndex:
    """A page's text as overlapping windows of two sentences, for support lookups."""

    def __init__(self, text: str) -> None:
        stems = [content_stems(sentence) for sentence in split_sentences(text)]
        self.windows = [
            stems[i] | (stems[i + 1] if i + 1 < len(stems) else set())
            for i in range(len(stems))
        ]

    def support(self, claim: frozenset[str]) -> float:
        """The largest share of the claim's words that one window contains."""
        if not claim or not self.windows:
            return 0.0
        return max(len(claim & window) for window in self.windows) / len(claim)


# --------------------------------------------------------------------------
# The offline judge
# --------------------------------------------------------------------------

_MIN_CLAIM_WORDS = 3
_KEY_POINT_SHARE = 0.6


class OfflineJudge:
    """A deterministic text-overlap grader: not an LLM, and named so in every run.

    It measures what word overlap can measure and nothing more:

    - grounding: for each claim sentence of the report (three or more content
      words), the largest share of its words found in two consecutive sentences
      of a page it cites, averaged over claim sentences. An uncited claim, or one
      citing a source the agent did not read, counts as 0. A claim whose cited
      pages have no stored text is skipped, since support cannot be measured.
    - coverage: the share of the golden key points for which one sentence of the
      report holds most (60%) of the key point's content words, after stemming.
    - citations: the share of ``[n]`` markers that resolve to a source the agent
      read; a report with no markers gets the lowest score.

    Each share maps to 1 + 4 * share. Paraphrase and synonyms are invisible to it
    and a fluent fabrication that reuses a page's words can fool it: use it to run
    the loop without a key and to catch gross regressions, not as a quality bar.
    """

    model = OFFLINE_JUDGE_MODEL
    version = OFFLINE_JUDGE_VERSION

    def grade(self, item: GradingInput) -> Grading:
        parsed = parse_report(item.report)
        sentences = report_sentences(parsed.body)
        read = _ReadSources(item.sources)
        scores = {
            "grounding": self._grounding(parsed, sentences, read, item.pages),
            "coverage": self._coverage(sentences, item.question.key_points),
            "citations": self._citations(parsed, read),
        }
        return Grading(scores, self.model, self.version)

    def _grounding(
        self,
        parsed: ParsedReport,
        sentences: list[_Sentence],
        read: _ReadSources,
        pages: dict[str, str],
    ) -> MetricScore:
        indexes = {normalize_url(url): _PageIndex(text) for url, text in pages.items()}
        if not indexes:
            return MetricScore("grounding", None, None, "no page text to check against")

        claims = [s for s in sentences if len(s.stems) >= _MIN_CLAIM_WORDS]
        supports: list[float] = []
        uncited = 0
        for claim in claims:
            urls = {_resolve(parsed, read, n) for n in claim.markers} - {None}
            if not claim.markers:
                uncited += 1
            found = [indexes[url] for url in urls if url in indexes]
            if claim.markers and urls and not found:
                continue  # cites read pages whose text was not kept
            supports.append(
                max((page.support(claim.stems) for page in found), default=0)
            )

        ratio = sum(supports) / len(supports) if supports else 0.0
        rationale = (
            f"Claim sentences average {ratio:.0%} word support from the pages they "
            f"cite; {uncited} of {len(claims)} claim sentences cite nothing."
        )
        return MetricScore("grounding", to_scale(ratio), rationale)

    def _coverage(
        self, sentences: list[_Sentence], key_points: tuple[str, ...]
    ) -> MetricScore:
        if not key_points:
            return MetricScore("coverage", None, None, "the question has no key points")

        missing = [
            point for point in key_points if not _key_point_found(point, sentences)
        ]
        found = len(key_points) - len(missing)
        rationale = f"{found} of {len(key_points)} key points found in the report"
        if missing:
            rationale += "; missing: " + "; ".join(_clip(p, 60) for p in missing[:2])
        return MetricScore(
            "coverage", to_scale(found / len(key_points)), rationale + "."
        )

    def _citations(self, parsed: ParsedReport, read: _ReadSources) -> MetricScore:
        total = len(parsed.markers)
        valid = sum(_resolve(parsed, read, n) is not None for n in parsed.markers)
        ratio = valid / total if total else 0.0
        rationale = (
            f"{valid} of {total} citation markers resolve to a source the agent read."
            if total
            else "The report has no citation markers."
        )
        return MetricScore("citations", to_scale(ratio), rationale)


def _key_point_found(point: str, sentences: list[_Sentence]) -> bool:
    wanted = content_stems(point)
    if not wanted:
        return False
    needed = math.ceil(_KEY_POINT_SHARE * len(wanted))
    return any(len(wanted & sentence.stems) >= needed for sentence in sentences)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --------------------------------------------------------------------------
# The LLM judge
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Choosing a judge
# --------------------------------------------------------------------------


def make_judge(
    kind: Literal["auto", "offline", "llm"],
    *,
    model: str | None = None,
    scout_settings: ScoutSettings | None = None,
    monitor_settings: MonitorSettings | None = None,
) -> Judge:
    """The judge that ``kind`` asks for.

    ``auto`` is the LLM judge when Scout itself talks to a model (an API key is
    set and the backend is not offline), and the offline judge otherwise, so a
    run without a key still grades. The LLM judge's model is ``model``, else
    ``MONITOR_JUDGE_MODEL``, else Scout's own model.
    """
    settings = scout_settings or get_settings()
    if kind not in ("auto", "offline", "llm"):
        raise ConfigError(f"unknown judge {kind!r}; use auto, offline or llm")
    if kind == "offline" or (kind == "auto" and settings.uses_offline_model):
        logger.debug("grading with the offline overlap judge")
        return OfflineJudge()
    if settings.api_key is None and settings.base_url == DEFAULT_BASE_URL:
        raise ConfigError(
            f"the LLM judge needs an API key for {settings.base_url}: set "
            "SCOUT_API_KEY (or NVIDIA_API_KEY), point SCOUT_BASE_URL at a local "
            "server, or use the offline judge"
        )

    monitor = monitor_settings or get_monitor_settings()
    name = model or monitor.judge_model or settings.model
    logger.debug("grading with the LLM judge %s", name)
    return LLMJudge(
        make_client(settings),
        model=name,
        json_mode=settings.json_mode,
        max_tokens=settings.max_tokens,
    )

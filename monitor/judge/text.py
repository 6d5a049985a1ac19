"""Text overlap helpers: tokens, light stems, sentences, page windows.

The offline agent (scout/offline.py) has its own tokenizer and stemmer on
purpose: the grader must not share the text handling of the agent it grades,
or a flaw in one would hide itself in the other's scores.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from monitor.judge.report import (
    _CITATION_GROUP,
    _FENCED_CODE,
    _HEADING,
    citation_markers,
)

logger = logging.getLogger(__name__)


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

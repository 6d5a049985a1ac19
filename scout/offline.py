"""The offline model: Scout's tasks done by keyword rules on the text itself.

:class:`OfflineModel` is a backend of :class:`scout.tasks.TaskModel` that needs no
key and no network. It is not a language model and does not pretend to be one:
it plans by keyword, lets the source's BM25 do the retrieval, extracts the
sentences of a page that share the most weighted keywords with the question,
verifies each by word overlap with its page, and writes a report that quotes
those sentences verbatim, each cited. It generates no prose of its own, so
whatever it says is on the page it cites; what it cannot do is synthesise,
paraphrase or notice that a sentence answers the question in other words.

Every method is deterministic (the same inputs give the same output, byte for
byte) and records one usage row under :data:`scout.config.OFFLINE_MODEL_NAME`.
Its "tokens" are counted by a simple rule, one per word and one per punctuation
mark of what it reads and writes; they are not any real tokenizer's counts.
"""

from __future__ import annotations

import json
import keyword
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scout.config import OFFLINE_MODEL_NAME
from scout.observability import record_usage
from scout.tasks import Critique, Note, Page, Plan, Progress, Route, SourceRef

logger = logging.getLogger(__name__)

MAX_QUERY_KEYWORDS = 8
MAX_QUERIES = 4
MAX_NOTES_PER_PAGE = 4
MIN_SENTENCE_WORDS = 5
MAX_SENTENCE_WORDS = 80
MAX_ANSWER_SENTENCES = 6
VERIFY_RATIO = 0.8
BM25_K1 = 1.2
BM25_B = 0.75
DUPLICATE_RATIO = 0.7

# The supervisor's rules: how much evidence is enough, and when to stop reading.
ENOUGH_VERIFIED_NOTES = 4
ENOUGH_PAGES = 2
FEW_HITS = 2
PAGES_BEFORE_CHECK = 4
MAX_PAGES_TO_READ = 6


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_QUOTED = re.compile(r"[`'\"“‘]([\w.]+)[`'\"”’]")
_FOOTNOTE = re.compile(r"(?<=[.,;:!?])\s*\[\d+\]|\s+\[\d+\](?=[\s.,;:]|$)")
# Brackets a reader would take for a citation ("[1, 2]" in prose, not "a[1]").
_CITATION_LIKE = re.compile(r"(?<![\w)\]])\[\s*\d+(?:\s*[,;-]\s*\d+)*\s*\]")
_LIST_MARKER = re.compile(r"^(?:\d+\.|[*•-])\s+")
_SENTENCE_END = re.compile(r"[.!?][\"”’)]*(?=\s+[\"“(]?[A-Z0-9])")
_QUOTED_CODE = re.compile(r'"[^"]*"')
_ASSIGNMENT = re.compile(r"[\w\])] = ")
_FUNCTION_WORDS = _word_set(
    """
    the a an of to is are be been that this which by its it can may when
    """
)
# A sentence that only announces what follows ("... as follows:") says nothing.
_INTRODUCTION = re.compile(
    r"\b(?:follows?|following|example|instance|so|this|below)\s*:$"
)
_VERSION_NOTES = (
    "Changed in version",
    "New in version",
    "Added in version",
    "Deprecated",
)
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "no.")

STOPWORDS = _word_set(
    """
    a about above after again against all also am an and any are aren as at be
    because been before being below between both but by can could did do does
    doing done down during each else explain explained few for from further get
    gets give given has have having he her here hers how i if in into is it its
    itself just kind let like many may me might more most much must my no nor
    not now of off on once one only or other our out over own please same say
    says she should so some such tell than that the their them then there these
    they this those through to too under until up us use used using very was way
    we were what when where whether which while who whom why will with would you
    your happen happens happened run runs work works mean means make makes made
    differ differs difference describe describes exactly actually
    """
)
# A stopword that is also a Python keyword ("with", "for", "in", "is"...) counts
# as a keyword when it is quoted or names a construct: "the with statement".
_PYTHON_WORDS = frozenset(
    word.lower() for word in [*keyword.kwlist, *keyword.softkwlist]
)
_CONSTRUCT_NOUNS = _word_set(
    """
    statement statements clause clauses keyword keywords expression expressions
    operator operators loop loops block blocks
    """
)


def count_tokens(*texts: str) -> int:
    """Words plus punctuation marks: the offline model's stand-in for tokens."""
    return sum(len(_TOKEN.findall(text)) for text in texts)


def stem(word: str) -> str:
    """A light suffix stripper, enough to match "guarantees" with "guarantee"
    and "__exit__" with "exit"; not a linguistic stemmer."""
    word = word.lower().strip("_") or word.lower()
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith(("sses", "xes", "zes", "ches", "shes")):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]

    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def content_words(text: str) -> list[str]:
    """The content words of ``text``, lowercased, in order, repeats included."""
    words = [word.lower() for word in _WORD.findall(text)]
    quoted = {word.lower() for word in _QUOTED.findall(text)}
    found: list[str] = []
    for position, word in enumerate(words):
        following = words[position + 1] if position + 1 < len(words) else ""
        if word in STOPWORDS or len(word) < 2:
            names_construct = following in _CONSTRUCT_NOUNS or word in quoted
            if not (word in _PYTHON_WORDS and names_construct):
                continue
        found.append(word)
    return found


def keywords(text: str) -> list[str]:
    """The content words of ``text``, lowercased, once each, in order."""
    return list(dict.fromkeys(content_words(text)))


def stems(text: str) -> set[str]:
    return {stem(word) for word in content_words(text)}


def sentences(text: str) -> list[str]:
    """The prose sentences of a page, whitespace collapsed. A sentence that
    ends with a colon is kept only with the short list items that follow it,
    joined by semicolons. Code, grammar rules, version notes and very short or
    very long fragments are left out; footnote marks are dropped."""
    blocks = [
        _FOOTNOTE.sub("", " ".join(b.split())) for b in re.split(r"\n\s*\n", text)
    ]
    found: list[str] = []
    for index, block in enumerate(blocks):
        if not _is_prose(block) or _is_list_fragment(block):
            continue
        for sentence in _split_sentences(_LIST_MARKER.sub("", block)):
            if sentence.endswith(":"):
                sentence = _with_list(sentence, blocks[index + 1 :])
            size = len(_WORD.findall(sentence))
            complete = not _INTRODUCTION.search(sentence)
            complete = complete and not sentence.startswith(_VERSION_NOTES)
            if complete and MIN_SENTENCE_WORDS <= size <= MAX_SENTENCE_WORDS:
                found.append(sentence)
    return found


def _is_list_fragment(block: str) -> bool:
    """A list item that is not a sentence of its own: ``* zero of any type``."""
    return bool(_LIST_MARKER.match(block)) and not block.endswith((".", ":"))


def _with_list(intro: str, following: list[str]) -> str:
    """``intro`` (ending with a colon) followed by the list fragments after it."""
    items: list[str] = []
    for block in following:
        if not _is_list_fragment(block):
            break
        items.append(_LIST_MARKER.sub("", block))
    return f"{intro} {'; '.join(items)}" if items else intro


def _is_prose(block: str) -> bool:
    """Code, grammar rules and "see also" PEP entries are not prose: pydoc prose
    ends its paragraphs with punctuation and reads as English, with its share
    of function words."""
    if "::=" in block or block.startswith((">>>", "...", "**PEP")):
        return False
    if not (block.endswith((".", ":", "!", "?", ")")) or _LIST_MARKER.match(block)):
        return False
    if _ASSIGNMENT.search(_QUOTED_CODE.sub("", block)):
        return False
    words = [word.lower() for word in _WORD.findall(block)]
    function_words = sum(word in _FUNCTION_WORDS for word in words)
    return len(words) >= MIN_SENTENCE_WORDS and function_words >= max(
        2, 0.1 * len(words)
    )


def _split_sentences(block: str) -> list[str]:
    pieces = re.split(r"\x00\s+", _SENTENCE_END.sub(lambda end: end[0] + "\x00", block))
    merged: list[str] = []
    for piece in pieces:
        if merged and merged[-1].lower().endswith(_ABBREVIATIONS):
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return [piece.strip() for piece in merged if piece.strip()]


def _shingles(text: str, size: int = 3) -> set[tuple[str, ...]]:
    words = [word.lower() for word in _WORD.findall(text)]
    if len(words) < size:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


def overlap_ratio(text: str, page_text: str) -> float:
    """The share of ``text``'s word triples that also occur in ``page_text``."""
    own = _shingles(text)
    if not own:
        return 0.0
    return len(own & _shingles(page_text)) / len(own)


@dataclass(frozen=True)
class _Scored:
    text: str
    score: float
    position: int


def _bm25_term(count: int, frequency: int, total: int, relative_length: float) -> float:
    """One term's BM25 weight in one sentence (k1 = 1.2, b = 0.75)."""
    idf = math.log(1 + (total - frequency + 0.5) / (frequency + 0.5))
    damping = BM25_K1 * (1 - BM25_B + BM25_B * relative_length)
    return idf * count * (BM25_K1 + 1) / (count + damping)


def rank_sentences(
    question_stems: set[str], candidates: Sequence[str]
) -> list[_Scored]:
    """BM25 over ``candidates`` (each sentence a document), boosted by the share
    of the question's keywords a sentence covers. Sentences that share fewer
    than two keywords with the question (one, for a one-keyword question) are
    dropped. Best first; ties keep the page order."""
    need = min(2, len(question_stems))
    bags = [Counter(map(stem, content_words(text))) for text in candidates]
    if need == 0 or not bags:
        return []

    total = len(bags)
    mean_length = max(sum(sum(bag.values()) for bag in bags) / total, 1.0)
    frequency = Counter(term for bag in bags for term in question_stems if term in bag)
    ranked = []
    for position, (sentence, bag) in enumerate(zip(candidates, bags, strict=True)):
        matched = sorted(term for term in question_stems if term in bag)
        if len(matched) < need:
            continue
        relative_length = sum(bag.values()) / mean_length
        score = sum(
            _bm25_term(bag[term], frequency[term], total, relative_length)
            for term in matched
        )
        coverage = len(matched) / len(question_stems)
        ranked.append(_Scored(sentence, round(score * (0.5 + coverage), 9), position))

    return sorted(ranked, key=lambda item: (-item.score, item.position))


class OfflineModel:
    """Deterministic, extractive stand-in for a chat model (see the module)."""

    name = OFFLINE_MODEL_NAME

    def plan(self, question: str, feedback: str | None = None) -> Plan:
        """Sub-questions and queries from the question's keywords; with critic
        feedback, a narrower plan aimed at the keywords it says are missing."""
        started = time.perf_counter()
        words = keywords(question)
        if feedback:
            plan = _revised_plan(question, words, keywords(feedback))
        else:
            plan = _first_plan(question, words)

        self._record(
            started,
            [question, feedback or ""],
            [*plan["sub_questions"], *plan["queries"]],
        )
        return plan

    def critique(self, question: str, plan: Plan) -> Critique:
        """Approve when the queries cover every keyword of the question."""
        started = time.perf_counter()
        covered = {
            stem(word) for query in plan["queries"] for word in _WORD.findall(query)
        }
        missing = [word for word in keywords(question) if stem(word) not in covered]
        if not plan["queries"]:
            critique: Critique = {
                "approved": False,
                "feedback": "The plan has no search queries; add queries for: "
                + ", ".join(keywords(question)),
            }
        elif missing:
            critique = {
                "approved": False,
                "feedback": "The queries do not cover: " + ", ".join(missing),
            }
        else:
            critique = {"approved": True, "feedback": "The queries cover the question."}

        self._record(
            started,
            [question, *plan["sub_questions"], *plan["queries"]],
            [critique["feedback"]],
        )
        return critique

    def route(self, progress: Progress) -> Route:
        """The next worker turn by fixed rules; the supervisor enforces limits."""
        started = time.perf_counter()
        step = _next_step(progress)
        self._record(started, [json.dumps(progress, sort_keys=True)], [step])
        return step

    def read(self, question: str, page: Page) -> list[str]:
        """Up to four sentences of the page, verbatim, that bear on the question."""
        started = time.perf_counter()
        ranked = rank_sentences(stems(question), sentences(page["text"]))
        passages = [item.text for item in ranked[:MAX_NOTES_PER_PAGE]]
        self._record(started, [question, page["text"]], passages)
        return passages

    def check(self, question: str, notes: list[Note], pages: list[Page]) -> list[Note]:
        """A note is verified when at least 80% of its word triples occur in its
        page and it shares a keyword with the question."""
        started = time.perf_counter()
        texts = {page["url"]: page["text"] for page in pages}
        wanted = stems(question)
        checked: list[Note] = []
        for note in notes:
            page_text = texts.get(note["source_url"])
            verified = (
                page_text is not None
                and overlap_ratio(note["text"], page_text) >= VERIFY_RATIO
                and bool(stems(note["text"]) & wanted)
            )
            checked.append({**note, "verified": verified})

        read = [question, *(note["text"] for note in notes), *texts.values()]
        self._record(started, read, [str(note["verified"]) for note in checked])
        return checked

    def write(self, question: str, notes: list[Note], sources: list[SourceRef]) -> str:
        """A markdown report quoting the verified notes, each cited ``[n]``."""
        started = time.perf_counter()
        report = _write_report(question, notes, sources)
        read = [question, *(note["text"] for note in notes)]
        read += [f"{source['title']} {source['url']}" for source in sources]
        self._record(started, read, [report])
        return report

    def _record(
        self, started: float, read: Iterable[str], written: Iterable[str]
    ) -> None:
        record_usage(
            model=self.name,
            input_tokens=count_tokens(*read),
            output_tokens=count_tokens(*written),
            seconds=time.perf_counter() - started,
        )


# Planning


def _first_plan(question: str, words: list[str]) -> Plan:
    """The full keyword query first, then narrower pairs of consecutive keywords
    (each keyword alone when there are only two). A question with one keyword
    or none also searches all its words, unless that is the same query."""
    queries = [" ".join(words[:MAX_QUERY_KEYWORDS])]
    if len(words) > 2:
        queries += [" ".join(words[i : i + 2]) for i in range(0, len(words) - 1, 2)]
        queries.append(f"{words[-1]} {words[0]}")
    else:
        queries += words
    queries = _unique(queries)[:MAX_QUERIES]
    sub_questions = _sub_questions(question, queries)

    if len(queries) < 2:
        queries = _unique([*queries, " ".join(_WORD.findall(question))])
    return {"sub_questions": sub_questions, "queries": queries or [question.strip()]}


def _revised_plan(question: str, words: list[str], asked: list[str]) -> Plan:
    """A narrower plan aimed at what the critic found missing: a query led by
    the missing keywords, one for any keywords that query leaves out, then each
    missing keyword paired with the question's first keyword."""
    if not words:
        return _first_plan(question, words)

    missing = [word for word in asked if word in words] or words
    ordered = _unique([*missing, *words])
    queries = [" ".join(ordered[:MAX_QUERY_KEYWORDS])]
    queries.append(" ".join(ordered[MAX_QUERY_KEYWORDS : 2 * MAX_QUERY_KEYWORDS]))
    queries += [f"{words[0]} {word}" for word in missing if word != words[0]]
    queries += _first_plan(question, words)["queries"][1:]
    queries = _unique(queries)[:MAX_QUERIES]
    return {"sub_questions": _sub_questions(question, queries), "queries": queries}


def _sub_questions(question: str, queries: list[str]) -> list[str]:
    narrower = [
        f"What does the documentation say about {query}?" for query in queries[1:3]
    ]
    return [question, *narrower]


def _unique(items: Iterable[str]) -> list[str]:
    return [item for item in dict.fromkeys(item.strip() for item in items) if item]


# Routing


def _next_step(progress: Progress) -> Route:
    turns_left = progress["max_worker_turns"] - progress["worker_turns"]
    unchecked = progress["notes_unchecked"]
    pending = progress["queries_pending"]
    unread = progress["hits_unread"]
    pages = progress["pages_read"]
    enough = (
        progress["notes_verified"] >= ENOUGH_VERIFIED_NOTES and pages >= ENOUGH_PAGES
    )

    if enough and not unchecked:
        return "writer"
    if unchecked and (turns_left <= 1 or pages >= PAGES_BEFORE_CHECK or enough):
        return "fact_checker"
    if pending and unread < FEW_HITS and turns_left > 2:
        return "searcher"
    if unread and pages < MAX_PAGES_TO_READ and turns_left > 1:
        return "reader"
    if unchecked:
        return "fact_checker"
    if pending and turns_left > 2:
        return "searcher"
    return "writer"


# Writing


@dataclass
class _Claim:
    """A sentence to quote and every source that holds it."""

    text: str
    citations: list[int]
    score: float
    position: int


def _write_report(question: str, notes: list[Note], sources: list[SourceRef]) -> str:
    title = f"# {' '.join(question.split())}"
    number = {source["url"]: index for index, source in enumerate(sources, start=1)}
    usable = [
        note for note in notes if note["verified"] and note["source_url"] in number
    ]
    claims = _select_claims(_claims(question, usable, number))
    if not claims:
        return _insufficient_report(title, sources)

    lines = [title, "", "## Answer", ""]
    for claim in claims:
        marks = "".join(f"[{n}]" for n in claim.citations)
        lines.append(f"- {claim.text} {marks}")
    lines += ["", "## Sources", ""]
    lines += [
        f"[{n}] {source['title']} — {source['url']}"
        for n, source in enumerate(sources, start=1)
    ]
    return "\n".join(lines) + "\n"


def _claims(question: str, notes: list[Note], number: dict[str, int]) -> list[_Claim]:
    """One claim per distinct sentence, citing every source it came from.
    Sentences holding brackets that would read as citations are not quoted."""
    notes = [note for note in notes if not _CITATION_LIKE.search(note["text"])]
    texts = [" ".join(note["text"].split()) for note in notes]
    ranked = {
        item.position: item.score for item in rank_sentences(stems(question), texts)
    }
    claims: list[_Claim] = []
    for position, (note, text) in enumerate(zip(notes, texts, strict=True)):
        citation = number[note["source_url"]]
        twin = next((c for c in claims if _same_claim(c.text, text)), None)
        if twin is not None:
            if citation not in twin.citations:
                twin.citations = sorted([*twin.citations, citation])
            continue
        claims.append(_Claim(text, [citation], ranked.get(position, 0.0), position))
    return claims


def _same_claim(left: str, right: str) -> bool:
    a, b = _shingles(left), _shingles(right)
    return bool(a and b) and len(a & b) / len(a | b) >= DUPLICATE_RATIO


def _select_claims(claims: list[_Claim]) -> list[_Claim]:
    """The best claim of each source first, so every source that gave evidence
    is cited, then the best of the rest; listed best first."""
    by_merit = sorted(claims, key=lambda claim: (-claim.score, claim.position))
    chosen: list[_Claim] = []
    cited: set[int] = set()
    for claim in by_merit:
        if len(chosen) < MAX_ANSWER_SENTENCES and not cited.issuperset(claim.citations):
            chosen.append(claim)
            cited.update(claim.citations)
    for claim in by_merit:
        if len(chosen) < MAX_ANSWER_SENTENCES and claim not in chosen:
            chosen.append(claim)

    return sorted(chosen, key=lambda claim: (-claim.score, claim.position))


def _insufficient_report(title: str, sources: list[SourceRef]) -> str:
    consulted = len(sources)
    lines = [
        title,
        "",
        "## Answer",
        "",
        "The evidence was insufficient: "
        + (
            f"none of the {consulted} pages read held a sentence that bears on "
            "the question and could be verified against its text, so no answer "
            "is given."
            if consulted
            else "no page bearing on the question was read, so no answer is given."
        ),
    ]
    if sources:
        lines += ["", "## Pages consulted", ""]
        lines += [f"- {source['title']} — {source['url']}" for source in sources]
    return "\n".join(lines) + "\n"

"""The offline model, on the bundled Python reference: planning, routing, reading,
checking and writing, and the whole research loop from question to report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scout.config import OFFLINE_MODEL_NAME
from scout.observability import UsageMeter, in_node, metering
from scout.offline import OfflineModel, keywords, sentences
from scout.sources.local import LocalCorpus, open_pydoc_corpus
from scout.tasks import Note, Page, Plan, Progress, SourceRef

WITH_QUESTION = "What does the with statement guarantee about __exit__?"
WITH_URL = "https://docs.python.org/3/reference/compound_stmts.html#the-with-statement"
CITATION = re.compile(r"\[(\d+)\]")
SOURCE_LINE = re.compile(r"^\[(\d+)\] (.+) — (\S+)$")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> LocalCorpus:
    return open_pydoc_corpus(tmp_path_factory.mktemp("offline-cache"))


@dataclass
class Research:
    """What one run of the loop produced."""

    report: str
    pages: list[Page] = field(default_factory=list)
    calls: int = 0


def research(question: str, corpus: LocalCorpus, max_turns: int = 8) -> Research:
    """Plan, critique, then let the model route search/read/check turns, then
    write: the loop Scout's graph runs, without the graph."""
    model = OfflineModel()
    run = Research(report="")
    plan = model.plan(question)
    critique = model.critique(question, plan)
    run.calls += 2
    if not critique["approved"]:
        plan = model.plan(question, critique["feedback"])
        run.calls += 1

    queries_run: list[str] = []
    hits: dict[str, float] = {}
    notes: list[Note] = []
    for turn in range(max_turns):
        read = {page["url"] for page in run.pages}
        progress: Progress = {
            "question": question,
            "worker_turns": turn,
            "max_worker_turns": max_turns,
            "queries_pending": sum(q not in queries_run for q in plan["queries"]),
            "hits_unread": sum(url not in read for url in hits),
            "pages_read": len(run.pages),
            "notes_unchecked": sum(note["verified"] is None for note in notes),
            "notes_verified": sum(note["verified"] is True for note in notes),
        }
        step = model.route(progress)
        run.calls += 1
        if step == "writer":
            break
        if step == "searcher":
            query = next((q for q in plan["queries"] if q not in queries_run), question)
            queries_run.append(query)
            for hit in corpus.search(query, 5):
                hits.setdefault(hit["url"], hit["score"])
        elif step == "reader":
            unread = sorted((u for u in hits if u not in read), key=lambda u: -hits[u])
            for url in unread[:2]:
                page = corpus.fetch(url)
                run.pages.append(page)
                notes += [
                    {"source_url": url, "text": text, "verified": None}
                    for text in model.read(question, page)
                ]
                run.calls += 1
        else:
            checked = model.check(
                question, [n for n in notes if n["verified"] is None], run.pages
            )
            verdicts = {(n["source_url"], n["text"]): n["verified"] for n in checked}
            notes = [
                {
                    **n,
                    "verified": verdicts.get(
                        (n["source_url"], n["text"]), n["verified"]
                    ),
                }
                for n in notes
            ]
            run.calls += 1

    useful = {note["source_url"] for note in notes if note["verified"]}
    sources: list[SourceRef] = [
        {"url": p["url"], "title": p["title"], "content_hash": p["content_hash"]}
        for p in run.pages
        if p["url"] in useful
    ]
    verified = [note for note in notes if note["verified"]]
    run.report = model.write(question, verified, sources)
    run.calls += 1
    return run


def citations(report: str) -> list[int]:
    answer = report.split("## Sources")[0]
    return [int(number) for number in CITATION.findall(answer)]


def listed_sources(report: str) -> dict[int, str]:
    tail = report.split("## Sources", 1)[1]
    lines = [SOURCE_LINE.match(line) for line in tail.strip().splitlines()]
    assert all(lines), f"malformed Sources section:\n{tail}"
    return {int(match[1]): match[3] for match in lines if match}


# The whole loop


def test_every_citation_resolves_to_a_source_that_was_read(corpus: LocalCorpus) -> None:
    run = research(WITH_QUESTION, corpus)
    listed = listed_sources(run.report)
    read_urls = {page["url"] for page in run.pages}

    assert citations(run.report)
    assert set(citations(run.report)) <= set(listed)
    assert set(listed.values()) <= read_urls
    assert run.report.startswith(f"# {WITH_QUESTION}\n")


def test_with_statement_report_cites_two_sources_and_the_guarantee(
    corpus: LocalCorpus,
) -> None:
    run = research(WITH_QUESTION, corpus)
    listed = listed_sources(run.report)
    cited_urls = {listed[number] for number in citations(run.report)}

    assert len(cited_urls) >= 2
    assert WITH_URL in cited_urls
    assert "will always be called" in run.report


def test_quoted_sentences_appear_verbatim_in_their_sources(corpus: LocalCorpus) -> None:
    run = research(WITH_QUESTION, corpus)
    listed = listed_sources(run.report)
    texts = {page["url"]: " ".join(page["text"].split()) for page in run.pages}
    answer = run.report.split("## Sources")[0]

    bullets = [line for line in answer.splitlines() if line.startswith("- ")]
    assert bullets
    for bullet in bullets:
        sentence = CITATION.sub("", bullet[2:]).strip()
        cited = [listed[int(n)] for n in CITATION.findall(bullet)]
        assert all(sentence in texts[url] for url in cited), sentence


def test_the_same_question_twice_gives_the_same_report(corpus: LocalCorpus) -> None:
    first = research(WITH_QUESTION, corpus).report
    second = research(WITH_QUESTION, corpus).report

    assert first == second


def test_the_report_does_not_depend_on_the_process_hash_seed(
    corpus: LocalCorpus,
) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_offline import research, WITH_QUESTION
        from scout.sources.local import open_pydoc_corpus
        corpus = open_pydoc_corpus(Path({str(corpus.index_path.parent)!r}))
        sys.stdout.write(research(WITH_QUESTION, corpus).report)
        """
    )
    reports = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=Path(__file__).parents[2],
        )
        reports.add(done.stdout)

    assert reports == {research(WITH_QUESTION, corpus).report}


def test_every_call_records_one_usage_row_with_zero_cost(corpus: LocalCorpus) -> None:
    meter = UsageMeter()
    with metering(meter), in_node("offline-test"):
        run = research(WITH_QUESTION, corpus)

    assert len(meter.rows) == run.calls
    assert {row.model for row in meter.rows} == {OFFLINE_MODEL_NAME}
    assert {row.node for row in meter.rows} == {"offline-test"}
    assert all(row.cost == 0.0 for row in meter.rows)
    assert all(row.input_tokens and row.input_tokens > 0 for row in meter.rows)
    assert sum(row.output_tokens or 0 for row in meter.rows) > 0


# Planning and critique


def test_plan_has_one_to_three_sub_questions_and_two_to_four_queries() -> None:
    plan = OfflineModel().plan(WITH_QUESTION)

    assert 1 <= len(plan["sub_questions"]) <= 3
    assert 2 <= len(plan["queries"]) <= 4
    assert plan["queries"][0] == "with statement guarantee __exit__"
    assert len(set(plan["queries"])) == len(plan["queries"])


def test_keywords_keep_python_keywords_that_name_a_construct() -> None:
    assert keywords("What does the with statement do with files?") == [
        "with",
        "statement",
        "files",
    ]
    assert "for" in keywords("When does the `for` end?")


def test_critique_approves_a_plan_whose_queries_cover_the_question() -> None:
    model = OfflineModel()

    critique = model.critique(WITH_QUESTION, model.plan(WITH_QUESTION))

    assert critique["approved"] is True


def test_critique_names_the_keywords_a_plan_misses() -> None:
    plan: Plan = {"sub_questions": [WITH_QUESTION], "queries": ["with statement"]}

    critique = OfflineModel().critique(WITH_QUESTION, plan)

    assert critique["approved"] is False
    assert "guarantee" in critique["feedback"]
    assert "__exit__" in critique["feedback"]


def test_a_revised_plan_is_different_and_aims_at_what_was_missing() -> None:
    model = OfflineModel()
    first = model.plan(WITH_QUESTION)

    revised = model.plan(WITH_QUESTION, "The queries do not cover: __exit__")

    assert revised != first
    assert revised["queries"][0].startswith("__exit__")
    assert all("__exit__" in query for query in revised["queries"][:2])
    assert model.critique(WITH_QUESTION, revised)["approved"] is True


def test_a_long_question_gets_revised_until_every_keyword_is_covered() -> None:
    model = OfflineModel()
    question = (
        "How do default parameter values, keyword arguments, positional arguments "
        "and annotations interact in function definitions?"
    )

    critique = model.critique(question, model.plan(question))
    revised = model.plan(question, critique["feedback"])

    assert critique["approved"] is False
    assert model.critique(question, revised)["approved"] is True


# Routing


def progress(**counts: int) -> Progress:
    base: Progress = {
        "question": WITH_QUESTION,
        "worker_turns": 0,
        "max_worker_turns": 8,
        "queries_pending": 0,
        "hits_unread": 0,
        "pages_read": 0,
        "notes_unchecked": 0,
        "notes_verified": 0,
    }
    return {**base, **counts}  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"queries_pending": 3}, "searcher"),
        ({"queries_pending": 2, "hits_unread": 5}, "reader"),
        ({"hits_unread": 3, "pages_read": 4, "notes_unchecked": 6}, "fact_checker"),
        ({"pages_read": 2, "notes_verified": 4}, "writer"),
        ({"pages_read": 1, "notes_unchecked": 2}, "fact_checker"),
        ({"pages_read": 3}, "writer"),
        (
            {"worker_turns": 7, "queries_pending": 2, "notes_unchecked": 1},
            "fact_checker",
        ),
        ({"worker_turns": 7, "queries_pending": 2, "hits_unread": 4}, "writer"),
    ],
)
def test_route_follows_its_rules(counts: dict[str, int], expected: str) -> None:
    assert OfflineModel().route(progress(**counts)) == expected


# Reading, checking, writing


def test_read_returns_verbatim_sentences_that_bear_on_the_question(
    corpus: LocalCorpus,
) -> None:
    page = corpus.fetch(WITH_URL)

    passages = OfflineModel().read(WITH_QUESTION, page)

    flat = " ".join(page["text"].split())
    assert 1 <= len(passages) <= 4
    assert all(passage in flat for passage in passages)
    assert any("will always be called" in passage for passage in passages)


def test_read_returns_nothing_when_the_page_does_not_bear_on_the_question(
    corpus: LocalCorpus,
) -> None:
    page = corpus.fetch(WITH_URL)

    assert OfflineModel().read("What is the airspeed of a laden swallow?", page) == []


def test_sentences_skip_code_and_grammar(corpus: LocalCorpus) -> None:
    found = sentences(corpus.fetch(WITH_URL)["text"])

    assert not any("::=" in sentence or "hit_except" in sentence for sentence in found)
    invoked = 'The context manager’s "__enter__()" method is invoked.'
    assert invoked in found


def test_check_verifies_only_notes_found_on_their_page_and_on_topic(
    corpus: LocalCorpus,
) -> None:
    page = corpus.fetch(WITH_URL)
    real = OfflineModel().read(WITH_QUESTION, page)[0]
    notes: list[Note] = [
        {"source_url": WITH_URL, "text": real, "verified": None},
        {
            "source_url": WITH_URL,
            "text": "The with statement guarantees that __exit__ is never called.",
            "verified": None,
        },
        {"source_url": WITH_URL, "text": "The suite is executed.", "verified": None},
        {"source_url": "https://elsewhere.example/", "text": real, "verified": None},
    ]

    checked = OfflineModel().check(WITH_QUESTION, notes, [page])

    assert [note["verified"] for note in checked] == [True, False, False, False]
    assert [note["text"] for note in checked] == [note["text"] for note in notes]


def test_write_without_verified_notes_says_the_evidence_was_insufficient() -> None:
    sources: list[SourceRef] = [
        {"url": WITH_URL, "title": "The with statement", "content_hash": "0" * 64}
    ]
    unverified: list[Note] = [
        {"source_url": WITH_URL, "text": "Something unchecked.", "verified": False}
    ]

    report = OfflineModel().write(WITH_QUESTION, unverified, sources)

    assert report.startswith(f"# {WITH_QUESTION}\n")
    assert "insufficient" in report
    assert not CITATION.search(report)
    assert WITH_URL in report


def test_write_does_not_quote_sentences_whose_brackets_read_as_citations() -> None:
    sources: list[SourceRef] = [
        {"url": WITH_URL, "title": "The with statement", "content_hash": "0" * 64}
    ]
    notes: list[Note] = [
        {
            "source_url": WITH_URL,
            "text": 'The with statement may hold a list "[4, 5]" for __exit__.',
            "verified": True,
        },
        {
            "source_url": WITH_URL,
            "text": "The with statement guarantees that __exit__ is called.",
            "verified": True,
        },
    ]

    report = OfflineModel().write(WITH_QUESTION, notes, sources)

    assert "[4, 5]" not in report
    assert "guarantees that __exit__ is called. [1]" in report


def test_write_numbers_sources_in_the_order_given(corpus: LocalCorpus) -> None:
    pages = [
        corpus.fetch(WITH_URL),
        corpus.fetch(corpus.search("context manager")[0]["url"]),
    ]
    model = OfflineModel()
    notes: list[Note] = [
        {"source_url": page["url"], "text": text, "verified": True}
        for page in pages
        for text in model.read(WITH_QUESTION, page)
    ]
    sources: list[SourceRef] = [
        {"url": p["url"], "title": p["title"], "content_hash": p["content_hash"]}
        for p in reversed(pages)
    ]

    report = model.write(WITH_QUESTION, notes, sources)

    assert listed_sources(report) == {1: sources[0]["url"], 2: sources[1]["url"]}
    assert set(citations(report)) == {1, 2}
    assert f"[1] {sources[0]['title']} — {sources[0]['url']}" in report

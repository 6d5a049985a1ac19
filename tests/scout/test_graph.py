"""Scout's graph end to end: the seven nodes, the plan approval interrupt, the
critic's one revision, the limits, the final state, tracing, and the chat backend
against a local OpenAI-compatible server. Runs use the offline model and the
bundled Python reference corpus unless a test swaps in a task-model double."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from scout.agent import AgentRun, make_context, run_question
from scout.config import ScoutSettings, get_settings
from scout.errors import ConfigError, RunLimitError
from scout.graph import NODE_NAMES, build_graph
from scout.observability import (
    RUN_SPAN_NAME,
    InstrumentedGraph,
    configure_tracing,
    flush_traces,
    reset_tracing,
)
from scout.offline import OfflineModel
from scout.sources.base import content_hash
from scout.state import ScoutContext
from scout.tasks import Critique, Note, Page, Plan, Progress, Route, SourceRef
from tests.fakes.openai_server import FakeOpenAI, scout_task_responder

QUESTION = "What does the with statement guarantee about __exit__?"
WORKERS = ("searcher", "reader", "fact_checker")
EDITED_QUERIES = ["generator yield expression", "try finally clause"]
_CITATION = re.compile(r"\[(\d+)\]")


# Task-model doubles: the offline model with one task replaced


class OfflineDouble:
    """Delegates every task to the offline model; subclasses replace one."""

    name = "test/offline-double"

    def __init__(self) -> None:
        self.inner = OfflineModel()
        self.feedbacks: list[str | None] = []
        self.routes = 0

    def plan(self, question: str, feedback: str | None = None) -> Plan:
        self.feedbacks.append(feedback)
        return self.inner.plan(question, feedback)

    def critique(self, question: str, plan: Plan) -> Critique:
        return self.inner.critique(question, plan)

    def route(self, progress: Progress) -> Route:
        self.routes += 1
        return self.inner.route(progress)

    def read(self, question: str, page: Page) -> list[str]:
        return self.inner.read(question, page)

    def check(self, question: str, notes: list[Note], pages: list[Page]) -> list[Note]:
        return self.inner.check(question, notes, pages)

    def write(self, question: str, notes: list[Note], sources: list[SourceRef]) -> str:
        return self.inner.write(question, notes, sources)


class RejectingCritic(OfflineDouble):
    """A critic that never approves a plan."""

    def critique(self, question: str, plan: Plan) -> Critique:
        return {"approved": False, "feedback": "add a query about context managers"}


class EndlessSearch(OfflineDouble):
    """A supervisor model that always wants one more search."""

    def route(self, progress: Progress) -> Route:
        self.routes += 1
        return "searcher"


# Helpers


@pytest.fixture
def context() -> ScoutContext:
    return make_context(get_settings(), auto_approve=True)


def ask(
    context: ScoutContext,
    *,
    thread_id: str = "t-1",
    question: str = QUESTION,
    **options: Any,
) -> AgentRun:
    return run_question(question, thread_id=thread_id, context=context, **options)


def visits(run: AgentRun, node: str) -> int:
    return run.node_visits.count(node)


def listed_urls(report: str) -> dict[int, str]:
    """``[n] Title — URL`` lines of the report's Sources section."""
    section = report.split("## Sources", 1)[-1]
    found = re.findall(r"^\[(\d+)\] .* — (\S+)\s*$", section, re.M)
    return {int(number): url for number, url in found}


# One run


def test_one_offline_run_visits_all_seven_nodes(context: ScoutContext) -> None:
    run = ask(context)

    assert run.status == "completed"
    assert set(run.node_visits) == set(NODE_NAMES)
    assert run.node_visits[:3] == ["planner", "critic", "supervisor"]
    assert run.node_visits[-2:] == ["supervisor", "writer"]


def test_final_state_holds_report_sources_visits_and_worker_turns(
    context: ScoutContext,
) -> None:
    run = ask(context)

    state = run.state
    assert state["report"] == run.report and "[1]" in run.report
    assert state["sources"] and state["sources"] == run.sources
    texts = {page["url"]: page["text"] for page in state["pages"]}
    for source in state["sources"]:
        assert set(source) == {"url", "title", "content_hash"}
        assert source["url"].startswith("https://docs.python.org/")
        assert source["content_hash"] == content_hash(texts[source["url"]])
    assert state["node_visits"] == run.node_visits
    worker_visits = sum(visits(run, worker) for worker in WORKERS)
    assert state["worker_turns"] == run.worker_turns == worker_visits > 0


def test_an_empty_question_is_a_config_error(context: ScoutContext) -> None:
    with pytest.raises(ConfigError, match="question is empty"):
        ask(context, question="   ")


# The plan approval interrupt


@pytest.fixture
def reviewed() -> tuple[ScoutContext, Any]:
    """A context that waits for a human, and a graph that can pause and resume."""
    context = make_context(get_settings(), auto_approve=False)
    return context, build_graph(InMemorySaver())


def test_the_plan_waits_for_approval_and_resumes_with_approve(
    reviewed: tuple[ScoutContext, Any],
) -> None:
    context, graph = reviewed

    paused = ask(context, graph=graph)

    assert paused.status == "awaiting_approval"
    assert paused.report == ""
    shown = paused.state["__interrupt__"][0].value
    assert shown["plan"] == paused.state["plan"]
    assert not set(paused.node_visits) & set(WORKERS)

    resumed = ask(context, graph=graph, resume="approve")

    assert resumed.status == "completed"
    assert resumed.report
    searched = resumed.state["queries_run"]
    assert searched and searched == paused.state["plan"]["queries"][: len(searched)]


def test_an_edited_plan_is_the_one_that_is_searched(
    reviewed: tuple[ScoutContext, Any],
) -> None:
    context, graph = reviewed
    paused = ask(context, graph=graph)
    assert not set(EDITED_QUERIES) & set(paused.state["plan"]["queries"])

    resumed = ask(
        context,
        graph=graph,
        resume={"action": "edit", "plan": {"queries": EDITED_QUERIES}},
    )

    assert resumed.status == "completed"
    assert resumed.state["plan"]["queries"] == EDITED_QUERIES
    searched = resumed.state["queries_run"]
    assert searched and set(searched) <= {*EDITED_QUERIES, QUESTION}
    assert searched[0] == EDITED_QUERIES[0]


def test_a_rejected_plan_ends_the_run_without_a_report(
    reviewed: tuple[ScoutContext, Any],
) -> None:
    context, graph = reviewed
    ask(context, graph=graph)

    resumed = ask(
        context, graph=graph, resume={"action": "reject", "reason": "off topic"}
    )

    assert resumed.status == "rejected"
    assert resumed.report == ""
    assert resumed.state["rejection"] == "off topic"
    assert not {"writer", *WORKERS} & set(resumed.node_visits)


def test_an_unknown_plan_decision_is_a_config_error(
    reviewed: tuple[ScoutContext, Any],
) -> None:
    context, graph = reviewed
    ask(context, graph=graph)

    with pytest.raises(ConfigError, match="approve, edit or reject"):
        ask(context, graph=graph, resume="maybe")


# The critic and the limits


def test_the_critic_asks_for_one_revision_and_never_a_second(
    context: ScoutContext,
) -> None:
    model = RejectingCritic()

    run = ask(dataclasses.replace(context, model=model))

    assert visits(run, "planner") == 2
    assert visits(run, "critic") == 2
    assert model.feedbacks == [None, "add a query about context managers"]
    assert run.state["plan_revisions"] == 1
    assert run.status == "completed" and run.report


def test_the_worker_turn_limit_sends_the_run_to_the_writer(
    context: ScoutContext,
) -> None:
    model = EndlessSearch()

    run = ask(dataclasses.replace(context, model=model, max_worker_turns=3))

    assert run.worker_turns == 3
    assert visits(run, "searcher") == 3
    assert run.node_visits[-2:] == ["supervisor", "writer"]
    # The model is asked to route only while turns are left.
    assert model.routes == 3
    assert run.status == "completed"


def test_a_recursion_limit_too_small_for_the_run_is_a_clear_error(
    context: ScoutContext,
) -> None:
    endless = dataclasses.replace(
        context, model=EndlessSearch(), max_worker_turns=10_000
    )
    settings = ScoutSettings(recursion_limit=12)

    with pytest.raises(RunLimitError) as raised:
        ask(endless, thread_id="run-9:q1", settings=settings)

    message = str(raised.value)
    assert "run-9:q1" in message
    assert "recursion limit of 12" in message
    assert "SCOUT_RECURSION_LIMIT" in message


# Tracing


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-test")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-test")
    monkeypatch.setenv("LANGFUSE_BASE_URL", "http://127.0.0.1:9")
    exporter = InMemorySpanExporter()
    configure_tracing(span_exporter=exporter)
    yield exporter
    InstrumentedGraph.forget_paused_runs()
    reset_tracing(timeout_s=1.0)


def test_the_real_graph_gives_one_trace_per_run_and_a_span_per_node_visit(
    exporter: InMemorySpanExporter, context: ScoutContext
) -> None:
    runs = [ask(context, thread_id="run-1:q1"), ask(context, thread_id="run-1:q2")]

    flush_traces()
    spans = exporter.get_finished_spans()
    trace_ids = [run.trace_id for run in runs]
    assert None not in trace_ids and len(set(trace_ids)) == 2
    for run in runs:
        in_trace = [
            span
            for span in spans
            if format(span.context.trace_id, "032x") == run.trace_id
        ]
        names = Counter(span.name for span in in_trace)
        assert names.pop(RUN_SPAN_NAME) == 1
        assert names == Counter(run.node_visits)
    assert len(spans) == sum(len(run.node_visits) + 1 for run in runs)


# The chat backend


def test_the_chat_backend_runs_the_whole_graph_to_a_cited_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeOpenAI(scout_task_responder) as fake:
        monkeypatch.setenv("SCOUT_BACKEND", "chat")
        monkeypatch.setenv("SCOUT_BASE_URL", fake.base_url)
        monkeypatch.setenv("SCOUT_API_KEY", "sk-test-key")
        monkeypatch.setenv("SCOUT_RATE_LIMIT_RPM", "60000")
        get_settings.cache_clear()
        context = make_context(get_settings(), auto_approve=True)

        run = ask(context)

        prompts = [str(body["messages"][-1]["content"]) for body in fake.requests]
    assert context.model.name == get_settings().model
    assert set(run.node_visits) == set(NODE_NAMES)
    tasks = {prompt.split("\n", 1)[0][:24] for prompt in prompts}
    assert len(tasks) == 6, tasks
    cited = {int(number) for number in _CITATION.findall(run.report.split("## S")[0])}
    listed = listed_urls(run.report)
    assert cited and cited <= set(listed)
    assert set(listed.values()) == {source["url"] for source in run.sources}
    models = {row.model for row in run.usage}
    assert {model for model in models if not model.startswith("source:")} == {
        get_settings().model
    }

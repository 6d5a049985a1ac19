"""Tracing and metering of Scout's nodes, checked on the OpenTelemetry spans that
the Langfuse SDK produces, captured by an in-memory exporter. Nothing is sent
anywhere: the Langfuse host is 127.0.0.1:9 (discard) or a local socket that
never answers."""

from __future__ import annotations

import inspect
import json
import logging
import operator
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from scout import observability
from scout.config import PROMPT_VERSION
from scout.gitinfo import git_revision
from scout.observability import (
    RUN_SPAN_NAME,
    UsageMeter,
    configure_tracing,
    flush_traces,
    instrument_graph,
    metering,
    record_scores,
    record_usage,
    reset_tracing,
    trace_node,
)

SECRET = "sk-lf-test-secret-0123"
NODES = ("first", "left", "right")
METADATA = {"model": "test/model-1", "prompt_version": "v9", "git_sha": "abc123"}
REPO = Path(__file__).resolve().parents[2]


class TinyState(TypedDict, total=False):
    question: str
    node_visits: Annotated[list[str], operator.add]
    threads: Annotated[list[int], operator.add]
    answer: str


@dataclass(frozen=True)
class TinyContext:
    model: str = "offline/extractive-1"


@trace_node("first")
def first(state: TinyState, runtime: Runtime[TinyContext]) -> dict[str, Any]:
    record_usage(
        model=runtime.context.model, input_tokens=10, output_tokens=2, seconds=0.1
    )
    return {"threads": [threading.get_ident()]}


@trace_node("left")
def left(state: TinyState) -> dict[str, Any]:
    record_usage(
        model="offline/extractive-1", input_tokens=5, output_tokens=1, seconds=0.1
    )
    return {"threads": [threading.get_ident()]}


@trace_node("right")
def right(state: TinyState) -> dict[str, Any]:
    if state["question"] == "boom":
        raise RuntimeError("right node broke")
    if state["question"] == "pause":
        return {"answer": str(interrupt("approve?"))}
    return {"threads": [threading.get_ident()]}


def tiny_graph(checkpointer: InMemorySaver | None = None) -> Any:
    """first, then left and right in the same step (LangGraph runs those two in
    its thread pool), then the end."""
    builder = StateGraph(TinyState, context_schema=TinyContext)
    builder.add_node("first", first)
    builder.add_node("left", left)
    builder.add_node("right", right)
    builder.add_edge(START, "first")
    builder.add_edge("first", "left")
    builder.add_edge("first", "right")
    builder.add_edge("left", END)
    builder.add_edge("right", END)
    return builder.compile(checkpointer=checkpointer)


def run(
    question: str, thread_id: str, graph: Any = None, **metadata: str
) -> dict[str, Any]:
    traced = instrument_graph(
        graph if graph is not None else tiny_graph(), metadata=metadata or METADATA
    )
    config = {"configurable": {"thread_id": thread_id}}
    return traced.invoke({"question": question}, config, context=TinyContext())


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-test")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", SECRET)
    monkeypatch.setenv("LANGFUSE_BASE_URL", "http://127.0.0.1:9")
    exporter = InMemorySpanExporter()
    configure_tracing(span_exporter=exporter)
    yield exporter
    reset_tracing(timeout_s=1.0)


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    flush_traces()
    return list(exporter.get_finished_spans())


def trace_hex(span: ReadableSpan) -> str:
    return format(span.context.trace_id, "032x")


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    names = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        names.append(by_id[parent.span_id].name)
        parent = by_id[parent.span_id].parent
    return names


def test_each_run_is_one_trace_with_a_span_per_node_under_the_run_span(
    exporter: InMemorySpanExporter,
) -> None:
    outcomes = [run("what is a list?", "t-1"), run("what is a dict?", "t-2")]

    spans = finished(exporter)
    trace_ids = {outcome["trace_id"] for outcome in outcomes}
    assert len(trace_ids) == 2
    assert {trace_hex(span) for span in spans} == trace_ids
    by_id = {span.context.span_id: span for span in spans}
    for trace_id in trace_ids:
        in_trace = [span for span in spans if trace_hex(span) == trace_id]
        assert sorted(span.name for span in in_trace) == sorted([RUN_SPAN_NAME, *NODES])
        for span in in_trace:
            if span.name != RUN_SPAN_NAME:
                assert ancestors(span, by_id) == [RUN_SPAN_NAME], span.name
    # The nesting held across threads: left and right ran in LangGraph's pool.
    caller = threading.get_ident()
    assert any(ident != caller for ident in outcomes[0]["threads"])


def test_trace_carries_session_model_prompt_version_and_git_sha(
    exporter: InMemorySpanExporter,
) -> None:
    run("what is a list?", "run-7:q1", sources="local")

    spans = finished(exporter)
    root = next(span for span in spans if span.name == RUN_SPAN_NAME)
    attributes = dict(root.attributes or {})
    assert attributes["session.id"] == "run-7:q1"
    assert attributes["langfuse.trace.name"] == RUN_SPAN_NAME
    metadata = {
        key.removeprefix("langfuse.trace.metadata."): json.loads(str(value))
        for key, value in attributes.items()
        if key.startswith("langfuse.trace.metadata.")
    }
    assert metadata["sources"] == "local"
    assert metadata["prompt_version"] == PROMPT_VERSION
    assert metadata["model"]
    sha, dirty = git_revision()
    assert metadata["git_sha"] == (f"{sha}-dirty" if dirty else sha)
    # Every node span of the run is in the same session too.
    assert {(span.attributes or {}).get("session.id") for span in spans} == {"run-7:q1"}


def test_given_metadata_overrides_the_defaults(
    exporter: InMemorySpanExporter,
) -> None:
    run("what is a list?", "t-1", **METADATA)

    root = next(span for span in finished(exporter) if span.name == RUN_SPAN_NAME)
    attributes = root.attributes or {}
    assert attributes["langfuse.trace.metadata.model"] == json.dumps("test/model-1")
    assert attributes["langfuse.trace.metadata.git_sha"] == json.dumps("abc123")
    assert "prompt:v9" in tuple(attributes["langfuse.trace.tags"])  # type: ignore[arg-type]


def test_spans_capture_no_node_input_or_output(
    exporter: InMemorySpanExporter,
) -> None:
    run("a question that must not be captured", "t-1")

    for span in finished(exporter):
        for key, value in (span.attributes or {}).items():
            assert "input" not in key and "output" not in key, (span.name, key)
            assert "must not be captured" not in str(value)


def test_model_calls_are_attributed_to_the_node_that_made_them(
    exporter: InMemorySpanExporter,
) -> None:
    meter = UsageMeter()
    with metering(meter):
        run("what is a list?", "t-1")

    assert sorted((row.node, row.input_tokens) for row in meter.rows) == [
        ("first", 10),
        ("left", 5),
    ]


def test_usage_is_attributed_without_tracing_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LANGFUSE_PUBLIC_KEY", raising=False)
    meter = UsageMeter()
    with metering(meter):
        state = run("what is a list?", "t-1")

    assert state["trace_id"] is None
    assert sorted(row.node for row in meter.rows) == ["first", "left"]


def test_node_visits_are_added_and_the_signature_is_kept() -> None:
    state = run("what is a list?", "t-1")

    assert sorted(state["node_visits"]) == sorted(NODES)
    assert list(inspect.signature(first).parameters) == ["state", "runtime"]
    assert left({"question": "q"})["node_visits"] == ["left"]


def test_an_exception_in_a_node_propagates_and_fails_its_span(
    exporter: InMemorySpanExporter,
) -> None:
    with pytest.raises(RuntimeError, match="right node broke"):
        run("boom", "t-1")

    spans = {span.name: span for span in finished(exporter)}
    failed = spans["right"]
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["langfuse.observation.level"] == "ERROR"
    assert spans[RUN_SPAN_NAME].status.status_code is StatusCode.ERROR
    assert spans["left"].status.status_code is not StatusCode.ERROR


def test_an_interrupt_is_not_an_error_and_the_resume_continues_the_trace(
    exporter: InMemorySpanExporter,
) -> None:
    graph = tiny_graph(InMemorySaver())
    paused = run("pause", "t-9", graph=graph)
    assert paused["__interrupt__"]

    # A new wrapper, as run_question builds one per call, for the same thread.
    config = {"configurable": {"thread_id": "t-9"}}
    resumed = instrument_graph(graph, metadata=METADATA).invoke(
        Command(resume="yes"), config, context=TinyContext()
    )

    assert resumed["answer"] == "yes"
    assert resumed["trace_id"] == paused["trace_id"]
    spans = finished(exporter)
    assert {trace_hex(span) for span in spans} == {paused["trace_id"]}
    for span in spans:
        assert span.status.status_code is not StatusCode.ERROR, span.name
        assert (span.attributes or {}).get("langfuse.observation.level") != "ERROR"
    runs = [span for span in spans if span.name == RUN_SPAN_NAME]
    assert len(runs) == 2
    first_run = min(runs, key=lambda span: span.start_time or 0)
    second_run = max(runs, key=lambda span: span.start_time or 0)
    assert second_run.parent is not None
    assert second_run.parent.span_id == first_run.context.span_id


def test_without_keys_langfuse_is_never_imported(tmp_path: Path) -> None:
    script = tmp_path / "no_keys.py"
    script.write_text(
        "import sys\n"
        "from tests.scout.test_observability import run\n"
        "from scout.observability import flush_traces, record_scores\n"
        "state = run('what is a list?', 't-1')\n"
        "record_scores('0' * 32, [('grounding', 4.0, None)], judge_version='j1')\n"
        "flush_traces()\n"
        "assert state['trace_id'] is None, state\n"
        "assert sorted(state['node_visits']) == ['first', 'left', 'right']\n"
        "print('langfuse' in sys.modules)\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANGFUSE_")}
    env["PYTHONPATH"] = str(REPO)

    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_scores_and_flush_never_raise_with_an_unreachable_host(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    state = run("what is a list?", "t-1")

    record_scores(
        state["trace_id"],
        [("grounding", 4.0, "cited"), ("coverage", 3.0, None)],
        judge_version="judge-v1",
    )
    record_scores(
        state["trace_id"],
        [("grounding", "not a number", None)],  # type: ignore[list-item]
        judge_version="judge-v1",
    )
    flush_traces(timeout_s=1.0)

    assert "could not record 1 scores" in caplog.text
    assert SECRET not in caplog.text


@pytest.fixture
def silent_host() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_a_silent_host_neither_fails_the_run_nor_holds_the_flush(
    monkeypatch: pytest.MonkeyPatch,
    silent_host: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-test")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", SECRET)
    monkeypatch.setenv("LANGFUSE_BASE_URL", silent_host)
    configure_tracing()  # the real OTLP exporter, aimed at the silent host
    try:
        state = run("what is a list?", "t-1")
        record_scores(state["trace_id"], [("grounding", 4.0, None)], judge_version="j")
        with caplog.at_level(logging.WARNING, logger=observability.__name__):
            flush_traces(timeout_s=0.2)
    finally:
        reset_tracing(timeout_s=0.2)

    assert state["trace_id"] is not None
    assert sorted(state["node_visits"]) == sorted(NODES)
    assert "flush did not finish within 0.2 s" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LANGFUSE_TRACING_ENABLED", "false"), ("LANGFUSE_SAMPLE_RATE", "0")],
)
def test_a_run_left_out_of_tracing_reports_no_trace_id(
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value)

    state = run("what is a list?", "t-1")

    assert state["trace_id"] is None
    assert sorted(state["node_visits"]) == sorted(NODES)
    assert finished(exporter) == []

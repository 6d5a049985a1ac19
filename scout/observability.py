"""Metering and tracing for Scout's nodes.

Metering: every model call, from either backend, ends in :func:`record_usage`,
which adds one row to the meter that is active for the current run, attributed to
the node that is running. The node comes from a context variable that
:func:`trace_node` sets, so the attribution survives thread hops that copy the
context (LangGraph runs parallel sync nodes in a thread pool, submitting each
task with ``contextvars.copy_context()``).

Tracing: with ``LANGFUSE_PUBLIC_KEY`` and ``LANGFUSE_SECRET_KEY`` set, each run
through :func:`instrument_graph` is one Langfuse trace (a root span
``scout-run``, session = the LangGraph ``thread_id``) and each node is a child
span. The SDK is OpenTelemetry based and keeps the current span in the same kind
of context variable, so node spans opened in LangGraph's worker threads nest under
the run span. Node inputs and outputs are never captured: pages are large and may
hold personal data. Without the keys every hook is a no-op and ``langfuse`` is
never imported. Spans are exported in the background in batches with a short
timeout, and :func:`flush_traces` waits a bounded time, so an unreachable Langfuse
neither fails nor noticeably slows a run.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from langgraph.errors import GraphBubbleUp

from scout.config import PROMPT_VERSION, get_settings
from scout.errors import ConfigError, ScoutError

if TYPE_CHECKING:
    from langfuse import Langfuse
    from langfuse._client.span import LangfuseObservationWrapper
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

logger = logging.getLogger(__name__)

RUN_SPAN_NAME = "scout-run"
# Seconds per export request to Langfuse, unless LANGFUSE_TIMEOUT says otherwise.
EXPORT_TIMEOUT_S = 3
# How long the process may wait at exit for spans and scores still queued.
EXIT_FLUSH_TIMEOUT_S = 2.0
# Runs paused at an interrupt whose trace a resume continues; the oldest are
# forgotten beyond this many (a resume after that starts a new trace).
MAX_PAUSED_RUNS = 1000

_current_node: ContextVar[str] = ContextVar("scout_current_node", default="unknown")
_active_meter: ContextVar[UsageMeter | None] = ContextVar(
    "scout_active_meter", default=None
)
# True inside InstrumentedGraph.invoke when tracing is on: node spans are opened
# only as children of a run span, never as stray one-span traces.
_in_traced_run: ContextVar[bool] = ContextVar("scout_in_traced_run", default=False)


@dataclass(frozen=True)
class UsageRow:
    """One model call. Token counts are ``None`` when the server did not say."""

    node: str
    model: str
    input_tokens: int | None
    output_tokens: int | None
    seconds: float
    cost: float | None


@dataclass
class UsageMeter:
    """Collects the usage rows of one run; optionally appends them to a JSONL log."""

    log_path: Path | None = None
    rows: list[UsageRow] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, row: UsageRow) -> None:
        with self._lock:
            self.rows.append(row)
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as log:
                    log.write(json.dumps(asdict(row)) + "\n")

    def start_log(self) -> None:
        """Truncate the log so that it holds this run only; a log that cannot
        be written is a setting to fix before the run starts."""
        if self.log_path is None:
            return
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text("", encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                f"cannot write the usage log {self.log_path} ({error.strerror}): "
                "set SCOUT_USAGE_LOG to a writable file"
            ) from None


def estimate_cost(
    model: str, input_tokens: int | None, output_tokens: int | None
) -> float | None:
    """Illustrative cost in dollars; ``None`` when the price or a count is unknown."""
    price = get_settings().price_of(model)
    if price is None or input_tokens is None or output_tokens is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


def record_usage(
    *,
    model: str,
    input_tokens: int | None,
    output_tokens: int | None,
    seconds: float,
) -> UsageRow:
    """Record one model call against the running node and the active meter."""
    row = UsageRow(
        node=_current_node.get(),
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        seconds=round(seconds, 4),
        cost=estimate_cost(model, input_tokens, output_tokens),
    )
    meter = _active_meter.get()
    if meter is not None:
        meter.add(row)
    return row


@contextmanager
def metering(meter: UsageMeter) -> Iterator[UsageMeter]:
    """Make ``meter`` the one that model calls in this context record into."""
    token = _active_meter.set(meter)
    try:
        yield meter
    finally:
        _active_meter.reset(token)


@contextmanager
def in_node(name: str) -> Iterator[None]:
    """Attribute the model calls made inside this block to node ``name``."""
    token = _current_node.set(name)
    try:
        yield
    finally:
        _current_node.reset(token)


def langfuse_enabled() -> bool:
    """True when both Langfuse keys are set (and ``LANGFUSE_TRACING_ENABLED`` is
    not ``false``); otherwise nothing imports langfuse."""
    if os.environ.get("LANGFUSE_TRACING_ENABLED", "").strip().lower() == "false":
        return False
    return bool(os.environ.get("LANGFUSE_PUBLIC_KEY")) and bool(
        os.environ.get("LANGFUSE_SECRET_KEY")
    )


# --- The Langfuse client: one per process, created on first use -----------------


@dataclass
class _Tracing:
    client: Langfuse | None = None
    provider: TracerProvider | None = None  # ours, not the global one
    public_key: str | None = None
    broken: bool = False  # creating the client failed: tracing stays off
    span_exporter: SpanExporter | None = None
    flushing: threading.Thread | None = None


_tracing = _Tracing()
_tracing_lock = threading.Lock()


def configure_tracing(*, span_exporter: SpanExporter | None = None) -> None:
    """Send spans to ``span_exporter`` (for example an OpenTelemetry
    ``InMemorySpanExporter`` in tests) instead of Langfuse's OTLP endpoint.

    Drops the current client, so the exporter applies from the next traced run.
    Scores still go to the Langfuse API at ``LANGFUSE_BASE_URL``.
    """
    reset_tracing()
    with _tracing_lock:
        _tracing.span_exporter = span_exporter


def reset_tracing(timeout_s: float = EXIT_FLUSH_TIMEOUT_S) -> None:
    """Shut the client down (bounded by ``timeout_s``) and forget it, its exporter
    and the paused runs, so the next traced run starts from the environment."""
    with _tracing_lock:
        client, provider = _tracing.client, _tracing.provider
        public_key = _tracing.public_key
        _tracing.client, _tracing.provider, _tracing.public_key = None, None, None
        _tracing.broken, _tracing.span_exporter = False, None
    InstrumentedGraph.forget_paused_runs()
    if client is None:
        return

    def shut_down() -> None:
        client.shutdown()
        if provider is not None:
            provider.shutdown()

    _run_bounded(shut_down, timeout_s, "shutdown")
    _forget_langfuse_singleton(public_key)


def _forget_langfuse_singleton(public_key: str | None) -> None:
    # The SDK keeps one resource manager per public key for the whole process;
    # without removing it, a new client would reuse the old exporter. This touches
    # a private registry of the SDK and is used by reset_tracing only.
    from langfuse._client.resource_manager import LangfuseResourceManager

    with LangfuseResourceManager._lock:
        LangfuseResourceManager._instances.pop(public_key or "", None)


def _client() -> Langfuse | None:
    """The process's Langfuse client, or ``None`` when tracing is off."""
    if not langfuse_enabled():
        return None
    client = _tracing.client
    if client is not None or _tracing.broken:
        return client

    with _tracing_lock:
        if _tracing.client is None and not _tracing.broken:
            _tracing.client = _create_client()
            _tracing.broken = _tracing.client is None
        return _tracing.client


def _create_client() -> Langfuse | None:
    try:
        from langfuse import Langfuse
        from opentelemetry.sdk.trace import TracerProvider

        # Our own provider: the global one stays free for the application, and no
        # OpenTelemetry exit hook blocks on an unreachable host.
        provider = TracerProvider(sampler=_sampler(), shutdown_on_exit=False)
        timeout = None if os.environ.get("LANGFUSE_TIMEOUT") else EXPORT_TIMEOUT_S
        client = Langfuse(
            tracer_provider=provider,
            span_exporter=_tracing.span_exporter,
            timeout=timeout,
        )
    except Exception as error:  # tracing must never fail a run
        logger.warning(
            "Langfuse tracing is off for this process: the client could not be "
            "created (%s)",
            _redact(f"{type(error).__name__}: {error}"),
        )
        return None

    # The SDK flushes at exit without a time limit; replace that with ours.
    if client._resources is not None:
        atexit.unregister(client._resources.shutdown)
    _tracing.provider = provider
    _tracing.public_key = os.environ.get("LANGFUSE_PUBLIC_KEY")
    logger.info("Langfuse tracing is on")
    return client


def _sampler() -> Sampler | None:
    """Honour LANGFUSE_SAMPLE_RATE, which the SDK applies only to a provider of
    its own making."""
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    rate = float(os.environ.get("LANGFUSE_SAMPLE_RATE") or 1.0)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"LANGFUSE_SAMPLE_RATE={rate} is not between 0 and 1")
    return TraceIdRatioBased(rate) if rate < 1.0 else None


def flush_traces(timeout_s: float = 5.0) -> None:
    """Send queued spans and scores, waiting at most about ``timeout_s`` seconds.

    Does nothing when no client was created. Never raises: an unreachable
    Langfuse costs at most the timeout, and what was not sent is dropped.
    """
    client = _tracing.client
    if client is None:
        return
    _run_bounded(client.flush, timeout_s, "flush")


@atexit.register
def _flush_at_exit() -> None:
    previous = _tracing.flushing
    if previous is not None and previous.is_alive():
        return  # a flush that already timed out will not do better now
    flush_traces(EXIT_FLUSH_TIMEOUT_S)


def _run_bounded(action: Callable[[], None], timeout_s: float, what: str) -> None:
    """Run ``action`` in a daemon thread and wait for it at most ``timeout_s``."""

    def guarded() -> None:
        try:
            action()
        except Exception as error:
            logger.warning(
                "Langfuse %s failed: %s",
                what,
                _redact(f"{type(error).__name__}: {error}"),
            )

    worker = threading.Thread(target=guarded, name=f"scout-langfuse-{what}")
    worker.daemon = True
    worker.start()
    _tracing.flushing = worker
    worker.join(timeout_s)
    if worker.is_alive():
        logger.warning(
            "Langfuse %s did not finish within %.1f s (is LANGFUSE_BASE_URL "
            "reachable?); traces not yet sent may be lost",
            what,
            timeout_s,
        )


def _redact(text: str) -> str:
    """``text`` with the Langfuse keys blanked out, for log lines."""
    for name in ("LANGFUSE_SECRET_KEY", "LANGFUSE_PUBLIC_KEY"):
        secret = os.environ.get(name)
        if secret:
            text = text.replace(secret, "***")
    return text[:300]


# --- Node spans -------------------------------------------------------------------

NodeFn = TypeVar("NodeFn", bound=Callable[..., Any])


def trace_node(name: str) -> Callable[[NodeFn], NodeFn]:
    """Decorate a LangGraph node ``fn(state[, runtime]) -> dict``.

    The wrapper keeps ``fn``'s signature (LangGraph injects ``runtime`` by
    parameter name), attributes model calls to ``name``, opens a span ``name``
    inside a traced run, and adds ``{"node_visits": [name]}`` to the update. A
    node that returns something other than a dict or ``None`` (a ``Command``) is
    passed through without the visit. Sync nodes only.
    """

    def decorate(fn: NodeFn) -> NodeFn:
        @functools.wraps(fn)
        def node(*args: Any, **kwargs: Any) -> Any:
            with in_node(name), _node_span(name):
                update = fn(*args, **kwargs)
            return _with_visit(update, name)

        return node  # type: ignore[return-value]

    return decorate


def _with_visit(update: Any, name: str) -> Any:
    if update is None:
        return {"node_visits": [name]}
    if not isinstance(update, dict):
        return update
    return {**update, "node_visits": [*update.get("node_visits", []), name]}


@contextmanager
def _node_span(name: str) -> Iterator[None]:
    """A child span of the current run span; a no-op outside a traced run."""
    client = _client() if _in_traced_run.get() else None
    if client is None:
        yield
        return

    paused: GraphBubbleUp | None = None
    with client.start_as_current_observation(name=name, as_type="span") as span:
        try:
            yield
        except GraphBubbleUp as signal:
            # interrupt() raises to pause the graph: the node did not fail.
            span.update(status_message="paused: waiting for a human decision")
            paused = signal
        except Exception as error:
            _mark_failed(span, error)
            raise
    if paused is not None:
        raise paused


def _mark_failed(span: LangfuseObservationWrapper, error: Exception) -> None:
    message = _redact(f"{type(error).__name__}: {error}")
    span.update(level="ERROR", status_message=message)


# --- Run traces -------------------------------------------------------------------


@dataclass(frozen=True)
class _RunSpan:
    trace_id: str
    span_id: str
    recorded: bool


class Invocable(Protocol):
    """What :func:`instrument_graph` needs of a compiled graph."""

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any: ...


GraphT = TypeVar("GraphT", bound=Invocable)


class InstrumentedGraph(Generic[GraphT]):
    """A compiled graph whose every ``invoke`` is one Langfuse trace.

    A run that pauses at an interrupt is remembered by ``thread_id``; the resume
    (the next ``invoke`` on that thread) continues the same trace, its run span a
    child of the paused one. The record is process-wide, because callers build a
    new ``InstrumentedGraph`` for each invoke, and holds at most
    ``MAX_PAUSED_RUNS`` paused runs; a resume in another process starts a new
    trace in the same session.
    """

    _paused: ClassVar[OrderedDict[str, tuple[str, str]]] = OrderedDict()
    _paused_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, graph: GraphT, metadata: Mapping[str, str]) -> None:
        self.graph = graph
        self.metadata = dict(metadata)

    def invoke(
        self, input: Any, config: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """``graph.invoke(input, config, **kwargs)``; the final state gains
        ``trace_id`` (``None`` when tracing is off)."""
        client = _client()
        if client is None:
            return _with_trace_id(self.graph.invoke(input, config, **kwargs), None)

        thread_id = _thread_id(config)
        with self._run_span(client, thread_id) as span:
            result = self.graph.invoke(input, config, **kwargs)

        # A run left out by sampling has an id but no trace: report none.
        trace_id = span.trace_id if span.recorded else None
        state = _with_trace_id(result, trace_id)
        if trace_id is not None:
            self._remember_pause(thread_id, state, (trace_id, span.span_id))
        return state

    @contextmanager
    def _run_span(self, client: Langfuse, thread_id: str | None) -> Iterator[_RunSpan]:
        from langfuse import propagate_attributes
        from langfuse.types import TraceContext
        from opentelemetry import trace

        metadata = _run_metadata(self.metadata)
        stopped: GraphBubbleUp | None = None
        paused = self._paused_run(thread_id)
        trace_context = (
            TraceContext(trace_id=paused[0], parent_span_id=paused[1])
            if paused
            else None
        )
        with (
            client.start_as_current_observation(
                name=RUN_SPAN_NAME, as_type="agent", trace_context=trace_context
            ) as span,
            propagate_attributes(
                session_id=thread_id,
                trace_name=RUN_SPAN_NAME,
                metadata=metadata,
                version=metadata.get("prompt_version"),
                tags=_tags(metadata),
            ),
        ):
            token = _in_traced_run.set(True)
            recorded = trace.get_current_span().is_recording()
            try:
                yield _RunSpan(span.trace_id, span.id, recorded)
            except GraphBubbleUp as signal:  # a drain or pause, not a failure
                stopped = signal
            except Exception as error:
                _mark_failed(span, error)
                raise
            finally:
                _in_traced_run.reset(token)
        if stopped is not None:
            raise stopped

    @classmethod
    def _paused_run(cls, thread_id: str | None) -> tuple[str, str] | None:
        if thread_id is None:
            return None
        with cls._paused_lock:
            return cls._paused.get(thread_id)

    @classmethod
    def _remember_pause(
        cls, thread_id: str | None, state: Mapping[str, Any], run: tuple[str, str]
    ) -> None:
        if thread_id is None:
            return
        with cls._paused_lock:
            if not state.get("__interrupt__"):
                cls._paused.pop(thread_id, None)
                return
            # A run paused again keeps the trace it started in.
            cls._paused.setdefault(thread_id, run)
            cls._paused.move_to_end(thread_id)
            while len(cls._paused) > MAX_PAUSED_RUNS:
                forgotten, _ = cls._paused.popitem(last=False)
                logger.debug("forgot the trace of paused run %s", forgotten)

    @classmethod
    def forget_paused_runs(cls) -> None:
        with cls._paused_lock:
            cls._paused.clear()


def instrument_graph(
    graph: GraphT, *, metadata: Mapping[str, str]
) -> InstrumentedGraph[GraphT]:
    """Wrap ``graph`` so that each ``invoke`` is one trace stamped with
    ``metadata`` (model, prompt_version and git_sha are filled in if missing)."""
    return InstrumentedGraph(graph, metadata)


def _thread_id(config: Mapping[str, Any] | None) -> str | None:
    configurable = (config or {}).get("configurable") or {}
    thread_id = configurable.get("thread_id")
    return None if thread_id is None else str(thread_id)


def _with_trace_id(result: Any, trace_id: str | None) -> dict[str, Any]:
    state = dict(result) if isinstance(result, Mapping) else {"output": result}
    state["trace_id"] = trace_id
    return state


def _run_metadata(given: Mapping[str, str]) -> dict[str, str]:
    """The trace metadata: the versions every run carries, then ``given``."""
    metadata = {"prompt_version": PROMPT_VERSION}
    if "git_sha" not in given:
        from scout.gitinfo import git_revision

        sha, dirty = git_revision()
        metadata["git_sha"] = f"{sha}-dirty" if dirty else sha
    if "model" not in given:
        try:
            metadata["model"] = get_settings().model_name
        except ScoutError:
            metadata["model"] = "unknown"
    metadata.update({key: str(value) for key, value in given.items()})
    return metadata


def _tags(metadata: Mapping[str, str]) -> list[str]:
    tags = ["scout"]
    for key, prefix in (("prompt_version", "prompt"), ("model", "model")):
        if metadata.get(key):
            tags.append(f"{prefix}:{metadata[key]}")
    return tags


# --- Scores -----------------------------------------------------------------------


def record_scores(
    trace_id: str,
    scores: list[tuple[str, float, str | None]],
    *,
    judge_version: str,
) -> None:
    """Write each ``(name, value, comment)`` onto trace ``trace_id``, tagged with
    the judge version. A no-op without keys; never raises."""
    if not trace_id or not scores:
        return
    client = _client()
    if client is None:
        return

    try:
        for name, value, comment in scores:
            client.create_score(
                trace_id=trace_id,
                name=name,
                value=float(value),
                data_type="NUMERIC",
                comment=comment,
                metadata={"judge_version": judge_version},
            )
    except Exception as error:
        logger.warning(
            "could not record %d scores on trace %s: %s",
            len(scores),
            trace_id,
            _redact(f"{type(error).__name__}: {error}"),
        )

"""A local OpenAI-compatible chat server for tests and benchmarks.

``FakeOpenAI`` serves ``POST /v1/chat/completions`` on 127.0.0.1 (a free port) in
a background thread, so the real ``openai`` SDK talks real HTTP to it. Answers
come from a queue of scripted responses (``script``), and when the queue is
empty from a responder callable (with an optional fixed ``latency``), so a
benchmark can answer every call: ``scout_task_responder`` gives a valid answer
to each of Scout's task prompts, and a dict answer is streamed automatically
when the request asks for a stream. Every
request is recorded with the time it arrived (``time.monotonic``), so tests can
assert on spacing as the server saw it rather than on the test's wall clock.

Scripted delays wait on an event that ``stop`` sets, so leaving the context
never hangs on a stalled response.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "fake/model-1"
DONE = "[DONE]"


@dataclass
class FakeResponse:
    """One scripted answer.

    ``body`` is sent as JSON (a dict or list) or as is (str or bytes).
    ``stream_chunks`` makes it an SSE stream: each dict becomes one ``data:``
    line, a str is sent verbatim as the data, and ``data: [DONE]`` ends it.
    ``delay`` is waited before the status line, ``chunk_delay`` between chunks.
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    stream_chunks: list[Any] | None = None
    chunk_delay: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float


Responder = Callable[[dict[str, Any]], FakeResponse | dict[str, Any]]


def completion(
    content: str | None,
    *,
    model: str = DEFAULT_MODEL,
    prompt_tokens: int | None = 11,
    completion_tokens: int | None = 7,
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """A chat.completion body; usage is null when either token count is None."""
    usage = None
    if prompt_tokens is not None and completion_tokens is not None:
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
    }


def chunk(
    content: str | None = None,
    *,
    model: str = DEFAULT_MODEL,
    choices: Any = "default",
    usage: Any = None,
) -> dict[str, Any]:
    """A chat.completion.chunk; ``choices`` may be forced to ``[]`` or ``None``."""
    if choices == "default":
        delta = {"content": content} if content is not None else {}
        choices = [{"index": 0, "delta": delta, "finish_reason": None}]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def as_stream(body: dict[str, Any], include_usage: bool) -> list[Any]:
    """The chunks a server would stream for the completion ``body``."""
    model = body.get("model", DEFAULT_MODEL)
    content = body["choices"][0]["message"]["content"] if body.get("choices") else ""
    chunks: list[Any] = [chunk(content or "", model=model)]
    if include_usage:
        chunks.append(chunk(model=model, choices=[], usage=body.get("usage")))
    return chunks


def echo_responder(request: dict[str, Any]) -> FakeResponse | dict[str, Any]:
    """The default: a short fixed answer naming the requested model."""
    return completion("ok", model=str(request.get("model") or DEFAULT_MODEL))


def _count(prompt: str, label: str) -> int:
    found = re.search(rf"{label}: (\d+)", prompt)
    return int(found.group(1)) if found else 0


def _fenced(prompt: str) -> str:
    return prompt.split("<<<DOCUMENT", 1)[-1].split("DOCUMENT>>>", 1)[0].strip()


def _scout_answer(prompt: str) -> Any:
    """A valid answer for the Scout task whose prompt this is."""
    question = re.search(r"Question: (.*)", prompt)
    asked = question.group(1).strip() if question else "question"
    if prompt.startswith("Plan the research"):
        return {"sub_questions": [asked], "queries": [asked]}
    if prompt.startswith("Review a research plan"):
        return {"approved": True, "feedback": ""}
    if prompt.startswith("You direct a research run"):
        for label, step in (
            ("search queries not run yet", "searcher"),
            ("search hits not read yet", "reader"),
            ("notes not checked yet", "fact_checker"),
        ):
            if _count(prompt, label):
                return {"next": step}
        return {"next": "writer"}
    if prompt.startswith("Take notes from one document"):
        sentences = re.split(r"(?<=[.!?])\s+", _fenced(prompt))
        return {"passages": [s for s in sentences if len(s) > 20][:2]}
    if prompt.startswith("Check research notes"):
        numbers = re.findall(
            r"^(\d+)\. \(D\d+\)", _fenced(prompt.split("Notes,")[-1]), re.M
        )
        return {"verdicts": [{"note": int(n), "supported": True} for n in numbers]}
    if prompt.startswith("Write a short research report"):
        return f"# {asked}\n\nThe notes answer it [1]."
    return "ok"


def scout_task_responder(request: dict[str, Any]) -> dict[str, Any]:
    """Answers every Scout task with a valid answer, as a working model would:
    for benchmarks and end-to-end runs of the chat backend."""
    prompt = str(request["messages"][-1]["content"])
    answer = _scout_answer(prompt)
    content = answer if isinstance(answer, str) else json.dumps(answer)
    return completion(content, model=str(request.get("model") or DEFAULT_MODEL))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake openai: " + format, *args)

    def do_POST(self) -> None:
        received_at = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        fake = self.server.fake
        fake._record(
            RecordedRequest(self.path, body, dict(self.headers.items()), received_at)
        )

        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(FakeResponse(404, {"error": {"message": "no such route"}}))
            return
        self._send(fake._next_response(body))

    def _send(self, response: FakeResponse) -> None:
        if response.delay and self.server.fake._stopping.wait(response.delay):
            self.close_connection = True
            return
        if response.stream_chunks is not None:
            self._send_stream(response)
            return

        payload = response.body
        if isinstance(payload, dict | list) or payload is None:
            data = json.dumps(payload).encode()
            content_type = "application/json"
        else:
            data = payload.encode() if isinstance(payload, str) else bytes(payload)
            content_type = "text/plain"
        self.send_response(response.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_stream(self, response: FakeResponse) -> None:
        # No Content-Length: the stream ends when the connection closes.
        self.close_connection = True
        self.send_response(response.status)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        for item in [*(response.stream_chunks or []), DONE]:
            data = item if isinstance(item, str) else json.dumps(item)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()
            if response.chunk_delay and self.server.fake._stopping.wait(
                response.chunk_delay
            ):
                return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeOpenAI


class FakeOpenAI:
    """A local OpenAI-compatible server; use as a context manager."""

    def __init__(
        self, responder: Responder = echo_responder, *, latency: float = 0.0
    ) -> None:
        """``latency`` delays each answer the responder gives as a dict."""
        self.responder = responder
        self.latency = latency
        self._queue: deque[FakeResponse] = deque()
        self._received: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not started: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(
        self,
        *,
        status: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        stream_chunks: list[Any] | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        """Queue one answer; queued answers are used before the responder."""
        response = FakeResponse(
            status, body, dict(headers or {}), delay, stream_chunks, chunk_delay
        )
        with self._lock:
            self._queue.append(response)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies received so far, in arrival order."""
        return [item.body for item in self.received]

    @property
    def received(self) -> list[RecordedRequest]:
        """The requests received so far, with arrival times."""
        with self._lock:
            return list(self._received)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._received.append(request)

    def _next_response(self, body: dict[str, Any]) -> FakeResponse:
        with self._lock:
            scripted = self._queue.popleft() if self._queue else None
        if scripted is not None:
            return scripted

        answer = self.responder(body)
        if isinstance(answer, FakeResponse):
            return answer
        if body.get("stream"):
            include_usage = bool(
                (body.get("stream_options") or {}).get("include_usage")
            )
            return FakeResponse(
                stream_chunks=as_stream(answer, include_usage), delay=self.latency
            )
        return FakeResponse(body=answer, delay=self.latency)

    def start(self) -> FakeOpenAI:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""The one client factory for OpenAI-compatible endpoints, and the two calls on it.

Retries belong to the ``openai`` SDK (3.x), which already does them well; as read
in ``openai/_base_client.py``:

- it retries 408, 409, 429 and every 5xx, connection errors and timeouts, up to
  ``max_retries`` times (``SCOUT_MAX_RETRIES``), with exponential backoff from
  0.5 s doubling to at most 8 s, minus up to 25 % jitter;
- it honours ``retry-after-ms`` and then ``Retry-After`` (seconds or an HTTP
  date) when the value is above 0 and at most 120 s, sleeping exactly that long.
  A ``Retry-After`` above 120 s is not capped: the SDK does not retry at all and
  the 429 surfaces at once (here as a :class:`ModelError`).
- ``x-should-retry: true|false`` from the server overrides the status rule.

On top of that this module adds what the SDK lacks: a client-side rate limit
that every thread in the process shares and that applies to every HTTP attempt,
retries included, because it sits in the HTTP transport under the SDK. The free
NVIDIA NIM tier allows about 40 requests a minute (``SCOUT_RATE_LIMIT_RPM``).

:func:`complete_json` and :func:`complete_text` never trust the server: JSON is
dug out of fences and prose and validated, one bad answer is re-asked once, and
every failure becomes one :class:`ModelError` line naming the endpoint and the
model, never the key. Each ``create()`` call records one usage row, a failed
one too (tokens unknown); its seconds include the SDK's retries and any wait for
the rate limiter, i.e. the time the calling node spent on it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httpx2
import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, ValidationError
from pyrate_limiter import Limiter, Rate, SingleBucketFactory, StateBucket, TokenBucket
from pyrate_limiter.extras.httpx2_limiter import RateLimiterTransport

from scout import observability
from scout.config import ScoutSettings
from scout.errors import ModelError
from scout.observability import langfuse_enabled, record_usage

if TYPE_CHECKING:
    from openai.types.chat import (
        ChatCompletionMessageParam as MessageParam,
    )

logger = logging.getLogger(__name__)

SchemaT = TypeVar("SchemaT", bound=BaseModel)
Messages = list[dict[str, Any]]

# With no key a keyless local server (vLLM, Ollama) still works; a hosted one
# answers 401, which becomes the "set SCOUT_API_KEY" error below.
PLACEHOLDER_KEY = "no-key-set"

_limiters: dict[str, tuple[float, Limiter]] = {}
_limiters_lock = threading.Lock()

_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_THINKING = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_USERINFO = re.compile(r"//[^/@]*@")
MAX_JSON_STARTS = 20


def public_url(url: str) -> str:
    """``url`` without user:password, trailing slash, query or fragment."""
    url = _USERINFO.sub("//", str(url))
    return url.split("?", 1)[0].split("#", 1)[0].rstrip("/")


def _new_limiter(rpm: float) -> Limiter:
    # Token bucket (GCRA) with a burst of one: requests are spaced evenly, so N
    # requests take at least (N - 1) / rate and the endpoint never sees a spike.
    spacing_ms = max(1, math.ceil(60_000 / rpm))
    bucket = StateBucket([Rate(1, spacing_ms, burst=1)], algorithm=TokenBucket())
    # The bucket keeps constant state, so no background leak thread is needed.
    return Limiter(SingleBucketFactory(bucket, schedule_leak=False), buffer_ms=5)


def get_rate_limiter(settings: ScoutSettings) -> Limiter:
    """The process-wide limiter for ``settings.base_url``.

    One per endpoint, shared by every client and thread: the endpoint's quota is
    shared too. The first rate configured for an endpoint wins; a later,
    different rate is logged and ignored.
    """
    key = public_url(settings.base_url)
    rpm = settings.rate_limit_rpm
    with _limiters_lock:
        known = _limiters.get(key)
        if known is None:
            known = (rpm, _new_limiter(rpm))
            _limiters[key] = known
            logger.debug("rate limit for %s: %s requests/minute", key, rpm)
        elif known[0] != rpm:
            logger.warning(
                "rate limit for %s stays at %s requests/minute (asked for %s)",
                key,
                known[0],
                rpm,
            )

    return known[1]


def environment_proxy(base_url: str) -> str | None:
    """The proxy that ``HTTP(S)_PROXY``/``ALL_PROXY`` name for ``base_url``,
    unless ``NO_PROXY`` exempts its host.

    httpx stops reading the proxy variables once a client has a transport of its
    own, so the rate-limited transport is given the endpoint's proxy explicitly.
    """
    url = httpx2.URL(base_url)
    if not url.host or urllib.request.proxy_bypass(url.host):
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy:
        return None

    return proxy if "://" in proxy else f"http://{proxy}"


def make_client(settings: ScoutSettings) -> openai.OpenAI:
    """An OpenAI-compatible client for the configured endpoint.

    ``langfuse.openai.OpenAI`` when Langfuse keys are set (imported only then),
    the plain SDK client otherwise; both share the endpoint's rate limiter.
    """
    transport = RateLimiterTransport(
        get_rate_limiter(settings),
        limits=openai.DEFAULT_CONNECTION_LIMITS,
        proxy=environment_proxy(settings.base_url),
    )
    http_client = openai.DefaultHttpx2Client(
        transport=transport, timeout=settings.timeout
    )
    key = settings.api_key.get_secret_value() if settings.api_key else PLACEHOLDER_KEY
    client_class: type[openai.OpenAI] = openai.OpenAI
    if langfuse_enabled():
        from langfuse.openai import OpenAI as LangfuseOpenAI

        client_class = LangfuseOpenAI

    return client_class(
        base_url=settings.base_url,
        api_key=key,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        http_client=http_client,
    )


# ---------------------------------------------------------------------------
# Errors


def _scrub(text: str, client: openai.OpenAI) -> str:
    """``text`` cut to one short line, with the API key removed if echoed."""
    line = " ".join(str(text).split())[:300]
    key = client.api_key
    if key and key != PLACEHOLDER_KEY:
        line = line.replace(key, "***")

    return line


def _server_detail(error: openai.APIStatusError, client: openai.OpenAI) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        body = message if message else body

    return _scrub(str(body) if body else error.message, client)


def not_a_completion(client: openai.OpenAI, model: str, answer: object) -> ModelError:
    """The endpoint answered 200 with something that is no chat completion (an
    HTML page from a proxy or a wrong base URL, say)."""
    url = public_url(str(client.base_url))
    kind = type(answer).__name__
    return ModelError(
        f"{url} answered model {model!r} with a {kind}, not a chat completion: "
        "check that SCOUT_BASE_URL is an OpenAI-compatible /v1 endpoint"
    )


def model_error(
    error: openai.OpenAIError, client: openai.OpenAI, model: str
) -> ModelError:
    """One line for a failed call, naming endpoint and model, never the key."""
    url = public_url(str(client.base_url))
    tries = f"after {client.max_retries} retries"

    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return ModelError(
            f"the endpoint rejected the API key ({error.status_code}) for {url}: "
            "set SCOUT_API_KEY or NVIDIA_API_KEY"
        )
    if isinstance(error, openai.NotFoundError):
        return ModelError(
            f"model {model!r} or its route was not found (404) at {url}: "
            "check SCOUT_MODEL and SCOUT_BASE_URL"
        )
    if isinstance(error, openai.APITimeoutError):
        return ModelError(
            f"model {model!r} at {url} did not answer within {client.timeout} s "
            f"({tries}): raise SCOUT_TIMEOUT or check the endpoint"
        )
    if isinstance(error, openai.APIConnectionError):
        return ModelError(
            f"could not connect to {url} for model {model!r} ({tries}): "
            "check SCOUT_BASE_URL and the network"
        )
    if isinstance(error, openai.RateLimitError):
        return ModelError(
            f"{url} kept rate-limiting model {model!r} (429, {tries}): "
            "lower SCOUT_RATE_LIMIT_RPM or wait"
        )
    if isinstance(error, openai.APIStatusError):
        return ModelError(
            f"{url} answered {error.status_code} for model {model!r}: "
            f"{_server_detail(error, client)}"
        )

    return ModelError(
        f"call to model {model!r} at {url} failed: {_scrub(str(error), client)}"
    )


# ---------------------------------------------------------------------------
# JSON out of a model's answer


def strip_thinking(text: str) -> str:
    """``text`` without ``<think>...</think>`` blocks that reasoning models emit."""
    return _THINKING.sub("", text).strip()


def extract_json(text: str) -> Any:
    """The first JSON object in ``text``, found inside fences and prose.

    Raises ``ValueError`` saying what was wrong when there is none.
    """
    text = strip_thinking(text)
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    starts = [at for at, char in enumerate(text) if char == "{"][:MAX_JSON_STARTS]
    if not starts:
        raise ValueError("the answer holds no JSON object")

    # Prose may hold a stray brace before the object: try each opening brace.
    problem = ""
    for start in starts:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except json.JSONDecodeError as error:
            problem = problem or f"the JSON is malformed ({error.msg} at {error.pos})"
            continue
        if isinstance(value, dict):
            return value
    raise ValueError(problem or "the answer holds no JSON object")


def _validation_problem(error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "the object"
        problems.append(f"{where}: {item['msg']}")

    return "; ".join(problems)


def parse_answer(text: str | None, schema: type[SchemaT]) -> SchemaT:
    """``text`` parsed and validated as ``schema``; ``ValueError`` if it is not."""
    if not text or not text.strip():
        raise ValueError("the answer was empty")
    value = extract_json(text)

    try:
        return schema.model_validate(value)
    except ValidationError as error:
        raise ValueError(
            f"the JSON does not fit: {_validation_problem(error)}"
        ) from None


# ---------------------------------------------------------------------------
# Calls


def _tokens(usage: Any) -> tuple[int | None, int | None]:
    if usage is None:
        return None, None

    return getattr(usage, "prompt_tokens", None), getattr(
        usage, "completion_tokens", None
    )


def _create(
    client: openai.OpenAI, model: str, messages: Messages, **options: Any
) -> ChatCompletion:
    """One non-streamed ``create()`` call, metered, with errors made readable."""
    started = time.perf_counter()
    try:
        response = client.chat.completions.create(
            model=model, messages=cast("list[MessageParam]", messages), **options
        )
    except openai.OpenAIError as error:
        record_usage(
            model=model,
            input_tokens=None,
            output_tokens=None,
            seconds=time.perf_counter() - started,
        )
        raise model_error(error, client, model) from None

    if not isinstance(response, ChatCompletion):
        record_usage(
            model=model,
            input_tokens=None,
            output_tokens=None,
            seconds=time.perf_counter() - started,
        )
        raise not_a_completion(client, model, response)

    input_tokens, output_tokens = _tokens(response.usage)
    record_usage(
        model=response.model or model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        seconds=time.perf_counter() - started,
    )
    return response


def _content(response: ChatCompletion) -> str | None:
    if not response.choices:
        return None

    return response.choices[0].message.content


def _node() -> str:
    # The node running this call, as the usage meter attributes it.
    return observability._current_node.get()


def complete_json(
    client: openai.OpenAI,
    *,
    model: str,
    messages: Messages,
    schema: type[SchemaT],
    json_mode: bool,
    max_tokens: int,
    temperature: float = 0.0,
) -> tuple[SchemaT, str]:
    """Ask for one JSON object fitting ``schema``; re-ask once if it does not.

    Returns the parsed object and the model name the server reported.
    """
    options: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if json_mode:
        options["response_format"] = {"type": "json_object"}
    conversation = list(messages)
    problem = ""

    for attempt in (1, 2):
        response = _create(client, model, conversation, **options)
        text = _content(response)
        try:
            return parse_answer(text, schema), response.model or model
        except ValueError as error:
            problem = str(error)
        logger.info(
            "model %s gave an unusable %s answer (attempt %d, node %s): %s",
            model,
            schema.__name__,
            attempt,
            _node(),
            problem,
        )

        # Re-ask: show the model its answer and what was wrong with it.
        conversation += [
            {"role": "assistant", "content": text or ""},
            {"role": "user", "content": _correction(problem)},
        ]

    raise ModelError(
        f"model {model!r} at {public_url(str(client.base_url))} gave no usable "
        f"{schema.__name__} JSON in node {_node()} after one re-ask: {problem}"
    )


def _correction(problem: str) -> str:
    return (
        f"That answer could not be used: {problem}. Reply again with only the "
        "JSON object in the shape asked for: no prose, no code fences."
    )


def complete_text(
    client: openai.OpenAI,
    *,
    model: str,
    messages: Messages,
    max_tokens: int,
    temperature: float = 0.0,
    stream: bool = False,
    stream_usage: bool = True,
) -> tuple[str, str]:
    """Ask for free text; returns it and the model name the server reported.

    Streamed when ``stream``; ``stream_usage`` says whether the endpoint
    supports ``stream_options.include_usage`` (not every one does).
    """
    options: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if not stream:
        response = _create(client, model, messages, **options)
        text = strip_thinking(_content(response) or "")
        reported = response.model or model
    else:
        text, reported = _stream(client, model, messages, stream_usage, **options)
        text = strip_thinking(text)

    if not text:
        raise ModelError(
            f"model {model!r} at {public_url(str(client.base_url))} returned an "
            f"empty answer in node {_node()}"
        )

    return text, reported


def _stream(
    client: openai.OpenAI,
    model: str,
    messages: Messages,
    stream_usage: bool,
    **options: Any,
) -> tuple[str, str]:
    """One streamed ``create()`` call, metered; survives the usage-only chunk,
    ``choices: null`` and ``usage: null``."""
    if stream_usage:
        options["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    parts: list[str] = []
    reported = ""
    usage: Any = None

    try:
        chunks = cast(
            "openai.Stream[ChatCompletionChunk]",
            client.chat.completions.create(
                model=model,
                messages=cast("list[MessageParam]", messages),
                stream=True,
                **options,
            ),
        )
        for chunk in chunks:
            if not isinstance(chunk, ChatCompletionChunk):
                raise not_a_completion(client, model, chunk)
            reported = chunk.model or reported
            usage = chunk.usage or usage
            for choice in chunk.choices or []:
                if choice.delta is not None and choice.delta.content:
                    parts.append(choice.delta.content)
    except openai.OpenAIError as error:
        record_usage(
            model=reported or model,
            input_tokens=None,
            output_tokens=None,
            seconds=time.perf_counter() - started,
        )
        raise model_error(error, client, model) from None

    input_tokens, output_tokens = _tokens(usage)
    record_usage(
        model=reported or model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        seconds=time.perf_counter() - started,
    )
    return "".join(parts), reported or model

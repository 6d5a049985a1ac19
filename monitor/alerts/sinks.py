"""Where notices go: the log, and a webhook (Slack-compatible JSON).

A notice is stored as a ``notifications`` row per sink before anything is
sent, and marked delivered only once the sink accepted it, so a sink that is
down loses nothing: its notices stay pending and the next pass retries them
in order. Delivery is at least once; every payload carries ``notice_id`` so a
receiver can drop a repeat.

The webhook URL is a secret (a Slack URL is its own credential): it is never
put in a log line, an error message or a stored error. httpx logs each request
URL at INFO, so a filter on its loggers masks the URL before any handler sees
the record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitor.alerts.options import AlertOptions

logger = logging.getLogger(__name__)

HTTP_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
)
MASK = "<webhook>"


class DeliveryError(Exception):
    """A sink did not accept a notice; the message holds no secret."""


class Sink(Protocol):
    """Delivers one notice payload, or raises :class:`DeliveryError`."""

    name: str

    def deliver(self, payload: dict[str, Any]) -> str:
        """Send the notice; return a short description of the receipt."""
        ...


class LogSink:
    """Notices as log lines: INFO for every notice, so a daemon's log has them."""

    name = "log"

    def deliver(self, payload: dict[str, Any]) -> str:
        logger.info("%s", payload.get("text", ""))
        return "logged"


class _RedactSecrets(logging.Filter):
    """Replaces each registered secret in a record's message with a mask."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = redact(message, self.secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACTOR = _RedactSecrets()


def redact(text: str, secrets: set[str] | list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return text


def _secret_parts(url: str) -> set[str]:
    """The URL, and its path and query (a Slack URL's token lives in the path)."""
    import httpx

    parts = {url, url.rstrip("/")}
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return parts
    raw_path = parsed.raw_path.decode("ascii", "replace")
    if raw_path not in ("", "/"):
        parts.add(raw_path)
    parts.add(str(parsed))
    return parts


def protect_url(url: str) -> set[str]:
    """Register ``url`` with the HTTP loggers' filter; returns the masked parts."""
    parts = _secret_parts(url)
    _REDACTOR.secrets |= parts
    for name in HTTP_LOGGERS:
        http_logger = logging.getLogger(name)
        if _REDACTOR not in http_logger.filters:
            http_logger.addFilter(_REDACTOR)
    return parts


@dataclass
class WebhookSink:
    """POSTs the payload as JSON; retries timeouts, connection errors, 429 and
    5xx within one delivery (tenacity), then gives up until the next pass."""

    url: str = field(repr=False)
    timeout: float = 10.0
    attempts: int = 3
    backoff: float = 0.5
    name: str = "webhook"

    def __post_init__(self) -> None:
        self._secrets = protect_url(self.url)

    def deliver(self, payload: dict[str, Any]) -> str:
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            wait_exponential,
        )

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff, max=30 * self.backoff),
            retry=retry_if_exception(_is_transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(self._post, payload)
        except _Rejected as rejected:
            raise DeliveryError(redact(str(rejected), self._secrets)) from None
        except RetryError as error:  # pragma: no cover - reraise=True
            raise DeliveryError("gave up") from error
        except Exception as error:
            raise DeliveryError(self._describe(error)) from None

    def _post(self, payload: dict[str, Any]) -> str:
        import httpx

        with httpx.Client(timeout=self.timeout) as client:
            response = client.post(self.url, json=payload)
        if response.status_code >= 300:
            raise _Rejected(response.status_code, response.text[:200])
        return f"HTTP {response.status_code}"

    def _describe(self, error: BaseException) -> str:
        detail = redact(str(error), self._secrets)
        if isinstance(error, _Rejected):
            return detail
        return f"{type(error).__name__}: {detail}" if detail else type(error).__name__

    def _log_retry(self, state: Any) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "webhook delivery attempt %d failed (%s); retrying",
            state.attempt_number,
            self._describe(error) if error else "no error",
        )


class _Rejected(Exception):
    """The webhook answered with an error status."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        shown = " ".join(body.split())[:120]
        super().__init__(f"HTTP {status}" + (f": {shown}" if shown else ""))


def _is_transient(error: BaseException) -> bool:
    import httpx

    if isinstance(error, _Rejected):
        return error.status == 429 or error.status >= 500
    return isinstance(error, httpx.TransportError)


def configured_sinks(options: AlertOptions) -> list[Sink]:
    """The log always; the webhook when MONITOR_WEBHOOK_URL is set."""
    sinks: list[Sink] = [LogSink()]
    if options.webhook_url is not None:
        url = options.webhook_url.get_secret_value().strip()
        if url:
            sinks.append(
                WebhookSink(
                    url=url,
                    timeout=options.webhook_timeout,
                    attempts=options.webhook_attempts,
                    backoff=options.webhook_backoff,
                )
            )
    return sinks

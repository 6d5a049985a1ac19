"""Scout on the web: search through a search API, read pages over HTTP.

Search goes to a self-hosted SearXNG instance (its JSON API, ``SCOUT_SEARXNG_URL``)
or to Tavily (``TAVILY_API_KEY``). Each hit is fetched with httpx and reduced to
its main text with trafilatura, one paragraph per block, as the local corpus
gives it.

A fetch is guarded: a finite timeout per network operation and the same figure
as a deadline for the whole fetch, a size cap (a declared ``Content-Length`` is
checked first, then the body is streamed and reading stops past the cap),
redirects followed with the final URL kept, and a User-Agent naming the project.
A page that cannot be used (not HTML, a 4xx or 5xx answer, a timeout, too big,
no main text) is a :class:`FetchedPage` with status ``skipped`` and the reason;
:meth:`WebSource.fetch` raises it as a :class:`SourceError`, which the reader
records and skips, so the run goes on. Pages are not retried: a skipped page is
tried again by the next pass. Search calls are retried on transient failures.

Every fetched page records its content hash and its boilerplate share: how much
of the page's visible text the extraction dropped (navigation, footers...). The
page Scout reads keeps the URL the search returned, so the graph's bookkeeping
of read and skipped hits holds across redirects; the final URL travels with it.

The Tavily key is sent in a header only, and is scrubbed from every message.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast
from urllib.parse import urlsplit

import httpx
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from scout.config import ScoutSettings, get_settings
from scout.errors import ConfigError, SourceError
from scout.sources.base import content_hash
from scout.sources.local import html_to_text
from scout.tasks import Hit, Page

logger = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")
MAX_REDIRECTS = 5
# Less main text than this is a menu or an error stub, not a page to read.
MIN_TEXT_CHARS = 100
SEARCH_ATTEMPTS = 3
SNIFF_BYTES = 1024
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
_BINARY_MAGIC = (b"%PDF-", b"PK\x03\x04", b"\x89PNG", b"GIF8", b"\xff\xd8\xff")
_HTML_START = re.compile(
    rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)", re.I
)

FetchStatus = Literal["ok", "skipped"]


# What a fetch gives


@dataclass(frozen=True)
class FetchedPage:
    """One fetch of one URL: the page's main text, or why it was skipped.

    ``url`` is the URL asked for and ``final_url`` the one answered after
    redirects. ``boilerplate_share`` is ``1 - extracted / visible`` text length.
    """

    url: str
    status: FetchStatus
    reason: str | None = None
    final_url: str | None = None
    http_status: int | None = None
    content_type: str | None = None
    title: str = ""
    text: str = ""
    content_hash: str | None = None
    boilerplate_share: float | None = None
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_page(self) -> Page:
        """The page as Scout reads it; raises :class:`SourceError` if skipped.

        Besides the :class:`Page` keys it carries ``final_url`` and
        ``boilerplate_share``, for whoever records the sources of a run.
        """
        if not self.ok or self.content_hash is None:
            raise SourceError(f"skipped {self.url}: {self.reason}")

        page: dict[str, Any] = {
            "url": self.url,
            "title": self.title,
            "text": self.text,
            "content_hash": self.content_hash,
            "final_url": self.final_url,
            "boilerplate_share": self.boilerplate_share,
        }
        return cast(Page, page)


class _Skip(Exception):
    """A page that cannot be used; carries what is known of it so far."""

    def __init__(self, reason: str, **known: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.known = known


# Extraction


@dataclass(frozen=True)
class Extracted:
    title: str | None
    text: str
    boilerplate_share: float


def extract_main_text(markup: str, url: str | None = None) -> Extracted | None:
    """The title and main text of an HTML page, with the share of its visible
    text that was left out as boilerplate; ``None`` when the page has less than
    ``MIN_TEXT_CHARS`` of main text."""
    import trafilatura

    document = trafilatura.bare_extraction(
        markup, url=url, with_metadata=True, include_comments=False
    )
    if document is None or isinstance(document, dict):
        return None

    paragraphs = [" ".join(line.split()) for line in (document.text or "").split("\n")]
    text = "\n\n".join(line for line in paragraphs if line)
    if len(text) < MIN_TEXT_CHARS:
        return None

    visible_title, visible = html_to_text(markup)
    title = document.title or visible_title
    share = 1.0 - len(text) / len(visible) if visible else 0.0
    return Extracted(title=title, text=text, boilerplate_share=round(max(share, 0), 4))


# Fetching


class PageFetcher:
    """Fetches pages over HTTP with the guards above; thread-safe.

    :meth:`fetch` never raises for a page that cannot be used: the returned
    record says why it was skipped.
    """

    def __init__(
        self,
        *,
        timeout: float,
        max_bytes: int,
        user_agent: str,
        client: httpx.Client | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.user_agent = user_agent
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            headers={"User-Agent": user_agent},
        )

    @classmethod
    def from_settings(cls, settings: ScoutSettings | None = None) -> PageFetcher:
        settings = settings or get_settings()
        return cls(
            timeout=settings.fetch_timeout,
            max_bytes=settings.max_page_bytes,
            user_agent=settings.user_agent,
        )

    def close(self) -> None:
        self._client.close()

    def fetch(self, url: str) -> FetchedPage:
        """The page at ``url`` with its main text, or the reason it was skipped."""
        try:
            page = self._fetch(url)
        except _Skip as skip:
            logger.info("skipped %s: %s", url, skip.reason)
            return FetchedPage(
                url=url, status="skipped", reason=skip.reason, **skip.known
            )

        logger.debug("fetched %s (%d chars)", url, len(page.text))
        return page

    def _fetch(self, url: str) -> FetchedPage:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise _Skip(f"unsupported URL scheme {scheme or 'none'!r}: http(s) only")

        deadline = time.monotonic() + self.timeout
        with self._transport_errors(), self._client.stream("GET", url) as response:
            known: dict[str, Any] = {
                "final_url": str(response.url),
                "http_status": response.status_code,
                "content_type": response.headers.get("content-type"),
            }
            _check_answer(response, known, self.max_bytes)
            body = self._read_capped(response, deadline, known)

        _check_body(body, known)
        markup = body.decode(response.encoding or "utf-8", errors="replace")
        extracted = extract_main_text(markup, known["final_url"])
        if extracted is None:
            raise _Skip(
                f"no main text (under {MIN_TEXT_CHARS} characters extracted)", **known
            )

        return FetchedPage(
            url=url,
            status="ok",
            title=extracted.title or known["final_url"],
            text=extracted.text,
            content_hash=content_hash(extracted.text),
            boilerplate_share=extracted.boilerplate_share,
            **known,
        )

    def _read_capped(
        self, response: httpx.Response, deadline: float, known: dict[str, Any]
    ) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise _Skip(
                    f"larger than the {self.max_bytes}-byte cap "
                    "(SCOUT_MAX_PAGE_BYTES); stopped reading",
                    **known,
                )
            if time.monotonic() > deadline:
                raise _Skip(f"timed out after {self.timeout:g} s", **known)
            chunks.append(chunk)
        return b"".join(chunks)

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException:
            raise _Skip(f"timed out after {self.timeout:g} s") from None
        except httpx.TooManyRedirects:
            raise _Skip(f"more than {MAX_REDIRECTS} redirects") from None
        except httpx.HTTPError as error:
            raise _Skip(f"request failed: {type(error).__name__}: {error}") from None


def _check_answer(response: httpx.Response, known: dict[str, Any], cap: int) -> None:
    """Skip on an error status, a non-HTML type or a declared size over the cap,
    before any of the body is read."""
    if response.status_code >= 400:
        phrase = response.reason_phrase or ""
        raise _Skip(f"HTTP {response.status_code} {phrase}".rstrip(), **known)

    media_type = (known["content_type"] or "").split(";")[0].strip().lower()
    if media_type and media_type not in HTML_TYPES:
        raise _Skip(f"not HTML ({media_type})", **known)

    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _Skip(
            f"larger than the {cap}-byte cap (SCOUT_MAX_PAGE_BYTES): "
            f"{declared} bytes declared",
            **known,
        )


def _check_body(body: bytes, known: dict[str, Any]) -> None:
    """Skip binary content, whatever type the server declared."""
    head = body[:SNIFF_BYTES]
    if head.startswith(_BINARY_MAGIC) or b"\x00" in head:
        raise _Skip("binary content, not HTML", **known)
    if not known["content_type"] and not _HTML_START.match(head):
        raise _Skip("no content type and the body does not look like HTML", **known)


# Search backends


class SearchBackend(Protocol):
    """A search API: ``name`` (searxng, tavily), ``endpoint`` (no secrets)."""

    name: str
    endpoint: str

    def search(self, query: str, limit: int) -> list[Hit]: ...


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code in TRANSIENT_STATUSES
    return isinstance(error, httpx.TransportError)


class _SearchAPI:
    """What both search backends share: a client, retries and clean errors."""

    name = "search"

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float,
        user_agent: str,
        client: httpx.Client | None = None,
        retry_wait: float = 0.5,
        secret: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.retry_wait = retry_wait
        self._secret = secret
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout), headers={"User-Agent": user_agent}
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, query: str, send: Callable[[], httpx.Response]) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(SEARCH_ATTEMPTS),
            wait=wait_exponential(multiplier=self.retry_wait, max=8),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
        try:
            response = retrying(self._send_checked, send)
            return response.json()
        except (httpx.HTTPError, ValueError) as error:
            reason = self._scrub(_describe(error))
            raise SourceError(
                f"{self.name} search for {query!r} at {self.endpoint} failed: "
                f"{reason}; check the search service and its settings"
            ) from None

    @staticmethod
    def _send_checked(send: Callable[[], httpx.Response]) -> httpx.Response:
        response = send()
        response.raise_for_status()
        return response

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _describe(error: BaseException) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    if isinstance(error, ValueError):
        return "the answer is not JSON"
    return f"{type(error).__name__}: {error}"


def _hits(results: object, limit: int, scored: bool) -> list[Hit]:
    """Search results as hits: known URLs once each, best first. Without a
    score from the API the rank gives one (1, 1/2, 1/3...)."""
    if not isinstance(results, list):
        return []

    hits: list[Hit] = []
    seen: set[str] = set()
    for item in results:
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str) or not url or url in seen:
            continue
        seen.add(url)
        score = item.get("score") if scored else None
        hits.append(
            {
                "url": url,
                "title": " ".join(str(item.get("title") or url).split()),
                "snippet": " ".join(str(item.get("content") or "").split()),
                "score": float(score)
                if isinstance(score, int | float)
                else round(1 / len(seen), 6),
            }
        )
        if len(hits) >= limit:
            break
    return hits


class SearxngSearch(_SearchAPI):
    """A SearXNG instance's JSON API (``format=json`` must be enabled there)."""

    name = "searxng"

    def __init__(self, base_url: str, **options: Any) -> None:
        base = base_url.rstrip("/")
        super().__init__(
            base if base.endswith("/search") else f"{base}/search", **options
        )

    def search(self, query: str, limit: int = 5) -> list[Hit]:
        if limit < 1 or not query.strip():
            return []

        params = {"q": query, "format": "json"}
        data = self._call(query, lambda: self._client.get(self.endpoint, params=params))
        results = data.get("results") if isinstance(data, dict) else None
        return _hits(results, limit, scored=True)


class TavilySearch(_SearchAPI):
    """Tavily's search API; the key goes in the Authorization header only."""

    name = "tavily"

    def __init__(self, api_key: str, endpoint: str, **options: Any) -> None:
        super().__init__(endpoint, secret=api_key, **options)
        self._headers = {"Authorization": f"Bearer {api_key}"}

    def __repr__(self) -> str:
        return f"TavilySearch({self.endpoint!r})"

    def search(self, query: str, limit: int = 5) -> list[Hit]:
        if limit < 1 or not query.strip():
            return []

        body = {"query": query, "max_results": limit, "search_depth": "basic"}
        data = self._call(
            query,
            lambda: self._client.post(self.endpoint, json=body, headers=self._headers),
        )
        results = data.get("results") if isinstance(data, dict) else None
        return _hits(results, limit, scored=True)


# The source


class WebSource:
    """A :class:`~scout.sources.base.Source` over a search API and the web.

    ``fingerprint`` names the search service, not content: the live web has no
    fixed corpus, so what changed is seen per page, by content hash.
    """

    def __init__(self, search: SearchBackend, fetcher: PageFetcher) -> None:
        self.search_backend = search
        self.fetcher = fetcher
        self.name = f"web:{search.name}"
        netloc = urlsplit(search.endpoint).netloc or search.endpoint
        self.fingerprint = f"web:{search.name}@{netloc}"[:200]

    def __repr__(self) -> str:
        return f"WebSource({self.name!r}, {self.search_backend.endpoint!r})"

    def search(self, query: str, limit: int = 5) -> list[Hit]:
        return self.search_backend.search(query, limit)

    def fetch(self, url: str) -> Page:
        """The page at ``url``; raises :class:`SourceError` with the reason it
        was skipped (not HTML, HTTP error, timeout, too big, no text)."""
        return self.fetcher.fetch(url).as_page()

    def close(self) -> None:
        self.fetcher.close()
        closer = getattr(self.search_backend, "close", None)
        if callable(closer):
            closer()


def open_search_backend(settings: ScoutSettings) -> SearchBackend:
    """The search API the settings name: SearXNG when ``SCOUT_SEARXNG_URL`` is
    set (or ``SCOUT_WEB_SEARCH=searxng``), else Tavily with its key."""
    options: dict[str, Any] = {
        "timeout": settings.fetch_timeout,
        "user_agent": settings.user_agent,
    }
    choice = settings.web_search
    if choice == "auto":
        choice = "searxng" if settings.searxng_url else "tavily"

    if choice == "searxng":
        if not settings.searxng_url:
            raise ConfigError(
                "SCOUT_WEB_SEARCH=searxng needs SCOUT_SEARXNG_URL: set it to your "
                "SearXNG instance, e.g. http://localhost:8888"
            )
        return SearxngSearch(settings.searxng_url, **options)

    if settings.tavily_api_key is None:
        raise ConfigError(
            "SCOUT_SOURCES=web needs a search API: set SCOUT_SEARXNG_URL to a "
            "SearXNG instance with its JSON API on, or TAVILY_API_KEY for Tavily"
        )
    key = settings.tavily_api_key.get_secret_value()
    return TavilySearch(key, settings.tavily_url, **options)


def open_web_source(settings: ScoutSettings | None = None) -> WebSource:
    """The web source the settings ask for."""
    settings = settings or get_settings()
    return WebSource(open_search_backend(settings), PageFetcher.from_settings(settings))

"""A local web for tests and by-hand checks: article pages, bad pages, search.

``FakeWeb`` serves on 127.0.0.1 (a free port, or the one given) in a background
thread:

- ``/articles/<slug>.html``: articles about lighthouses, each wrapped in a site
  header, a long navigation menu and a footer (the boilerplate an extractor
  must drop). ``set_article`` changes one, to make a source drift.
- ``/moved``: a 301 redirect to an article; ``/gone``: 404; ``/broken``: 500.
- ``/slow.html``: waits ``slow_seconds`` before answering (longer than a test's
  fetch timeout); the wait ends early when the server stops.
- ``/huge.html``: HTML of ``huge_bytes`` with no Content-Length, so only a
  streamed size cap stops it; ``/huge-declared.html`` declares its length.
- ``/paper.pdf``: a small PDF; ``/mislabelled``: the same PDF sent as HTML.
- ``/search?q=...&format=json``: a SearXNG JSON API over every page above,
  ranked by how many query words each title and text hold; it answers 503 to
  the next ``fail_searches`` searches.
- ``POST /tavily/search``: a Tavily-style API over the same pages; it answers
  401 unless ``Authorization: Bearer <tavily_key>`` is sent.

Every request is recorded (path, method, headers), so tests can check the user
agent and count what reached the server.

By hand: ``python -m tests.fakes.web_server --port 8765 --golden /tmp/g.toml``
serves until Ctrl-C and writes a golden file whose reference URLs are the
local articles.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

NAV_LINKS = (
    "Home", "News", "Local news", "Weather", "Shipping forecast", "Sport",
    "Opinion", "Letters to the editor", "Obituaries", "Events calendar",
    "Classifieds", "Jobs", "Property", "Subscribe", "Newsletter sign-up",
    "Contact the newsroom", "Advertise with us", "Archive", "Puzzles", "Podcasts",
)  # fmt: skip
FOOTER = (
    "Copyright 2024 The Harbour Gazette. All rights reserved. Privacy policy. "
    "Cookie settings. Terms of use. Registered in the county of Northmoor."
)

ARTICLES: dict[str, tuple[str, list[str]]] = {
    "keepers": (
        "Lighthouse keepers of the north coast",
        [
            "The lighthouse at Kettle Point was kept by three families over "
            "ninety years, and each keeper trimmed the wick at dusk.",
            "A lighthouse keeper wound the clockwork that turned the lens every "
            "four hours through the night, so the beam never stopped.",
            "Keepers logged every ship that passed the lighthouse and every hour "
            "of fog in a ledger that the harbour board inspected each spring.",
            "Automation arrived in 1978, when an electric lamp and a timer "
            "replaced the last lighthouse keeper at Kettle Point.",
        ],
    ),
    "fog-signals": (
        "How lighthouse fog signals warned ships",
        [
            "When fog hid the lighthouse beam, the keepers sounded a fog signal "
            "every thirty seconds until visibility returned.",
            "Early fog signals were bells struck by hand, and later ones were "
            "sirens driven by compressed air from an engine house.",
            "Each lighthouse had its own pattern of blasts, so that a captain "
            "could tell which headland he was passing in the fog.",
        ],
    ),
    "lenses": (
        "The Fresnel lens and the lighthouse beam",
        [
            "A Fresnel lens bends the light of a small lamp into a narrow beam "
            "that a lighthouse can throw twenty miles out to sea.",
            "The lens is built from rings of glass prisms, which made it far "
            "lighter than a solid lens of the same power.",
            "Lighthouse lenses were graded by order, and a first order lens stood "
            "taller than the keeper who cleaned it every morning.",
        ],
    ),
}

# Search titles of the pages that cannot be read, so that searches find them.
BAD_PAGES = {
    "/moved": ("Lighthouse lenses (old address)", "Moved: the Fresnel lens page."),
    "/gone": ("Lighthouse keepers archive", "Removed page about lighthouse keepers."),
    "/broken": ("Lighthouse keepers forum", "A forum about lighthouse keepers."),
    "/slow.html": ("Lighthouse keepers slow page", "Slow page on lighthouse keepers."),
    "/huge.html": ("Lighthouse keepers register", "Every lighthouse keeper, ever."),
    "/paper.pdf": ("Lighthouse keepers paper (PDF)", "A paper on lighthouse keepers."),
}
PDF_BODY = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
_WORD = re.compile(r"[a-z0-9]+")


def article_html(title: str, paragraphs: list[str]) -> str:
    """An article page wrapped in the site's header, menu and footer."""
    menu = "".join(
        f'<li><a href="/s/{i}">{name}</a></li>' for i, name in enumerate(NAV_LINKS)
    )
    body = "".join(f"<p>{text}</p>" for text in paragraphs)
    return (
        f"<!DOCTYPE html><html><head><title>{title} | The Harbour Gazette</title>"
        "<style>nav li { display: inline }</style></head><body>"
        '<header><div class="masthead">The Harbour Gazette: news from the coast '
        "since 1868. Subscribe today for full access to every edition.</div>"
        f"<nav><ul>{menu}</ul></nav></header>"
        f"<main><article><h1>{title}</h1>{body}</article></main>"
        f'<aside><h2>Most read</h2><ul><li><a href="/r/1">Harbour fees rise '
        'again</a></li><li><a href="/r/2">Regatta cancelled by storm</a></li>'
        f"</ul></aside><footer><p>{FOOTER}</p></footer></body></html>"
    )


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]


class FakeWeb:
    """The local web; use as a context manager, or ``start`` and ``stop``."""

    def __init__(
        self,
        *,
        port: int = 0,
        slow_seconds: float = 5.0,
        huge_bytes: int = 300_000,
        tavily_key: str = "tvly-test-key",
    ) -> None:
        self.slow_seconds = slow_seconds
        self.huge_bytes = huge_bytes
        self.tavily_key = tavily_key
        self.fail_searches = 0
        self.articles = {slug: (t, list(p)) for slug, (t, p) in ARTICLES.items()}
        self.requests: list[RecordedRequest] = []
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.web = self
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def article_url(self, slug: str) -> str:
        return self.url(f"/articles/{slug}.html")

    def set_article(self, slug: str, title: str, paragraphs: list[str]) -> None:
        with self._lock:
            self.articles[slug] = (title, list(paragraphs))

    def take_search_failure(self) -> bool:
        """True (and one fewer to go) while ``fail_searches`` is above zero."""
        with self._lock:
            if self.fail_searches <= 0:
                return False
            self.fail_searches -= 1
            return True

    def paths_requested(self) -> list[str]:
        with self._lock:
            return [request.path for request in self.requests]

    def start(self) -> FakeWeb:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-web",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeWeb:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # What the server knows

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def catalog(self) -> list[tuple[str, str, str]]:
        """(path, title, text) of every page, readable or not."""
        with self._lock:
            pages = [
                (f"/articles/{slug}.html", title, " ".join(paragraphs))
                for slug, (title, paragraphs) in self.articles.items()
            ]
        return pages + [(path, t, text) for path, (t, text) in BAD_PAGES.items()]

    def search(self, query: str) -> list[dict[str, Any]]:
        """Pages holding any query word, most words first (ties by path)."""
        words = set(_WORD.findall(query.lower()))
        ranked = []
        for path, title, text in self.catalog():
            found = words & set(_WORD.findall(f"{title} {text}".lower()))
            if found:
                ranked.append((len(found), path, title, text))
        ranked.sort(key=lambda row: (-row[0], row[1]))
        return [
            {
                "url": self.url(path),
                "title": title,
                "content": text[:160],
                "score": float(count),
                "engine": "fake",
            }
            for count, path, title, text in ranked
        ]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    web: FakeWeb

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout, a size cap) closes the connection
        # under a handler still writing: expected here, not worth a traceback.
        logger.debug("fake web: client %s went away", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake web: " + format, *args)

    def do_GET(self) -> None:
        web = self.server.web
        parts = urlsplit(self.path)
        web.record(RecordedRequest("GET", parts.path, dict(self.headers.items())))
        article = re.fullmatch(r"/articles/([\w-]+)\.html", parts.path)
        if article:
            self._article(article.group(1))
        elif parts.path == "/search":
            self._searxng(parse_qs(parts.query))
        elif parts.path == "/moved":
            self._send(301, b"", "text/html", {"Location": "/articles/lenses.html"})
        elif parts.path == "/gone":
            self._send(404, b"<html><body>Not found</body></html>", "text/html")
        elif parts.path == "/broken":
            self._send(500, b"<html><body>Server error</body></html>", "text/html")
        elif parts.path == "/slow.html":
            if not web.stopped.wait(web.slow_seconds):
                self._article("keepers")
        elif parts.path in ("/huge.html", "/huge-declared.html"):
            self._huge(declared=parts.path == "/huge-declared.html")
        elif parts.path == "/paper.pdf":
            self._send(200, PDF_BODY, "application/pdf")
        elif parts.path == "/mislabelled":
            self._send(200, PDF_BODY, "text/html")
        else:
            self._send(404, b"not here", "text/plain")

    def do_POST(self) -> None:
        web = self.server.web
        web.record(RecordedRequest("POST", self.path, dict(self.headers.items())))
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/tavily/search":
            self._send(404, b"not here", "text/plain")
        elif self.headers.get("Authorization") != f"Bearer {web.tavily_key}":
            error = {"detail": {"error": "Unauthorized: missing or invalid API key."}}
            self._json(401, error)
        else:
            limit = int(body.get("max_results", 5))
            results = web.search(str(body.get("query", "")))[:limit]
            self._json(200, {"query": body.get("query"), "results": results})

    def _article(self, slug: str) -> None:
        web = self.server.web
        with web._lock:
            found = web.articles.get(slug)
        if found is None:
            self._send(404, b"no such article", "text/plain")
            return
        markup = article_html(*found).encode("utf-8")
        self._send(200, markup, "text/html; charset=utf-8")

    def _searxng(self, query: dict[str, list[str]]) -> None:
        if query.get("format") != ["json"]:
            self._send(403, b"format not allowed", "text/plain")
            return
        if self.server.web.take_search_failure():
            self._send(503, b"busy", "text/plain")
            return
        text = query.get("q", [""])[0]
        results = self.server.web.search(text)
        self._json(
            200, {"query": text, "number_of_results": len(results), "results": results}
        )

    def _huge(self, *, declared: bool) -> None:
        size = self.server.web.huge_bytes
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        if declared:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        block = b"<p>" + b"lighthouse keeper " * 50 + b"</p>\n"
        sent = 0
        try:
            self.wfile.write(b"<html><body>")
            while sent < size:
                self.wfile.write(block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading at its cap, as it should

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def golden_toml(web: FakeWeb) -> str:
    """A golden file of one question whose references are the local articles."""
    urls = ", ".join(f'"{web.article_url(slug)}"' for slug in ("keepers", "lenses"))
    return (
        "version = 1\n\n[[questions]]\n"
        'id = "lighthouse-keepers"\n'
        'question = "What did lighthouse keepers do before automation?"\n'
        'key_points = ["trimmed the wick", "wound the clockwork", '
        '"logged every ship"]\n'
        f"reference_urls = [{urls}]\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the fake web until Ctrl-C.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--golden", type=Path, help="write a golden file here")
    args = parser.parse_args(argv)
    web = FakeWeb(port=args.port).start()
    if args.golden:
        args.golden.write_text(golden_toml(web), encoding="utf-8")
        print(f"golden file: {args.golden}")
    print(f"serving {web.base_url} (SearXNG at {web.base_url}); Ctrl-C stops")
    try:
        web.stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        web.stop()


if __name__ == "__main__":
    main()

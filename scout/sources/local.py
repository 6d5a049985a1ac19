"""The local corpus: documents indexed in SQLite FTS5 and ranked with BM25.

Scout's default source needs no network. Without ``SCOUT_CORPUS_DIR`` it indexes
the Python language reference that ships with CPython (``pydoc_data.topics``),
each section under its docs.python.org URL; with it, every markdown, text and
HTML file under that folder, each under its ``file://`` URL.

The index is built once and cached under ``SCOUT_CACHE_DIR``, in a file named by
the corpus fingerprint, so a changed corpus gets a new index and an unchanged one
is never rebuilt. A build writes a temporary file and renames it into place, so
a crash mid-build or two processes building at once never leave a half index.
The finished file is only ever read: each thread opens its own read-only
connection, which lets several questions search one corpus at the same time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from scout.config import ScoutSettings, get_settings
from scout.errors import ConfigError, SourceError
from scout.sources.base import content_hash
from scout.sources.pydoc_urls import pydoc_title, pydoc_url
from scout.tasks import Hit, Page

logger = logging.getLogger(__name__)

# Bump when the schema, the tokenizer or the text extraction changes, so that
# indexes cached by an older version are not reused.
INDEX_VERSION = 1

CORPUS_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm")
MAX_QUERY_TOKENS = 32
SNIPPET_TOKENS = 24
TITLE_WEIGHT = 4.0
STALE_BUILD_SECONDS = 3600.0

_QUERY_TOKEN = re.compile(r"[^\W_]+")
_MARKDOWN_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_SCHEMA = """
CREATE TABLE documents (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    content_hash TEXT NOT NULL
);
CREATE VIRTUAL TABLE documents_fts USING fts5(
    title, text, content='documents', content_rowid='id',
    tokenize='porter unicode61'
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_SEARCH = """
SELECT d.url, d.title,
       snippet(documents_fts, 1, '', '', '…', ?) AS excerpt,
       bm25(documents_fts, ?, 1.0) AS rank
FROM documents_fts JOIN documents AS d ON d.id = documents_fts.rowid
WHERE documents_fts MATCH ?
ORDER BY rank, d.id
LIMIT ?
"""


@dataclass(frozen=True)
class Document:
    """One page of a corpus, as it is indexed and as ``fetch`` returns it."""

    url: str
    title: str
    text: str

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)


def corpus_fingerprint(documents: Iterable[Document]) -> str:
    """sha256 over the sorted (url, content hash) pairs of a corpus."""
    digest = hashlib.sha256()
    for url, text_hash in sorted((doc.url, doc.content_hash) for doc in documents):
        digest.update(f"{url}\t{text_hash}\n".encode())
    return digest.hexdigest()


def match_expression(query: str) -> str | None:
    """A safe FTS5 MATCH expression for free text: its words, quoted, OR-ed.

    Quoting every token keeps FTS5 operators (AND, NEAR, ``*``, ``:``...) from
    being interpreted. ``None`` when the query holds no word at all.
    """
    tokens = list(dict.fromkeys(_QUERY_TOKEN.findall(query.lower())))
    if not tokens:
        return None

    return " OR ".join(f'"{token}"' for token in tokens[:MAX_QUERY_TOKENS])


class LocalCorpus:
    """A :class:`~scout.sources.base.Source` over a cached SQLite FTS5 index.

    Open one with :func:`open_pydoc_corpus`, :func:`open_directory_corpus` or
    :func:`scout.sources.open_source`; the constructor expects a finished index.
    """

    def __init__(self, name: str, index_path: Path, fingerprint: str) -> None:
        self.name = name
        self.fingerprint = fingerprint
        self.index_path = index_path
        self._uri = index_path.resolve().as_uri() + "?mode=ro"
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"LocalCorpus({self.name!r}, {str(self.index_path)!r})"

    def __len__(self) -> int:
        row = self._connection().execute("SELECT count(*) FROM documents").fetchone()
        return int(row[0])

    def urls(self) -> list[str]:
        """Every document URL, in index order."""
        rows = self._connection().execute("SELECT url FROM documents ORDER BY id")
        return [str(url) for (url,) in rows]

    def search(self, query: str, limit: int = 5) -> list[Hit]:
        """The ``limit`` best documents for ``query`` by BM25; ``score`` is
        positive and higher is better. Titles weigh more than body text."""
        expression = match_expression(query)
        if expression is None or limit < 1:
            return []

        try:
            rows = self._connection().execute(
                _SEARCH, (SNIPPET_TOKENS, TITLE_WEIGHT, expression, limit)
            )
            found = rows.fetchall()
        except sqlite3.Error as error:
            raise SourceError(
                f"search {query!r} failed on {self.name} ({self.index_path}): "
                f"{error}; delete that file to rebuild the index"
            ) from error

        return [
            {
                "url": url,
                "title": title,
                "snippet": " ".join(excerpt.split()),
                "score": round(-rank, 6),
            }
            for url, title, excerpt, rank in found
        ]

    def fetch(self, url: str) -> Page:
        """The document at ``url``; raises :class:`SourceError` for any URL that
        is not in this corpus."""
        row = (
            self._connection()
            .execute(
                "SELECT title, text, content_hash FROM documents WHERE url = ?", (url,)
            )
            .fetchone()
        )
        if row is None:
            raise SourceError(
                f"{url!r} is not a page of corpus {self.name} "
                f"(fingerprint {self.fingerprint[:12]}): fetch URLs that its "
                "search returned"
            )

        title, text, text_hash = row
        return {"url": url, "title": title, "text": text, "content_hash": text_hash}

    def close(self) -> None:
        """Close the calling thread's connection (others close with their thread)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self._uri, uri=True)
            self._local.connection = connection
        return connection


# Building and caching the index


def open_corpus(
    name: str, documents: Sequence[Document], cache_dir: Path, prefix: str
) -> LocalCorpus:
    """The corpus of ``documents``, from the cached index when it is complete,
    else from a new index built next to it and renamed into place."""
    fingerprint = corpus_fingerprint(documents)
    path = cache_dir / f"{prefix}-v{INDEX_VERSION}-{fingerprint[:12]}.sqlite"
    if _index_is_complete(path, fingerprint, len(documents)):
        logger.debug("reusing corpus index %s", path)
    else:
        _build_index(path, documents, fingerprint)

    return LocalCorpus(name, path, fingerprint)


def _index_is_complete(path: Path, fingerprint: str, count: int) -> bool:
    if not path.exists():
        return False

    try:
        connection = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
            (indexed,) = connection.execute("SELECT count(*) FROM documents").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as error:
        logger.warning("corpus index %s is unreadable (%s); rebuilding it", path, error)
        return False

    if meta.get("fingerprint") != fingerprint or indexed != count:
        logger.warning("corpus index %s does not match its corpus; rebuilding", path)
        return False
    return True


def _build_index(path: Path, documents: Sequence[Document], fingerprint: str) -> None:
    logger.info("building corpus index %s (%d documents)", path, len(documents))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_builds(path)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent
        )
        os.close(handle)
    except OSError as error:
        raise ConfigError(
            f"cannot write the corpus index under {path.parent} ({error.strerror}): "
            "set SCOUT_CACHE_DIR to a writable folder"
        ) from error

    try:
        _write_index(Path(temporary), documents, fingerprint)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _remove_stale_builds(path: Path) -> None:
    """Delete temporary files that killed builds of ``path`` left behind. Only
    old ones: a recent one may be another process's build in progress."""
    cutoff = time.time() - STALE_BUILD_SECONDS
    for leftover in path.parent.glob(f".{path.stem}.*.tmp"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
                logger.debug("removed stale index build %s", leftover)


def _write_index(path: Path, documents: Sequence[Document], fingerprint: str) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.executescript(_SCHEMA)
        with connection:
            connection.executemany(
                "INSERT INTO documents (id, url, title, text, content_hash) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (number, doc.url, doc.title, doc.text, doc.content_hash)
                    for number, doc in enumerate(documents, start=1)
                ],
            )
            connection.execute(
                "INSERT INTO documents_fts (rowid, title, text) "
                "SELECT id, title, text FROM documents"
            )
            connection.execute(
                "INSERT INTO documents_fts (documents_fts) VALUES ('optimize')"
            )
            connection.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("fingerprint", fingerprint), ("version", str(INDEX_VERSION))],
            )
    finally:
        connection.close()

    # The rename must not become visible before the data it names.
    with path.open("rb") as written:
        os.fsync(written.fileno())


# The bundled Python reference


def pydoc_documents() -> list[Document]:
    """The sections of the Python reference bundled with this interpreter."""
    from pydoc_data.topics import topics

    return [
        Document(url=pydoc_url(label), title=pydoc_title(label, text), text=text)
        for label, text in sorted(topics.items())
    ]


def open_pydoc_corpus(cache_dir: Path) -> LocalCorpus:
    """The bundled Python reference as a corpus, indexed under ``cache_dir``."""
    major, minor = sys.version_info[:2]
    return open_corpus(
        "local:pydoc", pydoc_documents(), cache_dir, f"pydoc-{major}.{minor}"
    )


# A folder of the user's documents


def open_directory_corpus(folder: Path, cache_dir: Path) -> LocalCorpus:
    """Every markdown, text and HTML file under ``folder`` as a corpus."""
    return open_corpus("local:dir", directory_documents(folder), cache_dir, "dir")


def directory_documents(folder: Path) -> list[Document]:
    """The documents under ``folder``, recursively, in path order. Hidden files
    and folders (a leading dot) are skipped, and so are files with no text."""
    if not folder.is_dir():
        raise ConfigError(
            f"SCOUT_CORPUS_DIR={folder} is not a folder: point it at a folder of "
            f"{', '.join(CORPUS_SUFFIXES)} files, or unset it to use the bundled "
            "Python reference"
        )

    root = folder.resolve()
    documents = []
    for path in _corpus_files(root):
        document = read_document(path)
        if document.text.strip():
            documents.append(document)
        else:
            logger.debug("skipping %s: it holds no text", path)

    if not documents:
        raise ConfigError(
            f"SCOUT_CORPUS_DIR={folder} holds no {', '.join(CORPUS_SUFFIXES)} file "
            "with text: add documents there, or unset it to use the bundled "
            "Python reference"
        )
    return documents


def _corpus_files(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in CORPUS_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def read_document(path: Path) -> Document:
    """One file as a document: HTML reduced to text, a title from the first
    markdown heading or ``<title>``, else the file name without its suffix."""
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ConfigError(
            f"cannot read corpus file {path} ({error.strerror}): fix its "
            "permissions or remove it from SCOUT_CORPUS_DIR"
        ) from error

    suffix = path.suffix.lower()
    title: str | None = None
    if suffix in (".html", ".htm"):
        title, text = html_to_text(raw)
    else:
        text = raw
        if suffix in (".md", ".markdown"):
            heading = _MARKDOWN_HEADING.search(raw)
            title = heading.group(1) if heading else None

    return Document(url=path.as_uri(), title=title or path.stem, text=text)


class _TextExtractor(HTMLParser):
    """Collects an HTML page's visible text and its ``<title>``."""

    SKIPPED = frozenset({"script", "style", "noscript", "template", "svg"})
    BLOCKS = frozenset(
        {
            "address", "article", "aside", "blockquote", "br", "dd", "div", "dl",
            "dt", "figcaption", "footer", "h1", "h2", "h3", "h4", "h5", "h6",
            "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
            "table", "td", "th", "tr", "ul",
        }
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skipping = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIPPED:
            self._skipping += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED:
            self._skipping = max(0, self._skipping - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._in_title:
            self.title_parts.append(data)
        else:
            self.parts.append(data)


def html_to_text(markup: str) -> tuple[str | None, str]:
    """The ``<title>`` (if any) and the visible text of an HTML page, one block
    per paragraph, without scripts and styles."""
    extractor = _TextExtractor()
    extractor.feed(markup)
    extractor.close()

    lines = (" ".join(line.split()) for line in "".join(extractor.parts).split("\n"))
    paragraphs = "\n\n".join(line for line in lines if line)
    title = " ".join("".join(extractor.title_parts).split())
    return title or None, paragraphs


def open_local_corpus(settings: ScoutSettings | None = None) -> LocalCorpus:
    """The corpus the settings ask for: ``SCOUT_CORPUS_DIR`` or the bundled
    Python reference, indexed under ``SCOUT_CACHE_DIR``."""
    settings = settings or get_settings()
    if settings.corpus_dir is not None:
        return open_directory_corpus(settings.corpus_dir, settings.cache_dir)
    return open_pydoc_corpus(settings.cache_dir)

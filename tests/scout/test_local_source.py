"""The local corpus: the bundled Python reference, a folder of documents, the
on-disk index cache and the source factory."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from pydoc_data.topics import topics

import pytest

from scout.config import ScoutSettings
from scout.errors import ConfigError, SourceError
from scout.sources import forget_opened_sources, open_source
from scout.sources import local as local_module
from scout.sources.base import content_hash
from scout.sources.local import (
    LocalCorpus,
    html_to_text,
    match_expression,
    open_directory_corpus,
    open_pydoc_corpus,
)
from scout.sources.pydoc_urls import fallback_url, pydoc_title, pydoc_url

WITH_URL = "https://docs.python.org/3/reference/compound_stmts.html#the-with-statement"


@pytest.fixture(scope="session")
def pydoc_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pydoc-cache")


@pytest.fixture(scope="session")
def corpus(pydoc_cache: Path) -> LocalCorpus:
    return open_pydoc_corpus(pydoc_cache)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    (docs / "nested").mkdir(parents=True)
    (docs / ".hidden").mkdir()
    (docs / "guide.md").write_text(
        "Intro line\n\n## Deploying the widget\n\nThe widget deploys with blue "
        "flags and a pelican.\n",
        encoding="utf-8",
    )
    (docs / "notes.txt").write_text("Plain notes about teapots.\n", encoding="utf-8")
    (docs / "page.html").write_text(
        "<html><head><title>Harbour &amp; tides</title>"
        "<style>body { color: mauve }</style></head><body>"
        "<script>var secretScriptWord = 1;</script>"
        "<p>The harbour floods at <b>spring</b> tides.</p><p>Boats wait.</p>"
        "</body></html>",
        encoding="utf-8",
    )
    (docs / "nested" / "deep.htm").write_text(
        "<p>Lighthouses blink nightly.</p>", encoding="utf-8"
    )
    (docs / "ignored.pdf").write_text("pelican pdf", encoding="utf-8")
    (docs / ".hidden" / "secret.md").write_text("# Hidden\npelican", encoding="utf-8")
    return docs


@pytest.fixture
def fresh_sources() -> Iterator[None]:
    forget_opened_sources()
    yield
    forget_opened_sources()


def test_bundled_corpus_holds_every_pydoc_topic_under_a_docs_url(
    corpus: LocalCorpus,
) -> None:
    urls = corpus.urls()

    assert len(corpus) == len(topics) == len(urls) == len(set(urls))
    assert all(url.startswith("https://docs.python.org/3/") for url in urls)
    assert corpus.name == "local:pydoc"
    assert WITH_URL in urls


def test_with_statement_query_ranks_the_with_section_first(
    corpus: LocalCorpus,
) -> None:
    hits = corpus.search("with statement __exit__", limit=5)

    assert hits[0]["url"] == WITH_URL
    assert hits[0]["title"] == 'The "with" statement'
    scores = [hit["score"] for hit in hits]
    assert all(score > 0 for score in scores)
    assert scores == sorted(scores, reverse=True)
    assert all(hit["snippet"] for hit in hits)


def test_search_respects_the_limit(corpus: LocalCorpus) -> None:
    assert len(corpus.search("statement", limit=3)) == 3
    assert corpus.search("statement", limit=0) == []


def test_fts_syntax_in_a_query_is_read_as_plain_words(corpus: LocalCorpus) -> None:
    hits = corpus.search('NEAR("with" AND) OR * : ^exit -( "unbalanced', limit=5)

    assert hits, "the words of the query should still be searched"
    assert corpus.search("?? -- ** ()", limit=5) == []
    assert corpus.search("", limit=5) == []


def test_match_expression_quotes_every_word_and_drops_the_rest() -> None:
    assert match_expression('with "AND" __exit__*') == '"with" OR "and" OR "exit"'
    assert match_expression(" :: () ") is None


def test_fetch_returns_the_section_text_and_its_hash(corpus: LocalCorpus) -> None:
    page = corpus.fetch(WITH_URL)

    assert page["text"] == topics["with"]
    assert page["content_hash"] == content_hash(topics["with"])
    assert page["url"] == WITH_URL


def test_fetch_of_an_unknown_url_raises_source_error_naming_it(
    corpus: LocalCorpus,
) -> None:
    with pytest.raises(SourceError, match=r"nowhere\.example/page"):
        corpus.fetch("https://nowhere.example/page")


def test_second_open_reuses_the_cached_index(
    corpus: LocalCorpus, pydoc_cache: Path
) -> None:
    before = corpus.index_path.stat()
    files_before = sorted(pydoc_cache.iterdir())

    again = open_pydoc_corpus(pydoc_cache)

    after = again.index_path.stat()
    assert again.index_path == corpus.index_path
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(pydoc_cache.iterdir()) == files_before
    assert again.fingerprint == corpus.fingerprint


def test_fingerprint_is_sha256_over_url_and_hash_pairs(corpus: LocalCorpus) -> None:
    digest = hashlib.sha256()
    for url, text_hash in sorted(
        (pydoc_url(label), content_hash(text)) for label, text in topics.items()
    ):
        digest.update(f"{url}\t{text_hash}\n".encode())

    assert corpus.fingerprint == digest.hexdigest()


def test_searches_from_several_threads_agree(corpus: LocalCorpus) -> None:
    queries = ["with statement", "default parameter values", "truth value"] * 5
    expected = [corpus.search(query) for query in queries]

    with ThreadPoolExecutor(max_workers=5) as pool:
        found = list(pool.map(corpus.search, queries))

    assert found == expected


def test_a_failed_build_leaves_neither_index_nor_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(path: Path, *args: object) -> None:
        path.write_bytes(b"half an index")
        raise KeyboardInterrupt

    monkeypatch.setattr(local_module, "_write_index", crash)
    with pytest.raises(KeyboardInterrupt):
        open_pydoc_corpus(tmp_path)

    assert list(tmp_path.iterdir()) == []


def test_a_build_removes_old_leftovers_of_killed_builds_only(
    corpus: LocalCorpus, tmp_path: Path
) -> None:
    stem = corpus.index_path.stem
    old = tmp_path / f".{stem}.killed.tmp"
    recent = tmp_path / f".{stem}.running.tmp"
    old.write_bytes(b"left by a killed build")
    recent.write_bytes(b"another process is building")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))

    open_pydoc_corpus(tmp_path)

    assert not old.exists()
    assert recent.exists()


def test_a_damaged_index_file_is_rebuilt(corpus: LocalCorpus, tmp_path: Path) -> None:
    damaged = tmp_path / corpus.index_path.name
    damaged.write_bytes(b"not a database")

    rebuilt = open_pydoc_corpus(tmp_path)

    assert rebuilt.index_path == damaged
    assert rebuilt.fetch(WITH_URL)["text"] == topics["with"]
    assert [path.name for path in tmp_path.iterdir()] == [damaged.name]


def test_the_index_is_opened_read_only(corpus: LocalCorpus) -> None:
    connection = corpus._connection()

    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        connection.execute("DELETE FROM documents")


def test_a_label_without_a_mapped_url_falls_back_to_the_docs_search() -> None:
    url = pydoc_url("brand-new-topic")

    assert url == fallback_url("brand-new-topic")
    assert url == "https://docs.python.org/3/search.html?q=brand-new-topic"


def test_titles_come_from_the_first_line_unless_mapped() -> None:
    assert pydoc_title("with", topics["with"]) == 'The "with" statement'
    assert pydoc_title("else", topics["else"]) != pydoc_title("if", topics["if"])


def test_folder_corpus_indexes_markdown_text_and_html_recursively(
    folder: Path, tmp_path: Path
) -> None:
    corpus = open_directory_corpus(folder, tmp_path / "cache")

    expected = ["guide.md", "nested/deep.htm", "notes.txt", "page.html"]
    assert corpus.name == "local:dir"
    assert corpus.urls() == [(folder / name).resolve().as_uri() for name in expected]


def test_folder_documents_get_titles_from_heading_title_tag_or_file_name(
    folder: Path, tmp_path: Path
) -> None:
    corpus = open_directory_corpus(folder, tmp_path / "cache")
    titles = {Path(url).name: corpus.fetch(url)["title"] for url in corpus.urls()}

    assert titles == {
        "guide.md": "Deploying the widget",
        "deep.htm": "deep",
        "notes.txt": "notes",
        "page.html": "Harbour & tides",
    }


def test_folder_html_is_searched_as_text_without_scripts_or_styles(
    folder: Path, tmp_path: Path
) -> None:
    corpus = open_directory_corpus(folder, tmp_path / "cache")
    html_url = (folder / "page.html").resolve().as_uri()

    assert corpus.search("harbour floods")[0]["url"] == html_url
    assert corpus.search("secretScriptWord mauve") == []
    assert "The harbour floods at spring tides." in corpus.fetch(html_url)["text"]


def test_html_to_text_keeps_paragraphs_apart() -> None:
    title, text = html_to_text("<title> T </title><p>One.</p><div>Two <i>x</i></div>")

    assert title == "T"
    assert text == "One.\n\nTwo x"


def test_folder_corpus_fingerprint_follows_file_content(
    folder: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = open_directory_corpus(folder, cache)
    same = open_directory_corpus(folder, cache)
    (folder / "notes.txt").write_text("Plain notes about kettles.\n", encoding="utf-8")
    changed = open_directory_corpus(folder, cache)

    assert same.fingerprint == first.fingerprint
    assert changed.fingerprint != first.fingerprint
    assert changed.search("kettles")
    assert len(list(cache.glob("*.sqlite"))) == 2


def test_a_missing_corpus_folder_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"

    with pytest.raises(ConfigError, match="no-such-folder") as caught:
        open_directory_corpus(missing, tmp_path / "cache")
    assert "SCOUT_CORPUS_DIR" in str(caught.value)


def test_a_folder_without_documents_is_a_config_error_naming_it(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "only-pdfs"
    empty.mkdir()
    (empty / "a.pdf").write_text("x", encoding="utf-8")

    with pytest.raises(ConfigError, match="only-pdfs"):
        open_directory_corpus(empty, tmp_path / "cache")


@pytest.mark.usefixtures("fresh_sources")
def test_open_source_shares_one_corpus_per_setting(
    pydoc_cache: Path, folder: Path
) -> None:
    pydoc_settings = ScoutSettings(cache_dir=pydoc_cache, corpus_dir=None)
    folder_settings = ScoutSettings(cache_dir=pydoc_cache, corpus_dir=folder)

    first = open_source(pydoc_settings)
    second = open_source(ScoutSettings(cache_dir=pydoc_cache, corpus_dir=None))
    from_folder = open_source(folder_settings)

    assert first is second
    assert first.name == "local:pydoc"
    assert from_folder.name == "local:dir"


@pytest.mark.usefixtures("fresh_sources")
def test_scout_corpus_dir_variable_replaces_the_bundled_reference(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCOUT_CORPUS_DIR", str(folder))
    monkeypatch.setenv("SCOUT_CACHE_DIR", str(tmp_path / "cache"))

    source = open_source(ScoutSettings())

    assert source.name == "local:dir"
    hits = source.search("lighthouses", limit=3)
    assert hits[0]["url"] == (folder / "nested" / "deep.htm").resolve().as_uri()
    assert list((tmp_path / "cache").glob("dir-*.sqlite"))


@pytest.mark.usefixtures("fresh_sources")
@pytest.mark.parametrize("kind", ["web", "snapshot"])
def test_sources_not_built_yet_are_a_config_error(kind: str, tmp_path: Path) -> None:
    settings = ScoutSettings.model_validate({"cache_dir": tmp_path, "sources": kind})

    with pytest.raises(ConfigError, match=f"SCOUT_SOURCES={kind}"):
        open_source(settings)


@pytest.mark.usefixtures("fresh_sources")
def test_open_source_reports_a_missing_corpus_dir(tmp_path: Path) -> None:
    settings = ScoutSettings(cache_dir=tmp_path, corpus_dir=tmp_path / "gone")

    with pytest.raises(ConfigError, match="gone"):
        open_source(settings)

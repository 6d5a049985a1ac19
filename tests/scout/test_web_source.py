"""The web source against a local web: extraction, fetch guards, search APIs,
and a whole research run that cites local pages and skips the bad ones."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scout.agent import make_context, run_question
from scout.config import DEFAULT_USER_AGENT, ScoutSettings
from scout.errors import ConfigError, SourceError
from scout.sources import forget_opened_sources, open_source
from scout.sources.base import content_hash
from scout.sources.web import (
    PageFetcher,
    SearxngSearch,
    TavilySearch,
    WebSource,
    extract_main_text,
)
from tests.fakes.web_server import FOOTER, FakeWeb

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 0.5
CAP = 100_000
QUESTION = "What did lighthouse keepers do before automation?"


@pytest.fixture(scope="module")
def web() -> Iterator[FakeWeb]:
    with FakeWeb(slow_seconds=10) as server:
        yield server


@pytest.fixture
def fetcher() -> Iterator[PageFetcher]:
    fetcher = PageFetcher(timeout=TIMEOUT, max_bytes=CAP, user_agent=DEFAULT_USER_AGENT)
    yield fetcher
    fetcher.close()


@pytest.fixture(autouse=True)
def no_tavily_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A developer's own TAVILY_API_KEY must not reach these tests."""
    monkeypatch.delenv("TAVILY_API_KEY", raising=False)
    forget_opened_sources()
    yield
    forget_opened_sources()


def web_settings(web: FakeWeb, **overrides: object) -> ScoutSettings:
    values: dict[str, object] = {
        "sources": "web",
        "searxng_url": web.base_url,
        "fetch_timeout": TIMEOUT,
        "max_page_bytes": CAP,
        "backend": "offline",
    }
    return ScoutSettings.model_validate(values | overrides)


# Extraction


def test_extraction_keeps_the_article_and_drops_the_navigation_and_footer(
    web: FakeWeb, fetcher: PageFetcher
) -> None:
    page = fetcher.fetch(web.article_url("keepers"))

    assert page.ok
    assert page.title == "Lighthouse keepers of the north coast"
    assert "each keeper trimmed the wick at dusk" in page.text
    assert "replaced the last lighthouse keeper at Kettle Point" in page.text
    for boilerplate in ("Shipping forecast", "Newsletter sign-up", FOOTER[:30]):
        assert boilerplate not in page.text
    assert "Regatta cancelled" not in page.text
    assert page.content_hash == content_hash(page.text)


def test_extracted_paragraphs_are_blocks_separated_by_a_blank_line(
    web: FakeWeb, fetcher: PageFetcher
) -> None:
    text = fetcher.fetch(web.article_url("fog-signals")).text

    blocks = text.split("\n\n")
    assert any(block.startswith("When fog hid the lighthouse beam") for block in blocks)
    assert all("\n" not in block for block in blocks)


def test_boilerplate_share_is_high_for_a_wrapped_page_and_near_zero_for_a_bare_one(
    web: FakeWeb, fetcher: PageFetcher
) -> None:
    wrapped = fetcher.fetch(web.article_url("keepers"))
    paragraphs = " ".join(f"<p>{text}</p>" for text in ("A" * 300, "B" * 300))
    bare = extract_main_text(
        f"<html><body><article>{paragraphs}</article></body></html>"
    )

    assert wrapped.boilerplate_share is not None
    assert 0.25 < wrapped.boilerplate_share < 0.9
    assert bare is not None
    assert bare.boilerplate_share < 0.05


def test_a_page_with_no_more_than_a_menu_has_no_main_text() -> None:
    assert (
        extract_main_text("<html><body><nav><a href='/'>Home</a></nav></body></html>")
        is None
    )


# Fetch guards


def test_a_redirect_is_followed_and_the_final_url_kept(
    web: FakeWeb, fetcher: PageFetcher
) -> None:
    page = fetcher.fetch(web.url("/moved"))

    assert page.ok
    assert page.final_url == web.article_url("lenses")
    assert "Fresnel lens bends the light" in page.text
    # The page Scout reads keeps the URL its search returned.
    read = page.as_page()
    assert read["url"] == web.url("/moved")
    assert dict(read)["final_url"] == web.article_url("lenses")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/gone", r"^HTTP 404 Not Found$"),
        ("/broken", r"^HTTP 500"),
        ("/slow.html", rf"^timed out after {TIMEOUT:g} s$"),
        ("/huge.html", rf"larger than the {CAP}-byte cap .*stopped reading"),
        ("/huge-declared.html", r"bytes declared$"),
        ("/paper.pdf", r"^not HTML \(application/pdf\)$"),
        ("/mislabelled", r"^binary content"),
    ],
)
def test_a_bad_page_is_skipped_with_its_reason(
    web: FakeWeb, fetcher: PageFetcher, path: str, reason: str
) -> None:
    page = fetcher.fetch(web.url(path))

    assert page.status == "skipped"
    assert page.reason is not None
    assert page.text == ""
    assert page.content_hash is None
    assert re.search(reason, page.reason), page.reason
    with pytest.raises(SourceError, match="skipped"):
        page.as_page()


def test_a_skipped_page_keeps_its_status_and_content_type(
    web: FakeWeb, fetcher: PageFetcher
) -> None:
    pdf = fetcher.fetch(web.url("/paper.pdf"))
    gone = fetcher.fetch(web.url("/gone"))

    assert (pdf.http_status, pdf.content_type) == (200, "application/pdf")
    assert gone.http_status == 404
    assert gone.final_url == web.url("/gone")


def test_only_http_urls_are_fetched(fetcher: PageFetcher) -> None:
    page = fetcher.fetch("file:///etc/passwd")

    assert page.status == "skipped"
    assert "unsupported URL scheme 'file'" in (page.reason or "")


def test_every_request_names_the_project_in_its_user_agent(web: FakeWeb) -> None:
    source = open_source(web_settings(web))
    source.search("lighthouse", 2)
    source.fetch(web.article_url("lenses"))

    agents = {request.headers.get("User-Agent") for request in web.requests}
    assert agents == {DEFAULT_USER_AGENT}
    assert "scout-monitor" in DEFAULT_USER_AGENT


# Search APIs


def test_searxng_hits_come_ranked_from_its_json_api(web: FakeWeb) -> None:
    search = SearxngSearch(web.base_url, timeout=2, user_agent="test")

    hits = search.search("fresnel lens prisms", 3)

    assert hits[0]["url"] == web.article_url("lenses")
    assert hits[0]["title"] == "The Fresnel lens and the lighthouse beam"
    assert len(hits) <= 3
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)


def test_searxng_url_may_name_the_search_endpoint_itself(web: FakeWeb) -> None:
    with_path = SearxngSearch(web.url("/search/"), timeout=2, user_agent="test")

    assert with_path.endpoint == web.url("/search")
    assert with_path.search("fog signal", 1)[0]["url"] == web.article_url("fog-signals")


def test_searxng_busy_answers_are_retried(web: FakeWeb) -> None:
    search = SearxngSearch(web.base_url, timeout=2, user_agent="t", retry_wait=0.01)
    web.fail_searches = 2

    hits = search.search("fresnel", 1)

    assert hits and web.fail_searches == 0


def test_a_search_api_that_keeps_failing_is_a_source_error(web: FakeWeb) -> None:
    search = SearxngSearch(web.base_url, timeout=2, user_agent="t", retry_wait=0.01)
    web.fail_searches = 5
    try:
        with pytest.raises(SourceError, match=r"searxng search .* failed: HTTP 503"):
            search.search("fresnel", 1)
    finally:
        web.fail_searches = 0


def test_tavily_hits_come_from_its_api_with_the_key_as_a_bearer_token(
    web: FakeWeb,
) -> None:
    search = TavilySearch(
        web.tavily_key, web.url("/tavily/search"), timeout=2, user_agent="t"
    )

    hits = search.search("fresnel lens", 2)

    assert [hit["url"] for hit in hits][:1] == [web.article_url("lenses")]
    assert len(hits) == 2
    sent = [r for r in web.requests if r.path == "/tavily/search"][-1]
    assert sent.headers["Authorization"] == f"Bearer {web.tavily_key}"


def test_a_rejected_tavily_key_never_shows_in_errors_or_logs(
    web: FakeWeb, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tvly-do-not-print-me"
    search = TavilySearch(secret, web.url("/tavily/search"), timeout=2, user_agent="t")
    caplog.set_level(logging.DEBUG)

    with pytest.raises(SourceError, match="HTTP 401") as raised:
        search.search("lighthouse", 2)

    assert secret not in str(raised.value)
    assert secret not in repr(search)
    assert secret not in caplog.text


def test_tavily_key_is_read_from_TAVILY_API_KEY(
    web: FakeWeb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAVILY_API_KEY", web.tavily_key)
    monkeypatch.setenv("SCOUT_SOURCES", "web")
    monkeypatch.setenv("SCOUT_TAVILY_URL", web.url("/tavily/search"))

    source = open_source(ScoutSettings())

    assert source.name == "web:tavily"
    assert source.search("keepers", 1)[0]["url"].startswith(web.base_url)


def test_web_without_a_search_api_is_a_config_error_naming_both(
    tmp_path: Path,
) -> None:
    settings = ScoutSettings.model_validate({"sources": "web", "cache_dir": tmp_path})

    with pytest.raises(ConfigError, match=r"SCOUT_SEARXNG_URL.*TAVILY_API_KEY"):
        open_source(settings)


def test_the_web_source_is_opened_once_per_process(web: FakeWeb) -> None:
    first = open_source(web_settings(web))

    assert isinstance(first, WebSource)
    assert open_source(web_settings(web)) is first
    assert first.name == "web:searxng"
    assert first.fingerprint == f"web:searxng@{web.base_url.split('//')[1]}"


# A whole research run


def test_research_on_the_web_cites_local_pages_and_skips_bad_ones(
    web: FakeWeb,
) -> None:
    settings = web_settings(web, max_pages=8)
    context = make_context(settings, auto_approve=True)

    run = run_question(QUESTION, thread_id="web-1", context=context, settings=settings)

    assert run.status == "completed"
    cited = {source["url"] for source in run.sources}
    assert web.article_url("keepers") in cited
    assert cited <= {web.article_url(slug) for slug in web.articles} | {
        web.url("/moved")
    }
    assert web.article_url("keepers") in run.report
    skipped = {item["url"]: item["reason"] for item in run.state["skipped"]}
    assert skipped, "the searches found bad pages; the reader should skip them"
    for url, reason in skipped.items():
        assert url.startswith(web.base_url)
        assert "skipped" in reason


def test_python_m_scout_prints_a_report_citing_the_local_pages(
    web: FakeWeb, tmp_path: Path
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SCOUT_", "MONITOR_", "LANGFUSE_"))
        and key not in ("NVIDIA_API_KEY", "TAVILY_API_KEY")
    }
    env |= {
        "SCOUT_SOURCES": "web",
        "SCOUT_SEARXNG_URL": web.base_url,
        "SCOUT_FETCH_TIMEOUT": str(TIMEOUT),
        "SCOUT_CACHE_DIR": str(tmp_path / "cache"),
        "SCOUT_USAGE_LOG": str(tmp_path / "usage.jsonl"),
        "PYTHONPATH": str(REPO_ROOT),
    }

    done = subprocess.run(
        [sys.executable, "-m", "scout", QUESTION],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "## Sources" in done.stdout
    assert web.article_url("keepers") in done.stdout
    assert "trimmed the wick" in done.stdout

"""Source snapshots: taking them from a local web, replaying them with no
network, source drift per question, and live passes against snapshot passes."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from monitor.cli import main as monitor_main
from monitor.golden import load_golden
from monitor.snapshots import (
    compare_live_vs_snapshot,
    last_pass_urls,
    snapshot_urls,
    source_drift,
    source_kind,
    take_snapshot,
)
from monitor.store.db import make_engine, session_factory, upgrade_database
from monitor.store.models import PageText, Result, Run, Score, SnapshotPage
from scout.config import ScoutSettings, get_settings
from scout.errors import ConfigError, SourceError
from scout.sources import forget_opened_sources, open_source
from scout.sources.base import content_hash
from scout.sources.snapshot import SnapshotSource
from scout.sources.web import PageFetcher
from tests.fakes.web_server import FakeWeb, golden_toml

TIMEOUT = 0.5
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@pytest.fixture
def web() -> Iterator[FakeWeb]:
    with FakeWeb(slow_seconds=10) as server:
        yield server


@pytest.fixture
def fetcher() -> Iterator[PageFetcher]:
    fetcher = PageFetcher(timeout=TIMEOUT, max_bytes=100_000, user_agent="test")
    yield fetcher
    fetcher.close()


@pytest.fixture
def engine(migrated_db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The results database, also the one a snapshot source reads."""
    monkeypatch.setenv("MONITOR_DATABASE_URL", migrated_db_url)
    forget_opened_sources()
    engine = make_engine(migrated_db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def sqlite_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite results database under MONITOR_HOME: no socket needed to read it."""
    home = tmp_path / "monitor-home"
    monkeypatch.setenv("MONITOR_HOME", str(home))
    upgrade_database(f"sqlite:///{home / 'monitor.db'}")
    forget_opened_sources()
    return home


def block_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """From now on every attempt to open a connection fails and is recorded."""
    attempts: list[object] = []

    def refuse(address: object) -> OSError:
        attempts.append(address)
        return OSError(f"network is off in this test (tried {address!r})")

    def connect(self: socket.socket, address: object) -> None:
        raise refuse(address)

    def create_connection(address: object, *args: Any, **kwargs: Any) -> Any:
        raise refuse(address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return attempts


def snapshot_settings(tmp_path: Path, **values: object) -> ScoutSettings:
    return ScoutSettings.model_validate(
        {"sources": "snapshot", "cache_dir": tmp_path / "cache"} | values
    )


# Stored passes, written directly: what a pass leaves behind


def add_pass(
    sessions: sessionmaker[Session],
    run_id: str,
    minutes: int,
    *,
    backend: str = "web:searxng",
    score: float | None = 0.8,
    sources: dict[str, list[dict[str, Any]]] | None = None,
    prompt_version: str = "v1",
    status: str = "completed",
) -> None:
    """A pass started ``minutes`` after T0, each question scored ``score``."""
    sources = sources if sources is not None else {"q1": [], "q2": []}
    with sessions.begin() as session:
        session.add(
            Run(
                id=run_id,
                kind="scheduled",
                status=status,
                started_at=T0 + timedelta(minutes=minutes),
                finished_at=T0 + timedelta(minutes=minutes + 1),
                prompt_version=prompt_version,
                model="offline/extractive-1",
                git_sha="abc",
                golden_hash="g",
                corpus_fingerprint="f",
                sources_backend=backend,
                judge_model="offline",
                judge_version="j1",
                threshold=0.7,
                score=score,
            )
        )
        session.flush()
        for question, refs in sources.items():
            result = Result(
                run_id=run_id,
                question_id=question,
                question=f"{question}?",
                status="completed",
                sources=refs,
                finished_at=T0 + timedelta(minutes=minutes + 1),
            )
            session.add(result)
            session.flush()
            if score is not None:
                session.add(
                    Score(
                        run_id=run_id,
                        result_id=result.id,
                        metric="grounding",
                        value=score * 5,
                        judge_model="offline",
                        judge_version="j1",
                    )
                )


def ref(url: str, text: str, **extra: object) -> dict[str, Any]:
    return {"url": url, "title": url, "content_hash": content_hash(text)} | extra


# Taking a snapshot


def test_a_snapshot_stores_page_texts_by_hash_and_every_url_with_its_reason(
    web: FakeWeb, fetcher: PageFetcher, sessions: sessionmaker[Session]
) -> None:
    urls = [web.article_url("keepers"), web.url("/moved"), web.url("/gone")]
    urls += [web.url("/slow.html"), web.url("/huge.html"), web.url("/paper.pdf")]

    taken = take_snapshot(sessions, urls, fetcher.fetch, note="before deploy")

    assert (taken.stored, taken.skipped) == (2, 4)
    with sessions() as session:
        rows = session.scalars(
            select(SnapshotPage).where(SnapshotPage.snapshot_id == taken.snapshot_id)
        ).all()
        by_url = {row.url: row for row in rows}
        texts = {p.content_hash: p for p in session.scalars(select(PageText))}

    assert list(by_url) == urls
    keepers = by_url[web.article_url("keepers")]
    assert keepers.status == "ok" and keepers.http_status == 200
    assert keepers.content_hash in texts
    assert "trimmed the wick" in texts[keepers.content_hash].text
    assert keepers.boilerplate_share is not None and keepers.boilerplate_share > 0.25
    assert by_url[web.url("/moved")].final_url == web.article_url("lenses")
    reasons = {url: row.reason for url, row in by_url.items() if row.status != "ok"}
    assert reasons == {
        web.url("/gone"): "HTTP 404 Not Found",
        web.url("/slow.html"): f"timed out after {TIMEOUT:g} s",
        web.url("/huge.html"): reasons[web.url("/huge.html")],
        web.url("/paper.pdf"): "not HTML (application/pdf)",
    }
    assert "cap" in (reasons[web.url("/huge.html")] or "")


def test_snapshot_urls_are_the_golden_references_then_the_last_pass_pages(
    sessions: sessionmaker[Session], tmp_path: Path, web: FakeWeb
) -> None:
    golden = tmp_path / "golden.toml"
    golden.write_text(golden_toml(web), encoding="utf-8")
    questions = load_golden(golden).subset(1)
    add_pass(sessions, "old", 0, sources={"q1": [ref("http://x/old", "o")]})
    add_pass(
        sessions,
        "new",
        10,
        sources={
            "q1": [ref(web.article_url("keepers"), "k"), ref("http://x/a", "a")],
            "q2": [ref("http://x/b", "b")],
        },
    )
    add_pass(sessions, "failed", 20, status="failed", sources={"q1": []})

    with sessions() as session:
        urls = snapshot_urls(session, questions, extra=["http://x/extra"])
        without = snapshot_urls(session, questions, last_pass_pages=False)
        assert last_pass_urls(session)[1:] == ["http://x/a", "http://x/b"]

    references = list(questions[0].reference_urls)
    assert urls == [*references, "http://x/a", "http://x/b", "http://x/extra"]
    assert without == references


def test_snapshot_of_nothing_says_how_to_give_urls(
    sessions: sessionmaker[Session], fetcher: PageFetcher
) -> None:
    from monitor.errors import MonitorError

    with pytest.raises(MonitorError, match="--url"):
        take_snapshot(sessions, [], fetcher.fetch)


# Replaying a snapshot


def test_a_snapshot_replay_reads_no_network(
    web: FakeWeb,
    fetcher: PageFetcher,
    sqlite_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = make_engine(f"sqlite:///{sqlite_home / 'monitor.db'}")
    urls = [web.article_url(slug) for slug in ("keepers", "lenses", "fog-signals")]
    taken = take_snapshot(
        session_factory(engine), [*urls, web.url("/gone")], fetcher.fetch
    )
    engine.dispose()
    web.stop()
    attempts = block_network(monkeypatch)

    source = open_source(snapshot_settings(tmp_path))
    hits = source.search("fresnel lens prisms", 2)
    page = source.fetch(web.article_url("lenses"))

    assert isinstance(source, SnapshotSource)
    assert source.name == f"snapshot:{taken.snapshot_id}"
    assert hits[0]["url"] == web.article_url("lenses")
    lenses = next(p for p in taken.pages if p.url == web.article_url("lenses"))
    assert (page["text"], page["content_hash"]) == (lenses.text, lenses.content_hash)
    with pytest.raises(SourceError, match=r"HTTP 404.*snapshot"):
        source.fetch(web.url("/gone"))
    assert attempts == []


def test_replay_takes_the_newest_snapshot_with_pages_or_the_one_named(
    web: FakeWeb,
    fetcher: PageFetcher,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    first = take_snapshot(sessions, [web.article_url("keepers")], fetcher.fetch)
    web.set_article("keepers", "Keepers, revised", ["The keepers are gone now. " * 8])
    second = take_snapshot(sessions, [web.article_url("keepers")], fetcher.fetch)
    take_snapshot(sessions, [web.url("/gone")], fetcher.fetch)  # holds no page

    newest = open_source(snapshot_settings(tmp_path))
    named = open_source(snapshot_settings(tmp_path, snapshot_id=first.snapshot_id))

    assert newest.name == f"snapshot:{second.snapshot_id}"
    assert "gone now" in newest.fetch(web.article_url("keepers"))["text"]
    assert "trimmed the wick" in named.fetch(web.article_url("keepers"))["text"]
    assert newest.fingerprint != named.fingerprint


def test_replay_without_any_snapshot_says_how_to_take_one(
    engine: Engine, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="monitor sources snapshot"):
        open_source(snapshot_settings(tmp_path))


def test_replay_of_an_unknown_snapshot_id_is_a_config_error(
    engine: Engine, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="SCOUT_SNAPSHOT_ID=42"):
        open_source(snapshot_settings(tmp_path, snapshot_id=42))


def test_replay_without_a_results_database_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SCOUT_SOURCES=snapshot.*monitor run"):
        open_source(snapshot_settings(tmp_path))


# The commands, end to end


def run_monitor(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        monitor_main(argv)
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out + captured.err


def test_snapshot_then_a_pass_replayed_with_the_server_stopped(
    web: FakeWeb,
    sqlite_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    golden = tmp_path / "golden.toml"
    golden.write_text(golden_toml(web), encoding="utf-8")
    monkeypatch.setenv("MONITOR_SUBSET_SIZE", "1")
    monkeypatch.setenv("SCOUT_FETCH_TIMEOUT", str(TIMEOUT))

    code, out = run_monitor(
        ["sources", "snapshot", "--golden", str(golden), "--url", web.url("/gone")],
        capsys,
    )
    assert code == 0, out
    assert "snapshot 1: 2 pages stored, 1 skipped" in out

    web.stop()
    attempts = block_network(monkeypatch)
    monkeypatch.setenv("SCOUT_SOURCES", "snapshot")
    get_settings.cache_clear()
    code, out = run_monitor(["run", "--once", "--golden", str(golden)], capsys)

    assert code in (0, 2), out
    engine = make_engine(f"sqlite:///{sqlite_home / 'monitor.db'}")
    with session_factory(engine)() as session:
        run = session.scalars(select(Run)).one()
        result = session.scalars(select(Result)).one()
    engine.dispose()
    assert (run.status, run.sources_backend) == ("completed", "snapshot:1")
    assert result.status == "completed"
    read = {source["url"] for source in result.sources or []}
    assert web.article_url("keepers") in read
    assert attempts == []


def test_snapshot_command_fails_when_no_url_could_be_fetched(
    web: FakeWeb, sqlite_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_monitor(
        [
            "sources",
            "snapshot",
            "--no-golden-urls",
            "--url",
            web.url("/gone"),
            "--url",
            web.url("/paper.pdf"),
        ],
        capsys,
    )

    assert code == 1
    assert "HTTP 404" in out and "not HTML" in out
    assert "holds no page" in out


def test_snapshot_command_json_lists_every_url(
    web: FakeWeb, sqlite_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sources", "snapshot", "--no-golden-urls", "--json"]
    argv += ["--url", web.article_url("lenses"), "--url", web.url("/gone")]

    code, out = run_monitor(argv, capsys)

    payload = json.loads(out)
    assert code == 0
    assert [page["status"] for page in payload["pages"]] == ["ok", "skipped"]
    assert payload["pages"][1]["reason"] == "HTTP 404 Not Found"
    assert payload["pages"][0]["boilerplate_share"] > 0


# Source drift


def test_source_drift_counts_sources_whose_hash_changed_since_the_last_pass(
    sessions: sessionmaker[Session],
) -> None:
    add_pass(
        sessions,
        "base",
        0,
        sources={"q1": [ref("http://a", "a1"), ref("http://b", "b1")], "q2": []},
    )
    add_pass(
        sessions,
        "other-version",
        5,
        prompt_version="v0",
        sources={"q1": [ref("http://a", "zzz")]},
    )
    add_pass(
        sessions,
        "now",
        10,
        sources={
            "q1": [ref("http://a", "a2"), ref("http://b", "b1"), ref("http://c", "c")],
            "q2": [ref("http://b", "b2")],
        },
    )

    with sessions() as session:
        drift = source_drift(session, session.get_one(Run, "now"))

    assert drift["q1"] == {
        "baseline_run_id": "base",
        "sources": 3,
        "compared": 2,
        "changed": 1,
        "changed_urls": ["http://a"],
        "new": 1,
        "boilerplate_share": None,
        "boilerplate_measured": 0,
    }
    # A page another question read in the baseline counts for this one too.
    assert (drift["q2"]["compared"], drift["q2"]["changed"]) == (1, 1)


def test_source_drift_against_a_given_baseline_and_with_no_baseline(
    sessions: sessionmaker[Session],
) -> None:
    add_pass(sessions, "first", 0, sources={"q1": [ref("http://a", "a1")]})
    add_pass(sessions, "second", 5, sources={"q1": [ref("http://a", "a2")]})
    add_pass(sessions, "third", 10, sources={"q1": [ref("http://a", "a1")]})

    with sessions() as session:
        against_first = source_drift(
            session, session.get_one(Run, "third"), session.get_one(Run, "first")
        )
        against_previous = source_drift(session, session.get_one(Run, "third"))
        of_first = source_drift(session, session.get_one(Run, "first"))

    assert against_first["q1"]["changed"] == 0
    assert against_previous["q1"]["changed"] == 1
    assert against_previous["q1"]["baseline_run_id"] == "second"
    assert of_first["q1"]["baseline_run_id"] is None
    assert (of_first["q1"]["compared"], of_first["q1"]["new"]) == (0, 1)


def test_boilerplate_share_comes_from_the_source_record_or_the_snapshot(
    web: FakeWeb, fetcher: PageFetcher, sessions: sessionmaker[Session]
) -> None:
    taken = take_snapshot(sessions, [web.article_url("keepers")], fetcher.fetch)
    keepers = taken.pages[0]
    snapshot_ref = {
        "url": keepers.url,
        "title": keepers.title,
        "content_hash": keepers.content_hash,
    }
    add_pass(sessions, "from-snapshot", 0, sources={"q1": [snapshot_ref]})
    add_pass(
        sessions,
        "from-record",
        5,
        prompt_version="v2",
        sources={"q1": [ref("http://a", "a", boilerplate_share=0.2)]},
    )

    with sessions() as session:
        by_snapshot = source_drift(session, session.get_one(Run, "from-snapshot"))
        by_record = source_drift(session, session.get_one(Run, "from-record"))

    assert by_snapshot["q1"]["boilerplate_share"] == pytest.approx(
        keepers.boilerplate_share, abs=1e-4
    )
    assert by_record["q1"]["boilerplate_share"] == 0.2


# Live passes against snapshot passes


@pytest.mark.parametrize(
    ("live", "snapshot", "verdict"),
    [
        ((0.9, 0.6), (0.9, 0.9), "sources"),
        ((0.9, 0.6), (0.9, 0.6), "agent"),
        ((0.9, 0.9), (0.9, 0.6), "agent"),
        ((0.9, 0.88), (0.9, 0.9), "none"),
    ],
)
def test_live_dropping_while_the_snapshot_holds_means_the_sources_drifted(
    sessions: sessionmaker[Session],
    live: tuple[float, float],
    snapshot: tuple[float, float],
    verdict: str,
) -> None:
    minutes = 0
    for phase in (0, 1):
        for n in range(2):
            minutes += 1
            add_pass(sessions, f"live-{phase}{n}", minutes, score=live[phase])
            add_pass(
                sessions,
                f"snap-{phase}{n}",
                minutes,
                backend="snapshot:1",
                score=snapshot[phase],
            )
    add_pass(sessions, "local", minutes + 1, backend="local:pydoc", score=0.1)

    with sessions() as session:
        comparison = compare_live_vs_snapshot(session, window=2)

    assert comparison.verdict == verdict, comparison.explanation
    assert comparison.live.recent_runs == ["live-11", "live-10"]
    assert comparison.live.baseline_runs == ["live-01", "live-00"]
    assert comparison.live.delta == pytest.approx(live[1] - live[0])
    assert comparison.per_question["q1"]["snapshot"] == pytest.approx(
        snapshot[1] - snapshot[0]
    )
    assert json.dumps(comparison.as_dict())


def test_without_snapshot_passes_the_comparison_says_how_to_get_them(
    sessions: sessionmaker[Session],
) -> None:
    for n, score in enumerate((0.9, 0.9, 0.5, 0.5)):
        add_pass(sessions, f"live-{n}", n, score=score)

    with sessions() as session:
        comparison = compare_live_vs_snapshot(session, window=2)

    assert comparison.verdict == "unknown"
    assert "SCOUT_SOURCES=snapshot" in comparison.explanation
    assert comparison.live.dropped(comparison.margin) is True


def test_live_and_snapshot_passes_compared_between_two_versions(
    sessions: sessionmaker[Session],
) -> None:
    add_pass(sessions, "live-v1", 0, score=0.9, prompt_version="v1")
    add_pass(sessions, "snap-v1", 1, score=0.9, backend="snapshot:2")
    add_pass(sessions, "live-v2", 2, score=0.5, prompt_version="v2")
    add_pass(
        sessions, "snap-v2", 3, score=0.5, backend="snapshot:2", prompt_version="v2"
    )
    add_pass(sessions, "live-v3", 4, score=0.1, prompt_version="v3")

    with sessions() as session:
        comparison = compare_live_vs_snapshot(session, old="v1", new="v2")

    assert comparison.verdict == "agent"
    assert comparison.live.recent_runs == ["live-v2"]
    assert comparison.snapshot.baseline_runs == ["snap-v1"]


def test_source_kinds_follow_the_recorded_backend() -> None:
    assert source_kind("web:searxng") == "live"
    assert source_kind("web:tavily") == "live"
    assert source_kind("snapshot:3") == "snapshot"
    assert source_kind("local:pydoc") == "local"

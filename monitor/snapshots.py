"""Source snapshots, source drift, and live passes against snapshot passes.

An agent's score can fall because the pages it reads changed or because the
agent did (model, prompt, code). Three tools tell them apart:

- A **snapshot** freezes pages: the reference URLs of the golden subset and the
  pages the last pass read are fetched and their extracted text stored (the
  ``pages`` table, once per content hash) with one ``snapshot_pages`` row per
  URL, fetched or skipped with its reason. ``SCOUT_SOURCES=snapshot`` then
  replays passes on those pages only (``scout.sources.snapshot``).
- **Source drift** counts, per question of a run, how many of the sources it
  read have a content hash different from the one the baseline run read at
  the same URL, and how much of those pages was boilerplate.
- **Live against snapshot**: when live passes drop and snapshot passes hold,
  the sources drifted; when both drop, the model or the prompt did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from statistics import fmean
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from monitor.errors import MonitorError, NotFoundError
from monitor.golden import GoldenQuestion
from monitor.store.models import (
    Result,
    Run,
    Score,
    Snapshot,
    SnapshotPage,
    utcnow,
)
from monitor.store.writes import store_pages
from scout.sources.web import FetchedPage

logger = logging.getLogger(__name__)

SNAPSHOT_WORKERS = 4
DEFAULT_WINDOW = 3
DEFAULT_MARGIN = 0.05
VERSION_KEYS = ("prompt_version", "model", "git_sha")

Fetch = Callable[[str], FetchedPage]
SourceKind = Literal["live", "snapshot", "local"]


# Which pages a snapshot holds


def last_pass(session: Session) -> Run | None:
    """The newest completed pass (rescores left out)."""
    return session.scalars(
        select(Run)
        .where(Run.status == "completed", Run.kind != "rescore")
        .order_by(Run.started_at.desc(), Run.id.desc())
        .limit(1)
    ).first()


def last_pass_urls(session: Session) -> list[str]:
    """The URLs of the pages the newest completed pass read, in order."""
    run = last_pass(session)
    if run is None:
        return []

    urls: list[str] = []
    for result in _graded_results(session, run):
        urls += [ref["url"] for ref in _source_refs(result.sources)]
    return _unique(urls)


def snapshot_urls(
    session: Session,
    questions: Sequence[GoldenQuestion],
    *,
    last_pass_pages: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    """The reference URLs of ``questions``, then the pages of the last pass,
    then ``extra``; each once, in that order."""
    urls = [url for question in questions for url in question.reference_urls]
    if last_pass_pages:
        urls += last_pass_urls(session)
    return _unique([*urls, *extra])


# Taking a snapshot


@dataclass(frozen=True)
class SnapshotTaken:
    """A stored snapshot and every fetch it made."""

    snapshot_id: int
    created_at: datetime
    pages: list[FetchedPage]

    @property
    def stored(self) -> int:
        return sum(page.ok for page in self.pages)

    @property
    def skipped(self) -> int:
        return len(self.pages) - self.stored


def fetch_all(
    urls: Sequence[str], fetch: Fetch, workers: int = SNAPSHOT_WORKERS
) -> list[FetchedPage]:
    """Fetch every URL, ``workers`` at a time; results in the order of ``urls``."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(fetch, urls))


def take_snapshot(
    sessions: sessionmaker[Session],
    urls: Sequence[str],
    fetch: Fetch,
    *,
    note: str | None = None,
    workers: int = SNAPSHOT_WORKERS,
) -> SnapshotTaken:
    """Fetch ``urls`` and store them as a new snapshot, skipped ones included
    with their reason (a snapshot is a record of what the web said then)."""
    if not urls:
        raise MonitorError(
            "no URL to snapshot: the golden subset has no reference_urls and no "
            "pass has read a page yet; give URLs with --url"
        )

    logger.info("snapshot: fetching %d URLs", len(urls))
    pages = fetch_all(_unique(urls), fetch, workers)
    snapshot_id, created_at = store_snapshot(sessions, pages, note)
    taken = SnapshotTaken(snapshot_id, created_at, pages)
    logger.info(
        "snapshot %d stored: %d pages, %d skipped",
        snapshot_id,
        taken.stored,
        taken.skipped,
    )
    return taken


def store_snapshot(
    sessions: sessionmaker[Session],
    pages: Sequence[FetchedPage],
    note: str | None = None,
) -> tuple[int, datetime]:
    """One transaction: the snapshot row, page texts by hash, one row per URL."""
    with sessions.begin() as session:
        snapshot = Snapshot(created_at=utcnow(), note=note)
        session.add(snapshot)
        store_pages(session, [page.as_page() for page in pages if page.ok])
        session.flush()
        session.add_all(_snapshot_page(snapshot.id, page) for page in pages)
        stored = snapshot.id, snapshot.created_at
    return stored


def _snapshot_page(snapshot_id: int, page: FetchedPage) -> SnapshotPage:
    return SnapshotPage(
        snapshot_id=snapshot_id,
        url=page.url,
        final_url=page.final_url,
        status=page.status,
        reason=page.reason,
        http_status=page.http_status,
        content_type=(page.content_type or "")[:200] or None,
        content_hash=page.content_hash,
        boilerplate_share=page.boilerplate_share,
        fetched_at=page.fetched_at,
    )


# Source drift


def source_drift(
    session: Session,
    run: Run,
    baseline: Run | None = None,
    *,
    version_key: str = "prompt_version",
) -> dict[str, dict[str, Any]]:
    """Per question of ``run``: how many of its sources changed content hash
    since the baseline, and their mean boilerplate share.

    The baseline is ``baseline`` when given, else the previous completed pass
    of the same version (``version_key``). A URL is compared when the baseline
    read it too, for any of its questions. ``boilerplate_share`` is the mean
    over the ``boilerplate_measured`` sources whose share is known: from the
    source record when the run kept it, else from the newest snapshot that
    fetched the same content; ``None`` when no source's share is known.
    """
    base = (
        baseline if baseline is not None else previous_pass(session, run, version_key)
    )
    results = _graded_results(session, run)
    before = _hashes_by_url(_graded_results(session, base)) if base else {}
    shares = _snapshot_shares(
        session,
        [ref["content_hash"] for r in results for ref in _source_refs(r.sources)],
    )

    drift: dict[str, dict[str, Any]] = {}
    for result in results:
        refs = _source_refs(result.sources)
        compared = [ref for ref in refs if ref["url"] in before]
        changed = [
            ref["url"] for ref in compared if before[ref["url"]] != ref["content_hash"]
        ]
        known = [s for s in (_share(ref, shares) for ref in refs) if s is not None]
        drift[result.question_id] = {
            "baseline_run_id": base.id if base else None,
            "sources": len(refs),
            "compared": len(compared),
            "changed": len(changed),
            "changed_urls": changed,
            "new": len(refs) - len(compared),
            "boilerplate_share": round(fmean(known), 4) if known else None,
            "boilerplate_measured": len(known),
        }
    return drift


def previous_pass(
    session: Session, run: Run, version_key: str = "prompt_version"
) -> Run | None:
    """The newest completed pass of the same version that started before
    ``run`` (before its parent, for a rescore)."""
    anchor = _pass_of(session, run)
    column = _version_column(version_key)
    return session.scalars(
        select(Run)
        .where(
            column == getattr(anchor, version_key),
            Run.status == "completed",
            Run.kind != "rescore",
            Run.started_at < anchor.started_at,
            Run.id != anchor.id,
        )
        .order_by(Run.started_at.desc(), Run.id.desc())
        .limit(1)
    ).first()


def _hashes_by_url(results: Iterable[Result]) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for result in results:
        for ref in _source_refs(result.sources):
            hashes.setdefault(ref["url"], ref["content_hash"])
    return hashes


def _snapshot_shares(session: Session, hashes: Sequence[str]) -> dict[str, float]:
    """Boilerplate share by content hash, from the newest snapshot fetch of it."""
    if not hashes:
        return {}

    rows = session.execute(
        select(SnapshotPage.content_hash, SnapshotPage.boilerplate_share)
        .where(
            SnapshotPage.content_hash.in_(set(hashes)),
            SnapshotPage.boilerplate_share.is_not(None),
        )
        .order_by(SnapshotPage.fetched_at, SnapshotPage.id)
    )
    return {
        text_hash: share
        for text_hash, share in rows
        if text_hash is not None and share is not None
    }


def _share(ref: dict[str, Any], shares: dict[str, float]) -> float | None:
    own = ref.get("boilerplate_share")
    if isinstance(own, int | float):
        return float(own)
    return shares.get(ref["content_hash"])


# Live passes against snapshot passes


def source_kind(backend: str) -> SourceKind:
    """``live`` for the web, ``snapshot`` for a replay, ``local`` otherwise."""
    if backend.startswith("snapshot"):
        return "snapshot"
    if backend.startswith("web"):
        return "live"
    return "local"


@dataclass(frozen=True)
class SideFigures:
    """One kind of pass (live or snapshot): its baseline and recent runs."""

    kind: SourceKind
    baseline_runs: list[str]
    recent_runs: list[str]
    baseline_score: float | None
    recent_score: float | None

    @property
    def delta(self) -> float | None:
        if self.baseline_score is None or self.recent_score is None:
            return None
        return round(self.recent_score - self.baseline_score, 4)

    def dropped(self, margin: float) -> bool | None:
        """True when the score fell by more than ``margin``; None without data."""
        return None if self.delta is None else self.delta < -margin

    def as_dict(self, margin: float) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "baseline_runs": self.baseline_runs,
            "recent_runs": self.recent_runs,
            "baseline_score": self.baseline_score,
            "recent_score": self.recent_score,
            "delta": self.delta,
            "dropped": self.dropped(margin),
        }


@dataclass(frozen=True)
class SourcesComparison:
    """Live against snapshot passes, and what their scores say.

    ``verdict`` is ``sources`` (live dropped, snapshot held), ``agent`` (the
    snapshot passes dropped: the model, prompt or code changed), ``none`` (no
    drop beyond the margin) or ``unknown`` (a kind of pass is missing).
    """

    live: SideFigures
    snapshot: SideFigures
    margin: float
    verdict: Literal["sources", "agent", "none", "unknown"]
    explanation: str
    per_question: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "explanation": self.explanation,
            "margin": self.margin,
            "live": self.live.as_dict(self.margin),
            "snapshot": self.snapshot.as_dict(self.margin),
            "per_question": self.per_question,
        }


def compare_live_vs_snapshot(
    session: Session,
    *,
    version_key: str = "prompt_version",
    old: str | None = None,
    new: str | None = None,
    window: int = DEFAULT_WINDOW,
    margin: float = DEFAULT_MARGIN,
) -> SourcesComparison:
    """Compare live passes (``sources_backend`` web:...) with snapshot passes
    (snapshot:...), each against its own baseline.

    With ``old`` and ``new`` the baseline of each kind is its newest ``window``
    passes of version ``old`` and the recent side those of ``new``; without
    them, the recent side is each kind's newest ``window`` passes and the
    baseline the ``window`` before. A drop is a fall in mean score larger than
    ``margin``. This is a difference of means over a few runs, with no
    interval: it says where to look, and `monitor compare` per version says
    whether a drop is beyond noise.
    """
    if (old is None) != (new is None):
        raise MonitorError("give both versions to compare, or neither")

    passes = _completed_passes(session)
    sides = {
        kind: _side(kind, passes, version_key, old, new, window)
        for kind in ("live", "snapshot")
    }
    live, snapshot = sides["live"], sides["snapshot"]
    verdict, explanation = _verdict(live, snapshot, margin)
    return SourcesComparison(
        live=live,
        snapshot=snapshot,
        margin=margin,
        verdict=verdict,
        explanation=explanation,
        per_question=_per_question(session, live, snapshot),
    )


def _completed_passes(session: Session) -> list[Run]:
    """Completed, scored passes on live or snapshot sources, newest first."""
    runs = session.scalars(
        select(Run)
        .where(Run.status == "completed", Run.kind != "rescore", Run.score.is_not(None))
        .order_by(Run.started_at.desc(), Run.id.desc())
    )
    return [run for run in runs if source_kind(run.sources_backend) != "local"]


def _side(
    kind: SourceKind,
    passes: Sequence[Run],
    version_key: str,
    old: str | None,
    new: str | None,
    window: int,
) -> SideFigures:
    mine = [run for run in passes if source_kind(run.sources_backend) == kind]
    if old is not None and new is not None:
        _version_column(version_key)
        before = [r for r in mine if getattr(r, version_key) == old][:window]
        recent = [r for r in mine if getattr(r, version_key) == new][:window]
    else:
        recent, before = mine[:window], mine[window : 2 * window]
    return SideFigures(
        kind=kind,
        baseline_runs=[run.id for run in before],
        recent_runs=[run.id for run in recent],
        baseline_score=_mean_score(before),
        recent_score=_mean_score(recent),
    )


def _mean_score(runs: Sequence[Run]) -> float | None:
    scores = [run.score for run in runs if run.score is not None]
    return round(fmean(scores), 4) if scores else None


def _verdict(
    live: SideFigures, snapshot: SideFigures, margin: float
) -> tuple[Literal["sources", "agent", "none", "unknown"], str]:
    live_drop, snap_drop = live.dropped(margin), snapshot.dropped(margin)
    if live_drop is None or snap_drop is None:
        missing = " and ".join(
            side.kind for side in (live, snapshot) if side.dropped(margin) is None
        )
        explanation = (
            f"not enough {missing} passes to compare: each kind needs baseline "
            "and recent passes"
        )
        if not snapshot.baseline_runs and not snapshot.recent_runs:
            explanation += (
                "; take a snapshot with `monitor sources snapshot` and replay it "
                "with SCOUT_SOURCES=snapshot next to the live passes"
            )
        return "unknown", explanation
    if live_drop and not snap_drop:
        return "sources", (
            f"live passes dropped by {-(live.delta or 0):.3f} while snapshot "
            "passes held: the sources drifted"
        )
    if snap_drop:
        both = "both live and snapshot" if live_drop else "snapshot"
        return "agent", (
            f"{both} passes dropped (snapshot by {-(snapshot.delta or 0):.3f}): "
            "the model or the prompt changed, not the pages"
        )
    return "none", f"neither kind of pass dropped by more than {margin:.3f}"


def _per_question(
    session: Session, live: SideFigures, snapshot: SideFigures
) -> dict[str, dict[str, float | None]]:
    """Per question, each kind's change in mean score (recent - baseline)."""
    run_ids = [
        *live.baseline_runs,
        *live.recent_runs,
        *snapshot.baseline_runs,
        *snapshot.recent_runs,
    ]
    scores = _question_scores(session, run_ids)
    questions = sorted({question for by_q in scores.values() for question in by_q})
    table: dict[str, dict[str, float | None]] = {}
    for question in questions:
        table[question] = {
            side.kind: _question_delta(scores, side, question)
            for side in (live, snapshot)
        }
    return table


def _question_delta(
    scores: dict[str, dict[str, float]], side: SideFigures, question: str
) -> float | None:
    before = [scores[r][question] for r in side.baseline_runs if question in scores[r]]
    after = [scores[r][question] for r in side.recent_runs if question in scores[r]]
    if not before or not after:
        return None
    return round(fmean(after) - fmean(before), 4)


def _question_scores(
    session: Session, run_ids: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per run, per question: the mean of its metric values over 5."""
    values: dict[str, dict[str, list[float]]] = {run_id: {} for run_id in run_ids}
    if not run_ids:
        return {}

    rows = session.execute(
        select(Score.run_id, Result.question_id, Score.value)
        .join(Result, Result.id == Score.result_id)
        .where(Score.run_id.in_(run_ids), Score.value.is_not(None))
    )
    for run_id, question, value in rows:
        if value is not None:
            values[run_id].setdefault(question, []).append(value)
    return {
        run_id: {q: fmean(v) / 5 for q, v in by_question.items()}
        for run_id, by_question in values.items()
    }


# Shared helpers


def _pass_of(session: Session, run: Run) -> Run:
    """The pass a run graded: itself, or its parent for a rescore."""
    if run.kind == "rescore" and run.parent_run_id:
        parent = session.get(Run, run.parent_run_id)
        if parent is None:
            raise NotFoundError(
                f"rescore {run.id} names parent run {run.parent_run_id}, which "
                "is not in the database"
            )
        return parent
    return run


def _graded_results(session: Session, run: Run) -> list[Result]:
    owner = _pass_of(session, run)
    return list(
        session.scalars(
            select(Result).where(Result.run_id == owner.id).order_by(Result.id)
        )
    )


def _source_refs(sources: object) -> list[dict[str, Any]]:
    """The well-formed source records of a result (url and content hash)."""
    if not isinstance(sources, list):
        return []
    return [
        ref
        for ref in sources
        if isinstance(ref, dict)
        and isinstance(ref.get("url"), str)
        and isinstance(ref.get("content_hash"), str)
    ]


def _version_column(version_key: str) -> Any:
    if version_key not in VERSION_KEYS:
        raise MonitorError(
            f"version key {version_key!r} is unknown: use one of "
            f"{', '.join(VERSION_KEYS)}"
        )
    return getattr(Run, version_key)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(item for item in items if item))

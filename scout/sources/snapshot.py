"""Replaying frozen pages: a source over a snapshot in the results database.

``monitor sources snapshot`` fetches the pages a pass needs and stores their
extracted text in the monitor's database (``snapshots``, ``snapshot_pages``,
and ``pages`` by content hash). With ``SCOUT_SOURCES=snapshot`` Scout reads
those pages only: search is BM25 over the snapshot's pages, in the same SQLite
FTS5 index as the local corpus (cached under ``SCOUT_CACHE_DIR`` by content
fingerprint), and fetch returns the stored text. Nothing touches the network,
so a pass replayed on a snapshot differs from the last one only by the agent,
the model and the judge: that is what separates source drift from model drift.

The snapshot is the newest one that holds at least one page, or the one
``SCOUT_SNAPSHOT_ID`` names. The source's name, ``snapshot:<id>``, is what the
monitor records as the run's sources backend. The database URL comes from the
monitor's settings (``MONITOR_DATABASE_URL`` or the SQLite file under
``MONITOR_HOME``), read only when a snapshot source is opened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scout.config import ScoutSettings, get_settings
from scout.errors import ConfigError, ScoutError, SourceError
from scout.sources.local import Document, LocalCorpus, open_corpus
from scout.tasks import Hit, Page

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrozenPages:
    """What a snapshot holds: its pages, and the URLs it could not fetch."""

    snapshot_id: int
    documents: list[Document]
    skipped: dict[str, str]


class SnapshotSource:
    """A :class:`~scout.sources.base.Source` over one snapshot's pages."""

    def __init__(self, frozen: FrozenPages, corpus: LocalCorpus) -> None:
        self.snapshot_id = frozen.snapshot_id
        self.name = f"snapshot:{frozen.snapshot_id}"
        self.fingerprint = corpus.fingerprint
        self._corpus = corpus
        self._skipped = frozen.skipped

    def __repr__(self) -> str:
        return f"SnapshotSource({self.snapshot_id})"

    def __len__(self) -> int:
        return len(self._corpus)

    def search(self, query: str, limit: int = 5) -> list[Hit]:
        """The ``limit`` best pages of the snapshot for ``query`` by BM25."""
        return self._corpus.search(query, limit)

    def fetch(self, url: str) -> Page:
        """The stored page; raises :class:`SourceError` for a URL the snapshot
        skipped (with the reason it was skipped) or never held."""
        reason = self._skipped.get(url)
        if reason is not None:
            raise SourceError(
                f"skipped {url}: {reason} (when snapshot {self.snapshot_id} was taken)"
            )
        return self._corpus.fetch(url)


def load_frozen_pages(session: Session, snapshot_id: int | None = None) -> FrozenPages:
    """The pages of snapshot ``snapshot_id``, or of the newest snapshot that
    holds any; raises :class:`ConfigError` when there is none."""
    from sqlalchemy import select

    from monitor.store.models import PageText, Snapshot, SnapshotPage

    if snapshot_id is None:
        snapshot_id = session.scalars(
            select(Snapshot.id)
            .join(SnapshotPage, SnapshotPage.snapshot_id == Snapshot.id)
            .where(SnapshotPage.status == "ok")
            .order_by(Snapshot.created_at.desc(), Snapshot.id.desc())
            .limit(1)
        ).first()
        if snapshot_id is None:
            raise ConfigError(
                "SCOUT_SOURCES=snapshot needs a snapshot with pages, and the results "
                "database holds none: run `monitor sources snapshot` first"
            )
    elif session.get(Snapshot, snapshot_id) is None:
        raise ConfigError(
            f"SCOUT_SNAPSHOT_ID={snapshot_id}: no such snapshot in the results "
            "database; unset it to replay the newest"
        )

    rows = session.execute(
        select(SnapshotPage, PageText)
        .outerjoin(PageText, PageText.content_hash == SnapshotPage.content_hash)
        .where(SnapshotPage.snapshot_id == snapshot_id)
        .order_by(SnapshotPage.id)
    ).all()
    documents: dict[str, Document] = {}
    skipped: dict[str, str] = {}
    for entry, text in rows:
        if entry.status == "ok" and text is not None:
            documents.setdefault(entry.url, Document(entry.url, text.title, text.text))
        else:
            skipped.setdefault(entry.url, entry.reason or "no text stored")

    if not documents:
        raise ConfigError(
            f"snapshot {snapshot_id} holds no page (every URL was skipped): take a "
            "new one with `monitor sources snapshot`, or set SCOUT_SNAPSHOT_ID"
        )
    return FrozenPages(snapshot_id, list(documents.values()), skipped)


def open_snapshot_source(settings: ScoutSettings | None = None) -> SnapshotSource:
    """The snapshot source over the monitor's results database."""
    settings = settings or get_settings()
    frozen = _read_frozen_pages(settings.snapshot_id)
    corpus = open_corpus(
        f"snapshot:{frozen.snapshot_id}",
        frozen.documents,
        settings.cache_dir,
        f"snapshot-{frozen.snapshot_id}",
    )
    source = SnapshotSource(frozen, corpus)
    logger.info(
        "replaying snapshot %d: %d pages, %d skipped URLs",
        frozen.snapshot_id,
        len(frozen.documents),
        len(frozen.skipped),
    )
    return source


def _read_frozen_pages(snapshot_id: int | None) -> FrozenPages:
    from monitor.settings import get_monitor_settings
    from monitor.store.db import open_database, session_factory

    try:
        engine = open_database(get_monitor_settings(), create=False)
    except ScoutError as error:
        raise ConfigError(
            f"SCOUT_SOURCES=snapshot needs the results database: {error}"
        ) from None

    try:
        with session_factory(engine)() as session:
            return load_frozen_pages(session, snapshot_id)
    finally:
        engine.dispose()

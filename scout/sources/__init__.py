"""Where Scout's evidence comes from, and the one factory that opens it.

:func:`open_source` keeps each opened corpus for the life of the process, so the
questions of a pass (which run concurrently) share one index instead of each
opening, or building, their own. A folder corpus is read once per process: edits
to its files are seen by the next process, not by this one. The web source is
kept too (its HTTP connections are reused); a snapshot source is opened afresh
each time, so a daemon's next pass replays the newest snapshot.
"""

from __future__ import annotations

import logging
import threading

from scout.config import ScoutSettings, get_settings
from scout.errors import ConfigError
from scout.sources.base import Source
from scout.sources.local import LocalCorpus, open_local_corpus

logger = logging.getLogger(__name__)

__all__ = ["LocalCorpus", "Source", "forget_opened_sources", "open_source"]

_SourceKey = tuple[object, ...]
_opened: dict[_SourceKey, Source] = {}
_opening = threading.Lock()


def open_source(settings: ScoutSettings | None = None) -> Source:
    """The source ``SCOUT_SOURCES`` names: local and web sources are opened
    once per process, a snapshot source on every call."""
    settings = settings or get_settings()
    if settings.sources == "snapshot":
        from scout.sources.snapshot import open_snapshot_source

        return open_snapshot_source(settings)

    key = _source_key(settings)
    # One lock for all opens: the first question builds the index, the others
    # wait for it rather than building the same index in parallel.
    with _opening:
        source = _opened.get(key)
        if source is None:
            source = _open(settings)
            _opened[key] = source
            logger.info("opened %s (fingerprint %s)", source.name, source.fingerprint)
    return source


def _source_key(settings: ScoutSettings) -> _SourceKey:
    if settings.sources == "web":
        key = settings.tavily_api_key
        return (
            "web",
            settings.web_search,
            settings.searxng_url,
            settings.tavily_url,
            hash(key.get_secret_value()) if key else None,
            settings.fetch_timeout,
            settings.max_page_bytes,
            settings.user_agent,
        )

    corpus_dir = settings.corpus_dir.resolve() if settings.corpus_dir else None
    return (settings.sources, corpus_dir, settings.cache_dir.resolve())


def _open(settings: ScoutSettings) -> Source:
    if settings.sources == "web":
        from scout.sources.web import open_web_source

        return open_web_source(settings)

    if settings.sources != "local":
        raise ConfigError(
            f"SCOUT_SOURCES={settings.sources} is unknown: use local, web or snapshot"
        )
    return open_local_corpus(settings)


def forget_opened_sources() -> None:
    """Drop the sources opened so far, so the next open reads its corpus again."""
    with _opening:
        _opened.clear()

"""Where Scout's evidence comes from, and the one factory that opens it.

:func:`open_source` keeps each opened corpus for the life of the process, so the
questions of a pass (which run concurrently) share one index instead of each
opening, or building, their own. A folder corpus is read once per process: edits
to its files are seen by the next process, not by this one.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from scout.config import ScoutSettings, get_settings
from scout.errors import ConfigError
from scout.sources.base import Source
from scout.sources.local import LocalCorpus, open_local_corpus

logger = logging.getLogger(__name__)

__all__ = ["LocalCorpus", "Source", "forget_opened_sources", "open_source"]

_SourceKey = tuple[str, Path | None, Path]
_opened: dict[_SourceKey, Source] = {}
_opening = threading.Lock()


def open_source(settings: ScoutSettings | None = None) -> Source:
    """The source ``SCOUT_SOURCES`` names, opened once per process."""
    settings = settings or get_settings()
    if settings.sources != "local":
        raise ConfigError(
            f"SCOUT_SOURCES={settings.sources} is not available yet: "
            "set SCOUT_SOURCES=local"
        )

    corpus_dir = settings.corpus_dir.resolve() if settings.corpus_dir else None
    key: _SourceKey = (settings.sources, corpus_dir, settings.cache_dir.resolve())
    # One lock for all opens: the first question builds the index, the others
    # wait for it rather than building the same index in parallel.
    with _opening:
        source = _opened.get(key)
        if source is None:
            source = open_local_corpus(settings)
            _opened[key] = source
            logger.info("opened %s (fingerprint %s)", source.name, source.fingerprint)
    return source


def forget_opened_sources() -> None:
    """Drop the sources opened so far, so the next open reads its corpus again."""
    with _opening:
        _opened.clear()

"""The interface every source backend implements."""

from __future__ import annotations

import hashlib
from typing import Protocol

from scout.tasks import Hit, Page


def content_hash(text: str) -> str:
    """The hash a run records for a page, so a change in what it says is visible."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Source(Protocol):
    """Searches for pages and reads them.

    ``name`` says which backend (``local:pydoc``, ``local:dir``, ``web``...) and
    ``fingerprint`` identifies the corpus content, so two runs can tell whether
    they read the same corpus.
    """

    name: str
    fingerprint: str

    def search(self, query: str, limit: int = 5) -> list[Hit]: ...

    def fetch(self, url: str) -> Page:
        """The page at ``url``; raises :class:`scout.errors.SourceError`."""
        ...

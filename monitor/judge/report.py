"""Reading a report: its body, its Sources list, its citation markers; the
deterministic checks built on them."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from scout.tasks import SourceRef

logger = logging.getLogger(__name__)

CHECKS = ("non_empty", "citations_resolve", "two_sources_cited", "no_unread_sources")

_SOURCES_HEADING = re.compile(
    r"^[ \t]{0,3}(?:#{1,6}[ \t]*)?[*_]{0,2}[ \t]*"
    r"(?:sources|references|sources read|works cited|bibliography)"
    r"[ \t]*:?[ \t]*[*_]{0,2}:?[ \t]*#*[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}(?:[ \t]|$)")
_FENCED_CODE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.DOTALL | re.M)
_INLINE_CODE = re.compile(r"`+[^`\n]*`+")
# One or more adjacent bracket groups of numbers: [1], [1, 2], [1][3], [2-4].
# Not preceded by a word character, so ``items[1]`` in prose is not a citation.
_CITATION_GROUP = re.compile(
    r"(?<![\w)\]])(?:\[[ \t]*\d+(?:[ \t]*(?:[,;]|[-–])[ \t]*\d+)*[ \t]*\])+"
)
_BRACKET = re.compile(r"\[([^\]]*)\]")
_MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\(\s*<?([^)\s>]+)>?[^)]*\)")
# Web pages are http(s); a SCOUT_CORPUS_DIR corpus names its files by file:// URL.
_ANGLE_URL = re.compile(r"<((?:https?|file)://[^>\s]+)>")
_BARE_URL = re.compile(r"(?:https?|file)://[^\s<>\"'\]\[]+")
_ENTRY_NUMBER = re.compile(r"^(?:\[\^?(\d+)\]:?|(\d+)[.)]|\((\d+)\))\s*")
_BULLET = re.compile(r"^[-*+•]\s+")
_MAX_RANGE = 50


@dataclass(frozen=True)
class SourceEntry:
    """One line of a report's Sources list."""

    number: int
    title: str
    url: str | None


@dataclass(frozen=True)
class ParsedReport:
    """A report split into its body, its Sources list and its citation markers."""

    body: str
    has_sources_section: bool
    entries: dict[int, SourceEntry]
    markers: list[int]


def normalize_url(url: str) -> str:
    """A URL in the form used to compare cited and read sources.

    Scheme and host are lower-cased and a trailing slash is dropped; the fragment
    is kept, since one page of the reference holds many sections.
    """
    url = url.strip().strip("<>").rstrip(".,;:")
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    path = parts.path.rstrip("/") if parts.path != "/" else ""
    return urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), path, parts.query, parts.fragment)
    )


def parse_report(report: str) -> ParsedReport:
    """Split ``report`` into body and Sources list, and find its ``[n]`` markers."""
    body, section = _split_sources(report)
    entries = _parse_entries(section.splitlines()) if section is not None else {}
    return ParsedReport(
        body=body,
        has_sources_section=section is not None,
        entries=entries,
        markers=citation_markers(body),
    )


def _split_sources(report: str) -> tuple[str, str | None]:
    """The body and the text of the last Sources section (``None`` if absent)."""
    headings = list(_SOURCES_HEADING.finditer(report))
    if not headings:
        return report, None

    start = headings[-1]
    rest = report[start.end() :]
    end = len(rest)
    for line in re.finditer(r"^.*$", rest, re.MULTILINE):
        if _HEADING.match(line.group()):
            end = line.start()
            break
    body = report[: start.start()] + rest[end:]
    return body, rest[:end]


def _parse_entries(lines: Iterable[str]) -> dict[int, SourceEntry]:
    """Entries of a Sources list, tolerant of the usual markdown shapes.

    Numbered lines (``[1] Title — URL``, ``1. Title - URL``, ``[1]: URL``) keep
    their number; bullet lines without one are numbered by position. A line with
    only a URL completes the entry above it when that entry has none.
    """
    entries: dict[int, SourceEntry] = {}
    last: int | None = None
    for raw in lines:
        line = _BULLET.sub("", raw.strip())
        if not line:
            continue

        number_match = _ENTRY_NUMBER.match(line)
        text = line[number_match.end() :] if number_match else line
        url, title = _url_and_title(text)
        follows_bare_entry = last is not None and entries[last].url is None
        if number_match:
            number = int(next(group for group in number_match.groups() if group))
        elif _BULLET.match(raw.strip()) or (url is not None and not follows_bare_entry):
            number = max(entries, default=0) + 1
        elif url is not None and last is not None:
            entries[last] = SourceEntry(last, entries[last].title, url)
            continue
        else:
            continue

        entries.setdefault(number, SourceEntry(number, title, url))
        last = number
    return entries


def _url_and_title(text: str) -> tuple[str | None, str]:
    """The URL of one Sources line and the title around it."""
    link = _MARKDOWN_LINK.search(text)
    if link is not None:
        rest = text[: link.start()] + " " + link.group(1) + " " + text[link.end() :]
        return link.group(2), _strip_title(rest)

    angle = _ANGLE_URL.search(text)
    if angle is not None:
        return angle.group(1), _strip_title(text[: angle.start()] + text[angle.end() :])

    bare = _BARE_URL.search(text)
    if bare is not None:
        url = bare.group(0).rstrip(".,;:!?)")
        return url, _strip_title(text[: bare.start()] + text[bare.end() :])
    return None, _strip_title(text)


def _strip_title(rest: str) -> str:
    title = re.sub(r"[\s—–:|*_\"“”-]+$", "", rest.strip())
    title = re.sub(r"^[\s—–:|*_\"“”-]+", "", title)
    return title


def citation_markers(text: str) -> list[int]:
    """Every citation number in ``text``, in order; code spans are not prose."""
    masked = _mask_code(text)
    numbers: list[int] = []
    for group in _CITATION_GROUP.finditer(masked):
        for bracket in _BRACKET.finditer(group.group()):
            numbers.extend(_bracket_numbers(bracket.group(1)))
    return numbers


def _bracket_numbers(inside: str) -> list[int]:
    numbers: list[int] = []
    for part in re.split(r"[,;]", inside):
        bounds = [int(n) for n in re.findall(r"\d+", part)]
        if len(bounds) == 2 and 0 < bounds[1] - bounds[0] <= _MAX_RANGE:
            numbers.extend(range(bounds[0], bounds[1] + 1))
        else:
            numbers.extend(bounds)
    return numbers


def _mask_code(text: str) -> str:
    text = _FENCED_CODE.sub(" ", text)
    return _INLINE_CODE.sub(" ", text)


# --------------------------------------------------------------------------
# Deterministic checks
# --------------------------------------------------------------------------


class _ReadSources:
    """The sources the agent read, looked up by URL (or by title without one)."""

    def __init__(self, sources: list[SourceRef]) -> None:
        self.urls = {normalize_url(source["url"]) for source in sources}
        self.titles = {source["title"].strip().lower() for source in sources}

    def url_of(self, entry: SourceEntry) -> str | None:
        """The read source an entry names, as a normalised URL; None if unread."""
        if entry.url is not None:
            url = normalize_url(entry.url)
            return url if url in self.urls else None
        return (
            f"title:{entry.title.lower()}"
            if entry.title.lower() in self.titles
            else None
        )


def run_checks(report: str, sources: list[SourceRef]) -> dict[str, bool]:
    """The deterministic checks of one report against the sources the agent read.

    - ``non_empty``: the body has words beyond its headings.
    - ``citations_resolve``: every ``[n]`` names entry n of the Sources list and
      that entry is a source the agent read (a report that cites without a
      Sources section fails).
    - ``two_sources_cited``: the body cites at least two distinct sources.
    - ``no_unread_sources``: every entry of the Sources list was read.
    """
    parsed = parse_report(report)
    read = _ReadSources(sources)
    resolved = [_resolve(parsed, read, number) for number in parsed.markers]
    cited = {
        parsed.entries[n].url or f"#{n}" for n in parsed.markers if n in parsed.entries
    }
    return {
        "non_empty": _has_words(parsed.body),
        "citations_resolve": all(url is not None for url in resolved),
        "two_sources_cited": len({normalize_url(url) for url in cited}) >= 2,
        "no_unread_sources": all(
            read.url_of(entry) is not None for entry in parsed.entries.values()
        ),
    }


def _resolve(parsed: ParsedReport, read: _ReadSources, number: int) -> str | None:
    entry = parsed.entries.get(number)
    return None if entry is None else read.url_of(entry)


def _has_words(body: str) -> bool:
    prose = [line for line in body.splitlines() if not _HEADING.match(line)]
    return re.search(r"[^\W\d_]{2,}", "\n".join(prose)) is not None

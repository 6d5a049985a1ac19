"""The golden set: the fixed questions every pass replays, and how to load them.

The file is TOML: a top-level ``version = 1`` and one ``[[questions]]`` table per
question with ``id``, ``question``, ``key_points`` and ``reference_urls``. Its
first questions are the monitor subset; :meth:`GoldenSet.subset_hash` is
recorded with every run, so two runs can tell whether they asked the same
questions. Every problem with the file is a :class:`GoldenError` whose message
names the file, the question (by id, else by position) and the field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from monitor.errors import GoldenError

logger = logging.getLogger(__name__)

SUPPORTED_VERSIONS = (1,)
URL_SCHEMES = ("http", "https", "file")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FIELDS = ("id", "question", "key_points", "reference_urls")


@dataclass(frozen=True)
class GoldenQuestion:
    """One question, what a good answer covers, and where the answer lives."""

    id: str
    question: str
    key_points: tuple[str, ...]
    reference_urls: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "key_points": list(self.key_points),
            "reference_urls": list(self.reference_urls),
        }


@dataclass(frozen=True)
class GoldenSet:
    """The questions of one golden file, in file order."""

    questions: tuple[GoldenQuestion, ...]
    path: Path
    version: int = 1

    def __len__(self) -> int:
        return len(self.questions)

    def subset(self, n: int) -> list[GoldenQuestion]:
        """The first ``n`` questions; raises :class:`GoldenError` when the file
        holds fewer."""
        if n < 1:
            raise GoldenError(
                f"{self.path}: a subset of {n} questions was asked for; "
                "set MONITOR_SUBSET_SIZE to 1 or more"
            )
        if n > len(self.questions):
            raise GoldenError(
                f"{self.path}: a subset of {n} questions was asked for but the "
                f"file holds {len(self.questions)}; add questions or lower "
                "MONITOR_SUBSET_SIZE"
            )
        return list(self.questions[:n])

    def subset_hash(self, n: int) -> str:
        """sha256 of the canonical JSON of the first ``n`` questions."""
        payload = [question.as_dict() for question in self.subset(n)]
        canonical = json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_golden(path: Path) -> GoldenSet:
    """Read and check the golden file at ``path``."""
    document = _parse(path)
    _check_version(path, document)

    tables = document.get("questions")
    if not isinstance(tables, list) or not tables:
        raise GoldenError(
            f"{path}: field 'questions' is missing or empty: add one "
            "[[questions]] table per question"
        )

    questions = tuple(
        _question(path, index, table) for index, table in enumerate(tables)
    )
    _check_unique_ids(path, questions)
    logger.debug("loaded %d golden questions from %s", len(questions), path)
    return GoldenSet(questions=questions, path=path, version=document["version"])


def _parse(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise GoldenError(
            f"golden file {path} does not exist: create it or set "
            "MONITOR_GOLDEN_FILE to the golden set's path"
        )

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise GoldenError(
            f"golden file {path} cannot be read ({reason}): it must be a "
            "readable UTF-8 TOML file"
        ) from error

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise GoldenError(
            f"golden file {path} is not valid TOML: {error}; fix the syntax there"
        ) from error


def _check_version(path: Path, document: dict[str, Any]) -> None:
    version = document.get("version")
    if version is None:
        raise GoldenError(f"{path}: field 'version' is missing: add `version = 1`")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise GoldenError(
            f"{path}: field 'version' is {version!r}, which this monitor does not "
            f"read; supported: {', '.join(map(str, SUPPORTED_VERSIONS))}"
        )


def _question(path: Path, index: int, table: object) -> GoldenQuestion:
    where = f"{path}: question #{index + 1}"
    if not isinstance(table, dict):
        raise GoldenError(f"{where} is not a table: write it as [[questions]]")

    raw_id = table.get("id")
    if isinstance(raw_id, str) and raw_id.strip():
        where = f"{path}: question {raw_id!r} (#{index + 1})"
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        logger.debug("%s: ignoring fields %s", where, ", ".join(unknown))

    question_id = _text(where, table, "id")
    if not _ID_PATTERN.match(question_id):
        raise GoldenError(
            f"{where}: field 'id' is {question_id!r}; use a short slug of letters, "
            "digits, '-', '_' or '.' (it becomes part of thread ids)"
        )
    urls = _texts(where, table, "reference_urls")
    for url in urls:
        _check_url(where, url)

    return GoldenQuestion(
        id=question_id,
        question=" ".join(_text(where, table, "question").split()),
        key_points=_texts(where, table, "key_points"),
        reference_urls=urls,
    )


def _text(where: str, table: dict[str, Any], field: str) -> str:
    value = table.get(field)
    if value is None:
        raise GoldenError(f"{where}: field '{field}' is missing")
    if not isinstance(value, str):
        raise GoldenError(
            f"{where}: field '{field}' must be a string, not {type(value).__name__}"
        )
    if not value.strip():
        raise GoldenError(f"{where}: field '{field}' is empty")
    return value.strip()


def _texts(where: str, table: dict[str, Any], field: str) -> tuple[str, ...]:
    value = table.get(field)
    if value is None:
        raise GoldenError(f"{where}: field '{field}' is missing")
    if not isinstance(value, list):
        raise GoldenError(
            f"{where}: field '{field}' must be a list of strings, "
            f"not {type(value).__name__}"
        )
    if not value:
        raise GoldenError(f"{where}: field '{field}' is empty")

    items = []
    for position, item in enumerate(value, start=1):
        if not isinstance(item, str) or not item.strip():
            raise GoldenError(
                f"{where}: field '{field}' item {position} must be a non-empty "
                f"string, not {item!r}"
            )
        items.append(item.strip())
    return tuple(items)


def _check_url(where: str, url: str) -> None:
    parts = urlsplit(url)
    has_place = bool(parts.netloc) if parts.scheme != "file" else bool(parts.path)
    if parts.scheme not in URL_SCHEMES or not has_place:
        raise GoldenError(
            f"{where}: field 'reference_urls' holds {url!r}, which is not an "
            "http(s) or file URL"
        )


def _check_unique_ids(path: Path, questions: tuple[GoldenQuestion, ...]) -> None:
    first_seen: dict[str, int] = {}
    for index, question in enumerate(questions, start=1):
        if question.id in first_seen:
            raise GoldenError(
                f"{path}: question {question.id!r} (#{index}): field 'id' "
                f"duplicates question #{first_seen[question.id]}; ids must be "
                "unique"
            )
        first_seen[question.id] = index

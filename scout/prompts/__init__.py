"""Scout's prompt texts, one file per task, and the hashes that version them.

``system.txt`` is sent with every task; ``<task>.txt`` is the task's user message,
a :class:`string.Template` with ``$name`` placeholders (so JSON braces in the
texts need no escaping). ``versions.json`` records the combined hash of all the
texts for each ``PROMPT_VERSION``: a test fails when the texts change and the
version does not, since runs compare quality by prompt version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from string import Template

from scout.errors import ConfigError

logger = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).parent
VERSIONS_FILE = PROMPTS_DIR / "versions.json"
SYSTEM = "system"
TASKS = ("plan", "critique", "route", "read", "check", "write")


def load_prompt(name: str, directory: Path = PROMPTS_DIR) -> str:
    """The text of ``<name>.txt``; ``ConfigError`` naming it when missing."""
    path = directory / f"{name}.txt"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in directory.glob("*.txt")))
        raise ConfigError(
            f"no prompt named {name!r} in {directory} (known: {known})"
        ) from None


def render_prompt(name: str, **values: object) -> str:
    """The prompt ``name`` with its ``$placeholders`` filled from ``values``."""
    try:
        return Template(load_prompt(name)).substitute(values)
    except KeyError as missing:
        raise ConfigError(
            f"prompt {name!r} needs a value for ${missing.args[0]}"
        ) from None


def prompt_hashes(directory: Path = PROMPTS_DIR) -> dict[str, str]:
    """sha256 of every prompt text, by name."""
    return {
        path.stem: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.glob("*.txt"))
    }


def prompts_hash(directory: Path = PROMPTS_DIR) -> str:
    """One sha256 over all prompt texts and their names."""
    combined = "".join(
        f"{name}:{digest}\n" for name, digest in prompt_hashes(directory).items()
    )
    return hashlib.sha256(combined.encode("utf-8")).hexdigest()


def recorded_hashes(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """The combined hash recorded for each prompt version."""
    recorded: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return recorded

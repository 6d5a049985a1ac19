"""Prompt texts are versioned: editing one without bumping PROMPT_VERSION fails."""

from __future__ import annotations

import shutil
from pathlib import Path
from string import Template

import pytest

from scout.config import PROMPT_VERSION
from scout.errors import ConfigError
from scout.prompts import (
    PROMPTS_DIR,
    SYSTEM,
    TASKS,
    load_prompt,
    prompt_hashes,
    prompts_hash,
    recorded_hashes,
    render_prompt,
)


def test_prompt_texts_match_the_hash_recorded_for_the_current_version() -> None:
    current = prompts_hash()
    recorded = recorded_hashes().get(PROMPT_VERSION)

    assert recorded == current, (
        f"the prompt texts under scout/prompts/ changed but PROMPT_VERSION is still "
        f"{PROMPT_VERSION!r} (recorded {recorded}). Bump PROMPT_VERSION in "
        f"scout/config.py and record the new version in scout/prompts/versions.json "
        f'as "<new version>": "{current}"'
    )


def test_every_task_has_a_prompt_and_each_is_hashed() -> None:
    assert set(prompt_hashes()) == {SYSTEM, *TASKS}
    for name in TASKS:
        assert load_prompt(name).strip()


def test_editing_any_prompt_changes_the_combined_hash(tmp_path: Path) -> None:
    for path in PROMPTS_DIR.glob("*.txt"):
        shutil.copy(path, tmp_path / path.name)
    before = prompts_hash(tmp_path)
    assert before == prompts_hash()

    edited = tmp_path / "route.txt"
    edited.write_text(edited.read_text(encoding="utf-8") + " ", encoding="utf-8")

    assert prompts_hash(tmp_path) != before


def test_structured_prompts_state_their_json_shape_and_write_does_not() -> None:
    for name in ("plan", "critique", "route", "read", "check"):
        assert "Reply with JSON of this shape" in load_prompt(name), name
    assert "JSON" not in load_prompt("write")


@pytest.mark.parametrize("name", ["read", "check", "write"])
def test_untrusted_text_is_fenced(name: str) -> None:
    text = load_prompt(name)

    assert text.index("<<<DOCUMENT") < text.index("DOCUMENT>>>")


def test_placeholders_are_all_named_values() -> None:
    for name in TASKS:
        assert Template(load_prompt(name)).is_valid(), name


def test_a_missing_value_or_prompt_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"\$question"):
        render_prompt("plan", feedback="")
    with pytest.raises(ConfigError, match="'nope'"):
        load_prompt("nope")

"""Choose Scout's task model from the settings, and say which one in one line.

The offline model is chosen when no API key is set (or ``SCOUT_BACKEND=offline``),
so the agent runs with no key and no network; otherwise the chat backend talks to
the configured OpenAI-compatible endpoint.
"""

from __future__ import annotations

import logging

from scout.config import OFFLINE_MODEL_NAME, ScoutSettings, get_settings
from scout.llm import public_url
from scout.tasks import TaskModel

logger = logging.getLogger(__name__)


def make_task_model(settings: ScoutSettings | None = None) -> TaskModel:
    """The offline model or the chat model, as ``settings`` ask."""
    settings = settings or get_settings()
    if settings.uses_offline_model:
        from scout.offline import OfflineModel

        return OfflineModel()

    from scout.chat import ChatModel

    return ChatModel(settings)


def describe_backend(settings: ScoutSettings | None = None) -> str:
    """The line printed at start: which model, where, and why. Never the key."""
    settings = settings or get_settings()
    if settings.uses_offline_model:
        reason = (
            "SCOUT_BACKEND=offline"
            if settings.backend == "offline"
            else "no API key set"
        )
        return f"model: {OFFLINE_MODEL_NAME} ({reason}; offline deterministic backend)"

    line = f"model: {settings.model} at {public_url(settings.base_url)}"
    if settings.api_key is None:
        line += " (no API key set)"
    return line

"""Grading of Scout's reports: deterministic checks, an offline judge, an LLM judge.

Every report gets the same treatment whichever judge runs:

- :func:`run_checks` answers yes/no questions about the report's form (is there a
  body, does every ``[n]`` resolve to a source the agent read, ...). They need no
  model and never change, so a failed check is always the agent's doing.
- a :class:`Judge` scores three metrics (:data:`METRICS`) from 1 to 5 with a
  one-sentence rationale each. :class:`OfflineJudge` does it by text overlap, with
  no model and no network; :class:`LLMJudge` asks a chat model through Scout's
  client. The judge's ``model`` and ``version`` are stored with every score, so
  scores from different judges are never compared as if they were one series.

A metric that could not be graded has the value ``None`` and says why; it is left
out of every mean. It is never a zero: a judge that failed to answer says nothing
about the report, and counting it as the worst score would raise false alarms.
"""

from __future__ import annotations

import logging
from typing import Literal

from monitor.judge.base import Grading, GradingInput, Judge, MetricScore, to_scale
from monitor.judge.llm import LLMJudge, judge_version, load_template
from monitor.judge.offline import (
    OFFLINE_JUDGE_MODEL,
    OFFLINE_JUDGE_VERSION,
    OfflineJudge,
)
from monitor.judge.report import CHECKS, normalize_url, parse_report, run_checks
from monitor.settings import MonitorSettings, get_monitor_settings
from monitor.store.models import METRICS
from scout.config import DEFAULT_BASE_URL, ScoutSettings, get_settings
from scout.errors import ConfigError
from scout.llm import make_client

__all__ = [
    "CHECKS",
    "METRICS",
    "OFFLINE_JUDGE_MODEL",
    "OFFLINE_JUDGE_VERSION",
    "Grading",
    "GradingInput",
    "Judge",
    "LLMJudge",
    "MetricScore",
    "OfflineJudge",
    "judge_version",
    "load_template",
    "make_judge",
    "normalize_url",
    "parse_report",
    "run_checks",
    "to_scale",
]

logger = logging.getLogger(__name__)


def make_judge(
    kind: Literal["auto", "offline", "llm"],
    *,
    model: str | None = None,
    scout_settings: ScoutSettings | None = None,
    monitor_settings: MonitorSettings | None = None,
) -> Judge:
    """The judge that ``kind`` asks for.

    ``auto`` is the LLM judge when Scout itself talks to a model (an API key is
    set and the backend is not offline), and the offline judge otherwise, so a
    run without a key still grades. The LLM judge's model is ``model``, else
    ``MONITOR_JUDGE_MODEL``, else Scout's own model.
    """
    settings = scout_settings or get_settings()
    if kind not in ("auto", "offline", "llm"):
        raise ConfigError(f"unknown judge {kind!r}; use auto, offline or llm")
    if kind == "offline" or (kind == "auto" and settings.uses_offline_model):
        logger.debug("grading with the offline overlap judge")
        return OfflineJudge()
    if settings.api_key is None and settings.base_url == DEFAULT_BASE_URL:
        raise ConfigError(
            f"the LLM judge needs an API key for {settings.base_url}: set "
            "SCOUT_API_KEY (or NVIDIA_API_KEY), point SCOUT_BASE_URL at a local "
            "server, or use the offline judge"
        )

    monitor = monitor_settings or get_monitor_settings()
    name = model or monitor.judge_model or settings.model
    logger.debug("grading with the LLM judge %s", name)
    return LLMJudge(
        make_client(settings),
        model=name,
        json_mode=settings.json_mode,
        max_tokens=settings.max_tokens,
    )

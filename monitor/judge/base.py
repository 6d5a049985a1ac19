"""The records every judge produces and the Judge interface."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from monitor.golden import GoldenQuestion
from monitor.store.models import METRICS
from scout.tasks import SourceRef

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricScore:
    """One metric of one grading. ``value`` is 1..5, or ``None`` with ``error``."""

    metric: str
    value: float | None
    rationale: str | None
    error: str | None = None


@dataclass(frozen=True)
class Grading:
    """A judge's scores for one report: always one :class:`MetricScore` per metric."""

    scores: dict[str, MetricScore]
    judge_model: str
    judge_version: str
    error: str | None = None

    @property
    def scored(self) -> bool:
        """True when the judge answered and at least one metric has a value."""
        if self.error is not None:
            return False
        return any(score.value is not None for score in self.scores.values())

    def values(self) -> dict[str, float | None]:
        return {metric: score.value for metric, score in self.scores.items()}

    @classmethod
    def failed(cls, error: str, *, judge_model: str, judge_version: str) -> Grading:
        """A grading in which the judge failed: every metric unscored, none zero."""
        scores = {metric: MetricScore(metric, None, None, error) for metric in METRICS}
        return cls(scores, judge_model, judge_version, error)


@dataclass(frozen=True)
class GradingInput:
    """What a judge sees: the question, the report and the pages behind it."""

    question: GoldenQuestion
    report: str
    sources: list[SourceRef]
    pages: dict[str, str]


class Judge(Protocol):
    """Scores one report on :data:`METRICS`; never raises for a bad answer."""

    model: str
    version: str

    def grade(self, item: GradingInput) -> Grading: ...


def to_scale(ratio: float) -> float:
    """A ratio in [0, 1] as a 1..5 score with one decimal."""
    ratio = min(1.0, max(0.0, ratio))
    return round(1 + 4 * ratio, 1)

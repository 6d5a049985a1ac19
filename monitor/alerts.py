"""Alert rules evaluated after every pass.

A finding carries the line printed after ``ALERT:`` and the runbook scenario to
open. The quality rule compares the pass's score, and the rolling mean of the
last W completed runs once there are W, with the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from monitor.stats import rolling_score
from monitor.store.models import Run
from monitor.store.queries import recent_completed_scores

SCENARIO_QUALITY = 1
SCENARIO_LATENCY = 2
SCENARIO_COST = 3
SCENARIO_FAILING = 4


@dataclass(frozen=True)
class Finding:
    rule: str
    message: str
    scenario: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def line(self) -> str:
        return f"{self.message} — open runbook.md, scenario {self.scenario}."


def quality_findings(session: Session, run: Run, window: int) -> list[Finding]:
    """Below threshold: the pass itself, or the rolling mean of the last
    ``window`` completed runs once there are that many."""
    if run.score is None:
        return [
            Finding(
                rule="failures",
                message=f"no question produced a graded report in run {run.id!r}",
                scenario=SCENARIO_FAILING,
                details={"run": run.id},
            )
        ]

    rolling = rolling_score(recent_completed_scores(session, window), window)
    for label, value in (("report quality", run.score), ("rolling quality", rolling)):
        if value is not None and value < run.threshold:
            return [
                Finding(
                    rule="quality",
                    message=f"{label} {value:.3f} is below threshold "
                    f"{run.threshold:.2f}",
                    scenario=SCENARIO_QUALITY,
                    details={
                        "run": run.id,
                        "score": run.score,
                        "rolling": rolling,
                        "window": window,
                        "threshold": run.threshold,
                    },
                )
            ]
    return []

"""What the alert rules read from the results database, and the evidence they
attach to an alert: which metric dropped most, which node grew most, and
whether a version marker (the corpus and the sources backend included) or a
source page changed among the runs involved.

Every query here is served by an index of ``monitor/store/models.py``: runs by
(status, started_at) and (version column, started_at), scores by their unique
(run_id, result_id, metric, attempt) key, results by (run_id, question_id).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from monitor.stats import SCALE_MAX, RunScores
from monitor.store.models import METRICS, Result, Run, Score, Usage

VERSION_MARKERS = (
    "prompt_version",
    "model",
    "git_sha",
    "model_reported",
    "judge_version",
    "corpus_fingerprint",
    "sources_backend",
)
FINISHED = ("completed", "failed")
SHOWN_URLS = 3


# Runs ------------------------------------------------------------------------------


def passes(
    session: Session,
    *conditions: ColumnElement[bool],
    limit: int,
    statuses: Sequence[str] = ("completed",),
    scored: bool = False,
) -> list[Run]:
    """The newest passes (rescores left out) meeting ``conditions``, newest first."""
    query = select(Run).where(Run.status.in_(statuses), Run.kind != "rescore")
    if scored:
        query = query.where(Run.score.is_not(None))
    query = query.where(*conditions)
    query = query.order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)
    return list(session.scalars(query))


def question_scores(
    session: Session, run_ids: Sequence[str]
) -> tuple[dict[str, RunScores], dict[str, dict[str, RunScores]]]:
    """Per run, each question's score (mean of its metric values / 5); and per
    metric, per run, each question's value of that metric / 5. Unscored values
    are left out; a question with none is missing from its run."""
    rows = session.execute(
        select(Score.run_id, Result.question_id, Score.metric, Score.value)
        .join(Result, Result.id == Score.result_id)
        .where(Score.run_id.in_(run_ids), Score.value.is_not(None))
    )
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_metric: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for run_id, question_id, metric, value in rows:
        if value is None:
            continue
        values[(run_id, question_id)].append(value)
        by_metric[(metric, run_id, question_id)].append(value)

    overall: dict[str, RunScores] = {run_id: {} for run_id in run_ids}
    for (run_id, question_id), found in values.items():
        overall[run_id][question_id] = fmean(found) / SCALE_MAX
    metrics: dict[str, dict[str, RunScores]] = {
        metric: {run_id: {} for run_id in run_ids} for metric in METRICS
    }
    for (metric, run_id, question_id), found in by_metric.items():
        metrics.setdefault(metric, {}).setdefault(run_id, {})[question_id] = (
            fmean(found) / SCALE_MAX
        )
    return overall, metrics


def result_durations(session: Session, run_ids: Sequence[str]) -> list[float]:
    """Seconds each question of these runs took, failed questions included."""
    query = select(Result.duration_seconds).where(
        Result.run_id.in_(run_ids), Result.duration_seconds.is_not(None)
    )
    return [float(value or 0.0) for value in session.scalars(query)]


def run_results(session: Session, run_id: str) -> list[Result]:
    return list(
        session.scalars(
            select(Result).where(Result.run_id == run_id).order_by(Result.id)
        )
    )


def unscored_questions(session: Session, run_id: str) -> dict[str, str]:
    """Question id -> the judge's error, for each question with an unscored metric."""
    rows = session.execute(
        select(Result.question_id, Score.error)
        .join(Result, Result.id == Score.result_id)
        .where(Score.run_id == run_id, Score.value.is_(None))
        .order_by(Score.id)
    )
    found: dict[str, str] = {}
    for question_id, error in rows:
        found.setdefault(question_id, error or "no reason recorded")
    return found


# Evidence --------------------------------------------------------------------------


@dataclass
class Evidence:
    """What changed among the runs an alert is about."""

    runs: list[str] = field(default_factory=list)
    versions: dict[str, list[str]] = field(default_factory=dict)
    changed: dict[str, list[str]] = field(default_factory=dict)
    sources_changed: list[str] = field(default_factory=list)
    metric_drop: dict[str, Any] | None = None
    node_growth: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "versions": self.versions,
            "changed": self.changed,
            "sources_changed": self.sources_changed,
            "metric_drop": self.metric_drop,
            "node_growth": self.node_growth,
        }

    def summary(self) -> str:
        """The evidence as one clause for the alert line."""
        parts = []
        if self.metric_drop is not None:
            parts.append(_drop_clause(self.metric_drop))
        if self.node_growth is not None:
            growth = self.node_growth
            parts.append(
                f"node {growth['node']} grew most ({growth['field']} "
                f"{growth['before']:.4g} -> {growth['after']:.4g})"
            )
        if self.changed:
            changes = "; ".join(
                f"{name} {' -> '.join(values)}" for name, values in self.changed.items()
            )
            parts.append(f"changed in window: {changes}")
        else:
            parts.append("no version marker changed in window")
        if self.sources_changed:
            shown = ", ".join(self.sources_changed[:SHOWN_URLS])
            more = len(self.sources_changed) - SHOWN_URLS
            parts.append(
                f"{len(self.sources_changed)} source page(s) changed content: "
                f"{shown}{f' and {more} more' if more > 0 else ''}"
            )
        else:
            parts.append("no source content hash changed")
        return "; ".join(parts)


def _drop_clause(drop: dict[str, Any]) -> str:
    """The metric drop as shown: two decimals, and no drop named when none
    shows at that precision."""
    before, after = f"{drop['before']:.2f}", f"{drop['after']:.2f}"
    if float(after) >= float(before):
        return "no metric dropped"
    return f"{drop['metric']} dropped most ({before} -> {after})"


def gather_evidence(
    session: Session,
    runs: Sequence[Run],
    *,
    before: Sequence[Run] = (),
    after: Sequence[Run] = (),
) -> Evidence:
    """Evidence over ``runs`` (any order); the metric drop compares the runs
    ``before`` with the runs ``after``."""
    ordered = sorted(runs, key=lambda run: (run.started_at, run.id))
    evidence = Evidence(runs=[run.id for run in ordered])
    for name in VERSION_MARKERS:
        values = _distinct_in_order(getattr(run, name) or "-" for run in ordered)
        evidence.versions[name] = values
        if len(values) > 1:
            evidence.changed[name] = values
    evidence.sources_changed = changed_sources(session, [run.id for run in ordered])
    if before and after:
        evidence.metric_drop = largest_metric_drop(before, after)
    return evidence


def changed_sources(session: Session, run_ids: Sequence[str]) -> list[str]:
    """URLs read under more than one content hash by these runs' questions."""
    hashes: dict[str, set[str]] = defaultdict(set)
    query = select(Result.sources).where(
        Result.run_id.in_(run_ids), Result.sources.is_not(None)
    )
    for sources in session.scalars(query):
        for source in sources or []:
            if isinstance(source, dict) and source.get("content_hash"):
                hashes[str(source.get("url"))].add(str(source["content_hash"]))
    return sorted(url for url, seen in hashes.items() if len(seen) > 1)


def largest_metric_drop(
    before: Sequence[Run], after: Sequence[Run]
) -> dict[str, Any] | None:
    """The metric whose mean (1-5) fell most from ``before`` to ``after``."""
    drops: list[dict[str, Any]] = []
    for metric in METRICS:
        old = _metric_mean(before, metric)
        new = _metric_mean(after, metric)
        if old is not None and new is not None:
            drops.append({"metric": metric, "before": old, "after": new})
    if not drops:
        return None
    return min(drops, key=lambda drop: drop["after"] - drop["before"])


def largest_node_growth(
    session: Session, before: Sequence[str], run_id: str, field_name: str
) -> dict[str, Any] | None:
    """The node whose ``field_name`` (tokens, cost, seconds) per run grew most
    from the mean of the ``before`` runs to ``run_id``."""
    if not before:
        return None
    per_run = _node_totals(session, [*before, run_id], field_name)
    current = per_run.get(run_id, {})
    growths: list[dict[str, Any]] = []
    for node in set(current) | {n for r in before for n in per_run.get(r, {})}:
        old = fmean(per_run.get(r, {}).get(node, 0.0) for r in before)
        new = current.get(node, 0.0)
        growths.append({"node": node, "field": field_name, "before": old, "after": new})
    if not growths:
        return None
    return max(growths, key=lambda growth: growth["after"] - growth["before"])


def _node_totals(
    session: Session, run_ids: Sequence[str], field_name: str
) -> dict[str, dict[str, float]]:
    rows = session.execute(
        select(
            Result.run_id,
            Usage.node,
            Usage.input_tokens,
            Usage.output_tokens,
            Usage.cost,
            Usage.seconds,
        )
        .join(Result, Result.id == Usage.result_id)
        .where(Result.run_id.in_(run_ids))
    )
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for run_id, node, tokens_in, tokens_out, cost, seconds in rows:
        value = {
            "tokens": (tokens_in or 0) + (tokens_out or 0),
            "cost": cost or 0.0,
            "seconds": seconds or 0.0,
        }[field_name]
        totals[run_id][node] += value
    return totals


def _metric_mean(runs: Sequence[Run], metric: str) -> float | None:
    values = [
        float((run.metric_means or {}).get(metric) or 0.0)
        for run in runs
        if (run.metric_means or {}).get(metric) is not None
    ]
    return fmean(values) if values else None


def _distinct_in_order(values: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for value in values:
        if not seen or seen[-1] != value:
            seen.append(value)
    return seen

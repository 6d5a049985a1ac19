"""How the alert rules and sinks behave: one object built from MONITOR_* settings.

Every field has a ``MONITOR_`` variable (see ``monitor/settings.py``); the
command line overrides them by keyword (``alert_options(max_cost=0.5)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from monitor.store.models import utcnow


@dataclass(frozen=True)
class AlertOptions:
    """Rule and sink settings; the defaults are those of MonitorSettings.

    Build it with :func:`alert_options`, which reads the MONITOR_* variables:
    ``AlertOptions()`` alone ignores them, so it has no webhook and no budget
    limits. ``process_pass_alerts(engine, run)`` does the right thing.
    """

    # Quality: the rolling score of the last ``window`` runs.
    threshold: float | None = None  # None: the run's own threshold
    window: int = 3
    quality_confidence: float = 0.90
    quality_spread_runs: int = 10
    # Regression: this version's runs against the previous version's.
    version_key: str = "prompt_version"
    baseline_runs: int = 5
    regression_min_runs: int = 3
    regression_margin: float = 0.05
    regression_confidence: float = 0.95
    # Budget: None switches a limit off.
    max_tokens: int | None = None
    max_cost: float | None = None
    max_p95: float | None = None
    latency_runs: int = 10
    # Failures.
    min_success_rate: float = 1.0
    # Lifecycle and sinks.
    cooldown_seconds: float = 86400.0
    webhook_url: SecretStr | None = field(default=None, repr=False)
    webhook_timeout: float = 10.0
    webhook_attempts: int = 3
    webhook_backoff: float = 0.5  # seconds before the first retry, then doubled
    clock: Callable[[], datetime] = field(default=utcnow, repr=False)

    def with_overrides(self, **overrides: Any) -> AlertOptions:
        """A copy with the given fields; None leaves a field as it is."""
        names = {f.name for f in fields(self)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown alert option(s): {', '.join(sorted(unknown))}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(chosen.get("webhook_url"), str):
            chosen["webhook_url"] = SecretStr(chosen["webhook_url"])
        return replace(self, **chosen)


def alert_options(**overrides: Any) -> AlertOptions:
    """AlertOptions from the MONITOR_* settings, then ``overrides`` (None skipped)."""
    from monitor.settings import get_monitor_settings

    settings = get_monitor_settings()
    base = AlertOptions(
        window=settings.rolling_window,
        quality_confidence=settings.quality_confidence,
        quality_spread_runs=settings.quality_spread_runs,
        version_key=settings.version_key,
        baseline_runs=settings.baseline_runs,
        regression_min_runs=settings.regression_min_runs,
        regression_margin=settings.regression_margin,
        regression_confidence=settings.regression_confidence,
        max_tokens=settings.max_tokens,
        max_cost=settings.max_cost,
        max_p95=settings.max_p95,
        latency_runs=settings.latency_runs,
        min_success_rate=settings.min_success_rate,
        cooldown_seconds=settings.alert_cooldown,
        webhook_url=settings.webhook_url,
        webhook_timeout=settings.webhook_timeout,
        webhook_attempts=settings.webhook_attempts,
    )
    return base.with_overrides(**overrides)

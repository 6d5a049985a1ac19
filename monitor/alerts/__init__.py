"""Alerts worth waking up for: rules, their lifecycle, and the sinks.

``process_pass_alerts`` is the one entry point a pass calls: it evaluates the
rules (``rules``) on the pass just stored, records, deduplicates and resolves
alerts (``lifecycle``) and delivers the notices that are due (``sinks``).
``simulate`` measures how often the statistical rules page falsely and how
fast they catch a real drop; the defaults in ``options`` come from it.
"""

from __future__ import annotations

from monitor.alerts.lifecycle import AlertOutcome, process_pass_alerts
from monitor.alerts.options import AlertOptions, alert_options
from monitor.alerts.rules import (
    SCENARIO_COST,
    SCENARIO_FAILING,
    SCENARIO_LATENCY,
    SCENARIO_QUALITY,
    SCENARIOS,
    Finding,
)

__all__ = [
    "SCENARIOS",
    "SCENARIO_COST",
    "SCENARIO_FAILING",
    "SCENARIO_LATENCY",
    "SCENARIO_QUALITY",
    "AlertOptions",
    "AlertOutcome",
    "Finding",
    "alert_options",
    "process_pass_alerts",
]

"""``monitor alerts``, ``monitor baseline`` and alerts in ``monitor run --once``,
through the console entry point in this process.

The last test is the issue's "done when": with a webhook listening on
loopback, a pass under ``--threshold 0.99`` exits 2, prints ``ALERT:`` and the
webhook gets one JSON notice; the next pass sends nothing new; a pass under
``--threshold 0.0`` sends the RESOLVED notice.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, select

from monitor.alerts import process_pass_alerts
from monitor.store.db import session_factory
from monitor.store.models import Notification
from tests.monitor.test_alerts_lifecycle import SECRET_PATH, WebhookReceiver
from tests.monitor.test_alerts_rules import History, options

EXIT_ALERT, EXIT_USAGE = 2, 64


@pytest.fixture
def monitor(monitor_in_process: Any) -> Any:
    """``monitor ARGS`` in this process, with the given environment variables."""
    return monitor_in_process


def test_alerts_list_shows_an_open_alert_with_its_pending_webhook_notice(
    engine: Engine, monitor: Any
) -> None:
    history = History(engine)
    history.add()
    with WebhookReceiver() as hook:
        url = hook.url
    # The receiver is gone: the webhook notice stays pending.
    run = history.add(failed=["q4"])
    process_pass_alerts(engine, run, options(webhook_url=url, webhook_attempts=1))

    listed = monitor("alerts", "list", "--json")
    table = monitor("alerts")

    assert listed.code == 0, listed.err
    (alert,) = json.loads(listed.out)
    assert alert["state"] == "firing"
    assert alert["fingerprint"] == "failures:tasks|prompt_version=v1"
    assert alert["deliveries"] == {"log": {"delivered": 1}, "webhook": {"pending": 1}}
    assert alert["last_error"].startswith("webhook: ConnectError")
    assert table.code == 0
    assert "FIRING   #1 failures:tasks|prompt_version=v1" in table.out
    assert "webhook 1 pending" in table.out
    for text in (listed.out, table.out):
        assert "T0SECRET" not in text


def test_alerts_test_reports_each_sink_and_fails_when_one_does(
    engine: Engine, monitor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with WebhookReceiver() as hook:
        good = monitor("alerts", "test", MONITOR_WEBHOOK_URL=hook.url)
        hook.statuses = [500]
        bad = monitor(
            "alerts", "test", MONITOR_WEBHOOK_URL=hook.url, MONITOR_WEBHOOK_ATTEMPTS="1"
        )

    assert good.code == 0, good.err
    assert good.out.splitlines() == ["log: delivered", "webhook: delivered"]
    assert [body["kind"] for body in hook.accepted] == ["test"]
    assert hook.accepted[0]["text"].startswith("TEST: ")
    assert bad.code == 1
    assert "webhook: FAILED: HTTP 500" in bad.out
    assert "a test notice is not retried" in bad.out
    assert "it is not retried" in caplog.text
    assert "pending" not in bad.out + caplog.text
    with session_factory(engine)() as session:
        failed = session.scalars(
            select(Notification.state).where(
                Notification.kind == "test", Notification.sink == "webhook"
            )
        ).all()
    assert sorted(failed) == ["delivered", "failed"]
    assert SECRET_PATH not in good.out + good.err + bad.out + bad.err


@pytest.mark.parametrize(
    "url", ["not a url", "ftp://x", "https://:8080/T0SECRET", "http://[::1/T0SECRET"]
)
def test_an_invalid_webhook_url_is_one_line_that_keeps_the_url_secret(
    engine: Engine, monitor: Any, url: str
) -> None:
    outcome = monitor("alerts", "test", MONITOR_WEBHOOK_URL=url)

    assert outcome.code == 1
    assert outcome.out == ""
    assert outcome.err.count("\n") == 1
    assert "invalid setting MONITOR_WEBHOOK_URL: " in outcome.err
    assert "http:// or https://" in outcome.err
    assert url not in outcome.err and "T0SECRET" not in outcome.err


def test_baseline_set_show_and_clear(engine: Engine, monitor: Any) -> None:
    history = History(engine)
    for _ in range(3):
        history.add(version="v1")
    newest = [run.id for run in history.runs][::-1]

    by_version = monitor("baseline", "set", "v1", "--runs", "2")
    shown = monitor("baseline", "show", "--json")
    by_run = monitor("baseline", "set", newest[1], "--json")
    cleared = monitor("baseline", "clear")
    after = monitor("baseline", "show", "--json")

    assert by_version.code == 0, by_version.err
    assert "Pinned baseline prompt_version=v1: 2 run(s)" in by_version.out
    pinned = json.loads(shown.out)["pinned"]
    assert pinned["version"] == "v1" and pinned["run_ids"] == newest[:2]
    assert json.loads(by_run.out)["run_ids"] == newest[1:]
    assert "Cleared the pinned baseline for prompt_version (v1)" in cleared.out
    assert json.loads(after.out)["pinned"] is None


def test_baseline_refuses_an_unknown_reference_or_key_in_one_line(
    engine: Engine, monitor: Any
) -> None:
    History(engine).add(version="v7")

    unknown = monitor("baseline", "set", "v8")
    bad_key = monitor("baseline", "show", "--version-key", "colour")

    assert unknown.code == 1
    assert unknown.err.strip().splitlines() == [
        "error: 'v8' is neither a run id nor a prompt_version with completed "
        "passes; known prompt_version values: v7 (see `monitor history`)"
    ]
    assert bad_key.code == EXIT_USAGE
    assert "colour" in bad_key.err and "Traceback" not in bad_key.err


def test_run_once_pages_once_keeps_quiet_while_firing_and_sends_resolved(
    monitor: Any,
) -> None:
    with WebhookReceiver() as hook:
        env = {"MONITOR_WEBHOOK_URL": hook.url}
        high = monitor("run", "--once", "--threshold", "0.99", **env)
        after_first = list(hook.accepted)
        again = monitor("run", "--once", "--threshold", "0.99", **env)
        after_second = list(hook.accepted)
        low = monitor("run", "--once", "--threshold", "0.0", **env)

    assert high.code == EXIT_ALERT, high.err
    alert_lines = [line for line in high.err.splitlines() if line.startswith("ALERT:")]
    assert len(alert_lines) == 1 and "threshold 0.99" in alert_lines[0]
    assert [body["kind"] for body in after_first] == ["fired"]
    assert after_first[0]["text"] == alert_lines[0]
    assert after_first[0]["alert"]["rule"] == "quality"
    assert again.code == EXIT_ALERT
    assert after_second == after_first
    assert low.code == 0, low.err
    assert "OK: no alert firing." in low.out
    assert [body["kind"] for body in hook.accepted] == ["fired", "resolved"]
    assert hook.accepted[1]["text"].startswith("RESOLVED: quality|prompt_version=")

"""The alert lifecycle (dedup, reminder, resolve) and the webhook sink.

The webhook is a real HTTP server on 127.0.0.1 that answers from a script of
status codes, so delivery goes through httpx and tenacity as in production.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine, select

from monitor.alerts import AlertOutcome, process_pass_alerts
from monitor.store.db import session_factory
from monitor.store.models import Alert, Notification
from tests.monitor.test_alerts_rules import Clock, History, options

SECRET_PATH = "/services/T0SECRET/B0SECRET/xoxb-do-not-leak"


@pytest.fixture
def history(engine: Engine) -> History:
    return History(engine)


# Lifecycle -------------------------------------------------------------------------


def notices(engine: Engine, *where: Any) -> list[Notification]:
    with session_factory(engine)() as session:
        query = select(Notification).where(*where).order_by(Notification.id)
        return list(session.scalars(query))


def alerts(engine: Engine) -> list[Alert]:
    with session_factory(engine)() as session:
        return list(session.scalars(select(Alert).order_by(Alert.id)))


def test_an_alert_pages_once_reminds_after_the_cooldown_and_resolves(
    engine: Engine, history: History
) -> None:
    clock = Clock()
    opts = options(clock, cooldown_seconds=24 * 3600)

    def step(level: float, hours: float) -> AlertOutcome:
        clock.advance(hours=hours)
        return process_pass_alerts(engine, history.add(level), opts)

    first = step(2.5, 0)
    again = step(2.5, 4)
    reminded = step(2.5, 24)
    quiet = step(2.5, 4)
    outcomes = [step(4.5, 4) for _ in range(3)]

    assert [len(o.opened) for o in (first, again, reminded, quiet)] == [1, 0, 0, 0]
    assert [len(o.firing) for o in (first, again, reminded, quiet)] == [1, 1, 1, 1]
    assert len(reminded.reminded) == 1 and not again.reminded and not quiet.reminded
    # One good pass leaves the rolling score (0.9, 0.5, 0.5) below 0.70: the
    # alert holds; the second brings it to 0.77 and it resolves, once.
    assert [len(o.firing) for o in outcomes] == [1, 0, 0]
    assert [len(o.resolved) for o in outcomes] == [0, 1, 0]
    kinds = [n.kind for n in notices(engine, Notification.sink == "log")]
    assert kinds == ["fired", "reminder", "resolved"]
    stored = alerts(engine)
    assert len(stored) == 1 and stored[0].state == "resolved"
    assert stored[0].resolved_at == clock.now - timedelta(hours=4)


def test_an_alert_of_an_old_version_resolves_when_the_version_changes(
    engine: Engine, history: History
) -> None:
    opts = options()
    process_pass_alerts(engine, history.add(failed=["q1"], version="v1"), opts)

    outcome = process_pass_alerts(
        engine, history.add(failed=["q1"], version="v2"), opts
    )

    assert outcome.resolved == ["failures:tasks|prompt_version=v1"]
    assert [f.fingerprint for f in outcome.opened] == [
        "failures:tasks|prompt_version=v2"
    ]
    resolved = [a for a in alerts(engine) if a.state == "resolved"]
    assert resolved[0].details is not None
    assert "superseded" in resolved[0].details["resolved_because"]


def test_an_open_alert_stays_open_while_its_rule_holds(
    engine: Engine, history: History
) -> None:
    opts = options()
    for _ in range(3):
        run = history.add(2.5)
    assert process_pass_alerts(engine, run, opts).opened

    # A noisy pass: the mean is still below 0.70, but not confidently so.
    outcome = process_pass_alerts(engine, history.add(4.3), opts)

    assert [f.key for f in outcome.firing] == ["quality"]
    assert not outcome.resolved and not outcome.opened


# The webhook -----------------------------------------------------------------------


class WebhookReceiver:
    """A webhook on 127.0.0.1: answers each POST with the next scripted status
    (200 once the script is used up) and keeps the bodies it accepted."""

    def __init__(
        self,
        statuses: Sequence[int] = (),
        on_request: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.statuses = list(statuses)
        self.accepted: list[dict[str, Any]] = []
        self.requests = 0
        self.on_request = on_request
        self.errors: list[BaseException] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.requests += 1
                if receiver.on_request is not None:
                    try:
                        receiver.on_request(body)
                    except BaseException as error:  # reported by the test
                        receiver.errors.append(error)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.accepted.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_webhook_that_fails_twice_then_accepts_gets_each_notice_exactly_once(
    engine: Engine, history: History
) -> None:
    with WebhookReceiver(statuses=[500, 503]) as hook:
        opts = options(webhook_url=hook.url, webhook_attempts=3)
        fired = process_pass_alerts(engine, history.add(failed=["q1"]), opts)
        repeat = process_pass_alerts(engine, history.add(failed=["q1"]), opts)
        hook.statuses = [502, 500]
        resolved = process_pass_alerts(engine, history.add(), opts)

    assert [body["kind"] for body in hook.accepted] == ["fired", "resolved"]
    assert hook.requests == 6
    first, last = hook.accepted
    assert first["text"].startswith("ALERT: failures: 1 of 5 questions")
    assert first["alert"]["fingerprint"] == "failures:tasks|prompt_version=v1"
    assert first["alert"]["scenario"] == 4
    assert last["text"].startswith("RESOLVED: failures:tasks|prompt_version=v1")
    assert first["notice_id"] != last["notice_id"]
    assert fired.notices_pending == repeat.notices_pending == 0
    assert resolved.notices_pending == 0 and not resolved.firing


def test_an_undelivered_notice_stays_pending_and_goes_out_after_the_next_pass(
    engine: Engine, history: History
) -> None:
    with WebhookReceiver(statuses=[500, 500, 500]) as hook:
        opts = options(webhook_url=hook.url, webhook_attempts=3)
        down = process_pass_alerts(engine, history.add(failed=["q1"]), opts)
        pending = notices(engine, Notification.sink == "webhook")
        back = process_pass_alerts(engine, history.add(failed=["q1"]), opts)

    assert down.notices_pending == 1
    assert down.delivery_errors == ["webhook: HTTP 500: ok"]
    assert [(n.state, n.attempts) for n in pending] == [("pending", 1)]
    assert pending[0].last_error == "HTTP 500: ok"
    assert back.notices_pending == 0
    assert [body["kind"] for body in hook.accepted] == ["fired"]
    delivered = notices(engine, Notification.sink == "webhook")
    assert [(n.state, n.attempts) for n in delivered] == [("delivered", 2)]


def test_an_alert_is_stored_before_its_notice_is_sent(
    engine: Engine, history: History
) -> None:
    def stored_first(body: dict[str, Any]) -> None:
        with session_factory(engine)() as session:
            alert = session.get(Alert, body["alert"]["id"])
            assert alert is not None and alert.state == "firing"

    with WebhookReceiver(on_request=stored_first) as hook:
        process_pass_alerts(
            engine, history.add(failed=["q1"]), options(webhook_url=hook.url)
        )

    assert hook.requests == 1 and not hook.errors


def test_the_webhook_url_never_appears_in_logs_or_errors(
    engine: Engine, history: History, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with WebhookReceiver(statuses=[500, 500]) as hook:
        url = hook.url
        opts = options(webhook_url=url, webhook_attempts=2)
        failing = process_pass_alerts(engine, history.add(failed=["q1"]), opts)
        delivered = process_pass_alerts(engine, history.add(failed=["q1"]), opts)
    # And a webhook nobody listens on any more: a connection error.
    closed = options(webhook_url=url, webhook_attempts=1)
    refused = process_pass_alerts(
        engine, history.add(failed=["q1"], unscored=["q3"]), closed
    )

    assert "HTTP Request: POST" in caplog.text  # httpx did log the requests
    assert refused.delivery_errors and refused.delivery_errors[0].startswith(
        "webhook: ConnectError"
    )
    assert failing.delivery_errors and delivered.notices_sent >= 1
    stored = [n.last_error or "" for n in notices(engine)]
    outcome_text = repr([failing, delivered, refused])
    for text in (caplog.text, outcome_text, *stored):
        assert "T0SECRET" not in text
        assert url not in text

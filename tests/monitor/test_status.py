"""``monitor status``: daemon alive, stale or stopped, the last and next pass,
open alerts, and the exit code that a probe or a cron check reads."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from monitor.cli import main
from monitor.commands.read import version_marker
from monitor.lease import stale_after_seconds
from monitor.store.db import session_factory
from monitor.store.models import Alert, Run, Worker


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(["status", *args])
    code = exited.value.code
    assert isinstance(code, int)
    return code, capsys.readouterr().out


def status_json(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code, out = status(capsys, "--json")
    return code, json.loads(out)


def add(engine: Engine, *rows: Any) -> None:
    with session_factory(engine).begin() as session:
        session.add_all(rows)


def worker(state: str = "idle", heartbeat_age: float = 1.0, **fields: Any) -> Worker:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": "box-a:101:aaaaaa",
        "host": "box-a",
        "pid": 101,
        "state": state,
        "interval_seconds": 4 * 3600.0,
        "started_at": now - timedelta(days=2),
        "heartbeat_at": now - timedelta(seconds=heartbeat_age),
        "next_due_at": now + timedelta(hours=1),
        "passes": 12,
        "skipped_ticks": 1,
        "last_run_id": "r-2",
        "stopped_at": now if state == "stopped" else None,
    }
    values.update(fields)
    return Worker(**values)


def run(
    run_id: str, *, status: str = "completed", age_hours: float = 3.0, **fields: Any
) -> Run:
    started = datetime.now(UTC) - timedelta(hours=age_hours)
    values: dict[str, Any] = {
        "id": run_id,
        "kind": "scheduled",
        "status": status,
        "started_at": started,
        "finished_at": None if status == "running" else started + timedelta(minutes=2),
        "owner": "box-a:101:aaaaaa",
        "prompt_version": "v1",
        "model": "offline/extractive-1",
        "git_sha": "abc",
        "golden_hash": "g",
        "corpus_fingerprint": "c",
        "judge_model": "offline",
        "judge_version": "j1",
        "threshold": 0.7,
        "score": 0.979 if status == "completed" else None,
    }
    values.update(fields)
    return Run(**values)


def alert(state: str = "firing", **fields: Any) -> Alert:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "rule": "quality",
        "fingerprint": "quality:v1",
        "state": state,
        "message": "rolling quality 0.612 is below threshold 0.70",
        "run_id": "r-2",
        "created_at": now - timedelta(hours=1),
        "last_seen_at": now,
    }
    values.update(fields)
    return Alert(**values)


def test_a_live_daemon_with_no_alerts_is_healthy_and_shows_the_next_pass(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add(engine, worker(), run("r-1", age_hours=7), run("r-2"))

    code, report = status_json(capsys)

    assert code == 0
    assert report["daemon"]["state"] == "alive"
    assert report["daemon"]["passes"] == 12
    assert report["daemon"]["next_due_at"] is not None
    assert report["last_pass"]["id"] == "r-2"
    assert report["last_pass"]["score"] == pytest.approx(0.979)
    assert 2.9 * 3600 < report["last_pass"]["age_seconds"] < 3 * 3600
    assert report["open_alerts"] == []


def test_open_alerts_make_the_exit_code_2_and_are_listed(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add(engine, worker(), run("r-2"))
    add(engine, alert(), alert(state="resolved", fingerprint="cost:v1", rule="cost"))

    code, report = status_json(capsys)

    assert code == 2
    assert [a["rule"] for a in report["open_alerts"]] == ["quality"]


def test_a_daemon_that_stopped_beating_is_stale_and_the_exit_code_is_1(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # Stale beats alerts: a dead watcher is the more urgent news.
    add(engine, worker(state="running", heartbeat_age=600.0), run("r-2"))
    add(engine, alert())

    code, report = status_json(capsys)

    assert code == 1
    assert report["daemon"]["state"] == "stale"
    assert report["daemon"]["next_due_at"] is None


def test_a_daemon_that_shut_down_cleanly_is_stopped_not_stale(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add(engine, worker(state="stopped", heartbeat_age=86400.0), run("r-2"))

    code, report = status_json(capsys)

    assert code == 0
    assert report["daemon"]["state"] == "stopped"


def test_the_newest_heartbeat_decides_when_an_old_daemon_row_is_left(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add(
        engine,
        worker(state="running", heartbeat_age=7200.0, id="box-a:99:old000", pid=99),
        worker(),
    )

    code, report = status_json(capsys)

    assert (code, report["daemon"]["worker"]) == (0, "box-a:101:aaaaaa")


def test_without_any_daemon_status_reports_none_and_the_last_pass(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add(engine, run("r-once", kind="manual", owner="box-c:7"))

    code, report = status_json(capsys)

    assert code == 0
    assert report["daemon"] == {"state": "none"}
    assert report["last_pass"]["id"] == "r-once"


def test_a_pass_in_flight_is_shown_apart_from_the_last_finished_one(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add(
        engine,
        worker(state="running"),
        run("r-2"),
        run("r-3", status="running", age_hours=0.01),
        run("r-rescore", kind="rescore", age_hours=0.001, parent_run_id="r-2"),
    )

    _, report = status_json(capsys)

    assert report["last_pass"]["id"] == "r-2"
    assert report["running_pass"]["id"] == "r-3"


def test_the_plain_report_says_it_in_a_few_lines(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add(engine, worker(), run("r-2"))
    add(engine, alert())

    code, out = status(capsys)

    assert code == 2
    assert "daemon: alive (box-a:101:aaaaaa), every 4h" in out
    assert re.search(r"last pass: r-2 completed, score 0.979, 2h58m(\d+s)? ago", out)
    assert "next pass due: " in out and "UTC" in out
    assert "open alerts: 1" in out
    assert "quality: rolling quality 0.612 is below threshold 0.70" in out


def test_an_alert_message_starting_with_its_rule_is_not_prefixed_twice(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add(engine, worker(), run("r-2"))
    add(
        engine,
        alert(
            rule="failures",
            fingerprint="failures:tasks",
            message="failures: 1 of 5 questions produced no graded report",
        ),
    )

    _, out = status(capsys)

    assert "  failures: 1 of 5 questions produced no graded report (since" in out
    assert "failures: failures:" not in out


def test_a_heartbeat_just_ahead_of_the_clock_shows_as_zero_seconds_ago(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add(engine, worker(heartbeat_age=-5.0), run("r-2"))

    code, report = status_json(capsys)
    _, out = status(capsys)

    assert code == 0
    assert report["daemon"]["heartbeat_age_seconds"] == 0.0
    assert "last heartbeat 0s ago" in out
    assert "-" not in out.split("last heartbeat ")[1].split(" ago")[0]


def test_status_without_a_database_says_how_to_make_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status"])

    err = capsys.readouterr().err.strip()
    assert exited.value.code == 1
    assert len(err.splitlines()) == 1 and "monitor run --once" in err


def test_the_history_marker_names_a_corpus_or_sources_backend_change() -> None:
    older = run("r-1", age_hours=7)
    same = run("r-2")
    new_corpus = run("r-3", corpus_fingerprint="c2")
    new_backend = run("r-4", sources_backend="snapshot:1")
    older.sources_backend = same.sources_backend = new_corpus.sources_backend = "local"

    assert version_marker(same, older) == ""
    assert version_marker(new_corpus, older) == "◆ corpus"
    assert version_marker(new_backend, older) == "◆ corpus"


def test_the_help_states_the_stale_rule_that_status_applies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = status(capsys, "--help")
    text = " ".join(out.split())

    assert code == 0
    assert "every interval/5 seconds, at least 0.5 s and at most 15 s" in text
    assert "older than 4 beats: 60 s for any interval of 75 s or more" in text
    assert "4/5 of the interval below that" in text
    # The rule in the help is the one applied.
    assert stale_after_seconds(4 * 3600) == stale_after_seconds(75) == 60
    assert stale_after_seconds(10) == pytest.approx(8.0)
    assert stale_after_seconds(1) == pytest.approx(2.0)


@pytest.mark.parametrize(("silent", "state"), [(59.0, "alive"), (61.0, "stale")])
def test_a_daemon_on_a_long_interval_is_stale_after_a_minute_of_silence(
    engine: Engine, capsys: pytest.CaptureFixture[str], silent: float, state: str
) -> None:
    add(engine, worker(state="running", heartbeat_age=silent), run("r-2"))

    _, report = status_json(capsys)

    assert report["daemon"]["interval_seconds"] == 4 * 3600
    assert report["daemon"]["state"] == state

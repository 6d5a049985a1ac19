"""``monitor run --once``, ``history``, ``show`` and ``python -m scout`` as a user
runs them: real processes (the ``monitor`` console script and ``python -m
scout``) in a private MONITOR_HOME, checked on exit codes and output lines. Bad
input of any kind must give one line on stderr, no traceback, the documented
exit code, and leave nothing half-written behind.

Commands whose refusal comes before any logging is set up, and passes that only
set the stage for a test, run in-process through ``monitor.cli.main`` (the same
entry point, without the second of imports that each process pays).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory

from monitor.golden import load_golden
from monitor.settings import DEFAULT_GOLDEN_FILE, get_monitor_settings
from monitor.store.db import alembic_config, downgrade_database, head_revision
from monitor.store.models import METRICS
from tests.fakes.openai_server import FakeOpenAI
from tests.monitor.conftest import Outcome

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
SUBSET = [question.id for question in load_golden(DEFAULT_GOLDEN_FILE).subset(5)]
EXIT_FAILED, EXIT_ALERT, EXIT_USAGE = 1, 2, 64
SCORE_LINE = re.compile(
    r"^Monitor score: (\d\.\d{3}) \(threshold (\d\.\d\d), run '([^']+)'\)$", re.M
)
PROCESS_TIMEOUT_S = 120


def command(*args: str, **env: str) -> Outcome:
    """Run a program from the virtualenv's bin (``monitor`` or ``python``)."""
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=REPO,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


def home() -> Path:
    return Path(os.environ["MONITOR_HOME"])


def database_url() -> str:
    return get_monitor_settings().sqlalchemy_url


def stored_runs() -> int:
    """Runs in the default SQLite database; 0 when there is no database."""
    path = home() / "monitor.db"
    if not path.exists():
        return 0
    with closing(sqlite3.connect(path)) as connection:
        (count,) = connection.execute("SELECT count(*) FROM runs").fetchone()
    return int(count)


def history(monitor_in_process: Any) -> list[dict[str, Any]]:
    outcome = monitor_in_process("history", "--json")
    assert outcome.code == 0, outcome.err
    runs: list[dict[str, Any]] = json.loads(outcome.out)
    return runs


def seeded_run(monitor_in_process: Any) -> str:
    """Run one pass in-process and return its id."""
    outcome = monitor_in_process("run", "--once")
    assert outcome.code in (0, EXIT_ALERT), outcome.err
    found = SCORE_LINE.search(outcome.out)
    assert found, outcome.out
    return found.group(3)


# The README's flow -------------------------------------------------------------


def test_run_once_in_an_empty_home_prints_five_questions_and_the_score(
    monitor_in_process: Any,
) -> None:
    assert not home().exists()

    outcome = command("monitor", "run", "--once")

    assert outcome.code in (0, EXIT_ALERT), outcome.err
    assert "Traceback" not in outcome.err
    lines = outcome.out.splitlines()
    for question_id in SUBSET:
        matching = [line for line in lines if line.split()[:1] == [question_id]]
        assert len(matching) == 1, (question_id, outcome.out)
        assert re.search(r"checks \d/\d .*grounding=", matching[0])
    found = SCORE_LINE.search(outcome.out)
    assert found, outcome.out
    score, threshold, run_id = float(found.group(1)), found.group(2), found.group(3)
    assert threshold == "0.70"
    assert (outcome.code == EXIT_ALERT) == (score < 0.70)

    runs = history(monitor_in_process)
    assert [run["id"] for run in runs] == [run_id]
    run = runs[0]
    assert run["status"] == "completed"
    assert round(run["score"], 3) == score
    assert run["prompt_version"] and run["model"] == "offline/extractive-1"
    assert run["git_sha"] and run["started_at"]

    shown = monitor_in_process("show", run_id, "--json")
    assert shown.code == 0, shown.err
    payload = json.loads(shown.out)
    assert payload["id"] == run_id
    assert sorted(r["question_id"] for r in payload["results"]) == sorted(SUBSET)
    for result in payload["results"]:
        assert result["status"] == "completed"
        assert sorted(result["scores"]) == sorted(METRICS)
        assert all(1 <= s["value"] <= 5 for s in result["scores"].values())


def test_a_threshold_above_the_score_prints_an_alert_and_exits_2(
    monitor_in_process: Any,
) -> None:
    outcome = monitor_in_process("run", "--once", "--threshold", "0.99")

    assert outcome.code == EXIT_ALERT
    alerts = [line for line in outcome.err_lines if line.startswith("ALERT: ")]
    assert alerts, outcome.err
    assert any("threshold 0.99" in line for line in alerts)
    assert "OK:" not in outcome.out
    assert SCORE_LINE.search(outcome.out)


def test_monitor_help_lists_the_commands() -> None:
    outcome = command("monitor", "--help")

    assert outcome.code == 0, outcome.err
    for name in ("run", "history", "show", "db"):
        assert re.search(rf"^\W*{name}\b", outcome.out, re.M), outcome.out


# Bad input: one line, the right code, nothing half-written ---------------------------


def test_an_unknown_run_id_names_the_nearest_ids(monitor_in_process: Any) -> None:
    run_id = seeded_run(monitor_in_process)

    outcome = command("monitor", "show", run_id[:-1] + "z")

    assert outcome.code == EXIT_FAILED
    line = outcome.one_error_line()
    assert run_id[:-1] + "z" in line and run_id in line
    assert [run["id"] for run in history(monitor_in_process)] == [run_id]


def test_a_malformed_golden_file_is_refused_before_anything_is_written(
    tmp_path: Path, monitor_in_process: Any
) -> None:
    golden = tmp_path / "golden.toml"
    golden.write_text('version = 1\n[[questions]]\nid = "only-an-id"\n')

    outcome = monitor_in_process("run", "--once", "--golden", str(golden))

    assert outcome.code == EXIT_FAILED
    assert str(golden) in outcome.one_error_line()
    assert outcome.out == ""
    assert stored_runs() == 0


def test_an_unwritable_data_folder_is_one_line(
    tmp_path: Path, monitor_in_process: Any
) -> None:
    # Tests run as root, for whom permissions do not block writes; a folder
    # below a regular file cannot be created by anyone.
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")

    outcome = monitor_in_process("run", "--once", MONITOR_HOME=str(blocker / "var"))

    assert outcome.code == EXIT_FAILED
    line = outcome.one_error_line()
    assert str(blocker / "var") in line and "MONITOR_HOME" in line
    assert blocker.read_text() == "not a folder"


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    url = "postgresql+psycopg://u:pw-s3cret-77@127.0.0.1:1/x"

    outcome = command("monitor", "run", "--once", MONITOR_DATABASE_URL=url)

    assert outcome.code == EXIT_FAILED
    line = outcome.one_error_line()
    assert "127.0.0.1:1" in line
    assert "pw-s3cret-77" not in outcome.out + outcome.err
    assert not home().exists()


@pytest.mark.parametrize(
    "flags",
    [
        ("--threshold", "1.5"),
        ("--concurrency", "0"),
        ("--threshold", "high"),
    ],
    ids=["threshold-above-1", "concurrency-0", "threshold-not-a-number"],
)
def test_a_bad_flag_exits_64_with_one_line(flags: tuple[str, str]) -> None:
    outcome = command("monitor", "run", "--once", *flags)

    assert outcome.code == EXIT_USAGE
    assert flags[0] in outcome.one_error_line()
    assert not home().exists()


def test_a_bad_interval_is_one_line_and_neither_success_nor_alert(
    monitor_in_process: Any,
) -> None:
    outcome = monitor_in_process("run", "--every", "4x")

    assert outcome.code not in (0, EXIT_ALERT)
    assert "4x" in outcome.one_error_line() or "--every" in outcome.err
    assert not home().exists()


def test_a_database_behind_its_migrations_says_run_db_upgrade(
    monitor_in_process: Any,
) -> None:
    run_id = seeded_run(monitor_in_process)
    script = ScriptDirectory.from_config(alembic_config())
    previous = script.get_revision(head_revision()).down_revision
    assert isinstance(previous, str)
    downgrade_database(database_url(), previous)

    outcome = monitor_in_process("run", "--once")

    assert outcome.code == EXIT_FAILED
    assert "monitor db upgrade" in outcome.one_error_line()
    assert outcome.out == ""
    upgraded = monitor_in_process("db", "upgrade")
    assert upgraded.code == 0, upgraded.err
    assert [run["id"] for run in history(monitor_in_process)] == [run_id]


def test_a_bad_scout_setting_names_the_variable(monitor_in_process: Any) -> None:
    outcome = monitor_in_process("run", "--once", SCOUT_TIMEOUT="abc")

    assert outcome.code == EXIT_FAILED
    assert "SCOUT_TIMEOUT" in outcome.one_error_line()
    assert stored_runs() == 0


def test_a_json_setting_that_is_not_json_names_the_variable(
    monitor_in_process: Any,
) -> None:
    outcome = monitor_in_process("run", "--once", SCOUT_MODEL_PRICES="notjson")

    assert outcome.code == EXIT_FAILED
    assert "SCOUT_MODEL_PRICES" in outcome.one_error_line()
    assert stored_runs() == 0


def test_db_upgrade_in_an_unwritable_data_folder_says_which_in_one_line(
    monitor_in_process: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    outcome = monitor_in_process("db", "upgrade", MONITOR_HOME=str(blocker / "var"))

    assert outcome.code == EXIT_FAILED
    assert "MONITOR_HOME" in outcome.one_error_line()


# python -m scout ------------------------------------------------------------------


def test_scout_refuses_an_empty_question_in_one_line() -> None:
    outcome = command("python", "-m", "scout", "")

    assert outcome.code == EXIT_FAILED
    assert "question is empty" in outcome.one_error_line()
    assert outcome.out == ""


def test_scout_review_with_no_answer_on_stdin_does_not_approve_the_plan() -> None:
    outcome = command("python", "-m", "scout", "What does for-else do?", "--review")

    assert outcome.code == EXIT_FAILED
    assert "Traceback" not in outcome.err
    errors = [line for line in outcome.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "not approved" in errors[0], outcome.err
    assert outcome.out == ""


def test_scout_names_a_missing_corpus_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-corpus"

    outcome = command(
        "python", "-m", "scout", "What is a list?", SCOUT_CORPUS_DIR=str(missing)
    )

    assert outcome.code == EXIT_FAILED
    assert "Traceback" not in outcome.err
    errors = [line for line in outcome.err_lines if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0], outcome.err
    assert outcome.out == ""


def test_scout_reports_a_rejected_key_without_showing_it() -> None:
    key = "sk-rejected-key-4242"
    with FakeOpenAI() as fake:
        for _ in range(5):
            fake.script(status=401, body={"error": {"message": "invalid api key"}})

        outcome = command(
            "python",
            "-m",
            "scout",
            "What is a list?",
            SCOUT_BACKEND="chat",
            SCOUT_BASE_URL=fake.base_url,
            SCOUT_API_KEY=key,
        )
        asked = len(fake.requests)

    assert outcome.code == EXIT_FAILED
    assert asked >= 1
    errors = [line for line in outcome.err_lines if line.startswith("error:")]
    assert len(errors) == 1 and "401" in errors[0], outcome.err
    assert "Traceback" not in outcome.err
    assert key not in outcome.out + outcome.err

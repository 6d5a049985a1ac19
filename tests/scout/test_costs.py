"""``python -m scout.costs``: the per-node table read back from a usage log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from scout.config import get_settings
from scout.costs import main
from scout.errors import ConfigError
from scout.observability import UsageMeter, UsageRow

REPO = Path(__file__).resolve().parents[2]
LLAMA = "meta/llama-3.3-70b-instruct"  # (0.60, 0.60) per million tokens
NANO = "nvidia/nemotron-3-nano-30b-a3b"  # (0.06, 0.24)
UNPRICED = "acme/unpriced-7b"


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No .env and no SCOUT_ variables from the machine running the tests."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("SCOUT_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def row(
    node: str, model: str, tokens_in: int | None, tokens_out: int | None
) -> UsageRow:
    return UsageRow(node, model, tokens_in, tokens_out, seconds=0.5, cost=None)


def write_log(path: Path, rows: list[UsageRow]) -> Path:
    path.write_text(
        "".join(json.dumps(asdict(item)) + "\n" for item in rows), encoding="utf-8"
    )
    return path


def priced_run(tmp_path: Path) -> Path:
    return write_log(
        tmp_path / "last_run.jsonl",
        [
            row("planner", LLAMA, 1000, 200),
            row("reader", NANO, 100, 50),
            row("writer", LLAMA, 5000, 1000),
            row("planner", LLAMA, 1000, 200),
            row("reader", NANO, 100, 50),
            row("reader", NANO, 100, 50),
        ],
    )


def table_rows(text: str) -> dict[str, list[str]]:
    """Data rows of the rich table by node name, cells stripped."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│┃").split("│")]
        if len(cells) == 6 and cells[1] and cells[0] != "node":
            rows[cells[0]] = cells
    return rows


def test_table_shows_nodes_most_expensive_first_and_a_total(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = priced_run(tmp_path)

    assert main(["--last-run", "--log", str(log)]) == 0

    out = capsys.readouterr().out
    rows = table_rows(out)
    assert list(rows) == ["writer", "planner", "reader", "TOTAL"]
    assert rows["writer"][1:5] == ["1", "5,000", "1,000", "0.003600"]
    assert rows["planner"][1:5] == ["2", "2,000", "400", "0.001440"]
    assert rows["reader"][1:5] == ["3", "300", "150", "0.000054"]
    assert rows["TOTAL"][1:] == ["6", "7,300", "1,550", "0.005094", "3.00"]
    assert "illustrative" in out
    assert """SCOUT_MODEL_PRICES='{"model": [in, out]}'""" in out


def test_equal_costs_are_ordered_by_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(
        tmp_path / "log.jsonl",
        [
            row("small", "offline/extractive-1", 10, 1),
            row("big", "offline/extractive-1", 900, 90),
        ],
    )

    assert main(["--log", str(log)]) == 0

    assert list(table_rows(capsys.readouterr().out)) == ["big", "small", "TOTAL"]


def test_unknown_token_counts_show_as_unknown_and_totals_say_at_least(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(
        tmp_path / "log.jsonl",
        [row("writer", LLAMA, 5000, 1000), row("reader", NANO, None, None)],
    )

    assert main(["--log", str(log)]) == 0

    rows = table_rows(capsys.readouterr().out)
    assert rows["reader"][2:5] == ["?", "?", "?"]
    assert rows["TOTAL"][2:5] == ["≥5,000", "≥1,000", "≥0.003600"]


def test_a_model_without_a_price_has_unknown_cost_and_a_footnote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "log.jsonl", [row("writer", UNPRICED, 100, 10)])

    assert main(["--log", str(log)]) == 0

    out = capsys.readouterr().out
    assert table_rows(out)["writer"][2:5] == ["100", "10", "?"]
    assert f"no price for model {UNPRICED}" in out


def test_prices_from_the_environment_override_the_built_in_ones(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCOUT_MODEL_PRICES", json.dumps({UNPRICED: [1.0, 2.0]}))
    log = write_log(tmp_path / "log.jsonl", [row("writer", UNPRICED, 1000, 500)])

    assert main(["--log", str(log)]) == 0

    out = capsys.readouterr().out
    assert table_rows(out)["writer"][4] == "0.002000"
    assert "no price for model" not in out


def test_over_the_token_budget_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = priced_run(tmp_path)

    assert main(["--log", str(log), "--max-tokens", "8850"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["--log", str(log), "--max-tokens", "8849"]) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "8,850" in err[0] and "8,849" in err[0]


def test_a_missing_log_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nothing.jsonl"

    assert main(["--last-run", "--log", str(missing)]) == 1

    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f'error: no usage log at {missing}: run `python -m scout "question"` first'
    ]


@pytest.mark.parametrize(
    "bad_line",
    [
        "{not json",
        '"a string"',
        '{"node": "w", "model": "m", "input_tokens": "12", '
        '"output_tokens": 1, "seconds": 0.1}',
        '{"node": "w"}',
    ],
)
def test_a_malformed_line_is_named_by_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_line: str
) -> None:
    log = write_log(tmp_path / "log.jsonl", [row("writer", LLAMA, 1, 1)])
    with log.open("a", encoding="utf-8") as handle:
        handle.write("\n" + bad_line + "\n")

    assert main(["--log", str(log)]) == 1

    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1
    assert f"{log}:3:" in err[0]
    assert captured.out == ""


def test_json_output_keeps_unknown_counts_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(
        tmp_path / "log.jsonl",
        [
            row("writer", LLAMA, 5000, 1000),
            row("reader", NANO, None, 50),
            row("reader", NANO, None, 50),
        ],
    )

    assert main(["--last-run", "--log", str(log), "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert [node["node"] for node in report["nodes"]] == ["writer", "reader"]
    reader = report["nodes"][1]
    assert reader["calls"] == 2
    assert reader["input_tokens"] == {"value": None, "unknown_calls": 2}
    assert reader["output_tokens"] == {"value": 100, "unknown_calls": 0}
    assert report["total"]["input_tokens"] == {"value": 5000, "unknown_calls": 2}
    assert report["total"]["cost_usd"]["unknown_calls"] == 2
    assert report["unpriced_models"] == []


def test_a_bad_command_line_exits_1_not_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--max-tokens", "lots"])

    assert stopped.value.code == 1
    assert "--max-tokens" in capsys.readouterr().err


def test_the_module_runs_and_reads_the_configured_log(tmp_path: Path) -> None:
    log = priced_run(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    env.update(PYTHONPATH=str(REPO), SCOUT_USAGE_LOG=str(log))

    done = subprocess.run(
        [sys.executable, "-m", "scout.costs", "--last-run", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"]["calls"] == 6


def test_a_usage_log_that_cannot_be_written_is_a_config_error_naming_it(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    meter = UsageMeter(log_path=blocker / "last_run.jsonl")

    with pytest.raises(ConfigError, match="SCOUT_USAGE_LOG") as caught:
        meter.start_log()

    assert str(blocker) in str(caught.value)

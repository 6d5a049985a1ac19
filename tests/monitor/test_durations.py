"""Durations on the command line: the accepted forms, one clear error for the rest."""

from __future__ import annotations

import pytest

from monitor.cli import EXIT_USAGE, main
from monitor.durations import ACCEPTED_FORMS, format_duration, parse_duration
from scout.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("4h", 14400),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1d12h", 129600),
        ("2w", 1209600),
        ("0.5s", 0.5),
        ("1.5h", 5400),
        (" 1H 30M ", 5400),
    ],
)
def test_accepted_durations_are_read_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "5", "1:30", "4 hours", "four hours", "-5s", "0s", "4x", "h", "1h30"]
)
def test_anything_else_is_one_error_naming_the_value_and_the_accepted_forms(
    text: str,
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_duration(text, option="--every")

    message = str(raised.value)
    assert message.startswith(f"--every {text!r} is not a duration")
    assert ACCEPTED_FORMS in message and "\n" not in message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5400, "1h30m"), (86400, "1d"), (14400, "4h"), (0.5, "0.5s"), (65, "1m5s")],
)
def test_durations_print_in_their_shortest_form(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_a_bad_every_on_the_command_line_is_a_usage_error_of_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--every", "5"])

    err = capsys.readouterr().err.strip()
    assert exited.value.code == EXIT_USAGE
    assert len(err.splitlines()) == 1
    assert "--every '5' is not a duration" in err and ACCEPTED_FORMS in err


def test_a_jitter_over_half_the_interval_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--every", "10m", "--jitter", "6m"])

    assert exited.value.code == EXIT_USAGE
    assert "--jitter 6m is more than half of --every 10m" in capsys.readouterr().err

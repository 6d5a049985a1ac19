"""Fixtures for the monitor's tests: the `monitor` command run in-process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from monitor.cli import main as monitor_main
from tests.conftest import clear_settings_caches


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()

    def one_error_line(self) -> str:
        """The single stderr line of a refused command; fails on anything more."""
        assert "Traceback" not in self.out + self.err, self.err
        assert len(self.err_lines) == 1, self.err
        return self.err_lines[0]


@pytest.fixture
def monitor_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """``monitor ARGS`` through the console entry point, in this process, with
    the given environment variables set for the rest of the test. The command
    sends log lines to the stderr it finds, as it would in its own process; the
    logging set-up of this process is restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(*args: str, **env: str) -> Outcome:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        clear_settings_caches()
        capsys.readouterr()
        try:
            monitor_main(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        else:
            code = 0
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    yield run
    root.handlers[:] = handlers
    root.setLevel(level)

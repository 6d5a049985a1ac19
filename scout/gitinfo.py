"""The git revision of the code that runs, stamped on every run and trace.

Runs compare by version, so the sha has to say which code produced a score, and
the dirty flag has to say when it does not quite: tracked files changed since
that commit. Untracked files are ignored: the data directories, ``.env`` and
scratch files that live in a checkout would otherwise mark every run dirty,
while a new module only matters once it is added. Outside a checkout (a wheel,
a container without ``.git``) or without git, the ``GIT_SHA`` variable set at
build time is used; failing that, ``"unknown"``.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

GIT_TIMEOUT_S = 3.0
UNKNOWN_SHA = "unknown"
_PACKAGE_DIR = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=8)
def git_revision(cwd: Path | None = None) -> tuple[str, bool]:
    """``(sha, dirty)`` of the checkout at ``cwd`` (default: the one holding this
    package). Cached per process; never raises."""
    directory = cwd if cwd is not None else _PACKAGE_DIR
    sha = _git(directory, "rev-parse", "HEAD")
    if sha is None:
        return _from_environment(directory)

    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return sha, bool(status)


def _from_environment(directory: Path) -> tuple[str, bool]:
    sha = os.environ.get("GIT_SHA", "").strip()
    if sha:
        return sha, False
    logger.debug("%s is not a git checkout and GIT_SHA is not set", directory)
    return UNKNOWN_SHA, False


def _git(directory: Path, *args: str) -> str | None:
    """The stripped output of ``git args`` in ``directory``, or ``None``."""
    # No optional locks: a status must not block, or be blocked by, a commit
    # that runs in the same checkout at the same time.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        logger.debug("git %s failed in %s: %s", args[0], directory, error)
        return None

    if done.returncode != 0:
        logger.debug("git %s failed in %s: %s", args[0], directory, done.stderr)
        return None
    return done.stdout.strip()

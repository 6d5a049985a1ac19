"""The git revision stamped on runs: from git, else from ``GIT_SHA``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from scout.gitinfo import git_revision


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("GIT_SHA", raising=False)
    git_revision.cache_clear()
    yield
    git_revision.cache_clear()


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.org", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git(checkout, "init", "-q")
    (checkout / "agent.py").write_text("print('v1')\n", encoding="utf-8")
    git(checkout, "add", "agent.py")
    git(checkout, "commit", "-q", "-m", "first")
    return checkout


def test_a_clean_checkout_gives_its_head_sha(repo: Path) -> None:
    assert git_revision(repo) == (git(repo, "rev-parse", "HEAD"), False)


def test_a_changed_tracked_file_marks_the_revision_dirty(repo: Path) -> None:
    (repo / "agent.py").write_text("print('v2')\n", encoding="utf-8")

    sha, dirty = git_revision(repo)

    assert sha == git(repo, "rev-parse", "HEAD")
    assert dirty is True


def test_untracked_files_do_not_mark_the_revision_dirty(repo: Path) -> None:
    (repo / "notes.txt").write_text("scratch\n", encoding="utf-8")

    assert git_revision(repo)[1] is False


def test_the_revision_is_cached_for_the_process(repo: Path) -> None:
    before = git_revision(repo)
    (repo / "agent.py").write_text("print('v3')\n", encoding="utf-8")
    git(repo, "commit", "-q", "-am", "second")

    assert git_revision(repo) == before
    git_revision.cache_clear()
    assert git_revision(repo)[0] != before[0]


def test_outside_git_the_git_sha_variable_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("GIT_SHA", "0123abc")

    assert git_revision(tmp_path) == ("0123abc", False)


def test_outside_git_without_git_sha_the_revision_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))

    assert git_revision(tmp_path) == ("unknown", False)


def test_without_git_installed_the_git_sha_variable_is_used(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(repo / "no-such-bin"))
    monkeypatch.setenv("GIT_SHA", "feedbee")

    assert git_revision(repo) == ("feedbee", False)

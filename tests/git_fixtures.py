"""Git for tests: an isolated git configuration, a bare `origin` whose default branch is `trunk`
(not main), and helpers to add commits to it and read from it.

Import the fixtures into a test module: `from git_fixtures import git_isolation, origin_repo`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, Mapping, Optional

import pytest

DEFAULT_BRANCH = "trunk"
TEST_IDENTITY = ("Test Maintainer", "maintainer@example.invalid")


def git_env(config_file: Path, identity: bool = True) -> Dict[str, str]:
    """Environment entries that make git ignore this machine's configuration; with `identity`,
    the isolated config names a committer."""
    config_file.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[init]\n\tdefaultBranch = main\n", "[advice]\n\tdetachedHead = false\n"]
    if identity:
        lines.append(f"[user]\n\tname = {TEST_IDENTITY[0]}\n\temail = {TEST_IDENTITY[1]}\n")
    config_file.write_text("".join(lines))
    return {"GIT_CONFIG_GLOBAL": str(config_file), "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str, env: Optional[Mapping[str, str]] = None) -> str:
    done = subprocess.run(["git", *args], cwd=str(cwd), env=dict(env) if env is not None else None,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _author_env() -> Dict[str, str]:
    return {**os.environ, "GIT_AUTHOR_NAME": TEST_IDENTITY[0], "GIT_AUTHOR_EMAIL": TEST_IDENTITY[1],
            "GIT_COMMITTER_NAME": TEST_IDENTITY[0], "GIT_COMMITTER_EMAIL": TEST_IDENTITY[1]}


def _write_files(work: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if name.endswith(".sh"):
            target.chmod(0o755)


def commit_to(origin: Path, branch: str, files: Mapping[str, str], message: str,
              start: str = DEFAULT_BRANCH) -> str:
    """Commit `files` (path -> text) on `branch` of the bare `origin` (created from `start` when
    new) through a temporary clone; returns the new commit's sha."""
    env = _author_env()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch) / "work"
        git(Path(scratch), "clone", "--quiet", str(origin), str(work), env=env)
        exists = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"origin/{branch}"], cwd=work,
                                capture_output=True, timeout=60).returncode == 0
        git(work, "checkout", "--quiet", "-B", branch, f"origin/{branch}" if exists else f"origin/{start}", env=env)
        _write_files(work, files)
        git(work, "add", "--all", env=env)
        git(work, "commit", "--quiet", "-m", message, env=env)
        git(work, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", env=env)
        return git(work, "rev-parse", "HEAD")


def make_origin(path: Path, files: Optional[Mapping[str, str]] = None, setup_sh: Optional[str] = None) -> Path:
    """A bare repository at `path` whose default branch is `trunk`, with a first commit: a README,
    a .gitignore (`.venv/`, `*.log`), `files` and, when given, `setup.sh` with that text. Every update
    of its branches is kept in their reflogs (`ref_history`), which bare repositories do not do by default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    git(path.parent, "init", "--quiet", "--bare", f"--initial-branch={DEFAULT_BRANCH}", str(path))
    git(path, "config", "core.logAllRefUpdates", "true")
    first = {"README.md": "# Widgets\n", ".gitignore": ".venv/\n*.log\n"}
    first.update(files or {})
    if setup_sh is not None:
        first["setup.sh"] = setup_sh
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch) / "work"
        env = _author_env()
        git(Path(scratch), "init", "--quiet", f"--initial-branch={DEFAULT_BRANCH}", str(work), env=env)
        _write_files(work, first)
        git(work, "add", "--all", env=env)
        git(work, "commit", "--quiet", "-m", "Initial commit", env=env)
        git(work, "push", "--quiet", str(path), f"HEAD:refs/heads/{DEFAULT_BRANCH}", env=env)
    return path


def read_file(origin: Path, branch: str, name: str) -> Optional[str]:
    """`name` as committed on `branch` of `origin`, or None when the branch or file is missing."""
    done = subprocess.run(["git", "show", f"{branch}:{name}"], cwd=str(origin), capture_output=True, text=True,
                          timeout=60)
    return done.stdout if done.returncode == 0 else None


def ref_history(origin: Path, branch: str) -> list:
    """(old sha, new sha) of each update of `branch` in `origin`, oldest first, from its reflog."""
    log = origin / "logs" / "refs" / "heads" / branch
    if not log.exists():
        return []
    return [tuple(line.split(" ", 2)[:2]) for line in log.read_text().splitlines() if line.strip()]


def branches(origin: Path) -> list:
    """Branch names of `origin`."""
    return git(origin, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()


def log_messages(origin: Path, branch: str) -> list:
    """Subjects of `branch` in `origin`, newest first."""
    return git(origin, "log", "--format=%s", branch).splitlines()


@pytest.fixture
def git_isolation(tmp_path: Path, monkeypatch) -> Path:
    """This machine's git configuration is out of the test; the isolated one names a committer."""
    config = tmp_path / "gitconfig"
    for name, value in git_env(config).items():
        monkeypatch.setenv(name, value)
    return config


@pytest.fixture
def origin_repo(tmp_path: Path, git_isolation) -> Path:
    """A bare `origin` at `<tmp>/origin.git`: default branch `trunk`, one commit, no setup.sh."""
    return make_origin(tmp_path / "origin.git")

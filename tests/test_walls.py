"""A slot's walls (lib.walls) with the real bubblewrap: what a commit inside reaches of the shared store,
what the runner takes back afterwards (lib.store_view), Claude Code's own sandbox nested inside, and a
wall that ends with its launcher."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from git_fixtures import git
from lib.config import Config
from lib.repo_manager import RepoManager
from lib.processes import SESSION_MARKER_VAR, end_session_processes, marked_processes
from lib.sandbox import launch
from lib.walls import Walls

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

TOKEN = "ghp_viewTest0123456789abcdefABCDEF"


@pytest.fixture
def slot(tmp_path, origin_repo):
    """Slot 0 of octo/widgets prepared for issue 5, and the walls of that issue."""
    config = Config.from_dict({"github": {"token": TOKEN, "repo": "octo/widgets", "base_repo_path": str(tmp_path / "slots"),
                                          "max_concurrent": 2}, "claude": {"kill_grace_seconds": 1}}, tmp_path)
    repos = RepoManager(config)
    info = repos.prepare_slot(0, 5, base_branch="trunk", clone_url=str(origin_repo),
                              setup_log=tmp_path / "logs" / "issue-5" / "1.setup.log")
    walls = Walls(config, config.repositories[0], repos, tmp_path / "logs" / "issue-5", 5)
    return info.path, repos, walls


def inside(walls, path: Path, script: str) -> subprocess.CompletedProcess:
    """`script` run by bash in the slot's wall, as setup.sh or a check is."""
    process = launch(["bash", "-c", script], wall=walls.for_tools(path), cwd=path, env={"PATH": "/usr/bin:/bin"},
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = process.communicate(timeout=60)
    return subprocess.CompletedProcess(script, process.returncode, out.decode(), "")


def store(path: Path) -> Path:
    return path.parent / "widgets.store.git"


def test_a_commit_in_the_wall_reaches_the_branch_once_collected(slot):
    path, repos, walls = slot
    before = git(path, "rev-parse", "HEAD")

    done = inside(walls, path, "echo hi > greeting.txt && git add -A && git commit -qm 'Add a greeting' && git log -1 --format=%s")

    assert done.returncode == 0, done.stdout
    assert "Add a greeting" in done.stdout
    assert git(store(path), "rev-parse", "refs/heads/issue-5") == before  # not yet: the wall had its own refs
    assert repos.collect_sandbox_work(path) == []
    assert git(store(path), "log", "-1", "--format=%s", "refs/heads/issue-5") == "Add a greeting"
    assert git(path, "status", "--porcelain") == ""
    assert repos.collect_sandbox_work(path) == []  # once


def test_the_wall_cannot_move_another_issues_branch_nor_see_the_stores_config(slot):
    path, repos, walls = slot
    other = git(store(path), "rev-parse", "refs/remotes/origin/trunk")
    git(store(path), "update-ref", "refs/heads/issue-9", other)

    done = inside(walls, path, "git branch --list; git commit -q --allow-empty -m evil &&"
                               " git update-ref refs/heads/issue-9 HEAD; cat $(git rev-parse --git-common-dir)/config;"
                               " echo '[core]' >> $(git rev-parse --git-common-dir)/config; echo written=$?")
    repos.collect_sandbox_work(path)

    assert git(store(path), "rev-parse", "refs/heads/issue-9") == other
    assert "issue-9" not in done.stdout.split("written")[0]  # other issues' branches are not in the view
    assert "url" not in done.stdout and "written=1" in done.stdout
    assert "remote" in (store(path) / "config").read_text()


def test_a_head_left_on_another_branch_is_detached_at_its_commit(slot):
    path, repos, walls = slot

    inside(walls, path, "git checkout -q -b elsewhere && git commit -q --allow-empty -m 'on elsewhere'")
    repos.collect_sandbox_work(path)

    assert git(path, "log", "-1", "--format=%s", "HEAD") == "on elsewhere"
    assert repos.bring_branch_to_head(path, "issue-5").startswith("Claude Code left its commits on a detached HEAD")
    assert git(store(path), "log", "-1", "--format=%s", "refs/heads/issue-5") == "on elsewhere"


def test_a_nested_repository_loses_its_git_before_git_outside_could_run_its_filter(slot, tmp_path):
    """The agent makes a nested repository whose config names a clean filter, and stages it as a
    gitlink: `git status` or `git add` of the slot would run that filter outside the sandbox."""
    path, repos, walls = slot
    planted = tmp_path / "PWNED"
    script = (f"git init -q sub && cd sub && echo a > t && echo '* filter=evil' > .gitattributes && git add -A &&"
              f" git commit -qm s && git config filter.evil.clean 'sh -c \"touch {planted}; cat\"' &&"
              " echo b > t && cd .. && git add sub && git init -q loose && echo x > loose/f")
    assert inside(walls, path, script).returncode == 0

    notes = repos.collect_sandbox_work(path)

    assert {note.split("'")[1] for note in notes} == {"sub", "loose"}
    assert not (path / "sub" / ".git").exists() and not (path / "loose" / ".git").exists()
    git(path, "status", "--porcelain")
    repos.commit_all(path, "save")
    assert not planted.exists()


def test_the_attack_the_collect_step_defeats_is_real(tmp_path):
    """The control: the same nested repository, run by git with the runner's settings and no collect."""
    top = tmp_path / "top"
    planted = tmp_path / "PWNED"
    git(tmp_path, "init", "-q", str(top))
    subprocess.run(["sh", "-c", f"git init -q sub && cd sub && echo a > t && echo '* filter=evil' > .gitattributes"
                                f" && git add -A && git -c user.name=a -c user.email=a@b commit -qm s && git config"
                                f" filter.evil.clean 'sh -c \"touch {planted}; cat\"' && echo b > t && cd .. &&"
                                " git add sub"], cwd=top, check=True)
    env_settings = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]
    subprocess.run(["git", *env_settings, "status", "--porcelain"], cwd=top, capture_output=True)
    assert planted.exists()


def test_empty_mount_points_of_claudes_own_sandbox_are_not_committed(slot):
    path, repos, walls = slot
    (path / ".env").write_text("")  # was there before: kept
    git(path, "add", ".env")
    git(path, "commit", "-qm", "an empty .env of the repository's")

    inside(walls, path, ": > package.json; : > .gitmodules; echo '{}' > .mcp.json; : > notes.txt")
    repos.collect_sandbox_work(path)

    assert not (path / "package.json").exists() and not (path / ".gitmodules").exists()
    assert (path / ".mcp.json").read_text() == "{}\n" and (path / "notes.txt").exists() and (path / ".env").exists()


def test_alternates_written_into_the_shared_objects_are_removed(slot):
    path, repos, walls = slot

    inside(walls, path, "echo /tmp > $(git rev-parse --git-common-dir)/objects/info/alternates")
    notes = repos.collect_sandbox_work(path)

    assert not (store(path) / "objects" / "info" / "alternates").exists()
    assert notes == ["removed alternates that the agent wrote into the store's objects"]


def test_claude_codes_own_bubblewrap_works_nested_inside_the_wall(slot):
    """Claude Code's sandbox runs every Bash call in a bubblewrap of its own that mounts a fresh /proc:
    the wall's PID namespace lets it."""
    path, _, walls = slot
    nested = ("bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib"
              " --symlink usr/lib64 /lib64 --proc /proc --dev /dev --bind $PWD $PWD --chdir $PWD -- sh -c"
              " 'echo nested: $(ls /proc | grep -c \"^[0-9]*$\") processes; touch made-inside'")

    done = inside(walls, path, nested)

    assert done.returncode == 0, done.stdout
    assert "nested: " in done.stdout and (path / "made-inside").exists()


def test_the_wall_ends_whole_with_its_launcher(slot, request):
    """SIGKILL of the launcher (a runner's kill -9 of its agent) takes every process in the wall with
    it, tools in sessions of their own included: nothing is left to find."""
    path, _, walls = slot
    marker = str(uuid.uuid4())
    process = launch(["bash", "-c", "setsid sleep 300 & setsid sleep 300 & sleep 300"], wall=walls.for_tools(path),
                     cwd=path, env={"PATH": "/usr/bin:/bin", SESSION_MARKER_VAR: marker})
    request.addfinalizer(lambda: end_session_processes(marker, 1))

    def sleeping():
        return [found for found in marked_processes(marker) if found.name() == "sleep"]

    deadline = time.monotonic() + 10
    while len(sleeping()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sleeping()) == 3

    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    deadline = time.monotonic() + 10
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marked_processes(marker) == []

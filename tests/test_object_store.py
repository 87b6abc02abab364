"""Slots on one shared object store: worktrees of a bare store, fetched once, safe to share."""

import os
import subprocess
import threading
from pathlib import Path

import pytest

from git_fixtures import commit_to, git, make_origin
from lib.config import Config
from lib.object_store import ObjectStore, StoreError
from lib.git_commands import GitError
from lib.repo_manager import RepoManager

TOKEN = "ghp_storeTest0123456789abcdefABCDEF"


@pytest.fixture
def config(tmp_path):
    return Config.from_dict({"github": {"token": TOKEN, "repo": "octo/widgets", "base_repo_path": str(tmp_path / "slots"),
                                        "max_concurrent": 4},
                             "claude": {"kill_grace_seconds": 1}, "setup_timeout_seconds": 30}, tmp_path)


def prepare(repos, origin, tmp_path, slot=0, issue=5):
    return repos.prepare_slot(slot, issue, base_branch="trunk", clone_url=str(origin),
                              setup_log=tmp_path / "logs" / f"issue-{issue}" / "1.setup.log")


def store_of(tmp_path) -> Path:
    return tmp_path / "slots" / "widgets.store.git"


def test_four_runners_at_once_get_clean_worktrees_of_one_intact_store(config, origin_repo, tmp_path):
    errors, infos = [], {}

    def run(slot):
        try:
            infos[slot] = prepare(RepoManager(config), origin_repo, tmp_path, slot=slot, issue=10 + slot)
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    for slot, info in infos.items():
        assert git(info.path, "symbolic-ref", "--short", "HEAD") == f"issue-{10 + slot}"
        assert git(info.path, "status", "--porcelain") == ""
        assert (info.path / ".git").is_file()  # a worktree, not a clone
    subprocess.run(["git", "fsck", "--no-progress"], cwd=store_of(tmp_path), check=True, capture_output=True)
    listed = git(store_of(tmp_path), "worktree", "list", "--porcelain")
    assert listed.count("worktree ") == 5  # the store itself and four slots


def test_a_rerun_in_another_slot_continues_the_branch_of_the_first(config, origin_repo, tmp_path):
    repos = RepoManager(config)
    first = prepare(repos, origin_repo, tmp_path, slot=0, issue=5).path
    (first / "work.txt").write_text("the first attempt\n")
    repos.commit_all(first, "Work on #5")

    second = prepare(repos, origin_repo, tmp_path, slot=1, issue=5)

    assert second.continued and (second.path / "work.txt").read_text() == "the first attempt\n"
    assert git(second.path, "symbolic-ref", "--short", "HEAD") == "issue-5"
    assert subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=first).returncode != 0  # slot 0 let go of it
    prepare(repos, origin_repo, tmp_path, slot=0, issue=6)  # and takes another issue without an error


def test_a_full_clone_of_the_earlier_layout_gives_its_work_to_the_store(config, origin_repo, tmp_path):
    old = tmp_path / "slots" / "widgets_0"
    old.parent.mkdir()
    subprocess.run(["git", "clone", "-q", str(origin_repo), str(old)], check=True)
    git(old, "checkout", "-q", "-b", "issue-5")
    (old / "unpushed.txt").write_text("only here\n")
    git(old, "add", "unpushed.txt")
    git(old, "commit", "-q", "-m", "Unpushed work on #5")
    unpushed = git(old, "rev-parse", "HEAD")

    info = prepare(RepoManager(config), origin_repo, tmp_path, slot=0, issue=7)

    assert (info.path / ".git").is_file() and git(info.path, "symbolic-ref", "--short", "HEAD") == "issue-7"
    backups = git(store_of(tmp_path), "for-each-ref", "--format=%(refname) %(objectname)", "refs/orchestrator/backup/")
    assert any(line.endswith(f"/heads/issue-5 {unpushed}") for line in backups.splitlines()), backups
    [kept] = list(old.parent.glob("widgets_0.full-clone-*"))  # never deleted
    assert (kept / "unpushed.txt").read_text() == "only here\n"
    assert any("full clone of an earlier version" in note for note in info.warnings)


def test_the_agents_git_works_in_a_slot_and_origin_is_the_clean_url(config, origin_repo, tmp_path):
    slot = prepare(RepoManager(config), origin_repo, tmp_path).path
    (slot / "new.txt").write_text("x\n")
    git(slot, "add", "new.txt")
    git(slot, "commit", "-q", "-m", "An agent's commit")
    assert "An agent's commit" in git(slot, "log", "--oneline", "-1")
    assert "new.txt" in git(slot, "diff", "--name-only", "HEAD~1")
    assert git(slot, "branch", "--show-current") == "issue-5"
    assert git(slot, "remote", "get-url", "origin") == str(origin_repo)  # what gh reads


@pytest.mark.parametrize("key, value", [
    ("url.file:///tmp/evil.git.insteadOf", "PLACEHOLDER"),
    ("remote.origin.pushurl", "file:///tmp/evil.git"),
    ("credential.helper", "!echo leaked >> /tmp/credential"),
    ("core.hooksPath", "/tmp/evil-hooks"),
    ("core.fsmonitor", "/tmp/evil-fsmonitor"),
    ("http.proxy", "http://127.0.0.1:9"),
    ("remote.origin.url", "file:///tmp/evil.git"),
])
def test_a_setting_an_agent_writes_into_the_shared_config_stops_the_push_and_is_removed(config, origin_repo, tmp_path,
                                                                                        key, value):
    repos = RepoManager(config)
    slot = prepare(repos, origin_repo, tmp_path).path
    (slot / "work.txt").write_text("x\n")
    repos.commit_all(slot, "Work on #5")
    git(slot, "config", key, str(origin_repo) if value == "PLACEHOLDER" else value)  # as the agent could

    with pytest.raises(StoreError, match="could redirect the push or run code; nothing was pushed"):
        repos.push_branch(slot, "issue-5", str(origin_repo))
    assert "issue-5" not in git(origin_repo, "branch", "--list", "issue-5")

    info = prepare(repos, origin_repo, tmp_path, issue=5)
    assert any(f"removed {key.lower()}" in note.lower() for note in info.warnings)
    repos.push_branch(info.path, "issue-5", str(origin_repo))
    assert git(origin_repo, "rev-parse", "issue-5") == git(info.path, "rev-parse", "HEAD")


def test_a_hook_in_the_shared_store_never_runs_in_our_commands(config, origin_repo, tmp_path):
    repos = RepoManager(config)
    slot = prepare(repos, origin_repo, tmp_path).path
    marker = tmp_path / "hook-ran"
    for hook in ("pre-push", "pre-commit", "post-checkout", "reference-transaction"):
        path = store_of(tmp_path) / "hooks" / hook
        path.write_text(f"#!/bin/sh\necho {hook} >> {marker}\n")
        path.chmod(0o755)
    (slot / "work.txt").write_text("x\n")

    repos.commit_all(slot, "Work on #5")
    repos.push_branch(slot, "issue-5", str(origin_repo))
    prepare(repos, origin_repo, tmp_path, issue=6)

    assert not marker.exists()


def test_nothing_prunes_what_a_slot_needs(config, origin_repo, tmp_path):
    repos = RepoManager(config)
    slot = prepare(repos, origin_repo, tmp_path).path
    assert git(store_of(tmp_path), "config", "gc.auto") == "0"
    (slot / "work.txt").write_text("not committed, only staged\n")
    git(slot, "add", "work.txt")
    subprocess.run(["git", "gc", "--auto", "--quiet"], cwd=prepare(repos, origin_repo, tmp_path, slot=1, issue=6).path,
                   check=True)
    assert git(slot, "cat-file", "-p", ":work.txt") == "not committed, only staged"


def test_a_commit_on_origin_reaches_every_slot_with_one_fetch(config, origin_repo, tmp_path):
    repos = RepoManager(config)
    prepare(repos, origin_repo, tmp_path, slot=0, issue=5)
    commit_to(origin_repo, "trunk", {"new.txt": "fresh\n"}, "New on trunk")

    info = prepare(repos, origin_repo, tmp_path, slot=1, issue=6)

    assert (info.path / "new.txt").read_text() == "fresh\n"
    assert ObjectStore(store_of(tmp_path), str(origin_repo), repos.git).dangerous_settings() == []
    assert not (tmp_path / "slots" / "widgets_1" / ".git").is_dir()
    assert os.path.isdir(store_of(tmp_path) / "objects")
    assert make_origin  # (the fixture module's factory: origins are bare repositories of their own)


def test_a_store_that_lost_objects_waits_for_its_busy_slots_before_it_is_made_anew(config, origin_repo, tmp_path):
    repos = RepoManager(config)
    first = prepare(repos, origin_repo, tmp_path, slot=0, issue=5).path
    (first / "work.txt").write_text("unpushed\n")
    repos.commit_all(first, "Unpushed work on #5")
    lost = git(first, "rev-parse", "HEAD")  # a loose object origin does not have: no fetch brings it back
    busy = prepare(repos, origin_repo, tmp_path, slot=1, issue=6).path
    agent = subprocess.Popen(["sleep", "60"], cwd=busy)  # an agent working in slot 1
    try:
        (store_of(tmp_path) / "objects" / lost[:2] / lost[2:]).unlink()

        with pytest.raises(GitError, match=r"has lost objects, and slot\(s\) .*widgets_1 still run in it"):
            prepare(repos, origin_repo, tmp_path, slot=0, issue=5)
        assert not list(store_of(tmp_path).parent.glob("*.store.git.damaged-*"))  # kept while slot 1 runs
    finally:
        agent.kill()
        agent.wait()

    info = prepare(repos, origin_repo, tmp_path, slot=0, issue=5)  # nothing runs now: a new store
    assert git(info.path, "symbolic-ref", "--short", "HEAD") == "issue-5"
    assert len(list(store_of(tmp_path).parent.glob("widgets.store.git.damaged-*"))) == 1  # kept, never deleted

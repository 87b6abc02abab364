"""Slots with real git: clone, fetch, clean, setup.sh, branches, commit and push, damage, and the token."""

from __future__ import annotations

import base64
import logging
import subprocess
import time

import pytest

from claude_standin import alive
from git_fixtures import (branches, commit_to, git, git_env, git_isolation, log_messages,  # noqa: F401
                          origin_repo, read_file)
from lib.config import Config
from lib.repo_manager import GitError, RepoManager, SetupError

TOKEN = "ghp_FAKE0123456789SECRETtokenForTests00"


@pytest.fixture
def config(tmp_path):
    return Config.from_dict({
        "github": {"token": TOKEN, "repo": "octo/widgets", "base_repo_path": str(tmp_path / "slots")},
        "setup_timeout_seconds": 30,
    }, tmp_path)


@pytest.fixture
def repos(config):
    return RepoManager(config)


def prepare(repos, origin, tmp_path, slot=0, issue=5):
    return repos.prepare_slot(slot, issue, base_branch="trunk", clone_url=str(origin),
                              setup_log=tmp_path / "logs" / f"issue-{issue}" / "1.setup.log")


def test_slots_are_separate_clones_on_their_issue_branch_from_trunk(repos, origin_repo, tmp_path):
    first = prepare(repos, origin_repo, tmp_path, slot=0, issue=5)
    second = prepare(repos, origin_repo, tmp_path, slot=1, issue=6)

    assert first.path == tmp_path / "slots" / "widgets_0" and second.path == tmp_path / "slots" / "widgets_1"
    assert git(first.path, "symbolic-ref", "--short", "HEAD") == "issue-5" and not first.continued
    assert git(second.path, "symbolic-ref", "--short", "HEAD") == "issue-6"
    assert git(first.path, "rev-parse", "HEAD") == git(origin_repo, "rev-parse", "trunk")
    assert first.base_branch == "trunk" and first.warnings == []


def test_reuse_fetches_new_commits_of_the_base_branch(repos, origin_repo, tmp_path):
    prepare(repos, origin_repo, tmp_path, issue=5)
    sha = commit_to(origin_repo, "trunk", {"NEWS.md": "news\n"}, "Add news")

    slot = prepare(repos, origin_repo, tmp_path, issue=6)

    assert git(slot.path, "rev-parse", "HEAD") == sha and (slot.path / "NEWS.md").exists()


def test_a_dirty_slot_is_cleaned_but_ignored_files_stay(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    (slot / "README.md").write_text("changed\n")
    (slot / "stray.txt").write_text("untracked\n")
    (slot / "sub").mkdir()
    (slot / "sub" / "more.txt").write_text("untracked\n")
    (slot / ".venv").mkdir()
    (slot / ".venv" / "marker").write_text("an environment setup.sh made\n")

    prepare(repos, origin_repo, tmp_path, issue=6)

    assert (slot / "README.md").read_text() == "# Widgets\n"
    assert not (slot / "stray.txt").exists() and not (slot / "sub").exists()
    assert (slot / ".venv" / "marker").exists()


def test_unfinished_merge_and_rebase_are_aborted(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    commit_to(origin_repo, "other", {"README.md": "theirs\n"}, "Theirs")
    git(slot, "fetch", "--quiet", "origin")
    (slot / "README.md").write_text("ours\n")
    git(slot, "commit", "--quiet", "-am", "Ours")
    subprocess.run(["git", "merge", "origin/other"], cwd=slot, capture_output=True)
    assert (slot / ".git" / "MERGE_HEAD").exists()

    info = prepare(repos, origin_repo, tmp_path, issue=6)
    assert not (slot / ".git" / "MERGE_HEAD").exists()
    assert any("aborted an unfinished merge" in w for w in info.warnings)

    git(slot, "checkout", "--quiet", "-b", "work")
    (slot / "README.md").write_text("mine\n")
    git(slot, "commit", "--quiet", "-am", "Mine")
    subprocess.run(["git", "rebase", "origin/other"], cwd=slot, capture_output=True)
    assert (slot / ".git" / "rebase-merge").exists() or (slot / ".git" / "rebase-apply").exists()

    prepare(repos, origin_repo, tmp_path, issue=7)
    assert git(slot, "symbolic-ref", "--short", "HEAD") == "issue-7"
    assert git(slot, "status", "--porcelain") == ""


def test_a_detached_head_with_commits_is_recovered_and_its_commits_kept(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    git(slot, "checkout", "--quiet", "--detach")
    (slot / "detached.txt").write_text("work\n")
    git(slot, "add", "detached.txt")
    git(slot, "commit", "--quiet", "-m", "Work on a detached HEAD")
    lost = git(slot, "rev-parse", "HEAD")

    info = prepare(repos, origin_repo, tmp_path, issue=6)

    assert git(slot, "symbolic-ref", "--short", "HEAD") == "issue-6"
    backups = git(slot, "for-each-ref", "--format=%(objectname)", "refs/orchestrator/backup/")
    assert lost in backups.split()
    assert any("kept on refs/orchestrator/backup/detached-" in w for w in info.warnings)


def test_unpushed_commits_of_an_old_issue_branch_are_kept_on_a_ref(repos, origin_repo, tmp_path, caplog):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    (slot / "work.txt").write_text("unpushed\n")
    git(slot, "add", "work.txt")
    git(slot, "commit", "--quiet", "-m", "Unpushed work on #5")
    sha = git(slot, "rev-parse", "HEAD")

    with caplog.at_level(logging.WARNING):
        prepare(repos, origin_repo, tmp_path, issue=6)

    refs = git(slot, "for-each-ref", "--format=%(refname) %(objectname)", "refs/orchestrator/backup/")
    assert f"refs/orchestrator/backup/issue-5-" in refs and sha in refs
    assert "1 unpushed commit(s) of issue-5 kept on refs/orchestrator/backup/issue-5-" in caplog.text
    # The issue's own branch, prepared again, keeps nothing it should not: it continues origin.
    again = prepare(repos, origin_repo, tmp_path, issue=5)
    assert not again.continued


def test_an_earlier_attempt_pushed_to_origin_is_continued(repos, origin_repo, tmp_path):
    sha = commit_to(origin_repo, "issue-5", {"attempt1.txt": "first attempt\n"}, "First attempt on #5")

    slot = prepare(repos, origin_repo, tmp_path, issue=5)

    assert slot.continued and git(slot.path, "rev-parse", "HEAD") == sha
    assert (slot.path / "attempt1.txt").exists()


def test_setup_sh_runs_and_its_output_is_logged(repos, origin_repo, tmp_path):
    commit_to(origin_repo, "trunk", {"setup.sh": "#!/bin/bash\necho setting up\nmkdir -p .venv\ntouch .venv/ok\n"},
              "Add setup.sh")

    slot = prepare(repos, origin_repo, tmp_path, issue=5)

    assert (slot.path / ".venv" / "ok").exists()
    assert "setting up" in (tmp_path / "logs" / "issue-5" / "1.setup.log").read_text()


def test_a_failing_setup_sh_raises_with_the_tail_of_its_log(repos, origin_repo, tmp_path):
    script = "#!/bin/bash\n" + "".join(f"echo line {i}\n" for i in range(40)) + "echo 'npm ERR! boom' >&2\nexit 3\n"
    commit_to(origin_repo, "trunk", {"setup.sh": script}, "Add a broken setup.sh")

    with pytest.raises(SetupError) as raised:
        prepare(repos, origin_repo, tmp_path, issue=5)

    assert str(raised.value).startswith("setup.sh failed with exit code 3")
    assert "npm ERR! boom" in raised.value.log_tail and "line 39" in raised.value.log_tail
    assert "line 5\n" not in raised.value.log_tail


def test_a_hanging_setup_sh_is_killed_with_everything_it_started(config, origin_repo, tmp_path):
    pidfile = tmp_path / "setup-child.pid"
    script = (f"#!/bin/bash\nsetsid bash -c 'trap \"\" TERM; echo $$ > {pidfile}; sleep 300' &\n"
              "sleep 300\n")
    commit_to(origin_repo, "trunk", {"setup.sh": script}, "Add a hanging setup.sh")
    config.setup_timeout_seconds = 1

    with pytest.raises(SetupError, match=r"did not finish within 1 s \(setup_timeout_seconds\)"):
        prepare(RepoManager(config), origin_repo, tmp_path, issue=5)

    deadline = time.monotonic() + 10
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_commit_all_commits_ahead_and_push(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    assert repos.commits_ahead(slot, "trunk") == 0 and not repos.commit_all(slot, "nothing")
    (slot / "left.txt").write_text("left by the agent\n")
    (slot / "debug.log").write_text("ignored\n")

    assert repos.commit_all(slot, "Work on #5 left uncommitted")
    assert repos.commits_ahead(slot, "trunk", "issue-5") == 1
    repos.push_branch(slot, "issue-5")

    assert "issue-5" in branches(origin_repo)
    assert read_file(origin_repo, "issue-5", "left.txt") == "left by the agent\n"
    assert read_file(origin_repo, "issue-5", "debug.log") is None
    assert log_messages(origin_repo, "issue-5")[0] == "Work on #5 left uncommitted"
    assert repos.head_sha(slot) == git(origin_repo, "rev-parse", "issue-5")


def test_a_rejected_push_is_an_error_in_words(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    commit_to(origin_repo, "issue-5", {"theirs.txt": "someone else\n"}, "Someone else pushed")
    (slot / "mine.txt").write_text("mine\n")
    repos.commit_all(slot, "Mine")

    with pytest.raises(GitError, match="origin refused issue-5: it has commits this slot does not"):
        repos.push_branch(slot, "issue-5")


@pytest.mark.parametrize("damage", ["delete .git", "garbage HEAD", "not a repository", "other remote"])
def test_a_damaged_slot_is_set_aside_and_cloned_again(repos, origin_repo, tmp_path, damage):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    (slot / "precious.txt").write_text("maybe the only copy\n")
    if damage == "delete .git":
        subprocess.run(["rm", "-rf", str(slot / ".git")], check=True)
    elif damage == "garbage HEAD":
        (slot / ".git" / "HEAD").write_text("garbage\n")
        (slot / ".git" / "index").write_bytes(b"not an index")
    elif damage == "not a repository":
        subprocess.run(["rm", "-rf", str(slot)], check=True)
        slot.mkdir()
        (slot / "precious.txt").write_text("maybe the only copy\n")
    else:
        git(slot, "remote", "set-url", "origin", str(tmp_path / "elsewhere.git"))

    info = prepare(repos, origin_repo, tmp_path, issue=6)

    assert git(info.path, "symbolic-ref", "--short", "HEAD") == "issue-6"
    [aside] = list(slot.parent.glob("widgets_0.damaged-*"))
    assert (aside / "precious.txt").read_text() == "maybe the only copy\n"


def test_an_unreachable_origin_is_a_sentence(repos, tmp_path, git_isolation):
    with pytest.raises(GitError) as raised:
        prepare(repos, tmp_path / "nowhere.git", tmp_path, issue=5)
    assert str(raised.value).startswith("git clone failed")
    assert not (tmp_path / "slots" / "widgets_0").exists()


def test_a_missing_base_branch_is_a_sentence(repos, origin_repo, tmp_path):
    with pytest.raises(GitError, match="the base branch 'main' does not exist on origin"):
        repos.prepare_slot(0, 5, base_branch="main", clone_url=str(origin_repo), setup_log=tmp_path / "s.log")


def test_the_token_stays_out_of_git_config_logs_and_errors(repos, origin_repo, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        slot = prepare(repos, origin_repo, tmp_path, issue=5).path
        with pytest.raises(GitError) as raised:
            repos.prepare_slot(1, 5, base_branch="trunk", clone_url="http://127.0.0.1:9/nothing.git",
                               setup_log=tmp_path / "s.log")

    env = repos.git_env()
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    values = [env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))]
    assert f"AUTHORIZATION: basic {basic}" in values
    assert all(TOKEN not in value for value in env.values())
    assert TOKEN not in (slot / ".git" / "config").read_text() and basic not in (slot / ".git" / "config").read_text()
    assert TOKEN not in caplog.text and basic not in caplog.text
    assert TOKEN not in str(raised.value) and basic not in str(raised.value)


def test_commits_get_an_identity_on_a_machine_without_one(config, origin_repo, tmp_path, monkeypatch):
    for name, value in git_env(tmp_path / "bare-gitconfig", identity=False).items():
        monkeypatch.setenv(name, value)
    repos = RepoManager(config)
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    (slot / "file.txt").write_text("x\n")

    assert repos.commit_all(slot, "Work on #5")

    assert git(slot, "log", "-1", "--format=%an <%ae>") == "Claude Issue Orchestrator <orchestrator@localhost>"


def test_the_branch_name_comes_from_the_issue_number_only(repos, origin_repo, tmp_path):
    with pytest.raises((TypeError, ValueError)):
        repos.prepare_slot(0, "5; rm -rf /", base_branch="trunk", clone_url=str(origin_repo),
                           setup_log=tmp_path / "s.log")

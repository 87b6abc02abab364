"""Merging the base into a pull request's branch in a slot, with real git: clean, conflicted (both
sides for the prompt), and the checks before anything is pushed. The agent is played by git here."""

from __future__ import annotations

import os

import pytest

from git_fixtures import commit_to, git
from lib.branch_merge import _hunks, merge_base, merged_cleanly, settle_merge
from lib.config import Config
from lib.follow_up import follow_prompt
from lib.models import IssueStatus
from lib.repo_manager import RepoManager

BRANCH = "issue-5"


@pytest.fixture
def repos(tmp_path):
    return RepoManager(Config.from_dict({"github": {"token": "ghp_FAKE0123456789", "repo": "octo/widgets",
                                                    "base_repo_path": str(tmp_path / "slots")}}, tmp_path))


def slot_on_branch(repos, origin, tmp_path):
    """The issue's branch as origin has it, prepared in slot 0 as a follow-up's runner does."""
    return repos.prepare_slot(0, 5, base_branch="trunk", clone_url=str(origin),
                              setup_log=tmp_path / "setup.log").path


WORK = {"kind": "conflict", "base": "trunk", "base_sha": ""}


def test_a_clean_merge_is_a_merge_commit_of_the_base_and_needs_no_agent(repos, origin_repo, tmp_path):
    head = commit_to(origin_repo, BRANCH, {"hello.py": "print('hello')\n"}, "Add hello")
    tip = commit_to(origin_repo, "trunk", {"NEWS.md": "news\n"}, "News")
    slot = slot_on_branch(repos, origin_repo, tmp_path)

    work = merge_base(repos, slot, WORK)

    assert work["conflicts"] == [] and work["before"] == head and work["merged_sha"] == tip
    assert git(slot, "rev-list", "--parents", "-n", "1", "HEAD").split()[1:] == [head, tip]
    assert git(slot, "log", "-1", "--format=%s") == f"Merge branch 'trunk' into {BRANCH}"
    assert settle_merge(repos, slot, work, BRANCH, str(origin_repo)) is None
    outcome = merged_cleanly(work, BRANCH)
    assert outcome.status == IssueStatus.COMPLETED and "the merge was clean" in outcome.summary
    assert merged_cleanly(merge_base(repos, slot, WORK), BRANCH).summary.startswith(f"{BRANCH} already holds trunk")


def test_conflicts_stop_the_merge_with_both_sides_for_the_prompt(repos, origin_repo, tmp_path):
    commit_to(origin_repo, "trunk", {"app.py": "".join(f"line {i}\n" for i in range(30))}, "App")
    commit_to(origin_repo, BRANCH, {"app.py": "".join(f"line {i}\n" if i != 20 else "ours 20\n" for i in range(30)),
                                    "notes.txt": "x\n"}, "Ours")
    commit_to(origin_repo, "trunk", {"app.py": "".join(f"line {i}\n" if i != 20 else "theirs 20\n" for i in range(30)),
                                     "notes.txt": "y\n"}, "Theirs <!-- hidden -->")
    slot = slot_on_branch(repos, origin_repo, tmp_path)

    work = merge_base(repos, slot, WORK)

    conflicts = {c["path"]: c for c in work["conflicts"]}
    assert set(conflicts) == {"app.py", "notes.txt"} and conflicts["app.py"]["how"] == "both sides changed it"
    hunks = conflicts["app.py"]["hunks"]
    assert hunks.startswith("(from line 18)\nline 17\n") and "ours 20" in hunks and "theirs 20" in hunks
    assert "||||||| " in hunks and "line 0" not in hunks  # diff3: where they forked, and only around the conflict
    assert os.path.exists(os.path.join(git(slot, "rev-parse", "--absolute-git-dir"), "MERGE_HEAD"))  # in progress
    assert work["base_commit_count"] == 1 and work["base_commits"][0].endswith(" Theirs <!-- hidden -->")
    prompt = follow_prompt(work, "https://github.com/octo/widgets/pull/9", BRANCH)
    assert "stopped on conflicts in 2 file(s)" in prompt and "[1] app.py: both sides changed it" in prompt
    assert "ours 20" in prompt and "theirs 20" in prompt and "hidden" not in prompt  # hidden text stripped
    assert "git commit --no-edit" in prompt and "Do not rebase" in prompt


def test_an_unresolved_or_abandoned_merge_is_never_pushed_and_kept_on_a_backup_ref(repos, origin_repo, tmp_path):
    head = commit_to(origin_repo, BRANCH, {"hello.py": "print('hello')\n"}, "Hello")
    commit_to(origin_repo, "trunk", {"hello.py": "print('bonjour')\n"}, "Bonjour")
    slot = slot_on_branch(repos, origin_repo, tmp_path)
    work = merge_base(repos, slot, WORK)
    git(slot, "add", "-A")
    git(slot, "commit", "--quiet", "--no-edit")  # the markers committed as they are

    said = settle_merge(repos, slot, work, BRANCH, str(origin_repo))

    assert said.startswith("conflict markers are left in hello.py; the attempt is kept on"
                           " refs/orchestrator/backup/issue-5-merge-")
    assert git(slot, "rev-parse", "HEAD") == head and git(slot, "symbolic-ref", "--short", "HEAD") == BRANCH
    kept = said.split("kept on ")[1].split(",")[0]
    assert "<<<<<<<" in git(slot, "show", f"{kept}:hello.py")

    work = merge_base(repos, slot, WORK)
    git(slot, "merge", "--abort")  # the agent gave up on the merge
    assert settle_merge(repos, slot, work, BRANCH, str(origin_repo)).startswith("trunk was not merged")

    work = merge_base(repos, slot, WORK)
    (slot / "hello.py").write_text("print('hello, bonjour')\n")  # resolved, but neither added nor committed
    assert settle_merge(repos, slot, work, BRANCH, str(origin_repo)) is None
    assert git(slot, "rev-list", "--parents", "-n", "1", "HEAD").split()[1] == head  # concluded here


def test_nothing_runs_on_the_agents_work_while_the_store_could_run_code(repos, origin_repo, tmp_path):
    commit_to(origin_repo, BRANCH, {"hello.py": "print('hello')\n"}, "Hello")
    commit_to(origin_repo, "trunk", {"hello.py": "print('bonjour')\n"}, "Bonjour")
    slot = slot_on_branch(repos, origin_repo, tmp_path)
    work = merge_base(repos, slot, WORK)
    git(slot, "config", "filter.evil.clean", f"touch {tmp_path}/ran")  # the agent's doing, in the shared config
    (slot / ".gitattributes").write_text("* filter=evil\n")

    said = settle_merge(repos, slot, work, BRANCH, str(origin_repo))

    assert said.startswith("the store's config holds filter.evil.clean, which could run code in git")
    assert not (tmp_path / "ran").exists()


def test_a_symlinked_conflict_is_never_followed(repos, origin_repo, tmp_path):
    commit_to(origin_repo, BRANCH, {"hello.py": "print('hello')\n"}, "Hello")
    commit_to(origin_repo, "trunk", {"hello.py": "print('bonjour')\n"}, "Bonjour")
    slot = slot_on_branch(repos, origin_repo, tmp_path)
    work = merge_base(repos, slot, WORK)
    secret = tmp_path / "secret.txt"
    secret.write_text("<<<<<<< do not read\n>>>>>>>\n")
    (slot / "hello.py").unlink()
    (slot / "hello.py").symlink_to(secret)

    assert _hunks(slot, "hello.py") == "" and work["conflicts"][0]["path"] == "hello.py"

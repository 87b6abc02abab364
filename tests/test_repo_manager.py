"""Slots with real git: clone, fetch, clean, setup.sh, branches, commit and push, damage, and the token."""

from __future__ import annotations

import base64
import http.server
import logging
import os
import socket
import subprocess
import threading
import time

import psutil
import pytest
from pathlib import Path

from claude_standin import alive
from git_fixtures import branches, commit_to, git, git_env, log_messages, make_origin, read_file
from lib.config import Config
from lib.git_commands import GitError
from lib.repo_manager import RepoManager
from lib.slot_preparation import SetupError

TOKEN = "ghp_FAKE0123456789SECRETtokenForTests00"
BASIC = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


@pytest.fixture
def config(tmp_path):
    return Config.from_dict({
        "github": {"token": TOKEN, "repo": "octo/widgets", "base_repo_path": str(tmp_path / "slots")},
        "claude": {"kill_grace_seconds": 1},
        "setup_timeout_seconds": 30,
    }, tmp_path)


@pytest.fixture
def repos(config):
    return RepoManager(config)


def prepare(repos, origin, tmp_path, slot=0, issue=5):
    return repos.prepare_slot(slot, issue, base_branch="trunk", clone_url=str(origin),
                              setup_log=tmp_path / "logs" / f"issue-{issue}" / "1.setup.log")


def git_dir(slot) -> Path:
    """A slot's own git folder (a worktree's is inside the store)."""
    return Path(git(slot, "rev-parse", "--absolute-git-dir"))


def refs(slot, prefix="refs/orchestrator/backup/"):
    """{ref name: sha} under `prefix` in the slot."""
    lines = git(slot, "for-each-ref", "--format=%(refname) %(objectname)", prefix).splitlines()
    return dict(line.split() for line in lines)


def commit_in(slot, name, text, message):
    (slot / name).write_text(text)
    git(slot, "add", name)
    git(slot, "commit", "--quiet", "-m", message)
    return git(slot, "rev-parse", "HEAD")


# --- clone, fetch, clean ---------------------------------------------------------------------------


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


def test_a_dirty_slot_is_cleaned_ignored_files_stay_and_the_edits_are_kept_on_a_ref(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    (slot / "README.md").write_text("changed\n")
    (slot / "stray.txt").write_text("untracked\n")
    (slot / "sub").mkdir()
    (slot / "sub" / "more.txt").write_text("untracked\n")
    (slot / ".venv").mkdir()
    (slot / ".venv" / "marker").write_text("an environment setup.sh made\n")

    info = prepare(repos, origin_repo, tmp_path, issue=6)

    assert (slot / "README.md").read_text() == "# Widgets\n"
    assert not (slot / "stray.txt").exists() and not (slot / "sub").exists()
    assert (slot / ".venv" / "marker").exists()
    [backup] = refs(slot)
    assert backup.startswith("refs/orchestrator/backup/issue-5-uncommitted-")
    assert any(backup in warning for warning in info.warnings)
    # Nothing was lost: the backup gives the edits back.
    git(slot, "stash", "apply", "--quiet", backup)
    assert (slot / "README.md").read_text() == "changed\n" and (slot / "sub" / "more.txt").exists()


def test_unfinished_merge_and_rebase_are_aborted(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    commit_to(origin_repo, "other", {"README.md": "theirs\n"}, "Theirs")
    git(slot, "fetch", "--quiet", "origin")
    commit_in(slot, "README.md", "ours\n", "Ours")
    subprocess.run(["git", "merge", "origin/other"], cwd=slot, capture_output=True, timeout=60)
    assert (git_dir(slot) / "MERGE_HEAD").exists()

    info = prepare(repos, origin_repo, tmp_path, issue=6)
    assert not (git_dir(slot) / "MERGE_HEAD").exists()
    assert any("aborted an unfinished merge" in w for w in info.warnings)

    git(slot, "checkout", "--quiet", "-b", "work")
    commit_in(slot, "README.md", "mine\n", "Mine")
    subprocess.run(["git", "rebase", "origin/other"], cwd=slot, capture_output=True, timeout=60)
    assert (git_dir(slot) / "rebase-merge").exists() or (git_dir(slot) / "rebase-apply").exists()

    info = prepare(repos, origin_repo, tmp_path, issue=7)
    assert any("aborted an unfinished rebase" in w for w in info.warnings)
    assert not (git_dir(slot) / "rebase-merge").exists() and not (git_dir(slot) / "rebase-apply").exists()
    assert git(slot, "symbolic-ref", "--short", "HEAD") == "issue-7"
    assert git(slot, "status", "--porcelain") == ""


def test_a_detached_head_with_commits_is_recovered_and_its_commits_kept(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    git(slot, "checkout", "--quiet", "--detach")
    lost = commit_in(slot, "detached.txt", "work\n", "Work on a detached HEAD")

    info = prepare(repos, origin_repo, tmp_path, issue=6)

    assert git(slot, "symbolic-ref", "--short", "HEAD") == "issue-6"
    assert lost in refs(slot).values()
    assert any("kept on refs/orchestrator/backup/detached-" in w for w in info.warnings)


# --- the issue branch --------------------------------------------------------------------------------


def test_unpushed_commits_of_an_issue_branch_stay_and_are_continued(repos, origin_repo, tmp_path, caplog):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    sha = commit_in(slot, "work.txt", "unpushed\n", "Unpushed work on #5")

    with caplog.at_level(logging.INFO, logger="lib.repo_manager"):
        prepare(repos, origin_repo, tmp_path, issue=6)

    assert git(slot, "rev-parse", "issue-5") == sha
    assert "issue-5 keeps 1 commit(s) that are not on origin" in caplog.text

    again = prepare(repos, origin_repo, tmp_path, issue=5)

    assert again.continued and git(slot, "rev-parse", "HEAD") == sha
    assert any("continuing issue-5 of this slot with 1 commit(s) not on origin" in w for w in again.warnings)


def test_a_local_branch_that_diverged_from_origins_is_kept_on_a_ref(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    local = commit_in(slot, "mine.txt", "unpushed\n", "Unpushed work on #5")
    theirs = commit_to(origin_repo, "issue-5", {"theirs.txt": "a human fixed it\n"}, "A human pushed to #5")

    info = prepare(repos, origin_repo, tmp_path, issue=5)

    assert info.continued and git(slot, "rev-parse", "HEAD") == theirs
    [(backup, kept)] = refs(slot).items()
    assert backup.startswith("refs/orchestrator/backup/issue-5-") and kept == local
    assert any("have diverged" in w and backup in w for w in info.warnings)


def test_an_earlier_attempt_pushed_to_origin_is_continued(repos, origin_repo, tmp_path):
    sha = commit_to(origin_repo, "issue-5", {"attempt1.txt": "first attempt\n"}, "First attempt on #5")

    slot = prepare(repos, origin_repo, tmp_path, issue=5)

    assert slot.continued and git(slot.path, "rev-parse", "HEAD") == sha
    assert (slot.path / "attempt1.txt").exists()


def test_a_branch_deleted_on_origin_after_its_merge_starts_afresh(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    (slot / "feature.txt").write_text("done\n")
    repos.commit_all(slot, "Work on #5")
    repos.push_branch(slot, "issue-5", str(origin_repo))
    merged = commit_to(origin_repo, "trunk", {"feature.txt": "done\n"}, "Squash-merge #5")
    git(origin_repo, "branch", "-D", "issue-5")

    info = prepare(repos, origin_repo, tmp_path, issue=5)

    assert not info.continued and git(slot, "rev-parse", "HEAD") == merged
    assert refs(slot) == {}


def test_the_branch_name_comes_from_the_issue_number_only(repos, origin_repo, tmp_path):
    for hostile in ("5; rm -rf /", "5", -5, 0, True, 5.0):
        with pytest.raises(ValueError, match="an issue number must be a positive int"):
            repos.prepare_slot(0, hostile, base_branch="trunk", clone_url=str(origin_repo),
                               setup_log=tmp_path / "s.log")
    assert not (tmp_path / "slots").exists()


def test_a_missing_base_branch_is_a_sentence(repos, origin_repo, tmp_path):
    with pytest.raises(GitError, match="The base branch 'main' does not exist on origin."):
        repos.prepare_slot(0, 5, base_branch="main", clone_url=str(origin_repo), setup_log=tmp_path / "s.log")


# --- setup.sh ----------------------------------------------------------------------------------------


def test_setup_sh_runs_with_its_output_logged_and_no_token(config, tmp_path, git_isolation):
    origin = make_origin(tmp_path / "origin.git",
                         setup_sh="echo setting up\nmkdir -p .venv\nenv > .venv/env.txt\n")
    repos = RepoManager(config, env={**os.environ, "GITHUB_TOKEN": TOKEN, "SOME_URL": f"https://{TOKEN}@x"})

    slot = prepare(repos, origin, tmp_path, issue=5)

    seen = (slot.path / ".venv" / "env.txt").read_text()
    assert "GIT_CONFIG_GLOBAL=" in seen and TOKEN not in seen and BASIC not in seen
    assert "setting up" in (tmp_path / "logs" / "issue-5" / "1.setup.log").read_text()
    assert slot.warnings == []


def test_a_failing_setup_sh_raises_with_the_tail_of_its_log(repos, origin_repo, tmp_path):
    script = "#!/bin/bash\n" + "".join(f"echo line {i}\n" for i in range(40)) + "echo 'npm ERR! boom' >&2\nexit 3\n"
    commit_to(origin_repo, "trunk", {"setup.sh": script}, "Add a broken setup.sh")

    with pytest.raises(SetupError) as raised:
        prepare(repos, origin_repo, tmp_path, issue=5)

    assert str(raised.value).startswith("setup.sh failed with exit code 3")
    assert "npm ERR! boom" in raised.value.log_tail and "line 39" in raised.value.log_tail
    assert "line 5\n" not in raised.value.log_tail and len(raised.value.log_tail.splitlines()) == 20


def test_a_setup_sh_whose_interpreter_is_missing_is_a_sentence(repos, origin_repo, tmp_path):
    commit_to(origin_repo, "trunk", {"setup.sh": "#!/nonexistent/interpreter\necho hi\n"}, "Add setup.sh")

    with pytest.raises(SetupError, match=r"^setup.sh could not be started \(No such file or directory\)$"):
        prepare(repos, origin_repo, tmp_path, issue=5)


@pytest.mark.slow  # waits out a real timeout
def test_a_hanging_setup_sh_is_killed_with_everything_it_started(config, origin_repo, tmp_path):
    pidfile = tmp_path / "setup-child.pid"
    # The child leaves setup.sh's process group and ignores SIGTERM: only the tree walk and SIGKILL end it.
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


# --- after the run -----------------------------------------------------------------------------------


def test_commit_all_commits_ahead_and_push(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    assert repos.commits_ahead(slot, "trunk") == 0 and not repos.commit_all(slot, "nothing")
    (slot / "left.txt").write_text("left by the agent\n")
    (slot / "debug.log").write_text("ignored\n")

    assert repos.commit_all(slot, "Work on #5 left uncommitted")
    assert repos.commits_ahead(slot, "trunk", "issue-5") == 1
    repos.push_branch(slot, "issue-5", str(origin_repo))

    assert "issue-5" in branches(origin_repo)
    assert read_file(origin_repo, "issue-5", "left.txt") == "left by the agent\n"
    assert read_file(origin_repo, "issue-5", "debug.log") is None and (slot / "debug.log").exists()
    assert log_messages(origin_repo, "issue-5")[0] == "Work on #5 left uncommitted"
    assert git(slot, "rev-parse", "HEAD") == git(origin_repo, "rev-parse", "issue-5")


@pytest.mark.parametrize("leave", ["detached", "other-branch"])
def test_commits_the_agent_left_off_its_branch_are_brought_back_to_it(repos, origin_repo, tmp_path, leave):
    slot = prepare(repos, origin_repo, tmp_path).path
    if leave == "detached":
        git(slot, "checkout", "--quiet", "--detach")
    else:
        git(slot, "checkout", "--quiet", "-b", "claude/feature")
    work = commit_in(slot, "feature.txt", "done\n", "Fix #5: the feature")

    said = repos.bring_branch_to_head(slot, "issue-5")

    assert "issue-5 was moved forward" in said
    assert git(slot, "symbolic-ref", "--short", "HEAD") == "issue-5" and git(slot, "rev-parse", "HEAD") == work
    assert repos.commits_ahead(slot, "trunk", "issue-5") == 1
    assert repos.bring_branch_to_head(slot, "issue-5") is None  # on the branch: nothing to do


def test_commits_left_on_an_unrelated_line_are_kept_on_a_ref(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path).path
    commit_in(slot, "mine.txt", "on the branch\n", "Fix #5: part one")
    git(slot, "checkout", "--quiet", "--orphan", "elsewhere")
    stray = commit_in(slot, "stray.txt", "stray\n", "Unrelated")

    said = repos.bring_branch_to_head(slot, "issue-5")

    [backup] = refs(slot)
    assert f"kept on {backup}" in said and refs(slot)[backup] == stray
    assert git(slot, "symbolic-ref", "--short", "HEAD") == "issue-5"


def test_a_rejected_push_is_an_error_in_words(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    commit_to(origin_repo, "issue-5", {"theirs.txt": "someone else\n"}, "Someone else pushed")
    (slot / "mine.txt").write_text("mine\n")
    repos.commit_all(slot, "Mine")

    with pytest.raises(GitError, match="origin refused issue-5: it has commits this slot does not"):
        repos.push_branch(slot, "issue-5", str(origin_repo))


def test_a_push_refused_by_a_hook_says_why(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    hook = origin_repo / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    (slot / "mine.txt").write_text("mine\n")
    repos.commit_all(slot, "Mine")

    with pytest.raises(GitError, match=r"origin refused issue-5 \(pre-receive hook declined\); the work is kept"):
        repos.push_branch(slot, "issue-5", str(origin_repo))


def test_commits_get_an_identity_on_a_machine_without_one(config, origin_repo, tmp_path, monkeypatch):
    for name, value in git_env(tmp_path / "bare-gitconfig", identity=False).items():
        monkeypatch.setenv(name, value)
    repos = RepoManager(config)
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    (slot / "file.txt").write_text("x\n")

    assert repos.commit_all(slot, "Work on #5")

    assert git(slot, "log", "-1", "--format=%an <%ae>") == "Claude Issue Orchestrator <orchestrator@localhost>"
    assert "user.email" not in (tmp_path / "slots" / "widgets.store.git" / "config").read_text()


def test_a_configured_identity_is_left_alone(repos, origin_repo, tmp_path):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    (slot / "file.txt").write_text("x\n")

    repos.commit_all(slot, "Work on #5")

    assert git(slot, "log", "-1", "--format=%ae") == "maintainer@example.invalid"


# --- damage and failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["delete .git", "garbage HEAD", "objects lost", "not a repository",
                                    "other remote"])
def test_a_damaged_slot_is_set_aside_and_cloned_again(repos, origin_repo, tmp_path, damage):
    slot = prepare(repos, origin_repo, tmp_path, issue=5).path
    (slot / "precious.txt").write_text("maybe the only copy\n")
    if damage == "delete .git":
        subprocess.run(["rm", "-rf", str(slot / ".git")], check=True)
    elif damage == "garbage HEAD":
        own = git_dir(slot)
        (own / "HEAD").write_text("garbage\n")
        (own / "index").write_bytes(b"not an index")
    elif damage == "objects lost":  # the store's: every slot's objects are there
        subprocess.run(f"rm -rf {tmp_path}/slots/widgets.store.git/objects/*", shell=True, check=True)
    elif damage == "not a repository":
        subprocess.run(["rm", "-rf", str(slot)], check=True)
        slot.mkdir()
        (slot / "precious.txt").write_text("maybe the only copy\n")
    else:
        git(slot, "remote", "set-url", "origin", str(tmp_path / "elsewhere.git"))

    info = prepare(repos, origin_repo, tmp_path, issue=6)

    assert git(info.path, "symbolic-ref", "--short", "HEAD") == "issue-6"
    assert not (info.path / "precious.txt").exists()
    if damage == "other remote":  # the store's config is shared: the URL is put back, the slot works
        assert git(info.path, "remote", "get-url", "origin") == str(origin_repo)
        assert any("removed remote.origin.url" in note for note in info.warnings)
        return
    if damage == "objects lost":  # the fetch brought them back: the slot works, its edit is on a backup ref
        [kept] = [ref for ref in refs(info.path) if "uncommitted" in ref]
        assert git(info.path, "show", f"{kept}^3:precious.txt") == "maybe the only copy"
        return
    [aside] = list(slot.parent.glob("widgets_0.damaged-*"))
    assert (aside / "precious.txt").read_text() == "maybe the only copy\n"


def test_an_unreachable_origin_is_a_sentence(repos, tmp_path, git_isolation):
    with pytest.raises(GitError) as raised:
        prepare(repos, tmp_path / "nowhere.git", tmp_path, issue=5)
    assert str(raised.value).startswith("git fetch failed")
    assert not (tmp_path / "slots" / "widgets_0").exists()


@pytest.mark.slow  # waits out a real timeout
def test_a_remote_that_never_answers_ends_at_the_timeout_with_its_helpers(repos, tmp_path, git_isolation):
    with socket.socket() as silent:  # the kernel accepts the connection; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/widgets.git"

        with pytest.raises(GitError, match=r"git ls-remote in .* did not finish within 1 s"):
            repos.git(["ls-remote", url], tmp_path, timeout=1)

        helpers = [p for p in psutil.process_iter(["cmdline", "status"])
                   if url in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE]
        assert helpers == []


# --- the token ---------------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self):
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_token_goes_per_command_and_stays_out_of_git_config_logs_and_errors(repos, origin_repo, tmp_path,
                                                                                caplog):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with caplog.at_level(logging.DEBUG):
            slot = prepare(repos, origin_repo, tmp_path, issue=5).path
            (slot / "x.txt").write_text("x\n")
            repos.commit_all(slot, "Work on #5")
            repos.push_branch(slot, "issue-5", str(origin_repo))
            with pytest.raises(GitError) as raised:
                repos.prepare_slot(1, 5, base_branch="trunk", setup_log=tmp_path / "s.log",
                                   clone_url=f"http://127.0.0.1:{server.server_address[1]}/octo/widgets.git")
    finally:
        server.shutdown()
        server.server_close()

    assert _Recorder.seen and set(_Recorder.seen) == {f"basic {BASIC}"}  # git sent it, as a header
    env = repos.git_env()
    values = [env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))]
    assert f"AUTHORIZATION: basic {BASIC}" in values
    assert all(TOKEN not in value for value in env.values())
    for path in (tmp_path / "slots").rglob("*"):  # every config, every file but the objects
        if path.is_file() and "objects" not in path.parts:
            assert TOKEN.encode() not in path.read_bytes() and BASIC.encode() not in path.read_bytes(), path
    assert "git fetch" in caplog.text
    assert TOKEN not in caplog.text and BASIC not in caplog.text
    assert TOKEN not in str(raised.value) and BASIC not in str(raised.value)


def test_a_clone_url_with_credentials_is_refused(repos, tmp_path, caplog):
    for url in (f"https://x-access-token:{TOKEN}@github.com/octo/widgets.git",
                f"https://{TOKEN}@github.com/octo/widgets.git"):
        with caplog.at_level(logging.DEBUG), pytest.raises(GitError) as raised:
            repos.prepare_slot(0, 5, base_branch="trunk", clone_url=url, setup_log=tmp_path / "s.log")
        assert str(raised.value).startswith("The clone URL carries credentials")
        assert TOKEN not in str(raised.value)
    assert TOKEN not in caplog.text and not (tmp_path / "slots").exists()

"""Making a slot ready for an issue, before the agent runs (RepoManager.prepare_slot drives it).

`SlotPreparation.make_ready`: update the store, make the slot a worktree of it when it is not,
clean it, check out `issue-<N>`; then `run_setup` runs the repository's setup (setup_command, or
its setup.sh).

* Cleaning removes untracked files but keeps ignored ones: virtualenvs and `node_modules` made by
  `setup.sh` survive from one issue to the next, and a setup run stays fast.
* Nothing unpushed is thrown away. Local `issue-*` branches are never deleted; `issue-<N>` with
  unpushed commits is continued, not reset. Commits that would become unreachable (a detached
  HEAD, a local branch that diverged from origin's) and uncommitted edits on an issue branch are
  kept on `refs/orchestrator/backup/<what>-<time>` first, and the log says so.
* A slot that is not a working worktree of the store (no `.git`, corrupt, another store) is moved
  aside to `<slot>.damaged-<time>`, never deleted: it may hold the only copy of some work. A full
  clone of an earlier version gives its branches to the store as backup refs and is kept beside
  the slot as `<slot>.full-clone-<time>`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, List, Mapping, Optional

from lib import processes
from lib.files import log_tail
from lib.git_commands import BACKUP_PREFIX, ON_ORIGIN_PREFIX, Git, GitError, last_words
from lib.models import OrchestratorError, fault_point
from lib.object_store import ObjectStore
from lib.sandbox import Wall, launch
from lib.settings import NETWORK_TIMEOUT

log = logging.getLogger("lib.repo_manager")  # a slot's lines keep the logger name they always had

#: How often a running setup.sh is checked against its timeout and a request to stop.
SETUP_POLL_SECONDS = 1.0
#: (marker in .git, command that ends it) for every operation a slot can be left in the middle of.
UNFINISHED_OPERATIONS = (
    ("MERGE_HEAD", ["merge", "--abort"]),
    ("rebase-merge", ["rebase", "--abort"]),
    ("rebase-apply/applying", ["am", "--abort"]),
    ("rebase-apply", ["rebase", "--abort"]),
    ("CHERRY_PICK_HEAD", ["cherry-pick", "--abort"]),
    ("REVERT_HEAD", ["revert", "--abort"]),
    ("sequencer", ["cherry-pick", "--abort"]),
    ("BISECT_LOG", ["bisect", "reset"]),
)


class SetupError(OrchestratorError):
    """The repository's setup.sh failed or timed out; `log_tail` holds the end of its output."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message + (f"\n{log_tail}" if log_tail else ""))
        self.log_tail = log_tail


def warn(path: Path, warnings: List[str], text: str) -> None:
    """A note on slot `path` for the issue's people (`warnings`) and the log."""
    warnings.append(text)
    log.warning("Slot %s: %s", path, text)


class SlotPreparation:
    """Slot `path` made ready with `git`; what a human should know goes to `warnings`."""

    def __init__(self, git: Git, path: Path, warnings: List[str]):
        self.git = git
        self.path = path
        self.warnings = warnings

    def make_ready(self, store: ObjectStore, branch: str, base_branch: str) -> bool:
        """The store updated, the slot a clean worktree of it on `branch`; whether an earlier
        attempt is continued."""
        self.warnings += [f"removed {line.partition('=')[0]} from the store's config (a run had set it)"
                          for line in store.update(NETWORK_TIMEOUT)]
        if self.git.sha(store.path, f"refs/remotes/origin/{base_branch}") is None:
            raise GitError(f"The base branch {base_branch!r} does not exist on origin.")
        self._adopt(store, base_branch)
        self._clean(base_branch)
        store.release(branch, keep=self.path)
        return self._checkout(branch, base_branch)

    def _warn(self, text: str) -> None:
        warn(self.path, self.warnings, text)

    def _adopt(self, store: ObjectStore, base_branch: str) -> None:
        """Make the slot a worktree of the store: a full clone of an earlier version gives its
        branches to the store as backup refs first; anything else that is not a working worktree
        of this store is set aside (never deleted)."""
        path = self.path
        if (path / ".git").is_dir() and not path.is_symlink() and self._works():
            self._migrate(store)
        elif (path.exists() or path.is_symlink()) and not self._healthy(store):
            self._set_aside()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            store.add_worktree(path, f"refs/remotes/origin/{base_branch}")

    def _works(self) -> bool:
        top = self.git(["rev-parse", "--show-toplevel"], self.path, check=False)
        return (top.returncode == 0 and Path(top.stdout.strip()).resolve() == self.path.resolve()
                and self.git(["status", "--porcelain"], self.path, check=False).returncode == 0)

    def _healthy(self, store: ObjectStore) -> bool:
        """The folder is a working worktree of `store` (else it is set aside and made anew)."""
        if self.path.is_symlink() or not (self.path / ".git").is_file() or not self._works():
            return False
        common = self.git(["rev-parse", "--path-format=absolute", "--git-common-dir"], self.path, check=False)
        return common.returncode == 0 and Path(common.stdout.strip()).resolve() == store.path.resolve()

    def _migrate(self, store: ObjectStore) -> None:
        """A slot of the earlier layout (a full clone): its edits, branches and backup refs go into the
        store as backup refs, and the clone is kept beside the slot as `<slot>.full-clone-<time>`."""
        path = self.path
        self._keep_uncommitted()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        prefix = f"{BACKUP_PREFIX}{path.name}-full-clone-{stamp}"
        self.git(["fetch", "--quiet", str(path), f"+refs/heads/*:{prefix}/heads/*",
                  f"+{BACKUP_PREFIX}*:{prefix}/backup/*"], store.path, timeout=NETWORK_TIMEOUT)
        aside = path.with_name(f"{path.name}.full-clone-{stamp}")
        path.rename(aside)
        self._warn(f"the slot was a full clone of an earlier version: its branches are kept on"
                   f" {prefix}/ and the clone itself in {aside}")

    def _set_aside(self) -> None:
        """Move a damaged slot out of the way, keeping it (it may hold the only copy of some work)."""
        path = self.path
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        serial = 1
        while aside.exists():
            serial += 1
            aside = path.with_name(f"{path.name}.damaged-{stamp}-{serial}")
        try:
            path.rename(aside)
        except OSError as exc:
            raise GitError(f"The damaged slot {path} could not be moved aside ({exc.strerror}).") from None
        log.warning("Slot %s is not a working worktree of the store (no or a corrupt .git, or another"
                    " store); moved it with everything in it to %s and making it anew", path, aside)

    def _clean(self, base_branch: str) -> None:
        """Leave nothing of an earlier run: unfinished operations, a detached HEAD, edits, untracked
        files (ignored ones stay). Work that would be lost is kept on a backup ref first."""
        path = self.path
        git_dir = Path(self.git(["rev-parse", "--absolute-git-dir"], path).stdout.strip())
        for marker, command in UNFINISHED_OPERATIONS:
            if not (git_dir / marker).exists():
                continue
            self.git(command, path, check=False)
            if command[0] in ("rebase", "am") and (git_dir / marker).exists():
                self.git([command[0], "--quit"], path, check=False)  # abort failed: drop the state, keep HEAD
            self._warn(f"aborted an unfinished {command[0]} left in the slot")
        self._keep_uncommitted()
        if self.git(["symbolic-ref", "--quiet", "HEAD"], path, check=False).returncode != 0:
            self._keep_if_unpushed("HEAD", "detached")
        remote_base = f"origin/{base_branch}"
        if self.git.sha(path, f"refs/remotes/{remote_base}") is None:
            raise GitError(f"The base branch {base_branch!r} does not exist on origin.")
        # --force --detach: index and tracked files become exactly origin's (a hard reset), and no slot
        # holds the base branch (a branch is checked out in one worktree at a time).
        self.git(["checkout", "--quiet", "--force", "--detach", remote_base], path)
        # -ff also removes untracked nested repositories; no -x: ignored files (venvs, caches) stay.
        self.git(["clean", "-ffd", "--quiet"], path)

    def _keep_uncommitted(self) -> None:
        """Edits left on an issue branch or a detached HEAD go to a backup ref (`git stash apply`
        restores them); edits on any other branch are leftovers of setup.sh and are dropped."""
        path = self.path
        head = self.git(["symbolic-ref", "--quiet", "--short", "HEAD"], path, check=False).stdout.strip()
        if head and not head.startswith("issue-"):
            return
        changes = self.git(["status", "--porcelain"], path).stdout.splitlines()
        if not changes or self.git.sha(path, "HEAD") is None:
            return
        label = f"{head or 'detached'}-uncommitted"
        saved = self.git(["stash", "push", "--quiet", "--include-untracked", "-m", f"orchestrator: {label}"],
                         path, check=False)
        if saved.returncode != 0 or self.git.sha(path, "refs/stash") is None:
            self._warn(f"could not keep {len(changes)} uncommitted change(s) on {head or 'HEAD'}"
                       f" before cleaning: {last_words(saved)}")
            return
        backup = self.git.backup(path, label, "refs/stash")
        self.git(["stash", "drop", "--quiet"], path)
        self._warn(f"{len(changes)} uncommitted change(s) on {head or 'a detached HEAD'} kept on"
                   f" {backup} (restore with `git stash apply {backup}`)")

    def _keep_if_unpushed(self, ref: str, label: str) -> None:
        """Put `ref` on a backup ref when it has commits no branch, remote or backup holds."""
        count = self.git.count(self.path, [ref, "--not", "--branches", "--remotes=origin",
                                           "--glob=refs/orchestrator/*"])
        if count:
            backup = self.git.backup(self.path, label, ref)
            self._warn(f"{count} unpushed commit(s) of {label} kept on {backup}")

    def _checkout(self, branch: str, base_branch: str) -> bool:
        """Check out `branch`: this slot's own when it has unpushed commits (origin's when that moved
        on in another direction, the local one kept on a backup ref), else origin's when an earlier
        attempt pushed it, else new from the base. Returns whether an earlier attempt is continued."""
        path, git = self.path, self.git
        for other in git(["for-each-ref", "--format=%(refname:short)", "refs/heads/issue-*"], path).stdout.split():
            count = git.unpushed(path, f"refs/heads/{other}") if other != branch else 0
            if count:
                log.info("Slot %s: %s keeps %s commit(s) that are not on origin; the branch stays as it is",
                         path, other, count)
        local = git.sha(path, f"refs/heads/{branch}")
        remote = git.sha(path, f"refs/remotes/origin/{branch}")
        unpushed = git.unpushed(path, local) if local else 0
        if unpushed and (remote is None or git.is_ancestor(path, remote, local)):
            start, continued = local, True
            self._warn(f"continuing {branch} of this slot with {unpushed} commit(s) not on origin yet")
        elif unpushed:
            backup = git.backup(path, branch, local)
            self._warn(f"{branch} of this slot and origin's have diverged; continuing origin's,"
                       f" the {unpushed} local commit(s) are kept on {backup}")
            start, continued = remote, True
        elif remote:
            start, continued = remote, True
        else:
            start, continued = f"refs/remotes/origin/{base_branch}", False
        git(["checkout", "--quiet", "--force", "--no-track", "-B", branch, start], path)
        if remote:
            git(["update-ref", f"{ON_ORIGIN_PREFIX}{branch}", remote], path)
        return continued


def setup_command(setup_command_text: Optional[str], path: Path) -> Optional[List[str]]:
    """The configured setup_command (run by bash), else the clone's own setup.sh, else None."""
    if setup_command_text:
        return ["bash", "-c", setup_command_text]
    script = path / "setup.sh"
    if not script.is_file():
        return None
    # An executable setup.sh with a #! line chooses its interpreter; anything else is a bash script.
    with open(script, "rb") as head:
        shebang = head.read(2) == b"#!"
    return [str(script)] if shebang and os.access(script, os.X_OK) else ["bash", str(script)]


def run_setup(path: Path, setup_log: Path, *, setup_command_text: Optional[str], timeout: float,
              kill_grace_seconds: float, env: Mapping[str, str],
              should_stop: Optional[Callable[[], Optional[str]]], wall: Optional[Wall]) -> None:
    """Run the setup (setup_command, or the repository's setup.sh) in its own process group, in
    `wall` when given, output to `setup_log`; stopped when `should_stop()` gives a reason or after
    `timeout` seconds (SetupError, with the end of its output)."""
    command = setup_command(setup_command_text, path)
    if command is None:
        return
    setup_log.parent.mkdir(parents=True, exist_ok=True)
    what = "setup_command" if setup_command_text else "setup.sh"
    log.info("Running %s in %s (log: %s)", what, path, setup_log)
    fault_point("during-setup")
    with open(setup_log, "ab") as out:
        out.write(f"--- {what} in {path}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        out.flush()
        try:
            process = launch(command, wall=wall, cwd=path, env=env, stdout=out)
        except OSError as exc:  # e.g. the interpreter its #! line names is not installed
            raise SetupError(f"{what} could not be started ({exc.strerror})") from None
        deadline = time.monotonic() + timeout
        code = None
        while code is None:
            try:
                code = process.wait(timeout=max(0.0, min(SETUP_POLL_SECONDS, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                stop = should_stop() if should_stop else None
                if stop or time.monotonic() >= deadline:
                    processes.terminate_tree(process, grace_seconds=kill_grace_seconds)
                    raise SetupError(f"{what} was stopped: {stop}" if stop else
                                     f"{what} did not finish within {timeout:g} s (setup_timeout_seconds)",
                                     log_tail(setup_log) or "") from None
    if code != 0:
        raise SetupError(f"{what} failed with exit code {code}", log_tail(setup_log) or "")

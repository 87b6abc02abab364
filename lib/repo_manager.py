"""Agent slots: worktrees of the repository's object store (lib.object_store), each made clean and
ready for one issue.

Slot i is `<base_repo_path>/<repo_name>_<i>`. Before a run the runner calls `prepare_slot`: update
the store (create, fetch), make the slot a worktree of it when it is not, clean, check out
`issue-<N>`, run the repository's `setup.sh`. After the
run it calls `commit_all`, `bring_branch_to_head`, `commits_ahead` and `push_branch`.

* Git authenticates per command through the environment (`GIT_CONFIG_COUNT` with an
  `http.extraheader`), so the token is never in `.git/config`, an argv or a log line. A clone URL
  that carries credentials itself is refused.
* Cleaning removes untracked files but keeps ignored ones: virtualenvs and `node_modules` made by
  `setup.sh` survive from one issue to the next, and a setup run stays fast.
* Nothing unpushed is thrown away. Local `issue-*` branches are never deleted; `issue-<N>` with
  unpushed commits is continued, not reset. Commits that would become unreachable (a detached
  HEAD, a local branch that diverged from origin's) and uncommitted edits on an issue branch are
  kept on `refs/orchestrator/backup/<what>-<time>` first, and the log says so.
* `refs/orchestrator/origin/<branch>` remembers the last commit of a branch known to be on origin
  (pushed or checked out from it), so a branch that origin deleted after merging its pull request
  is not mistaken for unpushed work once `fetch --prune` forgets `origin/<branch>`.
* A slot that is not a working worktree of the store (no `.git`, corrupt, another store) is moved
  aside to `<slot>.damaged-<time>`, never deleted: it may hold the only copy of some work.
* Every git call gets `cwd=`; nothing calls `os.chdir` (runners of several slots share a process
  tree, not a working directory).
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from lib import processes, store_view
from lib.files import log_tail
from lib.models import OrchestratorError, fault_point
from lib.object_store import ObjectStore
from lib.redaction import redact, register_secret, without_tokens
from lib.sandbox import StoreView, Wall, launch

log = logging.getLogger(__name__)

#: Network operations (clone, fetch, push) may take this long; local ones much less.
NETWORK_TIMEOUT = 600
LOCAL_TIMEOUT = 120
#: How often a running setup.sh is checked against its timeout and a request to stop.
SETUP_POLL_SECONDS = 1.0
#: Identity for commits the orchestrator makes, used only when git has none configured.
IDENTITY = ("Claude Issue Orchestrator", "orchestrator@localhost")
BACKUP_PREFIX = "refs/orchestrator/backup/"
ON_ORIGIN_PREFIX = "refs/orchestrator/origin/"
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


class GitError(OrchestratorError):
    """A git command failed; the message is one sentence plus git's last words, token-free."""


class SetupError(OrchestratorError):
    """The repository's setup.sh failed or timed out; `log_tail` holds the end of its output."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message + (f"\n{log_tail}" if log_tail else ""))
        self.log_tail = log_tail


@dataclass
class SlotInfo:
    path: Path
    branch: str
    base_branch: str
    continued: bool  # the branch continues an earlier attempt (origin's or this slot's unpushed one)
    warnings: List[str] = field(default_factory=list)


def issue_branch(issue_number: int) -> str:
    """`issue-<N>`: a branch name is made from the number only, never from issue text."""
    if isinstance(issue_number, bool) or not isinstance(issue_number, int) or issue_number < 1:
        raise ValueError(f"an issue number must be a positive int, not {issue_number!r}")
    return f"issue-{issue_number}"


class RepoManager:
    """`RepoManager(config)` as in the seed README: the slots of `repository` (default: the config's
    first); `env` (default os.environ) is the environment git and the setup start from."""

    def __init__(self, config, repository=None, *, env: Optional[Mapping[str, str]] = None):
        self.config = config
        self.repository = repository or config.repositories[0]
        self.token = config.github_token
        if self.token:
            register_secret(self.token, self._basic_auth())  # the header git sends holds the token so
        self.env = env
        self._git_env: Optional[Dict[str, str]] = None  # made on first use: it asks git for an identity
        self._identity: Optional[Dict[str, str]] = None

    def repo_path(self, index: int) -> Path:
        return self.repository.slot_path(index)

    # --- running git ---------------------------------------------------------------------------

    def git_env(self) -> Dict[str, str]:
        """The base environment plus per-command git settings: the auth header, no prompts, and an
        identity when git has none."""
        env = dict(os.environ if self.env is None else self.env)
        env["GIT_TERMINAL_PROMPT"] = "0"
        env.setdefault("GIT_ASKPASS", "true")  # an ssh or credential prompt answers empty instead of waiting
        # No hook or fsmonitor of the repository's (or the agent's) runs inside our git commands.
        settings: List[tuple] = [("core.hooksPath", os.devnull), ("core.fsmonitor", "false")]
        if self.token:
            settings.append(("http.extraheader", f"AUTHORIZATION: basic {self._basic_auth()}"))
        if not self._has_identity(env):
            settings += [("user.name", IDENTITY[0]), ("user.email", IDENTITY[1])]
        start = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
        for offset, (key, value) in enumerate(settings):
            env[f"GIT_CONFIG_KEY_{start + offset}"] = key
            env[f"GIT_CONFIG_VALUE_{start + offset}"] = value
        env["GIT_CONFIG_COUNT"] = str(start + len(settings))
        return env

    def _basic_auth(self) -> str:
        return base64.b64encode(f"x-access-token:{self.token}".encode()).decode()

    @staticmethod
    def _has_identity(env: Mapping[str, str]) -> bool:
        if env.get("GIT_AUTHOR_EMAIL") and env.get("GIT_COMMITTER_EMAIL"):
            return True
        done = processes.run(["git", "config", "--get", "user.email"], cwd="/", env=env, timeout=LOCAL_TIMEOUT)
        return bool(done.stdout.strip())

    def git(self, args: Sequence[str], cwd: os.PathLike, *, timeout: float = LOCAL_TIMEOUT,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run `git <args>` in `cwd`; with `check`, a failure raises GitError in words.

        git runs in its own process group: on a timeout its helpers (git-remote-https, ssh) are
        ended with it, and none of them is left holding our pipes open.
        """
        if self._git_env is None:
            self._git_env = self.git_env()
        args = [str(arg) for arg in args]
        log.debug("git %s (in %s)", " ".join(args), cwd)
        try:
            done = processes.run(["git", *args], cwd=cwd, env=self._git_env, timeout=timeout)
        except FileNotFoundError as exc:
            if not Path(cwd).is_dir():
                raise GitError(f"git {args[0]} cannot run in {cwd}: the folder does not exist") from None
            raise GitError("git is not installed (or not on PATH)") from exc
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} in {cwd} did not finish within {timeout:g} s") from None
        if check and done.returncode != 0:
            raise GitError(f"git {args[0]} failed in {cwd} (exit {done.returncode}): {self.last_words(done)}")
        return done

    @staticmethod
    def last_words(done: subprocess.CompletedProcess) -> str:
        text = (done.stderr or done.stdout or "").strip().splitlines()
        return redact(" / ".join(line.strip() for line in text[-3:]) or "no message")

    def _sha(self, path: Path, ref: str) -> Optional[str]:
        done = self.git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], path, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def _count(self, path: Path, args: Sequence[str]) -> int:
        return int(self.git(["rev-list", "--count", *args], path).stdout.strip() or 0)

    def _unpushed(self, path: Path, ref: str) -> int:
        """Commits of `ref` that origin lacks, as far as this slot knows (its remote-tracking refs and
        its marks of what was on origin)."""
        return self._count(path, [ref, "--not", "--remotes=origin", f"--glob={ON_ORIGIN_PREFIX}*"])

    # --- the slot ------------------------------------------------------------------------------

    def prepare_slot(self, index: int, issue_number: int, *, base_branch: str, clone_url: str,
                     setup_log: Path, should_stop: Optional[Callable[[], Optional[str]]] = None,
                     wall_for: Optional[Callable[[Path], Optional[Wall]]] = None) -> SlotInfo:
        """Make slot `index` a clean checkout of `issue-<N>`, with setup.sh run, for the agent.

        Cleaning keeps ignored files (the environments setup.sh made) and every unpushed commit;
        see the module docstring. `should_stop()` (a reason, or None) is polled while setup.sh
        runs and ends it; `wall_for(slot)` is the sandbox setup.sh runs in (None: none). Raises
        GitError or SetupError with a sentence.
        """
        branch = issue_branch(issue_number)
        path = self.repo_path(index)
        self._refuse_credentials_in(clone_url)
        log.info("Preparing slot %s (%s) for #%s", index, path, issue_number)
        store = self.store(clone_url)
        if not store.path.exists():
            fault_point("during-clone")
        warnings: List[str] = self.collect_sandbox_work(path)  # a killed run's commits first
        try:
            continued = self._make_ready(path, store, branch, base_branch, warnings)
        except GitError:
            if not store.path.exists() or store.intact():
                raise
            busy = self._slots_in_use(except_slot=path)
            if busy:
                raise GitError(f"The object store {store.path} has lost objects, and slot(s) {', '.join(busy)} still"
                               " run in it; it is set aside and made anew once none does.") from None
            store.set_aside()  # objects lost: a new store, fetched anew, and the slot made again
            continued = self._make_ready(path, store, branch, base_branch, warnings)
        self._run_setup(path, Path(setup_log), should_stop, wall_for(path) if wall_for else None)
        warnings += self.collect_sandbox_work(path)
        current = self.git(["symbolic-ref", "--quiet", "--short", "HEAD"], path, check=False).stdout.strip()
        if current != branch:
            raise GitError(f"{path} is on {current or 'a detached HEAD'} after setup.sh, not on {branch}")
        dirty = self.git(["status", "--porcelain"], path).stdout.splitlines()
        if dirty:
            self._warn(path, warnings, f"setup.sh left {len(dirty)} uncommitted change(s); the agent starts"
                                       " with them and they will be committed with its work")
        log.info("Slot %s ready at %s on %s (%s)", index, path, branch,
                 "continuing an earlier attempt" if continued else f"new from origin/{base_branch}")
        return SlotInfo(path=path, branch=branch, base_branch=base_branch, continued=continued, warnings=warnings)

    @staticmethod
    def _warn(path: Path, warnings: List[str], text: str) -> None:
        warnings.append(text)
        log.warning("Slot %s: %s", path, text)

    def _refuse_credentials_in(self, clone_url: str) -> None:
        """A URL with credentials would be written to `.git/config`; the token goes per command."""
        try:
            has_password = bool(urlsplit(clone_url).password)
        except ValueError:
            has_password = False
        if has_password or redact(clone_url) != clone_url:
            raise GitError("The clone URL carries credentials; give it without them (the token is sent per"
                           " command, never stored in the clone).")

    @property
    def store_path(self) -> Path:
        """The repository's object store: `<base_repo_path>/<repo_name>.store.git`."""
        return self.repository.base_repo_path / f"{self.repository.name}.store.git"

    def store(self, clone_url: str) -> ObjectStore:
        return ObjectStore(self.store_path, clone_url, self.git)

    def _make_ready(self, path: Path, store: ObjectStore, branch: str, base_branch: str,
                    warnings: List[str]) -> bool:
        warnings += [f"removed {line.partition('=')[0]} from the store's config (a run had set it)"
                     for line in store.update(NETWORK_TIMEOUT)]
        if self._sha(store.path, f"refs/remotes/origin/{base_branch}") is None:
            raise GitError(f"The base branch {base_branch!r} does not exist on origin.")
        self._adopt(path, store, base_branch, warnings)
        warnings += self._clean(path, base_branch)
        store.release(branch, keep=path)
        return self._checkout(path, branch, base_branch, warnings)

    def _slots_in_use(self, except_slot: Path) -> List[str]:
        """The other slots of this repository that a live process works in."""
        slots = {p.resolve() for p in self.repository.base_repo_path.glob(f"{self.repository.name}_*")
                 if p.is_dir() and p.resolve() != except_slot.resolve()}
        return sorted(str(slot) for slot in slots if processes.working_in(slot))

    def _adopt(self, path: Path, store: ObjectStore, base_branch: str, warnings: List[str]) -> None:
        """Make the slot a worktree of the store: a full clone of an earlier version gives its
        branches to the store as backup refs first; anything else that is not a working worktree
        of this store is set aside (never deleted)."""
        if (path / ".git").is_dir() and not path.is_symlink() and self._works(path):
            self._migrate(path, store, warnings)
        elif (path.exists() or path.is_symlink()) and not self._healthy(path, store):
            self._set_aside(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            store.add_worktree(path, f"refs/remotes/origin/{base_branch}")

    def _works(self, path: Path) -> bool:
        top = self.git(["rev-parse", "--show-toplevel"], path, check=False)
        return (top.returncode == 0 and Path(top.stdout.strip()).resolve() == path.resolve()
                and self.git(["status", "--porcelain"], path, check=False).returncode == 0)

    def _healthy(self, path: Path, store: ObjectStore) -> bool:
        """The folder is a working worktree of `store` (else it is set aside and made anew)."""
        if path.is_symlink() or not (path / ".git").is_file() or not self._works(path):
            return False
        common = self.git(["rev-parse", "--path-format=absolute", "--git-common-dir"], path, check=False)
        return common.returncode == 0 and Path(common.stdout.strip()).resolve() == store.path.resolve()

    def _migrate(self, path: Path, store: ObjectStore, warnings: List[str]) -> None:
        """A slot of the earlier layout (a full clone): its edits, branches and backup refs go into the
        store as backup refs, and the clone is kept beside the slot as `<slot>.full-clone-<time>`."""
        self._keep_uncommitted(path, warnings)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        prefix = f"{BACKUP_PREFIX}{path.name}-full-clone-{stamp}"
        self.git(["fetch", "--quiet", str(path), f"+refs/heads/*:{prefix}/heads/*",
                  f"+{BACKUP_PREFIX}*:{prefix}/backup/*"], store.path, timeout=NETWORK_TIMEOUT)
        aside = path.with_name(f"{path.name}.full-clone-{stamp}")
        path.rename(aside)
        self._warn(path, warnings, f"the slot was a full clone of an earlier version: its branches are kept on"
                                   f" {prefix}/ and the clone itself in {aside}")

    def _set_aside(self, path: Path) -> None:
        """Move a damaged slot out of the way, keeping it (it may hold the only copy of some work)."""
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

    def _clean(self, path: Path, base_branch: str) -> List[str]:
        """Leave nothing of an earlier run: unfinished operations, a detached HEAD, edits, untracked
        files (ignored ones stay). Work that would be lost is kept on a backup ref first."""
        warnings: List[str] = []
        git_dir = Path(self.git(["rev-parse", "--absolute-git-dir"], path).stdout.strip())
        for marker, command in UNFINISHED_OPERATIONS:
            if not (git_dir / marker).exists():
                continue
            self.git(command, path, check=False)
            if command[0] in ("rebase", "am") and (git_dir / marker).exists():
                self.git([command[0], "--quit"], path, check=False)  # abort failed: drop the state, keep HEAD
            self._warn(path, warnings, f"aborted an unfinished {command[0]} left in the slot")
        self._keep_uncommitted(path, warnings)
        if self.git(["symbolic-ref", "--quiet", "HEAD"], path, check=False).returncode != 0:
            self._keep_if_unpushed(path, "HEAD", "detached", warnings)
        remote_base = f"origin/{base_branch}"
        if self._sha(path, f"refs/remotes/{remote_base}") is None:
            raise GitError(f"The base branch {base_branch!r} does not exist on origin.")
        # --force --detach: index and tracked files become exactly origin's (a hard reset), and no slot
        # holds the base branch (a branch is checked out in one worktree at a time).
        self.git(["checkout", "--quiet", "--force", "--detach", remote_base], path)
        # -ff also removes untracked nested repositories; no -x: ignored files (venvs, caches) stay.
        self.git(["clean", "-ffd", "--quiet"], path)
        return warnings

    def _keep_uncommitted(self, path: Path, warnings: List[str]) -> None:
        """Edits left on an issue branch or a detached HEAD go to a backup ref (`git stash apply`
        restores them); edits on any other branch are leftovers of setup.sh and are dropped."""
        head = self.git(["symbolic-ref", "--quiet", "--short", "HEAD"], path, check=False).stdout.strip()
        if head and not head.startswith("issue-"):
            return
        changes = self.git(["status", "--porcelain"], path).stdout.splitlines()
        if not changes or self._sha(path, "HEAD") is None:
            return
        label = f"{head or 'detached'}-uncommitted"
        saved = self.git(["stash", "push", "--quiet", "--include-untracked", "-m", f"orchestrator: {label}"],
                         path, check=False)
        if saved.returncode != 0 or self._sha(path, "refs/stash") is None:
            self._warn(path, warnings, f"could not keep {len(changes)} uncommitted change(s) on {head or 'HEAD'}"
                                       f" before cleaning: {self.last_words(saved)}")
            return
        backup = self.backup(path, label, "refs/stash")
        self.git(["stash", "drop", "--quiet"], path)
        self._warn(path, warnings, f"{len(changes)} uncommitted change(s) on {head or 'a detached HEAD'} kept on"
                                   f" {backup} (restore with `git stash apply {backup}`)")

    def _keep_if_unpushed(self, path: Path, ref: str, label: str, warnings: List[str]) -> None:
        """Put `ref` on a backup ref when it has commits no branch, remote or backup holds."""
        count = self._count(path, [ref, "--not", "--branches", "--remotes=origin", "--glob=refs/orchestrator/*"])
        if count:
            backup = self.backup(path, label, ref)
            self._warn(path, warnings, f"{count} unpushed commit(s) of {label} kept on {backup}")

    def backup(self, path: Path, label: str, ref: str) -> str:
        """Keep `ref` on a new `refs/orchestrator/backup/<label>-<time>`; returns its name."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name, serial = f"{BACKUP_PREFIX}{label}-{stamp}", 1
        while self._sha(path, name) is not None:
            serial += 1
            name = f"{BACKUP_PREFIX}{label}-{stamp}-{serial}"
        self.git(["update-ref", name, ref], path)
        return name

    def _checkout(self, path: Path, branch: str, base_branch: str, warnings: List[str]) -> bool:
        """Check out `branch`: this slot's own when it has unpushed commits (origin's when that moved
        on in another direction, the local one kept on a backup ref), else origin's when an earlier
        attempt pushed it, else new from the base. Returns whether an earlier attempt is continued."""
        for other in self.git(["for-each-ref", "--format=%(refname:short)", "refs/heads/issue-*"], path).stdout.split():
            count = self._unpushed(path, f"refs/heads/{other}") if other != branch else 0
            if count:
                log.info("Slot %s: %s keeps %s commit(s) that are not on origin; the branch stays as it is",
                         path, other, count)
        local = self._sha(path, f"refs/heads/{branch}")
        remote = self._sha(path, f"refs/remotes/origin/{branch}")
        unpushed = self._unpushed(path, local) if local else 0
        if unpushed and (remote is None or self.is_ancestor(path, remote, local)):
            start, continued = local, True
            self._warn(path, warnings, f"continuing {branch} of this slot with {unpushed} commit(s) not on origin yet")
        elif unpushed:
            backup = self.backup(path, branch, local)
            self._warn(path, warnings, f"{branch} of this slot and origin's have diverged; continuing origin's,"
                                       f" the {unpushed} local commit(s) are kept on {backup}")
            start, continued = remote, True
        elif remote:
            start, continued = remote, True
        else:
            start, continued = f"refs/remotes/origin/{base_branch}", False
        self.git(["checkout", "--quiet", "--force", "--no-track", "-B", branch, start], path)
        if remote:
            self.git(["update-ref", f"{ON_ORIGIN_PREFIX}{branch}", remote], path)
        return continued

    def is_ancestor(self, path: Path, older: str, newer: str) -> bool:
        return self.git(["merge-base", "--is-ancestor", older, newer], path, check=False).returncode == 0

    def _setup_command(self, path: Path) -> Optional[List[str]]:
        """The configured setup_command (run by bash), else the clone's own setup.sh, else None."""
        if self.repository.setup_command:
            return ["bash", "-c", self.repository.setup_command]
        script = path / "setup.sh"
        if not script.is_file():
            return None
        # An executable setup.sh with a #! line chooses its interpreter; anything else is a bash script.
        with open(script, "rb") as head:
            shebang = head.read(2) == b"#!"
        return [str(script)] if shebang and os.access(script, os.X_OK) else ["bash", str(script)]

    def _run_setup(self, path: Path, setup_log: Path, should_stop: Optional[Callable[[], Optional[str]]],
                   wall: Optional[Wall]) -> None:
        """Run the setup (setup_command, or the repository's setup.sh) in its own process group, in
        `wall` when given, output to `setup_log`."""
        command = self._setup_command(path)
        if command is None:
            return
        timeout = float(self.config.setup_timeout_seconds)
        setup_log.parent.mkdir(parents=True, exist_ok=True)
        what = "setup_command" if self.repository.setup_command else "setup.sh"
        log.info("Running %s in %s (log: %s)", what, path, setup_log)
        fault_point("during-setup")
        with open(setup_log, "ab") as out:
            out.write(f"--- {what} in {path}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            out.flush()
            try:
                process = launch(command, wall=wall, cwd=path, env=self.tool_env(), stdout=out)
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
                        processes.terminate_tree(process, grace_seconds=self.config.claude.kill_grace_seconds)
                        raise SetupError(f"{what} was stopped: {stop}" if stop else
                                         f"{what} did not finish within {timeout:g} s (setup_timeout_seconds)",
                                         log_tail(setup_log) or "") from None
        if code != 0:
            raise SetupError(f"{what} failed with exit code {code}", log_tail(setup_log) or "")

    def tool_env(self) -> Dict[str, str]:
        """For the repository's own code (setup.sh, the checks): none of our tokens, and git in it
        never prompts."""
        env = without_tokens(os.environ if self.env is None else self.env)
        env["GIT_TERMINAL_PROMPT"] = "0"
        return env

    def identity(self) -> Dict[str, str]:
        """The commit identity git has (else the orchestrator's), as the variables a sandbox passes on:
        the agent's sandbox shows no git config of the user's. Asked of git once."""
        if self._identity is None:
            name, email = (self.git(["config", "--get", key], "/", check=False).stdout.strip()
                           for key in ("user.name", "user.email"))  # git_env sets IDENTITY where git has none
            self._identity = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
                              "GIT_COMMITTER_EMAIL": email}
        return self._identity

    # --- the sandbox -----------------------------------------------------------------------------

    def sandbox_view(self, path: os.PathLike, branch: str) -> StoreView:
        """The store as a sandbox around slot `path` sees it (lib.store_view)."""
        path = Path(path)
        self.collect_sandbox_work(path)
        return store_view.make_view(self.git, self.store_path, path, branch)

    def collect_sandbox_work(self, path: os.PathLike) -> List[str]:
        """After a sandboxed command in slot `path`: its commits into the store, and nothing left that
        git outside would run (lib.store_view). Notes for the slot, in words."""
        return store_view.collect(self.git, self.store_path, Path(path))

    # --- after the run ---------------------------------------------------------------------------

    def bring_branch_to_head(self, path: os.PathLike, branch: str) -> Optional[str]:
        """The agent was told to stay on `branch`; if it left HEAD elsewhere (detached, another
        branch) with commits, those belong to the issue: `branch` is moved to HEAD when HEAD builds
        on it, else HEAD is kept on a backup ref. Returns what was done, in words, or None."""
        path = Path(path)
        current = self.git(["symbolic-ref", "--quiet", "--short", "HEAD"], path, check=False).stdout.strip()
        head, tip = self._sha(path, "HEAD"), self._sha(path, f"refs/heads/{branch}")
        if current == branch or head is None or head == tip:
            return None
        where = current or "a detached HEAD"
        if tip is None or self.is_ancestor(path, tip, head):
            self.git(["checkout", "--quiet", "--no-track", "-B", branch, head], path)
            return f"Claude Code left its commits on {where}; {branch} was moved forward to them"
        if not self._unpushed(path, "HEAD") or self.is_ancestor(path, head, tip):
            self.git(["checkout", "--quiet", branch], path)  # HEAD holds nothing the branch lacks
            return None
        backup = self.backup(path, current or "detached", "HEAD")
        self.git(["checkout", "--quiet", branch], path)
        return f"Claude Code left commits on {where} that do not build on {branch}; they are kept on {backup}"

    def release(self, path: os.PathLike) -> None:
        """The run is over: the slot lets go of its branch (detached, files as they are), so that the
        issue's branch can be checked out in another slot next time."""
        if (Path(path) / ".git").is_file():
            self.git(["checkout", "--quiet", "--detach"], path, check=False)

    def commit_all(self, path: os.PathLike, message: str) -> bool:
        """Commit every change in the working tree (ignored files stay ignored); False if none."""
        if not self.git(["status", "--porcelain"], path).stdout.strip():
            return False
        self.git(["add", "--all"], path)
        # --no-verify: a hook setup.sh installed must not stand between the agent's work and the push.
        self.git(["commit", "--quiet", "--no-verify", "-m", message], path)
        return True

    def changed_files(self, path: os.PathLike, base_branch: str, branch: str) -> List[str]:
        """The files `branch` changes against origin/<base>, as the pull request will show them."""
        done = self.git(["diff", "--name-only", "--no-renames", f"refs/remotes/origin/{base_branch}...{branch}"],
                        Path(path), check=False)
        return [line for line in done.stdout.splitlines() if line] if done.returncode == 0 else []

    def commits_ahead(self, path: os.PathLike, base_branch: str, branch: Optional[str] = None) -> int:
        """How many commits `branch` (default HEAD) has that origin/<base> lacks."""
        return self._count(Path(path), [f"refs/remotes/origin/{base_branch}..{branch or 'HEAD'}"])

    def push_branch(self, path: os.PathLike, branch: str, clone_url: str) -> None:
        """Push `branch` to `clone_url` (by URL, so no remote setting in the shared config can redirect
        it). Refusals are errors in words: a non-fast-forward means someone else pushed to the branch
        meanwhile; the work stays in the slot either way."""
        path = Path(path)
        self.store(clone_url).check_before_push(path)
        done = self.git(["push", "--porcelain", clone_url, f"refs/heads/{branch}:refs/heads/{branch}"],
                        path, timeout=NETWORK_TIMEOUT, check=False)
        if done.returncode == 0:
            self.git(["update-ref", f"{ON_ORIGIN_PREFIX}{branch}", f"refs/heads/{branch}"], path)
            log.info("Pushed %s from %s", branch, path)
            return
        # --porcelain: "!<TAB>src:dst<TAB>[rejected] (non-fast-forward)" or "[remote rejected] (reason)"
        refused = [line.split("\t")[-1] for line in (done.stdout or "").splitlines() if line.startswith("!")]
        summary = redact(refused[0]) if refused else ""
        if summary.startswith("[rejected]"):
            raise GitError(f"origin refused {branch}: it has commits this slot does not (someone pushed to the"
                           f" branch meanwhile); the work is kept in {path}")
        if summary.startswith("[remote rejected]"):
            reason = summary[len("[remote rejected]"):].strip(" ()") or "no reason given"
            raise GitError(f"origin refused {branch} ({reason}); the work is kept in {path}")
        raise GitError(f"git push of {branch} failed (exit {done.returncode}): {self.last_words(done)}")

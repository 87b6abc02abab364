"""Agent slots: worktrees of the repository's object store (lib.object_store), each made clean and
ready for one issue, and the agent's work in them committed and pushed.

Slot i is `<base_repo_path>/<repo_name>_<i>`. Before a run the runner calls `prepare_slot`: update
the store (create, fetch), make the slot a worktree of it when it is not, clean, check out
`issue-<N>`, run the repository's `setup.sh` (lib/slot_preparation.py: cleaning keeps ignored files
and never throws unpushed work away; a damaged slot is moved aside). After the run it calls
`commit_all`, `bring_branch_to_head`, `commits_ahead` and `push_branch`.

git itself runs through lib/git_commands.py (`RepoManager.git`): authenticated per command through
the environment, hooks and fsmonitor off, every call with its `cwd=` (runners of several slots share
a process tree, not a working directory). `refs/orchestrator/origin/<branch>` remembers the last
commit of a branch known to be on origin (pushed or checked out from it), so a branch that origin
deleted after merging its pull request is not mistaken for unpushed work once `fetch --prune`
forgets `origin/<branch>`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

from lib import processes, store_view
from lib.git_commands import ON_ORIGIN_PREFIX, Git, GitError, last_words, refuse_credentials_in
from lib.models import fault_point
from lib.object_store import ObjectStore
from lib.redaction import redact, without_tokens
from lib.sandbox import StoreView, Wall
from lib.slot_preparation import SlotPreparation, run_setup, warn
from lib.settings import NETWORK_TIMEOUT

log = logging.getLogger(__name__)


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

    #: git's last lines of output, for a message (token-free).
    last_words = staticmethod(last_words)

    def __init__(self, config, repository=None, *, env: Optional[Mapping[str, str]] = None):
        self.config = config
        self.repository = repository or config.repositories[0]
        self.token = config.github_token
        self.env = env
        #: Runs `git <args>` in a folder: `git(args, cwd, timeout=, check=)` (lib.git_commands.Git).
        self.git = Git(self.token, env)

    def repo_path(self, index: int) -> Path:
        return self.repository.slot_path(index)

    def git_env(self) -> Dict[str, str]:
        """The base environment plus per-command git settings: the auth header, no prompts, and an
        identity when git has none."""
        return self.git.env()

    def tool_env(self) -> Dict[str, str]:
        """For the repository's own code (setup.sh, the checks): none of our tokens, and git in it
        never prompts."""
        env = without_tokens(os.environ if self.env is None else self.env)
        env["GIT_TERMINAL_PROMPT"] = "0"
        return env

    def identity(self) -> Dict[str, str]:
        """The commit identity git has (else the orchestrator's), as the variables a sandbox passes on."""
        return self.git.identity()

    def is_ancestor(self, path: Path, older: str, newer: str) -> bool:
        return self.git.is_ancestor(path, older, newer)

    def backup(self, path: Path, label: str, ref: str) -> str:
        """Keep `ref` on a new `refs/orchestrator/backup/<label>-<time>`; returns its name."""
        return self.git.backup(path, label, ref)

    # --- the slot ------------------------------------------------------------------------------

    def prepare_slot(self, index: int, issue_number: int, *, base_branch: str, clone_url: str,
                     setup_log: Path, should_stop: Optional[Callable[[], Optional[str]]] = None,
                     wall_for: Optional[Callable[[Path], Optional[Wall]]] = None) -> SlotInfo:
        """Make slot `index` a clean checkout of `issue-<N>`, with setup.sh run, for the agent.

        Cleaning keeps ignored files (the environments setup.sh made) and every unpushed commit;
        see lib/slot_preparation.py. `should_stop()` (a reason, or None) is polled while setup.sh
        runs and ends it; `wall_for(slot)` is the sandbox setup.sh runs in (None: none). Raises
        GitError or SetupError with a sentence.
        """
        branch = issue_branch(issue_number)
        path = self.repo_path(index)
        refuse_credentials_in(clone_url)
        log.info("Preparing slot %s (%s) for #%s", index, path, issue_number)
        store = self.store(clone_url)
        if not store.path.exists():
            fault_point("during-clone")
        warnings: List[str] = self.collect_sandbox_work(path)  # a killed run's commits first
        preparation = SlotPreparation(self.git, path, warnings)
        try:
            continued = preparation.make_ready(store, branch, base_branch)
        except GitError:
            if not store.path.exists() or store.intact():
                raise
            busy = self._slots_in_use(except_slot=path)
            if busy:
                raise GitError(f"The object store {store.path} has lost objects, and slot(s) {', '.join(busy)} still"
                               " run in it; it is set aside and made anew once none does.") from None
            store.set_aside()  # objects lost: a new store, fetched anew, and the slot made again
            continued = preparation.make_ready(store, branch, base_branch)
        run_setup(path, Path(setup_log), setup_command_text=self.repository.setup_command,
                  timeout=float(self.config.setup_timeout_seconds),
                  kill_grace_seconds=self.config.claude.kill_grace_seconds, env=self.tool_env(),
                  should_stop=should_stop, wall=wall_for(path) if wall_for else None)
        warnings += self.collect_sandbox_work(path)
        current = self.git(["symbolic-ref", "--quiet", "--short", "HEAD"], path, check=False).stdout.strip()
        if current != branch:
            raise GitError(f"{path} is on {current or 'a detached HEAD'} after setup.sh, not on {branch}")
        dirty = self.git(["status", "--porcelain"], path).stdout.splitlines()
        if dirty:
            warn(path, warnings, f"setup.sh left {len(dirty)} uncommitted change(s); the agent starts"
                                 " with them and they will be committed with its work")
        log.info("Slot %s ready at %s on %s (%s)", index, path, branch,
                 "continuing an earlier attempt" if continued else f"new from origin/{base_branch}")
        return SlotInfo(path=path, branch=branch, base_branch=base_branch, continued=continued, warnings=warnings)

    @property
    def store_path(self) -> Path:
        """The repository's object store: `<base_repo_path>/<repo_name>.store.git`."""
        return self.repository.base_repo_path / f"{self.repository.name}.store.git"

    def store(self, clone_url: str) -> ObjectStore:
        return ObjectStore(self.store_path, clone_url, self.git)

    def _slots_in_use(self, except_slot: Path) -> List[str]:
        """The other slots of this repository that a live process works in."""
        slots = {p.resolve() for p in self.repository.base_repo_path.glob(f"{self.repository.name}_*")
                 if p.is_dir() and p.resolve() != except_slot.resolve()}
        return sorted(str(slot) for slot in slots if processes.working_in(slot))

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
        head, tip = self.git.sha(path, "HEAD"), self.git.sha(path, f"refs/heads/{branch}")
        if current == branch or head is None or head == tip:
            return None
        where = current or "a detached HEAD"
        if tip is None or self.is_ancestor(path, tip, head):
            self.git(["checkout", "--quiet", "--no-track", "-B", branch, head], path)
            return f"Claude Code left its commits on {where}; {branch} was moved forward to them"
        if not self.git.unpushed(path, "HEAD") or self.is_ancestor(path, head, tip):
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
        return self.git.count(Path(path), [f"refs/remotes/origin/{base_branch}..{branch or 'HEAD'}"])

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
        raise GitError(f"git push of {branch} failed (exit {done.returncode}): {last_words(done)}")

"""One object store per repository: a bare repository under base_repo_path whose worktrees are the slots.

`<base_repo_path>/<repo_name>.store.git` holds every object once, fetched once per preparation (under
a lock, so runners preparing slots at the same time fetch one after another and never corrupt it);
slot i is a worktree of it. Why worktrees and not clones borrowing objects (`--reference`): a
borrowing clone breaks when the store prunes an object it borrowed, and nothing tells the store which
objects its borrowers need; worktrees share one object database and one set of refs, so git's own
reachability (every worktree's HEAD, index and branches) protects each slot's objects.

* Not a `--mirror`: origin's branches are fetched into remote-tracking refs
  (`+refs/heads/*:refs/remotes/origin/*`), so the local `issue-N` branches and the backup refs stay.
* Garbage: `gc.auto` is 0, and nothing the orchestrator runs prunes objects. What grows: objects of
  abandoned branches (bounded by the history of the issues run), worktree metadata of removed slots
  (`git worktree prune` at each preparation), backup refs (kept until a human deletes them), and
  `.damaged-*` folders (the same).
* The store's config is shared by every slot, and an agent may write to it. Settings that could
  redirect an authenticated command or run code there (`url.*.insteadOf`, `pushurl`, `credential.*`,
  `http.*`, `core.hooksPath`, `core.fsmonitor`, `core.sshCommand`, includes, ...) are removed at each
  preparation, and a push refuses to run while one is there. Hooks and fsmonitor are off for every
  git command the orchestrator runs (see RepoManager.git_env).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Callable, List

from lib.files import exclusive_lock
from lib.models import OrchestratorError

log = logging.getLogger(__name__)

#: Config keys (lowercase, as `git config --list` prints them) that a run must not leave in the store.
DANGEROUS_KEYS = re.compile(
    r"^(url\..*\.(insteadof|pushinsteadof)|remote\..*\.(pushurl|receivepack|uploadpack|proxy)|credential\..*|"
    r"credential|http\..*|core\.(hookspath|fsmonitor|sshcommand|gitproxy|askpass|editor|pager)|include\..*|"
    r"includeif\..*|protocol\..*|uploadpack\..*|filter\..*|diff\..*\.(textconv|command)|merge\..*\.driver|"
    r"gpg\..*|sequence\.editor|submodule\..*|extensions\.worktreeconfig)$")


class StoreError(OrchestratorError):
    """The store cannot be used; the message says why, in a sentence."""


class ObjectStore:
    """The bare repository of one configured repository. `git(args, cwd, ...)` runs git as RepoManager does."""

    def __init__(self, path: Path, clone_url: str, git: Callable):
        self.path = Path(path)
        self.clone_url = clone_url
        self.git = git

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def update(self, timeout: float) -> List[str]:
        """Create the store when absent, clean its config, forget removed worktrees, fetch origin;
        all under the store's lock. Returns the settings it removed (for the slot's notes)."""
        with exclusive_lock(self.lock_path):
            if self.path.exists() and not self._healthy():
                self.set_aside()
            if not self.path.exists():
                self._create()
            removed = self.sanitize()
            self.git(["worktree", "prune"], self.path)
            self.git(["fetch", "--quiet", "--prune", "origin"], self.path, timeout=timeout)
        return removed

    def _create(self) -> None:
        log.info("Creating the object store %s for %s", self.path, self.clone_url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.git(["init", "--quiet", "--bare", str(self.path)], self.path.parent)
        for key, value in (("remote.origin.url", self.clone_url),
                           ("remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"),
                           ("gc.auto", "0"), ("core.logAllRefUpdates", "true")):
            self.git(["config", key, value], self.path)

    def _healthy(self) -> bool:
        """A bare repository git can read (a changed origin URL is put back by sanitize, not a reason
        to set the store aside)."""
        done = self.git(["rev-parse", "--is-bare-repository"], self.path, check=False)
        return done.returncode == 0 and done.stdout.strip() == "true"

    def intact(self) -> bool:
        """Every object its refs need is there (run only when something failed: it reads them all)."""
        done = self.git(["fsck", "--connectivity-only", "--no-dangling", "--no-progress"], self.path,
                        check=False, timeout=600)
        return done.returncode == 0

    def set_aside(self) -> None:
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        self.path.rename(aside)
        log.warning("The object store %s is damaged or for another remote; kept it as %s and making a new one",
                    self.path, aside)

    def dangerous_settings(self) -> List[str]:
        """`key=value` of every setting in the store's config a push must not run with."""
        done = self.git(["config", "--file", str(self.path / "config"), "--list"], self.path, check=False)
        found = []
        for line in done.stdout.splitlines():
            key, _, value = line.partition("=")
            if DANGEROUS_KEYS.match(key.lower()) or (key.lower() == "remote.origin.url" and value != self.clone_url):
                found.append(line)
        return found

    def sanitize(self) -> List[str]:
        """Remove the dangerous settings (the orchestrator owns the store); returns what it removed."""
        removed = self.dangerous_settings()
        for line in removed:
            key = line.partition("=")[0]
            if key.lower() == "remote.origin.url":
                self.git(["config", "--file", str(self.path / "config"), key, self.clone_url], self.path)
            else:
                self.git(["config", "--file", str(self.path / "config"), "--unset-all", key], self.path, check=False)
        if removed:
            log.warning("Removed from the store's config what a run had put there: %s",
                        ", ".join(line.partition("=")[0] for line in removed))
        return removed

    def check_before_push(self, slot: Path) -> None:
        """Refuse to push while the shared config could redirect it or run code."""
        found = self.dangerous_settings()
        if found:
            raise StoreError(f"the store's config holds {', '.join(line.partition('=')[0] for line in found)}, which"
                             f" could redirect the push or run code; nothing was pushed, the work is kept in {slot}")

    def add_worktree(self, slot: Path, start: str) -> None:
        with exclusive_lock(self.lock_path):
            self.git(["worktree", "add", "--quiet", "--detach", "--force", str(slot), start], self.path)

    def release(self, branch: str, keep: Path) -> None:
        """Detach `branch` in every worktree but `keep`: an issue's branch moves to the slot it runs in."""
        listing = self.git(["worktree", "list", "--porcelain"], self.path, check=False).stdout
        for block in listing.split("\n\n"):
            lines = dict(line.partition(" ")[::2] for line in block.splitlines() if line)
            where = lines.get("worktree")
            if where and lines.get("branch") == f"refs/heads/{branch}" and Path(where).resolve() != keep.resolve():
                self.git(["checkout", "--quiet", "--detach"], Path(where), check=False)
                log.info("Slot %s let go of %s for %s", where, branch, keep)

"""What one tick's parts share (lib.reconcile, lib.claims; lib.orchestrator runs them): the config, the
state, the executor, a GitHub client and a trust per repository, what the tick did so far (its
`TickSummary`), and the small helpers every part needs: an issue's labels, starting a runner, a free
slot, whether agents may start here at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Dict, List, Optional, Set

from lib.config import Config
from lib.executors import executor_for
from lib.github_client import GitHubClient, Trust
from lib.github_errors import GitHubError
from lib.labels import show_status
from lib.lifecycle import IssueStatus
from lib.models import IssueState, fault_point, issue_ref, utc_now_iso
from lib.state_manager import State, StateStore, issue_key

log = logging.getLogger("lib.orchestrator")

EXIT_OK, EXIT_FAILED = 0, 1


@dataclass
class TickSummary:
    """What one tick did, each issue named `owner/name#N`; its exit code comes from here."""

    launched: List[str] = field(default_factory=list)
    finalizing: List[str] = field(default_factory=list)
    cancelled: List[str] = field(default_factory=list)
    resumed: List[str] = field(default_factory=list)
    followed_up: List[str] = field(default_factory=list)  # follow-ups started on pull requests
    queued: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    lock_held: bool = False
    rate_limited_until: Optional[datetime] = None

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.errors else EXIT_OK

    def line(self) -> str:
        if self.lock_held:
            return "Another tick is running (orchestrator.lock is held); nothing to do."
        parts = [f"{len(self.launched)} launched"]
        for name in ("followed_up", "resumed", "finalizing", "cancelled", "queued", "skipped"):
            count = len(getattr(self, name))
            if count:
                parts.append(f"{count} {name.replace('_', ' ')}")
        if self.rate_limited_until:
            parts.append(f"rate limited until {self.rate_limited_until.astimezone():%H:%M}")
        parts.append(f"{len(self.errors)} error{'s' if len(self.errors) != 1 else ''}")
        return "Tick done: " + ", ".join(parts)


class Tick:
    """The services and the summary of one tick."""

    def __init__(self, config: Config, *, state: Optional[StateStore] = None, dry_run: bool = False):
        self.config = config
        self.dry_run = dry_run
        self.state = state or StateStore.for_config(config)
        self.executor = executor_for(config, self.state)
        self.summary = TickSummary()
        self.capped: Set[str] = set()  # repositories whose spend ceiling is reached: no new run this tick
        self._clients: Dict[str, GitHubClient] = {}
        self._trust: Dict[str, Trust] = {}
        self._no_sandbox: Optional[str] = None  # why no agent may start here, once asked

    def github(self, repo: str) -> GitHubClient:
        """One client per repository; they share one poll cache file (its entries are per URL)."""
        if repo not in self._clients:
            self._clients[repo] = GitHubClient(self.config.github_token, repo, self.config.api_url,
                                               poll_cache_file=None if self.dry_run else self.config.poll_cache_file)
        return self._clients[repo]

    def trust(self, repo: str) -> Trust:
        """Roles are per repository: a maintainer of one may be nobody in another."""
        if repo not in self._trust:
            self._trust[repo] = Trust(self.github(repo), self.config.trusted_roles, self.config.allowed_users)
        return self._trust[repo]

    def show(self, repo: str, number: int, status: IssueStatus) -> None:
        """The labels of `status` on the issue (lib.labels); a failure is a warning: the runner sets them
        again when it starts, and the state already holds the truth."""
        try:
            show_status(self.github(repo), self.config.labels, number, status)
        except GitHubError as exc:
            log.warning("Issue %s: could not update labels: %s", issue_ref(repo, number), exc)

    def agents_refused(self) -> bool:
        """Fail closed: where no sandbox can be built no agent starts; the tick says why once (with the
        fix) and counts it as its error. Asked at most once a tick, and only when an agent would start."""
        if self._no_sandbox is None:
            from lib.sandbox import unavailable  # only a tick that would start an agent builds a wall

            self._no_sandbox = unavailable(self.config.sandbox) or ""
            if self._no_sandbox:
                log.error("No agent starts: %s", self._no_sandbox)
                self.summary.errors.append(self._no_sandbox)
        return bool(self._no_sandbox)

    # --- slots and runners ----------------------------------------------------------------------

    def room(self, state: State, repository) -> bool:
        """A slot of this repository is free and the machine (or, in the Celery mode, every host
        together) runs fewer than max_agents."""
        if len(state.active()) >= self.config.max_agents:
            return False
        if self.executor.local:
            return state.free_slot(repository.repo, limit=repository.max_concurrent) is not None
        return len(state.active(repository.repo)) < repository.max_concurrent

    def slot(self, state: State, repository) -> Optional[int]:
        """The slot a claim takes here; None in the Celery mode: the worker that takes the task picks
        a slot of its own host (the same rule, State.free_slot)."""
        return state.free_slot(repository.repo, limit=repository.max_concurrent) if self.executor.local else None

    def claim(self, state: State, entry: IssueState, mode: str) -> IssueState:
        """Inside a claim's state transaction: the entry, pending, with what its dispatch needs (a claim
        is this one transaction; the runner records its own pid when it starts)."""
        entry.status, entry.updated_at = IssueStatus.PENDING, utc_now_iso()
        for name, value in self.executor.dispatch_fields(entry, mode).items():
            setattr(entry, name, value)
        state.add(entry)
        return entry

    def spawn(self, entry: IssueState, mode: str, bucket: List[str], reason: Optional[str] = None, *,
              claimed: bool = False) -> None:
        """Start `mode`'s runner for `entry`; `claimed`: its claim's transaction wrote its dispatch fields,
        else they are written here first."""
        ref = issue_ref(entry.repo, entry.issue_number)
        bucket.append(ref)
        if self.dry_run:
            log.info("[dry-run] would start a %s runner for issue %s", mode, ref)
            return
        if not claimed:
            fields = self.executor.dispatch_fields(entry, mode)
            if fields:
                with self.state.transaction() as state:
                    entry = state.issues[issue_key(entry)]
                    for name, value in fields.items():
                        setattr(entry, name, value)
                    entry.updated_at = utc_now_iso()
        how = self.executor.start(entry, mode, reason)
        fault_point("after-spawn")
        log.info("Issue %s: %s runner started (%s)", ref, mode, how)

"""One issue's run as its steps share it (lib.run_steps, lib.run_endings; lib.runner drives them).

`Run` holds the issue's key, its repository's settings and the services a step uses (state, GitHub,
notifiers, slots, sandboxes, the Claude process), what steps hand on to each other (the agent's
next `Launch`, the last `Outcome`, the slot), and the small helpers every step needs: the entry,
a stop request, the run history, an invocation's figures.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from lib.claude_processor import ClaudeProcessor
from lib.config import Config
from lib.events import Event
from lib.github_client import GitHubClient, Trust
from lib.labels import show_status
from lib.ledger import RunHistory, own_cost
from lib.lifecycle import IssueStatus
from lib.models import IssueState, OrchestratorError, StateUnreachable, issue_ref, utc_now_iso
from lib.notifications import Notifications
from lib.outcomes import Outcome
from lib.repo_manager import RepoManager
from lib.state_manager import REDIS_RESTART_SECONDS, StateStore
from lib.walls import Walls

log = logging.getLogger("lib.runner")


class Stopped(Exception):
    """The runner was asked to stop (SIGTERM) between steps: the entry stays active for the next tick."""


@dataclass
class Launch:
    """What the running (or fixing) step starts: a prompt for a new session or a resumed one."""

    prompt: str
    session_id: str
    resume: bool
    kind: str  # the history's word for it: run, resume, follow, fix-1, ...


class Run:
    """The issue `issue_number` of `repo` (default: the config's first repository)."""

    def __init__(self, config: Config, issue_number: int, repo: Optional[str] = None):
        self.config = config
        self.repository = config.repository(repo)
        self.number = int(issue_number)
        self.key = (self.repository.repo, self.number)
        self.ref = issue_ref(*self.key)
        # A runner waits out a restart of the shared state's Redis; a tick says so at once.
        self.state = StateStore.for_config(config, patience=REDIS_RESTART_SECONDS)
        self.history = RunHistory.for_config(config, self.state)
        self.github = GitHubClient(config.github_token, self.repository.repo, config.api_url)
        self.trust = Trust(self.github, config.trusted_roles, config.allowed_users)
        self.notifications = Notifications.from_config(config)
        self.repos = RepoManager(config, self.repository)
        entry = self.state.get(self.key)
        settings = self.repository.claude
        if entry is not None and entry.model:  # a trusted claude-model:<name> label chose it
            settings = dataclasses.replace(settings, model=entry.model)
        self.processor = ClaudeProcessor(config, settings=settings)
        self.issue_dir = config.issue_dir(self.repository.repo, self.number)
        self.walls = Walls(config, self.repository, self.repos, self.issue_dir, self.number)
        self.signalled = False
        self.follow = False  # a follow-up on the pull request (the runner's `follow` mode)
        self.launch: Optional[Launch] = None  # what the running step starts next
        self.outcome: Optional[Outcome] = None  # how the last invocation (or step) ended
        self.work_in_slot = False  # the slot holds this issue's work: the endings save it
        self.exit_code = 0
        self._issue: Optional[Dict[str, Any]] = None
        self._repository: Optional[Dict[str, Any]] = None

    # --- the entry -------------------------------------------------------------------------------

    @property
    def entry(self) -> IssueState:
        entry = self.state.get(self.key)
        if entry is None:
            raise OrchestratorError(f"Issue {self.ref} has no entry in {self.config.state_file}.")
        return entry

    def update(self, **changes) -> IssueState:
        try:
            return self.state.update(self.key, **changes)
        except KeyError:
            raise OrchestratorError(f"Issue {self.ref} has no entry in {self.config.state_file}.") from None

    @property
    def slot_path(self) -> Optional[Path]:
        """The folder of the slot the issue holds (None before it holds one)."""
        entry = self.entry
        return self.repository.slot_path(entry.slot) if entry.slot is not None else None

    def log_path(self, suffix: str, attempt: Optional[int] = None) -> Path:
        return self.issue_dir / f"{attempt or self.entry.attempt}.{suffix}"

    def stream_size(self) -> int:
        path = self.entry.log_path
        try:
            return os.path.getsize(path) if path else 0
        except OSError:
            return 0

    # --- GitHub ----------------------------------------------------------------------------------

    def issue(self) -> Dict[str, Any]:
        if self._issue is None:
            self._issue = self.github.get_issue(self.number)
        return self._issue

    def _repository_info(self) -> Dict[str, Any]:
        if self._repository is None:
            self._repository = self.github.get_repository()
        return self._repository

    def base_branch(self) -> str:
        return self.repository.base_branch or self._repository_info()["default_branch"]

    def clone_url(self) -> str:
        return self.repository.clone_url or self._repository_info()["clone_url"]

    def show(self, status: IssueStatus) -> None:
        """The labels of `status` on the issue (lib.labels)."""
        show_status(self.github, self.config.labels, self.number, status)

    def event(self, kind: str, entry: IssueState, **fields) -> Event:
        issue = self._issue or {}
        return Event(kind=kind, repo=self.repository.repo, issue_number=self.number,
                     title=entry.title or issue.get("title") or "", url=issue.get("html_url"),
                     slot=entry.slot, branch=entry.branch, **fields)

    # --- stopping ----------------------------------------------------------------------------------

    def on_sigterm(self, signum, frame) -> None:
        self.signalled = True

    def should_stop(self) -> Optional[str]:
        """Polled while something runs: a tick asked to cancel (issue closed, label removed), or SIGTERM."""
        reason = self.while_watching(lambda: self.entry.cancel_reason)
        if reason:
            return reason
        return "the runner was asked to stop (SIGTERM)" if self.signalled else None

    def while_watching(self, step):
        """A state call of the watch: a shared state that stays unreachable (Redis down) is a warning,
        never the end of a running agent; the next poll tries again."""
        try:
            return step()
        except StateUnreachable as exc:
            log.warning("Issue %s: %s; the agent goes on", self.ref, exc)
            return None

    def interrupted(self) -> Optional[IssueStatus]:
        """Between steps: CANCELLED (the outcome set) when a tick asked to cancel; raises Stopped on a bare
        SIGTERM (a shutdown, or a tick ending a hung runner: the next tick finalizes); None: go on."""
        entry = self.entry
        if entry.cancel_reason:
            self.outcome = Outcome(status=IssueStatus.CANCELLED, reason=entry.cancel_reason)
            return IssueStatus.CANCELLED
        if self.signalled:
            raise Stopped()
        return None

    # --- the slot and what the agent did ---------------------------------------------------------

    def collect(self, path: Optional[Path]) -> None:
        """After a sandboxed command: its commits into the store, the slot safe for git outside."""
        if path is not None and (path / ".git").exists():
            notes = self.repos.collect_sandbox_work(path)
            if notes:
                self.update(slot_notes=[*self.entry.slot_notes, *notes])

    def head(self, path: Path) -> str:
        return self.repos.git(["rev-parse", "--verify", "--quiet", "HEAD"], path, check=False).stdout.strip()

    def has_changes(self, path: Path, since: Optional[str]) -> bool:
        """Did this invocation change anything: edits left, or commits made since HEAD was `since`?
        (Not "ahead of the base": a re-run or a resume starts on a branch with earlier work.)"""
        self.collect(path)
        dirty = self.repos.git(["status", "--porcelain"], cwd=path, check=False).stdout.strip()
        return bool(dirty) or self.head(path) != since

    def has_work(self, path: Path) -> bool:
        """Commits on the branch that the base lacks, or edits left: something to check."""
        dirty = self.repos.git(["status", "--porcelain"], cwd=path, check=False).stdout.strip()
        return bool(dirty) or self.repos.commits_ahead(path, self.base_branch(), self.entry.branch) > 0

    # --- figures -------------------------------------------------------------------------------------

    def record_invocation(self, kind: str, outcome: Outcome) -> None:
        """Each invocation's figures: the CLI's cost is the session's running total; turns and time add up.
        The run history gets its own cost: what it added to its session's total (kept across runs)."""
        entry = self.entry
        figures = {"kind": kind, "cost_usd": outcome.cost_usd, "num_turns": outcome.num_turns,
                   "duration_seconds": outcome.duration_seconds, "ended": utc_now_iso()}
        cost, spent = own_cost(outcome.cost_usd, entry.session_spent, entry.session_id)
        self.update(invocations=[*entry.invocations, figures], session_spent=spent)
        self.remember({"type": "invocation", "kind": kind, "attempt": entry.attempt, "session_id": entry.session_id,
                       "session_cost_usd": outcome.cost_usd, "cost_usd": cost, "num_turns": outcome.num_turns,
                       "duration_seconds": outcome.duration_seconds})

    def remember(self, record: Dict[str, Any]) -> None:
        """One line of the run history; a history that cannot be written costs a warning, never the run."""
        try:
            self.history.append({"repo": self.repository.repo, "issue": self.number, **record})
        except (OSError, OrchestratorError) as exc:  # a full disk; Redis down in the Celery mode
            log.warning("Issue %s: the run history %s was not written: %s", self.ref, self.history.path, exc)

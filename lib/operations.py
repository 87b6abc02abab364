"""Operator commands: pause and resume launches, cancel or retry an issue, free a slot, a status.

Each goes through the state store (never an edit of its file by hand) and GitHub's labels, does one
thing, and returns one line saying what it did. An issue is `N` or `owner/name#N`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import List, Optional

from lib.labels import show_status, unqueue
from lib.config import Config
from lib.github_client import GitHubClient
from lib.models import (IssueState, OrchestratorError, IssueStatus, UsageError, format_cost, format_duration, issue_ref,
                        parse_iso, seconds_between, shorten, utc_now_iso)
from lib.processes import end_run, live_process
from lib.state_manager import StateStore, key_text, parse_key, issue_key

#: A pause with no end: until --unpause.
FOREVER = datetime(9999, 12, 31, tzinfo=timezone.utc)
#: Finished runs a status shows.
STATUS_FINISHED = 3


class Operations:
    def __init__(self, config: Config, state: Optional[StateStore] = None):
        self.config = config
        self.state = state or StateStore.for_config(config)

    def _entry(self, ref: str) -> IssueState:
        repo, number = parse_key(ref)
        key = (self.config.repository(repo).repo, number)
        entry = self.state.get(key)
        if entry is None:
            raise OrchestratorError(f"Issue {key_text(key)} is not in the state file {self.config.state_file}.")
        return entry

    def _github(self, entry: IssueState) -> GitHubClient:
        return GitHubClient(self.config.github_token, entry.repo, self.config.api_url)

    # --- launches ---------------------------------------------------------------------------------

    def pause(self, until: Optional[str]) -> str:
        end = _until(until)
        with self.state.transaction() as state:
            state.meta["paused_until"] = end.isoformat()
        told = "until --unpause" if end == FOREVER else f"until {end.astimezone():%Y-%m-%d %H:%M}"
        return f"Launches paused {told}; runs already going finish, and questions wait for it too."

    def unpause(self) -> str:
        with self.state.transaction() as state:
            was = state.meta.pop("paused_until", None)
        return "Launches resumed: the next tick claims what waits." if was else "Launches were not paused."

    # --- what runs -------------------------------------------------------------------------------

    def status(self, ref: Optional[str] = None) -> str:
        """A short summary (the chat's /status): launches, each run going or queued, the last ones
        finished; with `ref`, that issue alone."""
        if ref:
            return "\n".join(_facts(self._entry(ref)))
        state = self.state.load_state()
        paused = state.paused_until()
        lines = [f"Launches are paused until {paused:%Y-%m-%d %H:%M} UTC." if paused and paused < FOREVER else
                 "Launches are paused until --unpause." if paused else "Launches are on."]
        going = sorted((e for e in state.issues.values() if e.is_active or e.status == IssueStatus.WAITING),
                       key=lambda e: (e.repo or "", e.issue_number))
        lines += [_facts(entry)[0] for entry in going] or ["Nothing runs and nothing is queued."]
        finished = sorted((e for e in state.issues.values() if e.is_finished),
                          key=lambda e: e.end_time or e.start_time or "", reverse=True)[:STATUS_FINISHED]
        if finished:
            lines += ["Last finished:", *(_facts(entry)[0] for entry in finished)]
        return "\n".join(lines)

    # --- one issue --------------------------------------------------------------------------------

    def cancel(self, ref: str) -> str:
        """Stop an issue's agent (its runner saves the work and reports it), or drop a queued one."""
        entry = self._entry(ref)
        labels = self.config.labels
        if entry.status == IssueStatus.WAITING:
            self.state.update(issue_key(entry), status=IssueStatus.CANCELLED, not_before=None, end_time=utc_now_iso(),
                              error="cancelled by the operator while queued")
            unqueue(self._github(entry), labels, entry.issue_number)
            return f"{issue_ref(entry.repo, entry.issue_number)}: taken out of the queue ({labels.ready} removed)."
        if not entry.is_active:
            raise UsageError(f"{issue_ref(entry.repo, entry.issue_number)} is {entry.status}: there is nothing to cancel.")
        self.state.update(issue_key(entry), cancel_reason="cancelled by the operator")
        runner = live_process(entry.runner_pid, entry.runner_create_time)
        if runner is not None:
            runner.terminate()  # it stops Claude, saves the work and finalizes the issue as cancelled
            return f"{issue_ref(entry.repo, entry.issue_number)}: cancelled; its runner stops the agent and saves the work now."
        return f"{issue_ref(entry.repo, entry.issue_number)}: cancelled; its runner is gone, so the next tick saves the work and reports it."

    def retry(self, ref: str) -> str:
        """Queue a finished issue again (the next tick starts a new attempt on its branch)."""
        entry = self._entry(ref)
        if entry.is_active or entry.status == IssueStatus.WAITING:
            raise UsageError(f"{issue_ref(entry.repo, entry.issue_number)} is {entry.status}: it is not finished, so it cannot be retried.")
        labels = self.config.labels
        # WAITING with no wait: the operator's word stands for a trusted labeler's.
        self.state.update(issue_key(entry), status=IssueStatus.WAITING, not_before=utc_now_iso(), requeues=0)
        show_status(self._github(entry), labels, entry.issue_number, IssueStatus.WAITING)
        return f"{issue_ref(entry.repo, entry.issue_number)}: queued again; the next tick starts attempt {entry.attempt + 1}."

    def free_slot(self, index: int, repo: Optional[str]) -> str:
        """End whatever holds slot `index` of `repo` and mark its issue failed, so the slot is free."""
        repository = self.config.repository(repo)
        holder = next((e for e in self.state.load_state().active(repository.repo) if e.slot == index), None)
        if holder is None:
            return f"Slot {index} of {repository.repo} is free already."
        end_run((holder.runner_pid, holder.runner_create_time), (holder.claude_pid, holder.claude_create_time),
                holder.session_id, self.config.claude.kill_grace_seconds)
        self.state.update(issue_key(holder), status=IssueStatus.FAILED, end_time=utc_now_iso(), claude_pid=None,
                          error=f"slot {index} was freed by the operator")
        labels = self.config.labels
        show_status(self._github(holder), labels, holder.issue_number, IssueStatus.FAILED)
        return f"Slot {index} of {repository.repo} freed: {issue_ref(holder.repo, holder.issue_number)} is marked failed ({labels.failed})."


def _facts(entry: IssueState) -> List[str]:
    """An entry's status in a line, then its other facts, a line each."""
    line = f"{key_text(issue_key(entry))}: {entry.status}"
    if entry.is_active and entry.slot is not None:
        line += f", slot {entry.slot}"
    if entry.is_active and seconds_between(entry.start_time) is not None:
        line += f", for {format_duration(seconds_between(entry.start_time))}"
    if entry.status == IssueStatus.WAITING and entry.not_before:
        line += f", until {entry.not_before}"
    if entry.pr_url:
        line += f", {entry.pr_url}"
    facts = [line]
    if entry.title:
        facts.append(f"Title: {shorten(entry.title, 200, 1)}")
    if entry.question and entry.status == IssueStatus.NEEDS_INPUT:
        facts.append(f"Question: {shorten(entry.question, 300, 3)}")
    if entry.error and not entry.is_active:
        facts.append(f"Why: {shorten(entry.error, 300, 3)}")
    if entry.cost_usd is not None:
        facts.append(f"Cost so far: {format_cost(entry.cost_usd)} (attempt {entry.attempt})")
    return facts


def _until(text: Optional[str]) -> datetime:
    """None: no end; `2h`, `30m`, `1d`: from now; else an ISO time (UTC when it names no zone)."""
    if not text:
        return FOREVER
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if text[:-1].isdigit() and text[-1] in units:
        return datetime.now(timezone.utc) + timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        moment = parse_iso(text)
    except ValueError:
        moment = None
    if moment is None:
        raise UsageError(f"--pause {text!r}: give a duration (30m, 2h, 1d) or a time (2026-12-01T18:00)")
    return moment

"""One issue's lifecycle, in a detached process per issue: `python -m lib.runner run|resume|finalize`.

Modes: `run` (a claimed issue: slot, prompt, agent), `resume` (a trusted human answered the
question: the same session goes on in the same slot) and `finalize` (the tick found the runner
gone, an unanswered question expired or a stop was asked for: finish from what the stream log
shows). The issue is finished the moment its agent ends: the work is committed and pushed, the pull
request opened, the outcome commented, the labels swapped and the notifiers told. Every GitHub write
is made once: comments carry a key, pull requests are reused. The tick starts runners (it never
waits for one); `python -m lib.claude_processor run|resume|finalize ...`, the command of earlier
versions, is the same runner.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from lib import comments
from lib.branch_merge import merge_base, merged_cleanly, settle_merge
from lib.claude_processor import AgentProcess, ClaudeLaunchError, ClaudeProcessor, new_session_id
from lib.config import PROJECT_DIR, Config, print_error
from lib.events import Event
from lib.files import exclusive_lock, log_tail
from lib.follow_up import addressed, follow_prompt, numbered_comments
from lib.github_client import GitHubClient, Trust
from lib.ledger import RunHistory, own_cost
from lib.models import (IssueState, OrchestratorError, ProcessStatus, StateUnreachable, fault_point,
                        seconds_between, utc_now_iso)
from lib.notifications import Notifications
from lib.outcomes import Outcome, classify
from lib.processes import RUN_MARKER_VAR, process_create_time, start
from lib.prompts import build_prompt, build_reply
from lib.pull_upkeep import follow_up_counted
from lib.redaction import configure_logging
from lib.repo_manager import RepoManager, SlotInfo
from lib.state_manager import REDIS_RESTART_SECONDS, StateStore
from lib.transcripts import summarize_stream
from lib.validation import fix_prompt, is_test_file, run_validation, summary_line

log = logging.getLogger("lib.runner")  # also when run as `python -m lib.runner` (__main__)

#: Runner modes, as the tick passes them.
RUN, RESUME, FINALIZE, FOLLOW = "run", "resume", "finalize", "follow"
MODES = (RUN, RESUME, FINALIZE, FOLLOW)
#: Backoff for a requeue whose limit named no reset time: 15 min, 30 min, 1 h, ... at most 6 h.
REQUEUE_BACKOFF = timedelta(minutes=15)
REQUEUE_BACKOFF_MAX = timedelta(hours=6)
#: Outcome status -> the label it ends with and the notification it sends.
END_LABEL = {ProcessStatus.COMPLETED: "completed", ProcessStatus.FAILED: "failed"}
END_EVENT = {ProcessStatus.COMPLETED: "completed", ProcessStatus.FAILED: "error", ProcessStatus.CANCELLED: "cancelled"}


class IssueRunner:
    """Prepares the slot, runs Claude Code and finalizes the issue the moment the agent ends (the
    modes are the module's)."""

    def __init__(self, config: Config, issue_number: int, repo: Optional[str] = None):
        self.config = config
        self.repository = config.repository(repo)
        self.number = int(issue_number)
        self.key = (self.repository.repo, self.number)
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
        self.signalled = False
        self._issue: Optional[Dict[str, Any]] = None
        self._repository: Optional[Dict[str, Any]] = None

    # --- small helpers -------------------------------------------------------------------------

    @property
    def entry(self) -> IssueState:
        entry = self.state.get(self.key)
        if entry is None:
            raise OrchestratorError(f"Issue {self.ref} has no entry in {self.config.state_file}.")
        return entry

    @property
    def ref(self) -> str:
        return f"{self.repository.repo}#{self.number}"

    def update(self, **changes):
        return self.state.update(self.key, **changes)

    def issue(self) -> Dict[str, Any]:
        if self._issue is None:
            self._issue = self.github.get_issue(self.number)
        return self._issue

    def base_branch(self) -> str:
        if self.repository.base_branch:
            return self.repository.base_branch
        if self._repository is None:
            self._repository = self.github.get_repository()
        return self._repository["default_branch"]

    def log_path(self, attempt: int, suffix: str) -> Path:
        return self.issue_dir / f"{attempt}.{suffix}"

    def slot_path(self, entry) -> Optional[Path]:
        return self.repository.slot_path(entry.agent_index) if entry.agent_index is not None else None

    def event(self, kind: str, entry: IssueState, **fields) -> Event:
        issue = self._issue or {}
        return Event(kind=kind, repo=self.repository.repo, issue_number=self.number,
                     title=entry.title or issue.get("title") or "", url=issue.get("html_url"),
                     agent_index=entry.agent_index, branch=entry.branch, **fields)

    def swap_labels(self, *, add: Optional[str], remove: Sequence[Optional[str]]) -> None:
        self.github.swap_labels(self.number, add=add, remove=remove)

    def post_once(self, key: str, body: str) -> Dict[str, Any]:
        return comments.post_once(self.github, self.number, key, body)

    def stream_size(self, entry) -> int:
        try:
            return os.path.getsize(entry.log_path) if entry.log_path else 0
        except OSError:
            return 0

    def should_stop(self) -> Optional[str]:
        """Polled by the watcher: a tick asked to cancel (issue closed, label removed) or a SIGTERM."""
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

    def stopped_between_steps(self) -> Optional[int]:
        """The exit code when the run must not go on: a tick's cancel finishes the issue as
        cancelled; a bare SIGTERM (a shutdown, or a tick ending a hung runner) leaves the entry
        active for the next tick to finalize. None: go on."""
        entry = self.entry
        if entry.cancel_reason:
            return self.finish(Outcome(status=ProcessStatus.CANCELLED, reason=entry.cancel_reason), entry)
        if self.signalled:
            log.warning("Issue %s: the runner was stopped by SIGTERM; the next tick finalizes the issue",
                        self.ref)
            return 1
        return None

    def on_sigterm(self, signum, frame) -> None:
        self.signalled = True

    def has_changes(self, path: Path, since: Optional[str]) -> bool:
        """Did this invocation change anything: edits left, or commits made since HEAD was `since`?
        (Not "ahead of the base": a re-run or a resume starts on a branch with earlier work.)"""
        dirty = self.repos.git(["status", "--porcelain"], cwd=path, check=False).stdout.strip()
        return bool(dirty) or self._head(path) != since

    def _head(self, path: Path) -> str:
        return self.repos.git(["rev-parse", "--verify", "--quiet", "HEAD"], path, check=False).stdout.strip()

    # --- modes ---------------------------------------------------------------------------------

    def prepare(self, entry: IssueState) -> SlotInfo | int:
        """The slot ready for this attempt, or the exit code once preparing it failed or was stopped."""
        try:
            self.issue_dir.mkdir(parents=True, exist_ok=True)
            return self.repos.prepare_slot(entry.agent_index, self.number, base_branch=self.base_branch(),
                                           clone_url=self.repository.clone_url or self._clone_url(),
                                           setup_log=self.log_path(entry.attempt, "setup.log"),
                                           should_stop=self.should_stop)
        except OrchestratorError as exc:
            stopped = self.stopped_between_steps()  # setup.sh ends early when asked to stop
            if stopped is not None:
                return stopped
            return self.finish(Outcome(status=ProcessStatus.FAILED, reason=str(exc)), self.entry)

    def run(self) -> int:
        """A claimed issue: labels, slot, prompt, Claude, finalize."""
        entry = self.update(status=ProcessStatus.PREPARING, error=None, end_time=None, pr_url=None,
                            question=None, question_comment_id=None, slot_notes=[], runner_pid=os.getpid(),
                            runner_create_time=process_create_time(os.getpid()), validation_round=0, checks=[],
                            invocations=[])
        stopped = self.stopped_between_steps()
        if stopped is not None:
            return stopped
        labels = self.config.labels
        issue = self.issue()
        # The tick swapped them already unless it crashed in between; doing it again is harmless.
        self.swap_labels(add=labels.working, remove=[labels.ready, labels.completed, labels.failed,
                                                     labels.needs_input])
        entry = self.own_slot(entry)
        self.notifications.notify(self.event("started", entry))
        slot = self.prepare(entry)
        if isinstance(slot, int):
            return slot
        if slot.warnings:
            self.update(slot_notes=slot.warnings)
        fault_point("before-claude")
        stopped = self.stopped_between_steps()
        if stopped is not None:
            return stopped
        prompt = build_prompt(repo=self.repository.repo, issue=issue,
                              comments=self.trust.human_comments(self.number), branch=slot.branch,
                              template=self.repository.claude.prompt_template)
        return self.launch(prompt, session_id=new_session_id(), resume=False, cwd=slot.path)

    def follow(self) -> int:
        """A follow-up on the pull request: its branch from origin as it is now (a human's commits
        kept), the same session told of the reviews or the failing checks, then finished as any run."""
        entry = self.update(status=ProcessStatus.PREPARING, runner_pid=os.getpid(), error=None, end_time=None,
                            runner_create_time=process_create_time(os.getpid()), question=None, slot_notes=[],
                            validation_round=0, checks=[], invocations=[])
        labels = self.config.labels
        self.swap_labels(add=labels.working, remove=[labels.completed, labels.failed])
        entry = self.own_slot(entry)
        self.notifications.notify(self.event("started", entry, pr_url=entry.pr_url,
                                             reason=f"follow-up on the pull request ({entry.follow_work.get('kind')})"))
        slot = self.prepare(entry)
        if isinstance(slot, int):
            return slot
        if entry.follow_work.get("kind") == "conflict":  # the base is merged first; Claude only for conflicts
            entry = self.update(follow_work=merge_base(self.repos, slot.path, entry.follow_work))
            if not entry.follow_work["conflicts"]:
                return self.conclude(merged_cleanly(entry.follow_work, entry.branch), slot.path)
        if not entry.session_id:  # its transcript stayed on a host that is gone: a new session, told all
            return self.launch(self.whole_thread_prompt(entry), session_id=new_session_id(), resume=False,
                               cwd=slot.path, kind="follow")
        prompt = follow_prompt(entry.follow_work, entry.pr_url, entry.branch)
        return self.launch(prompt, session_id=entry.session_id, resume=True, cwd=slot.path, kind="follow")

    def resume(self) -> int:
        """A trusted human answered: continue the same Claude session in the same slot."""
        entry = self.entry
        if entry.status != ProcessStatus.NEEDS_INPUT:
            log.info("Issue %s is %s, not waiting for input; nothing to resume", self.ref, entry.status)
            return 0
        replies = self.trust.human_comments(entry.question_number or self.number, after_id=entry.question_comment_id)
        if not replies:
            log.info("Issue %s: no trusted reply after the question yet", self.ref)
            return 0
        slot = self.slot_path(entry)
        if slot is None or not (slot / ".git").exists():
            return self.finish(Outcome(status=ProcessStatus.FAILED,
                                       reason=f"the slot {slot} of the waiting session is gone"), entry)
        entry = self.update(status=ProcessStatus.RUNNING, end_time=None, runner_pid=os.getpid(),
                            runner_create_time=process_create_time(os.getpid()))
        if self.config.labels.needs_input:
            self.github.remove_label(self.number, self.config.labels.needs_input)
        self.issue()
        self.notifications.notify(self.event("resumed", entry))
        return self.launch(build_reply(replies), session_id=entry.session_id, resume=True, cwd=slot)

    def finalize(self, reason: Optional[str] = None) -> int:
        """Finish an issue whose runner is gone, whose question expired or that was stopped."""
        entry = self.entry
        if not entry.is_active:
            log.info("Issue %s is already %s", self.ref, entry.status)
            return 0
        if entry.cancel_reason:
            return self.finish(Outcome(status=ProcessStatus.CANCELLED, reason=entry.cancel_reason), entry)
        if reason and reason != "lost":
            return self.finish(Outcome(status=ProcessStatus.FAILED, reason=reason), entry)
        summary = summarize_stream(entry.log_path) if entry.log_path and os.path.exists(entry.log_path) else None
        if summary is not None and summary.result is not None:
            # A lost run has no exit code: its last invocation is judged by its result alone.
            outcome = classify(summary.result, settings=self.repository.claude, last_text=summary.last_text)
            self.record_invocation("lost", outcome)
            return self.conclude(outcome, self.slot_path(entry))
        if entry.retries < self.repository.claude.max_retries:
            return self.retry(entry, "the run was lost without a result")
        return self.finish(Outcome(
            status=ProcessStatus.FAILED, summary=summary.last_text if summary else None,
            reason="the runner was lost (killed, or the machine restarted) and Claude Code left no result"), entry)

    def retry(self, entry, why: str) -> int:
        """A run that ended without a result (lost runner, crashed CLI) is not the agent's verdict:
        save what it did, then a new attempt continues the branch. Bounded by claude.max_retries."""
        self.save_work(entry, Outcome(status=ProcessStatus.FAILED, reason=why), None)
        paused_until = self.state.load_state().paused_until()
        if paused_until:
            # A retry is a launch, and launches wait for the usage limit to reset like any other.
            return self.requeue(entry, Outcome(status=ProcessStatus.WAITING, reset_at=paused_until,
                                               reason=f"{why}; launches are paused for a usage limit"))
        log.warning("Issue %s: %s; trying again (retry %d of %d)", self.ref, why, entry.retries + 1,
                    self.repository.claude.max_retries)
        self.update(retries=entry.retries + 1, attempt=entry.attempt + 1)
        return self.run()

    # --- the agent -----------------------------------------------------------------------------

    def launch(self, prompt: str, *, session_id: str, resume: bool, cwd: Path, kind: Optional[str] = None,
               status: ProcessStatus = ProcessStatus.RUNNING) -> int:
        entry = self.entry
        stream_path = self.log_path(entry.attempt, "stream.jsonl")
        entry = self.update(status=status, session_id=session_id, log_path=str(stream_path))
        head_at_launch = self._head(cwd)

        def on_started(agent: AgentProcess) -> None:
            self.update(claude_pid=agent.pid, claude_create_time=agent.create_time)
            fault_point("claude-running")

        try:
            agent = self.processor.run(
                prompt, cwd=cwd, session_id=session_id, stream_path=stream_path,
                stderr_path=self.log_path(entry.attempt, "stderr.log"), resume=resume, on_started=on_started,
                on_session_id=lambda sid: self.while_watching(lambda: self.update(session_id=sid)),
                on_progress=lambda count, when: self.while_watching(
                    lambda: self.update(message_count=count, last_activity=when)),
                should_stop=self.should_stop,
                has_changes=lambda: self.has_changes(cwd, head_at_launch))
        except ClaudeLaunchError as exc:
            return self.finish(Outcome(status=ProcessStatus.FAILED, reason=str(exc)), self.entry)
        self.update(message_count=agent.message_count, last_activity=agent.last_activity)
        outcome = agent.outcome
        self.record_invocation(kind or ("resume" if resume else "run"), outcome)
        if outcome.session_missing:
            log.warning("Issue %s: session %s is gone; starting a fresh one with the whole thread",
                        self.ref, session_id)
            return self.launch(self.whole_thread_prompt(entry), session_id=new_session_id(), resume=False, cwd=cwd,
                               kind=kind)
        entry = self.entry
        crashed = agent.result is None and agent.killed_by is None and outcome.status == ProcessStatus.FAILED
        if crashed and not self.signalled and entry.retries < self.repository.claude.max_retries:
            return self.retry(entry, outcome.reason)
        if self.signalled and not entry.cancel_reason:
            return self.stopped_between_steps()
        return self.conclude(outcome, cwd)

    def whole_thread_prompt(self, entry: IssueState) -> str:
        """A new session's prompt when the old one is gone: the issue and its trusted comments, then
        what a pending follow-up is for."""
        prompt = build_prompt(repo=self.repository.repo, issue=self.issue(),
                              comments=self.trust.human_comments(self.number), branch=entry.branch,
                              template=self.repository.claude.prompt_template)
        if entry.follow_work:
            prompt += "\n\n" + follow_prompt(entry.follow_work, entry.pr_url, entry.branch)
        return prompt

    def own_slot(self, entry: IssueState) -> IssueState:
        """In the Celery mode the tick claims no slot: this host's lowest free one is taken here."""
        if entry.agent_index is not None:
            return entry
        with self.state.transaction() as state:
            current = state.issues[self.key]
            used = state.used_slots(self.repository.repo, host=self.config.executor.host)
            current.agent_index = next(i for i in range(len(used) + 1) if i not in used)
            current.updated_at = utc_now_iso()
        log.info("Issue %s: slot %s of host %s", self.ref, current.agent_index, self.config.executor.host)
        return current

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

    # --- validation ----------------------------------------------------------------------------

    def conclude(self, outcome: Outcome, cwd: Optional[Path]) -> int:
        """Work the agent calls done goes through the repository's checks first; the rest is finished."""
        if (outcome.status == ProcessStatus.COMPLETED and self.repository.validate and cwd is not None
                and (cwd / ".git").exists() and self.has_work(cwd)):
            return self.validate(outcome, cwd)
        return self.finish(outcome, self.entry)

    def has_work(self, path: Path) -> bool:
        """Commits on the branch that the base lacks, or edits left: something to check."""
        dirty = self.repos.git(["status", "--porcelain"], cwd=path, check=False).stdout.strip()
        return bool(dirty) or self.repos.commits_ahead(path, self.base_branch(), self.entry.branch) > 0

    def validate(self, outcome: Outcome, cwd: Path) -> int:
        """Run the checks; all pass: finish; one fails: the same session fixes it, at most
        max_fix_rounds times; still failing: the work is saved and reported as failing."""
        entry = self.update(status=ProcessStatus.VALIDATING)
        round_number = entry.validation_round
        env = {**self.repos.tool_env(), RUN_MARKER_VAR: entry.session_id or ""}
        results = run_validation(self.repository.validate, cwd=cwd, env=env, should_stop=self.should_stop,
                                 log_path=self.log_path(entry.attempt, f"validate-{round_number}.log"),
                                 grace_seconds=self.repository.claude.kill_grace_seconds)
        checks = [result.to_dict() for result in results]
        entry = self.update(checks=checks)
        log.info("Issue %s: checks after round %s: %s", self.ref, round_number, summary_line(checks))
        stopped = self.stopped_between_steps()
        if stopped is not None:
            return stopped
        outcome.checks = checks
        failed = [check for check in checks if not check["passed"]]
        if not failed:
            return self.finish(outcome, entry)
        left = self._what_is_left(entry)
        if round_number >= self.config.max_fix_rounds or isinstance(left, str):
            why = left if isinstance(left, str) else f"after {round_number} fix round(s)"
            return self.finish(Outcome(
                status=ProcessStatus.FAILED, summary=outcome.summary, cost_usd=outcome.cost_usd, checks=checks,
                reason=f"checks still fail {why}: {', '.join(c['name'] for c in failed)}"), entry)
        round_number += 1
        self.update(validation_round=round_number)
        self.processor = ClaudeProcessor(self.config, settings=left)
        commands = {check["name"]: check["run"] for check in self.repository.validate}
        return self.launch(fix_prompt(failed, commands, round_number, self.config.max_fix_rounds),
                           session_id=entry.session_id, resume=True, cwd=cwd, kind=f"fix-{round_number}",
                           status=ProcessStatus.FIXING)

    def _what_is_left(self, entry: IssueState):
        """The Claude settings for a fix round: what is left of the run's timeout and budget; a
        sentence instead when nothing is."""
        settings = self.processor.settings
        spent = sum(i.get("duration_seconds") or 0 for i in entry.invocations)
        time_left = self.repository.claude.timeout_seconds - spent
        if time_left < 1:
            return f"with claude.timeout_seconds ({self.repository.claude.timeout_seconds:g} s) spent"
        budget = self.repository.claude.max_budget_usd
        if budget is not None:
            costs = [i["cost_usd"] for i in entry.invocations if i.get("cost_usd") is not None]
            budget -= costs[-1] if costs else 0  # the CLI's cost is the session's running total
            if budget <= 0:
                return f"with claude.max_budget_usd (${self.repository.claude.max_budget_usd:g}) spent"
        return dataclasses.replace(settings, timeout_seconds=time_left, max_budget_usd=budget)

    # --- finalize ------------------------------------------------------------------------------

    def finish(self, outcome: Outcome, entry: IssueState) -> int:
        """Save the work, tell GitHub and the notifiers, record the end and free the slot."""
        self.issue()
        duration = outcome.duration_seconds if outcome.duration_seconds is not None else \
            seconds_between(entry.start_time)
        if len(entry.invocations) > 1:  # the session's figures: its last running total, its turns and time added up
            outcome.num_turns = sum(i.get("num_turns") or 0 for i in entry.invocations) or outcome.num_turns
            duration = sum(i.get("duration_seconds") or 0 for i in entry.invocations) or duration
        if outcome.status == ProcessStatus.NEEDS_INPUT:
            # Nothing is committed or pushed: the session resumes in this slot, as it left it.
            return self.ask(entry, outcome)
        pushed, pr_url, save_error = self.save_work(entry, outcome, duration)
        if outcome.status != ProcessStatus.WAITING and self.slot_path(entry) is not None:
            self.repos.release(self.slot_path(entry))  # the branch may run in another slot next time
        entry = self.entry  # saving may have added a note for the comment
        if outcome.status == ProcessStatus.COMPLETED and save_error:
            outcome = Outcome(status=ProcessStatus.FAILED, summary=outcome.summary, cost_usd=outcome.cost_usd,
                              num_turns=outcome.num_turns, duration_seconds=outcome.duration_seconds,
                              reason=f"the work could not be pushed: {save_error}")
        if outcome.status == ProcessStatus.WAITING:
            return self.requeue(entry, outcome)

        key = f"outcome:{entry.attempt}:{self.stream_size(entry)}"
        if entry.follow_work:
            self.report_follow_up(entry, outcome, key, duration)
        else:
            self.post_once(key, comments.outcome_comment(entry, outcome, pr_url, pushed, duration))
        fault_point("after-comment")
        labels = self.config.labels
        end_label = getattr(labels, END_LABEL[outcome.status]) if outcome.status in END_LABEL else None
        # `ready` stays when a human put it back during the run: the next tick starts a new attempt.
        self.swap_labels(add=end_label, remove=[labels.working, labels.needs_input])
        fault_point("after-labels")
        # Before the state says finished: `--wait`, and whoever watches the state, may take that as the end.
        self.remember({"type": "outcome", "attempt": entry.attempt, "status": outcome.status.value,
                       "pr_url": pr_url, "duration_seconds": duration})
        entry = self.update(status=outcome.status, end_time=utc_now_iso(), error=outcome.reason,
                            cost_usd=outcome.cost_usd if outcome.cost_usd is not None else entry.cost_usd,
                            num_turns=outcome.num_turns if outcome.num_turns is not None else entry.num_turns,
                            pr_url=pr_url, claude_pid=None, question=None, question_number=None, requeues=0,
                            **follow_up_counted(entry))
        failed = outcome.status == ProcessStatus.FAILED
        self.notifications.notify(self.event(
            END_EVENT[outcome.status], entry, duration_seconds=duration, cost_usd=entry.cost_usd,
            num_turns=entry.num_turns, pr_url=pr_url, checks=summary_line(outcome.checks) if outcome.checks else None,
            reason=None if outcome.status == ProcessStatus.COMPLETED else outcome.reason,
            log_tail=self._log_tail(entry) if failed else None))
        log.info("Issue %s: %s%s%s", self.ref, outcome.status, f" ({outcome.reason})" if outcome.reason else "",
                 f", {pr_url}" if pr_url else "")
        return 1 if failed else 0

    def report_follow_up(self, entry: IssueState, outcome: Outcome, key: str, duration: Optional[float]) -> None:
        """On the pull request: a reply to each inline comment the agent says it addressed, then one
        summary with what changed and the figures (the summary stands for what it did not say)."""
        replies = addressed(outcome.summary)
        for number, comment in enumerate(numbered_comments(entry.follow_work), start=1):
            if outcome.status == ProcessStatus.COMPLETED:
                reply = replies.get(number) or outcome.summary or "Done."  # it said nothing: the summary
                try:
                    self.github.reply_to_review_comment(entry.pr_number, comment["id"], comments.keyed(
                        comments.quote_for_markdown(reply, limit=1000), f"reply:{comment['id']}"))
                except OrchestratorError as exc:
                    log.warning("Issue %s: could not reply to review comment %s: %s", self.ref, comment["id"], exc)
        head = self.repos.git(["rev-parse", "--short", "HEAD"], self.slot_path(entry), check=False).stdout.strip() \
            if self.slot_path(entry) and (self.slot_path(entry) / ".git").exists() else ""
        comments.post_once(self.github, entry.pr_number, f"follow-up:{key}",
                           comments.follow_up_comment(entry, outcome, head, duration))

    def save_work(self, entry: IssueState, outcome: Outcome, duration: Optional[float]):
        """Commit what the agent left, push the branch when it is ahead, open (or reuse) the PR.

        Returns (pushed, pr_url, error): error is a sentence when saving failed, else None.
        """
        path = self.slot_path(entry)
        if path is None or not (path / ".git").exists():
            return False, entry.pr_url, None
        try:
            base = self.base_branch()
            unmerged = entry.follow_work.get("kind") == "conflict" and settle_merge(
                self.repos, path, entry.follow_work, entry.branch, self.repository.clone_url or self._clone_url())
            if unmerged:
                return False, entry.pr_url, unmerged
            if self.repos.commit_all(path, f"Work on #{self.number} left uncommitted by Claude Code"):
                log.info("Issue %s: committed changes the agent left uncommitted", self.ref)
            moved = self.repos.bring_branch_to_head(path, entry.branch)
            if moved:
                log.warning("Issue %s: %s", self.ref, moved)
                self.update(slot_notes=[*entry.slot_notes, moved])
            if self.repos.commits_ahead(path, base, entry.branch) == 0:
                return False, entry.pr_url, None
            # A fast-forward, never a force-push:
            self.repos.push_branch(path, entry.branch, self.repository.clone_url or self._clone_url())
            fault_point("after-push")
            if entry.follow_work:  # the pull request is there: the push updated it
                return True, entry.pr_url, None
            # Work whose checks still fail is shown as a draft (unless pull_request.on_failed_checks says
            # none), so that nothing the agent did is lost and a reviewer sees what fails.
            failing = outcome.status == ProcessStatus.FAILED and bool(outcome.checks)
            wanted = outcome.status == ProcessStatus.COMPLETED or (failing and
                                                                    self.config.pull_request_on_failed_checks == "draft")
            if not wanted or not self.config.pull_request_create:
                return True, entry.pr_url, None
            tests = [name for name in self.repos.changed_files(path, base, entry.branch) if is_test_file(name)]
            pull = self.github.create_pull_request(
                head=entry.branch, base=base, title=comments.pr_title(self.issue()),
                draft=self.config.pull_request_draft or failing,
                body=comments.pr_body(self.number, outcome, duration, test_files=tests,
                                      followed=self.config.follow_up.enabled))
            fault_point("after-pr")
            pr_url = pull.get("html_url")
            self.update(pr_url=pr_url, pr_number=pull.get("number"), following=self.config.follow_up.enabled)
            return True, pr_url, None
        except OrchestratorError as exc:
            log.error("Issue %s: could not save the work: %s", self.ref, exc)
            return False, entry.pr_url, str(exc)

    def ask(self, entry: IssueState, outcome: Outcome) -> int:
        """The agent needs an answer: the question goes on the issue; the slot waits for the reply."""
        body = comments.question_comment(outcome.question, trusted_roles=self.config.trusted_roles,
                                         allowed_users=self.config.allowed_users,
                                         input_wait_hours=self.repository.claude.input_wait_hours)
        asked_on = entry.pr_number if entry.follow_work else self.number  # a follow-up asks on its PR
        comment = comments.post_once(self.github, asked_on, f"question:{entry.attempt}:{self.stream_size(entry)}",
                                     body)
        if self.config.labels.needs_input:
            self.github.add_labels(self.number, [self.config.labels.needs_input])
        entry = self.update(status=ProcessStatus.NEEDS_INPUT, question=outcome.question,
                            question_comment_id=comment.get("id"), question_number=asked_on if entry.follow_work else None, end_time=utc_now_iso(), claude_pid=None,
                            cost_usd=outcome.cost_usd if outcome.cost_usd is not None else entry.cost_usd,
                            num_turns=outcome.num_turns if outcome.num_turns is not None else entry.num_turns)
        self.notifications.notify(self.event("needs_input", entry, question=outcome.question,
                                             cost_usd=entry.cost_usd, num_turns=entry.num_turns))
        log.info("Issue %s: waiting for an answer (comment %s)", self.ref, comment.get("id"))
        return 0

    def requeue(self, entry: IssueState, outcome: Outcome) -> int:
        """A usage limit or an outage, not the issue's fault: back in the queue, launches paused."""
        now = datetime.now(timezone.utc)
        backoff = min(REQUEUE_BACKOFF * (2 ** entry.requeues), REQUEUE_BACKOFF_MAX)
        until = outcome.reset_at if outcome.reset_at and outcome.reset_at > now else now + backoff
        # The state first, as a claim does: a tick that reads between the two writes sees an entry that
        # waits and the working label, and finishes the swap itself (never `ready` on a running entry).
        with self.state.transaction() as state:
            current = state.issues[self.key]
            current.status, current.not_before = ProcessStatus.WAITING, until.isoformat()
            current.end_time, current.error, current.claude_pid = utc_now_iso(), outcome.reason, None
            current.requeues += 1
            current.updated_at = utc_now_iso()
            paused = state.paused_until()
            announce = paused is None or paused < until
            if announce:
                state.meta["paused_until"] = until.isoformat()
        fault_point("after-requeue-state")
        labels = self.config.labels
        self.swap_labels(add=labels.ready, remove=[labels.working, labels.needs_input])
        log.warning("Issue %s goes back to the queue until %s: %s", self.ref, until.isoformat(), outcome.reason)
        if announce:  # one notification per pause, not one per issue that ran into it
            self.notifications.notify(self.event("paused", current, reason=outcome.reason, until=until.isoformat()))
        return 0

    # --- texts ---------------------------------------------------------------------------------

    def _clone_url(self) -> str:
        if self._repository is None:
            self._repository = self.github.get_repository()
        return self._repository["clone_url"]

    def _log_tail(self, entry: IssueState) -> Optional[str]:
        """What Claude Code wrote to stderr, else the runner's own log (a setup.sh failure quotes
        its log in the reason already)."""
        for suffix in ("stderr.log", "runner.log"):
            tail = log_tail(self.log_path(entry.attempt, suffix), 15)
            if tail:
                return tail
        return None


def launch_runner(config: Config, repo: str, number: int, attempt: int, mode: str, reason: Optional[str] = None,
                  *, env: Optional[Dict[str, str]] = None, own_session: bool = True) -> subprocess.Popen:
    """Start `python -m lib.runner <mode> --issue N --repo OWNER/NAME --config PATH [--reason R]`,
    its output to `<attempt>.runner.log`: how the local tick and a Celery task both run a runner."""
    if mode not in MODES:
        raise ValueError(f"unknown runner mode {mode!r}")
    issue_dir = config.issue_dir(repo, number)
    issue_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "lib.runner", mode, "--issue", str(number),
               "--repo", config.repository(repo).repo, "--config", str(config.path)]
    if reason:
        command += ["--reason", reason]
    with open(issue_dir / f"{attempt}.runner.log", "ab") as runner_log:
        return start(command, cwd=PROJECT_DIR, env=env, stdout=runner_log, own_session=own_session)


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m lib.runner") -> int:
    """The runner's entry point; the tick starts it detached, with stdout/stderr in `<attempt>.runner.log`."""
    parser = argparse.ArgumentParser(prog=prog, description="Run, resume or finalize Claude Code on one issue"
                                                            " (started by the tick; internal).")
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--issue", type=int, required=True)
    parser.add_argument("--repo", metavar="OWNER/NAME",
                        help="the issue's repository (default: the config's first, as runners of earlier versions)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--reason", help="finalize: why (lost, cancelled, or a sentence that fails the issue)")
    args = parser.parse_args(argv)
    try:
        config = Config(Path(args.config))
        repository = config.repository(args.repo)
    except OrchestratorError as exc:
        return print_error(exc)
    configure_logging(config.secrets, config.folder / "orchestrator.log", stream=sys.stderr)
    ref = f"{repository.repo}#{args.issue}"
    log.info("Runner for issue %s: %s%s (pid %s)", ref, args.mode, f" ({args.reason})" if args.reason else "",
             os.getpid())
    # Held for the life of this process: one runner per issue, ever.
    with exclusive_lock(config.issue_dir(repository.repo, args.issue) / "runner.lock", wait=False) as mine:
        if not mine:
            log.info("Issue %s: another runner works on it; this one leaves", ref)
            return 0
        return _run_mode(config, repository.repo, args)


def _run_mode(config: Config, repo: str, args: argparse.Namespace) -> int:
    ref = f"{repo}#{args.issue}"
    try:
        runner = IssueRunner(config, args.issue, repo)
        signal.signal(signal.SIGTERM, runner.on_sigterm)
        if args.mode == RUN:
            return runner.run()
        if args.mode == RESUME:
            return runner.resume()
        if args.mode == FOLLOW:
            return runner.follow()
        return runner.finalize(args.reason)
    except OrchestratorError as exc:
        # The entry stays active; the next tick sees this runner gone and finalizes the issue.
        log.error("Issue %s: %s", ref, exc)
        return 1
    except Exception:
        log.exception("Issue %s: unexpected error in the runner; the next tick finalizes the issue", ref)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The steps of an issue's lifecycle that do the work: preparing, running (and fixing), validating.

Each step is a function of the Run and the status it is the step of; it does that status's work and
returns the next status (lib.lifecycle has every transition; lib.runner drives the steps). What the
next step needs is left on the Run: the agent's next `Launch`, the last `Outcome`.

* preparing: the labels, a slot (a Celery runner takes one of its host's), "started", then the slot
  made ready (fetch, clean, setup.sh in its sandbox, branch `issue-<N>`); next: running.
* running / fixing: the agent in its sandbox on `run.launch`; its commits collected; its figures
  recorded. A session that is gone starts anew with the whole thread; a crash without a result is
  retried (`retry`); done work goes to validating when checks are configured (`conclude`).
* validating: the repository's checks in the sandbox; a failure goes back to the same session
  (fixing) within max_fix_rounds and what is left of the time and budget.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Union

from lib import answers
from lib.branch_merge import merge_base, merged_cleanly
from lib.claude_processor import AgentProcess, ClaudeLaunchError, ClaudeProcessor, new_session_id
from lib.follow_up import follow_prompt
from lib.lifecycle import IssueStatus
from lib.models import IssueState, OrchestratorError, fault_point, utc_now_iso
from lib.outcomes import Outcome
from lib.processes import SESSION_MARKER_VAR
from lib.prompts import build_prompt
from lib.publish import save_work
from lib.git_commands import GitError
from lib.run_context import Launch, Run, Stopped
from lib.settings import ClaudeSettings
from lib.figures import checks_line
from lib.validation import fix_prompt, run_validation

log = logging.getLogger("lib.runner")


def preparing(run: Run, status: IssueStatus) -> Optional[IssueStatus]:
    """A claimed issue (`run.follow`: a follow-up on its pull request): labels, slot, prompt."""
    fresh = {} if run.follow else {"pr_url": None, "question_comment_id": None}
    entry = run.update(status=status, error=None, end_time=None, question=None, slot_notes=[], validation_round=0,
                       checks=[], invocations=[], **fresh)
    stop = run.interrupted()
    if stop:
        return stop
    run.show(status)  # the tick swapped them already unless it crashed in between: harmless again
    entry = own_slot(run, entry)
    follow = {"pr_url": entry.pr_url, "reason": f"follow-up on the pull request ({entry.follow_work.get('kind')})"}
    run.notifications.notify(run.event("started", entry, **(follow if run.follow else {})))
    try:
        run.issue_dir.mkdir(parents=True, exist_ok=True)
        slot = run.repos.prepare_slot(entry.slot, run.number, base_branch=run.base_branch(),
                                      clone_url=run.clone_url(), setup_log=run.log_path("setup.log"),
                                      should_stop=run.should_stop, wall_for=run.walls.for_tools)
    except OrchestratorError as exc:
        stop = run.interrupted()  # setup.sh ends early when asked to stop: a cancel, not a failure
        if stop:
            return stop
        run.outcome = Outcome(status=IssueStatus.FAILED, reason=str(exc))
        return IssueStatus.FAILED
    run.work_in_slot = True
    if slot.warnings:
        run.update(slot_notes=slot.warnings)
    if entry.follow_work.get("kind") == "conflict":  # the base is merged first; the agent only for conflicts
        entry = run.update(follow_work=merge_base(run.repos, slot.path, entry.follow_work))
        if not entry.follow_work["conflicts"]:
            return conclude(run, merged_cleanly(entry.follow_work, entry.branch))
    fault_point("before-claude")
    stop = run.interrupted()
    if stop:
        return stop
    if run.follow and entry.session_id:
        run.launch = Launch(follow_prompt(entry.follow_work, entry.pr_url, entry.branch), entry.session_id, True,
                            "follow")
    else:  # a new session (a follow-up's too when its transcript stayed on a host that is gone), told all
        run.launch = Launch(whole_thread_prompt(run, entry), new_session_id(), False, "follow" if run.follow else "run")
    return IssueStatus.RUNNING


def own_slot(run: Run, entry: IssueState) -> IssueState:
    """In the Celery mode the tick claims no slot: this host's lowest free one is taken here."""
    if entry.slot is not None:
        return entry
    with run.state.transaction() as state:
        current = state.issues[run.key]
        current.slot = state.free_slot(run.repository.repo, host=run.config.executor.host)
        current.updated_at = utc_now_iso()
    log.info("Issue %s: slot %s of host %s", run.ref, current.slot, run.config.executor.host)
    return current


def running(run: Run, status: IssueStatus) -> Optional[IssueStatus]:
    """The agent on `run.launch` in the slot; next: how it ended (`conclude`), a fresh session, a retry."""
    launch, cwd = run.launch, run.slot_path
    stream_path = run.log_path("stream.jsonl")
    entry = run.update(status=status, session_id=launch.session_id, log_path=str(stream_path))
    head_at_launch = run.head(cwd)

    def on_started(agent: AgentProcess) -> None:
        run.update(claude_pid=agent.pid, claude_create_time=agent.create_time)
        fault_point("claude-running")

    try:
        agent = run.processor.run(
            launch.prompt, cwd=cwd, session_id=launch.session_id, stream_path=stream_path,
            wall=run.walls.for_agent(cwd, run.processor.settings.executable),
            stderr_path=run.log_path("stderr.log"), resume=launch.resume, on_started=on_started,
            on_session_id=lambda sid: run.while_watching(lambda: run.update(session_id=sid)),
            on_progress=lambda count, when: run.while_watching(
                lambda: run.update(message_count=count, last_activity=when)),
            should_stop=run.should_stop, has_changes=lambda: run.has_changes(cwd, head_at_launch))
    except (ClaudeLaunchError, GitError) as exc:
        run.outcome = Outcome(status=IssueStatus.FAILED, reason=str(exc))
        return IssueStatus.FAILED
    run.collect(cwd)
    run.update(message_count=agent.message_count, last_activity=agent.last_activity)
    outcome = agent.outcome
    run.record_invocation(launch.kind, outcome)
    if outcome.session_missing:
        log.warning("Issue %s: session %s is gone; starting a fresh one with the whole thread", run.ref,
                    launch.session_id)
        run.launch = Launch(whole_thread_prompt(run, entry), new_session_id(), False, launch.kind)
        return status
    entry = run.entry
    crashed = agent.result is None and agent.killed_by is None and outcome.status == IssueStatus.FAILED
    if crashed and not run.signalled and entry.retries < run.repository.claude.max_retries:
        return retry(run, outcome.reason)
    if run.signalled and not entry.cancel_reason:
        raise Stopped()
    return conclude(run, outcome)


def whole_thread_prompt(run: Run, entry: IssueState) -> str:
    """A new session's prompt when the old one is gone: the issue and its trusted comments (a chat
    answer among them), then what a pending follow-up is for."""
    prompt = build_prompt(repo=run.repository.repo, issue=run.issue(),
                          comments=answers.trusted_thread(run.trust, run.number, entry), branch=entry.branch,
                          template=run.repository.claude.prompt_template)
    if entry.follow_work:
        prompt += "\n\n" + follow_prompt(entry.follow_work, entry.pr_url, entry.branch)
    return prompt


def conclude(run: Run, outcome: Outcome) -> IssueStatus:
    """Work the agent calls done goes through the repository's checks first; the rest ends as it ended."""
    run.outcome = outcome
    cwd = run.slot_path
    if (outcome.status == IssueStatus.COMPLETED and run.repository.validate and cwd is not None
            and (cwd / ".git").exists() and run.has_work(cwd)):
        return IssueStatus.VALIDATING
    return outcome.status


def retry(run: Run, why: Optional[str]) -> IssueStatus:
    """A run that ended without a result (lost runner, crashed CLI) is not the agent's verdict: its work
    is saved and a new attempt continues the branch (claude.max_retries); while launches are paused for
    a usage limit it waits in the queue instead."""
    entry = run.entry
    paused_until = run.state.load_state().paused_until()
    if paused_until:  # a retry is a launch: it waits for the reset like any other
        run.outcome = Outcome(status=IssueStatus.WAITING, reset_at=paused_until,
                              reason=f"{why}; launches are paused for a usage limit")
        return IssueStatus.WAITING
    save_work(run, Outcome(status=IssueStatus.FAILED, reason=why), None)  # pushed before the slot is cleaned
    log.warning("Issue %s: %s; trying again (retry %d of %d)", run.ref, why, entry.retries + 1,
                run.repository.claude.max_retries)
    run.update(retries=entry.retries + 1, attempt=entry.attempt + 1)
    return IssueStatus.PREPARING


def validating(run: Run, status: IssueStatus) -> Optional[IssueStatus]:
    """The checks; all pass: completed; one fails: fixing, at most max_fix_rounds times; still failing:
    failed (the work is saved and shown as failing)."""
    entry = run.update(status=status)
    round_number, cwd = entry.validation_round, run.slot_path
    env = {**run.repos.tool_env(), SESSION_MARKER_VAR: entry.session_id or ""}
    results = run_validation(run.repository.validate, cwd=cwd, env=env, should_stop=run.should_stop,
                             log_path=run.log_path(f"validate-{round_number}.log"),
                             grace_seconds=run.repository.claude.kill_grace_seconds, wall=run.walls.for_tools(cwd))
    run.collect(cwd)
    checks = [result.to_dict() for result in results]
    entry = run.update(checks=checks)
    log.info("Issue %s: checks after round %s: %s", run.ref, round_number, checks_line(checks))
    stop = run.interrupted()
    if stop:
        return stop
    outcome = run.outcome
    outcome.checks = checks
    failed = [check for check in checks if not check["passed"]]
    if not failed:
        return IssueStatus.COMPLETED
    left = what_is_left(run, entry)
    if round_number >= run.config.max_fix_rounds or isinstance(left, str):
        why = left if isinstance(left, str) else f"after {round_number} fix round(s)"
        run.outcome = Outcome(status=IssueStatus.FAILED, summary=outcome.summary, cost_usd=outcome.cost_usd,
                              checks=checks, reason=f"checks still fail {why}: {', '.join(c['name'] for c in failed)}")
        return IssueStatus.FAILED
    round_number += 1
    run.update(validation_round=round_number)
    run.processor = ClaudeProcessor(run.config, settings=left)
    commands = {check["name"]: check["run"] for check in run.repository.validate}
    run.launch = Launch(fix_prompt(failed, commands, round_number, run.config.max_fix_rounds), entry.session_id,
                        True, f"fix-{round_number}")
    return IssueStatus.FIXING


def what_is_left(run: Run, entry: IssueState) -> Union[ClaudeSettings, str]:
    """The Claude settings for a fix round: what is left of the run's timeout and budget; a sentence
    instead when nothing is."""
    claude = run.repository.claude
    spent = sum(i.get("duration_seconds") or 0 for i in entry.invocations)
    time_left = claude.timeout_seconds - spent
    if time_left < 1:
        return f"with claude.timeout_seconds ({claude.timeout_seconds:g} s) spent"
    budget = claude.max_budget_usd
    if budget is not None:
        costs = [i["cost_usd"] for i in entry.invocations if i.get("cost_usd") is not None]
        budget -= costs[-1] if costs else 0  # the CLI's cost is the session's running total
        if budget <= 0:
            return f"with claude.max_budget_usd (${claude.max_budget_usd:g}) spent"
    return dataclasses.replace(run.processor.settings, timeout_seconds=time_left, max_budget_usd=budget)


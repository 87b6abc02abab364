"""The steps that end the runner's part of an issue: completed, failed and cancelled (one ending, `finish`),
needs_input (`ask`) and waiting (`requeue`). Each returns None: nothing follows in this runner.

* finish: the work saved and published (lib.publish), the slot let go of its branch, the outcome
  commented (on the pull request after a follow-up), the labels, the run history, the state, the
  notifiers; a push that failed turns a completed run into a failed one.
* ask: nothing is committed (the session resumes in this slot as it left it); the question goes on
  the issue (a follow-up's on its pull request) and to the notifiers, whose messages may be replied to.
* requeue: a usage limit or an outage, not the issue's fault: back in the queue with launches paused
  until the reset (or a growing backoff), one notification per pause.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Optional

from lib import answers, comments
from lib.files import log_tail
from lib.lifecycle import IssueStatus
from lib.models import fault_point, seconds_between, utc_now_iso
from lib.outcomes import Outcome
from lib.publish import report_follow_up, save_work
from lib.pull_upkeep import follow_up_counted
from lib.run_context import Run
from lib.figures import checks_line

log = logging.getLogger("lib.runner")

#: Backoff for a requeue whose limit named no reset time: 15 min, 30 min, 1 h, ... at most 6 h.
REQUEUE_BACKOFF = timedelta(minutes=15)
REQUEUE_BACKOFF_MAX = timedelta(hours=6)
#: How an ending is told to the notifiers.
END_EVENT = {IssueStatus.COMPLETED: "completed", IssueStatus.FAILED: "error", IssueStatus.CANCELLED: "cancelled"}


def session_figures(run: Run, outcome: Outcome) -> Optional[float]:
    """The session's turns (on the outcome) and time: every invocation of the attempt added up (its cost
    is the CLI's running total already); the duration is returned."""
    entry = run.entry
    duration = outcome.duration_seconds if outcome.duration_seconds is not None else seconds_between(entry.start_time)
    if len(entry.invocations) > 1:
        outcome.num_turns = sum(i.get("num_turns") or 0 for i in entry.invocations) or outcome.num_turns
        duration = sum(i.get("duration_seconds") or 0 for i in entry.invocations) or duration
    return duration


def finish(run: Run, status: IssueStatus) -> None:
    """Completed, failed or cancelled: save, tell GitHub and the notifiers, record the end, free the slot."""
    outcome = run.outcome
    run.issue()
    duration = session_figures(run, outcome)
    pushed, pr_url, save_error = save_work(run, outcome, duration) if run.work_in_slot else (False, None, None)
    entry = run.entry  # saving may have added a note for the comment
    pr_url = pr_url or entry.pr_url
    if run.slot_path is not None:
        run.repos.release(run.slot_path)  # the branch may run in another slot next time
    if outcome.status == IssueStatus.COMPLETED and save_error:
        outcome = Outcome(status=IssueStatus.FAILED, summary=outcome.summary, cost_usd=outcome.cost_usd,
                          num_turns=outcome.num_turns, duration_seconds=outcome.duration_seconds,
                          reason=f"the work could not be pushed: {save_error}")
    key = f"outcome:{entry.attempt}:{run.stream_size()}"
    if entry.follow_work:
        report_follow_up(run, entry, outcome, key, duration)
    else:
        comments.post_once(run.github, run.number, key, comments.outcome_comment(entry, outcome, pr_url, pushed,
                                                                                 duration))
    fault_point("after-comment")
    run.show(outcome.status)
    fault_point("after-labels")
    # Before the state says finished: `--wait`, and whoever watches the state, may take that as the end.
    run.remember({"type": "outcome", "attempt": entry.attempt, "status": outcome.status.value, "pr_url": pr_url,
                  "duration_seconds": duration})
    entry = run.update(status=outcome.status, end_time=utc_now_iso(), error=outcome.reason,
                       cost_usd=outcome.cost_usd if outcome.cost_usd is not None else entry.cost_usd,
                       num_turns=outcome.num_turns if outcome.num_turns is not None else entry.num_turns,
                       pr_url=pr_url, claude_pid=None, question=None, question_number=None, requeues=0,
                       **follow_up_counted(entry))
    failed = outcome.status == IssueStatus.FAILED
    run.notifications.notify(run.event(
        END_EVENT[outcome.status], entry, duration_seconds=duration, cost_usd=entry.cost_usd, num_turns=entry.num_turns,
        pr_url=pr_url, checks=checks_line(outcome.checks) if outcome.checks else None,
        reason=None if outcome.status == IssueStatus.COMPLETED else outcome.reason,
        log_tail=_log_tail(run) if failed else None))
    log.info("Issue %s: %s%s%s", run.ref, outcome.status, f" ({outcome.reason})" if outcome.reason else "",
             f", {pr_url}" if pr_url else "")
    run.exit_code = 1 if failed else 0


def _log_tail(run: Run) -> Optional[str]:
    """What Claude Code wrote to stderr, else the runner's own log (a setup.sh failure quotes its log in
    the reason already)."""
    for suffix in ("stderr.log", "runner.log"):
        tail = log_tail(run.log_path(suffix), 15)
        if tail:
            return tail
    return None


def ask(run: Run, status: IssueStatus) -> None:
    """The agent needs an answer: the question goes on the issue; the slot waits for the reply."""
    outcome, entry = run.outcome, run.entry
    session_figures(run, outcome)
    body = comments.question_comment(outcome.question, trusted_roles=run.config.trusted_roles,
                                     allowed_users=run.config.allowed_users,
                                     input_wait_hours=run.repository.claude.input_wait_hours)
    asked_on = entry.pr_number if entry.follow_work else run.number  # a follow-up asks on its pull request
    comment = comments.post_once(run.github, asked_on, f"question:{entry.attempt}:{run.stream_size()}", body)
    run.show(status)
    entry = run.update(status=status, question=outcome.question, question_comment_id=comment.get("id"),
                       question_number=asked_on if entry.follow_work else None, end_time=utc_now_iso(),
                       claude_pid=None, cost_usd=outcome.cost_usd if outcome.cost_usd is not None else entry.cost_usd,
                       num_turns=outcome.num_turns if outcome.num_turns is not None else entry.num_turns)
    sent = run.notifications.notify(run.event("needs_input", entry, question=outcome.question,
                                              cost_usd=entry.cost_usd, num_turns=entry.num_turns))
    if sent:  # a reply to these chat messages answers it too (lib/chat_inbox.py)
        run.update(chat_questions=answers.asked_in_chat(entry, sent))
    log.info("Issue %s: waiting for an answer (comment %s)", run.ref, comment.get("id"))


def requeue(run: Run, status: IssueStatus) -> None:
    """Back in the queue until the limit resets (or a backoff: 15 min, doubling, at most 6 h), launches
    paused meanwhile; what the agent did is saved first."""
    outcome = run.outcome
    if run.work_in_slot:
        save_work(run, outcome, session_figures(run, outcome))
    entry = run.entry
    now = datetime.now(timezone.utc)
    backoff = min(REQUEUE_BACKOFF * (2 ** entry.requeues), REQUEUE_BACKOFF_MAX)
    until = outcome.reset_at if outcome.reset_at and outcome.reset_at > now else now + backoff
    # The state first, as a claim does: a tick that reads between the two writes sees an entry that
    # waits and the working label, and finishes the swap itself (never `ready` on a running entry).
    with run.state.transaction() as state:
        current = state.issues[run.key]
        current.status, current.not_before = status, until.isoformat()
        current.end_time, current.error, current.claude_pid = utc_now_iso(), outcome.reason, None
        current.requeues += 1
        current.updated_at = utc_now_iso()
        paused = state.paused_until()
        announce = paused is None or paused < until
        if announce:
            state.meta["paused_until"] = until.isoformat()
    fault_point("after-requeue-state")
    run.show(status)
    log.warning("Issue %s goes back to the queue until %s: %s", run.ref, until.isoformat(), outcome.reason)
    if announce:  # one notification per pause, not one per issue that ran into it
        run.notifications.notify(run.event("paused", current, reason=outcome.reason, until=until.isoformat()))

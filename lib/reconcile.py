"""A tick's first part: every active entry brought in line with reality before anything new is claimed.

For each issue the state says is active (one conditional GET of the issue, a 304 when unchanged):

* claimed, but its runner never started (the claiming tick died): it is started now;
* closed, or `claude-working` taken off by a human: its run is stopped (`stop`): the runner is told
  (the entry's cancel_reason, and SIGTERM here), or, when it is gone, what is left of the run is ended
  and a finalizing runner saves the work;
* waiting for an answer: a trusted answer (on GitHub, or from a chat and posted there) resumes the
  session; none within claude.input_wait_hours fails the issue;
* a runner past every bound it could reach (lib.settings.longest_run) is ended and the issue
  finalized as timed out;
* a runner that is gone (killed, crashed, the machine restarted): its issue is finalized from its
  stream log, or retried.
"""

from __future__ import annotations

import logging
import signal
import time
from datetime import datetime, timezone

from lib.github_errors import GitHubError, RateLimitError
from lib.lifecycle import FINALIZE, RESUME, RUN, IssueStatus
from lib.models import IssueState, issue_ref, parse_iso
from lib.processes import end_run, live_process
from lib.routing import label_names
from lib.state_manager import issue_key
from lib.tick import Tick

log = logging.getLogger("lib.orchestrator")

#: A runner past its longest run by this much is taken for hung and ended by the tick.
RUNNER_HANG_GRACE_SECONDS = 300


def reconcile(tick: Tick) -> None:
    """Every active entry, one at a time; an error of one is its line, and the others go on."""
    for entry in tick.state.load_state().active():
        try:
            _reconcile_entry(tick, entry)
        except RateLimitError:
            raise
        except (GitHubError, OSError) as exc:
            ref = issue_ref(entry.repo, entry.issue_number)
            tick.summary.errors.append(f"{ref}: {exc}")
            log.error("Issue %s: could not reconcile: %s", ref, exc)


def _reconcile_entry(tick: Tick, entry: IssueState) -> None:
    ref, summary = issue_ref(entry.repo, entry.issue_number), tick.summary
    runner_alive = tick.executor.alive(entry)
    if entry.status == IssueStatus.PENDING and not runner_alive and _never_started(tick, entry):
        # Claims and spawns happen under the tick lock held now: the claiming tick died in between.
        log.warning("Issue %s was claimed but its runner never started; starting it now", ref)
        tick.spawn(entry, RUN, summary.launched)
        return
    issue = tick.github(entry.repo).get_issue_cached(entry.issue_number)
    labels = set(label_names(issue))
    # A runner that died right after showing its ending took `working` off itself.
    finished_by_us = bool(labels & {tick.config.labels.completed, tick.config.labels.failed})
    if issue.get("state") == "closed" or (tick.config.labels.working not in labels and not finished_by_us):
        stop(tick, entry, why_withdrawn(issue, tick.config.labels.working), runner_alive)
        return
    if entry.status == IssueStatus.NEEDS_INPUT:
        _waiting_for_input(tick, entry)
        return
    repository = tick.config.repository(entry.repo)
    if runner_alive:
        age = time.time() - (entry.runner_create_time or time.time())
        limit = repository.longest_run(tick.config.setup_timeout_seconds, tick.config.max_fix_rounds)
        if tick.executor.local and age > limit + RUNNER_HANG_GRACE_SECONDS:
            log.error("Issue %s: runner %s is past every bound; ending it", ref, entry.runner_pid)
            _end_processes(tick, entry)
            tick.spawn(entry, FINALIZE, summary.finalizing,
                       reason=f"timed out after {repository.claude.timeout_seconds:g} s (claude.timeout_seconds);"
                              " the runner hung")
        return
    # The runner is gone (killed, crashed, machine restarted) but the entry still says active.
    _end_processes(tick, entry)
    log.warning("Issue %s: runner %s is gone; finalizing from its stream log", ref,
                entry.runner_pid if tick.executor.local else f"on {entry.host}")
    tick.spawn(entry, FINALIZE, summary.finalizing, reason="lost")


def _never_started(tick: Tick, entry: IssueState) -> bool:
    """No runner took the claim: its tick died before the dispatch, or no task was delivered."""
    return entry.runner_pid is None if tick.executor.local else entry.host is None


def _waiting_for_input(tick: Tick, entry: IssueState) -> None:
    """A question is open: resume on a trusted reply, or give up after input_wait_hours."""
    from lib.answers import replies_to_question  # what an answer is loads with an open question only

    ref = issue_ref(entry.repo, entry.issue_number)
    asked = parse_iso(entry.end_time or entry.updated_at)
    waited = (datetime.now(timezone.utc) - asked).total_seconds() if asked else 0
    reply = bool(replies_to_question(tick.trust(entry.repo), entry))  # a chat answer is posted there too
    paused_until = tick.state.load_state().paused_until() if reply else None
    if paused_until:
        log.info("Issue %s: a trusted reply waits until launches resume at %s", ref,
                 paused_until.astimezone().strftime("%H:%M"))
    elif reply and tick.agents_refused():
        log.info("Issue %s: a trusted reply waits until the sandbox can start", ref)
    elif reply:
        log.info("Issue %s: a trusted reply came; resuming session %s", ref, entry.session_id)
        tick.spawn(entry, RESUME, tick.summary.resumed)
    elif waited > tick.config.claude.input_wait_hours * 3600:
        tick.spawn(entry, FINALIZE, tick.summary.finalizing,
                   reason=f"no answer came within {tick.config.claude.input_wait_hours:g} hours"
                          " (claude.input_wait_hours)")


def stop(tick: Tick, entry: IssueState, why: str, runner_alive: bool) -> None:
    """A human stopped the work: the runner is told (it stops the agent, saves the work and ends the run
    as cancelled, the one ending a run has: lib.run_endings.finish); a runner that is gone is replaced
    by a finalizing one."""
    ref = issue_ref(entry.repo, entry.issue_number)
    tick.summary.cancelled.append(ref)
    if tick.dry_run:
        log.info("[dry-run] would stop issue %s: %s", ref, why)
        return
    log.info("Issue %s: stopping its agent: %s", ref, why)
    tick.state.update(issue_key(entry), cancel_reason=why)  # the runner polls it every check_interval
    if runner_alive:
        if tick.executor.local:  # a runner on another host reads the flag from the shared state
            runner = live_process(entry.runner_pid, entry.runner_create_time)
            if runner is not None:
                runner.send_signal(signal.SIGTERM)
    else:
        _end_processes(tick, entry)
        tick.spawn(entry, FINALIZE, [], reason="cancelled")


def _end_processes(tick: Tick, entry: IssueState) -> None:
    """What is left of a run on this machine (in the Celery mode pids name processes of another host:
    its own worker ends them, see lib.celery_app)."""
    if not tick.dry_run and tick.executor.local:
        end_run((entry.runner_pid, entry.runner_create_time), (entry.claude_pid, entry.claude_create_time),
                entry.session_id, tick.config.claude.kill_grace_seconds)


def why_withdrawn(issue: dict, label: str) -> str:
    """Why a human took an issue out of our hands: it was closed, or `label` came off."""
    return "the issue was closed" if issue.get("state") == "closed" else f"the {label} label was removed"

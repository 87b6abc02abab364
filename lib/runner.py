"""One issue's runner, a detached process per issue: `python -m lib.runner run|resume|finalize|follow`.

The runner drives the issue through its lifecycle (lib.lifecycle) in a loop: `STEPS` gives each
status its step (lib.run_steps: preparing, running, fixing, validating; lib.run_endings: completed,
failed, cancelled, needs_input, waiting), each step returns the next status, and every transition is
checked against the lifecycle's table. The modes are where the loop starts:

* `run`: a claimed issue, from preparing;
* `follow`: a follow-up on its pull request (reviews, failing checks), from preparing, in the same
  session;
* `resume`: a trusted answer to the agent's question, from running, in the same session and slot;
* `finalize`: the tick found the runner gone, an unanswered question expired or a stop was asked
  for: the end is judged from what the stream log shows.

The tick starts runners and never waits for one; `python -m lib.claude_processor run|...`, the command
of earlier versions, is the same runner. A SIGTERM ends the runner between steps and leaves the entry
active for the next tick to finalize; a tick's cancel ends it as cancelled.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from lib import answers
from lib.config import Config, print_error
from lib.files import exclusive_lock
from lib.lifecycle import FINALIZE, FOLLOW, MODES, RESUME, IssueStatus, check_transition
from lib.models import OrchestratorError, issue_ref
from lib.outcomes import Outcome, classify
from lib.processes import process_create_time
from lib.prompts import build_reply
from lib.redaction import configure_logging
from lib.run_context import Launch, Run, Stopped
from lib.run_endings import ask, finish, requeue
from lib.run_steps import conclude, preparing, retry, running, validating
from lib.sandbox import unavailable
from lib.transcripts import summarize_stream

log = logging.getLogger("lib.runner")  # also when run as `python -m lib.runner` (__main__)

S = IssueStatus
#: status -> its step: what the runner does while an issue is in it.
STEPS: Dict[IssueStatus, Callable[[Run, IssueStatus], Optional[IssueStatus]]] = {
    S.PREPARING: preparing, S.RUNNING: running, S.FIXING: running, S.VALIDATING: validating,
    S.NEEDS_INPUT: ask, S.WAITING: requeue, S.COMPLETED: finish, S.FAILED: finish, S.CANCELLED: finish,
}


def drive(run: Run, status: Optional[IssueStatus]) -> int:
    """Run the steps from `status` until one ends the runner's part; the runner's exit code."""
    try:
        while status is not None:
            following = STEPS[status](run, status)
            if following is not None:
                check_transition(status, following, f"issue {run.ref}")
            status = following
    except Stopped:
        log.warning("Issue %s: the runner was stopped by SIGTERM; the next tick finalizes the issue", run.ref)
        return 1
    return run.exit_code


# --- where each mode starts -----------------------------------------------------------------------


def start_run(run: Run) -> Optional[IssueStatus]:
    """A claimed issue, or a follow-up on its pull request; fail closed where no sandbox can be built:
    the issue goes back to the queue."""
    why = unavailable(run.config.sandbox)
    if why:
        log.error("Issue %s: no agent starts: %s", run.ref, why)
        run.outcome = Outcome(status=S.WAITING, reason=why)
        return S.WAITING
    if not run.walls.enabled:
        log.warning("Issue %s: the sandbox is off (sandbox.mode): the agent runs with this user's rights", run.ref)
    return S.PREPARING


def start_resume(run: Run) -> Optional[IssueStatus]:
    """A trusted human answered (on GitHub, or in a chat and posted there): the same session goes on."""
    entry = run.entry
    if entry.status != S.NEEDS_INPUT:
        log.info("Issue %s is %s, not waiting for input; nothing to resume", run.ref, entry.status)
        return None
    replies = answers.replies_to_question(run.trust, entry)
    if not replies:
        log.info("Issue %s: no trusted reply after the question yet", run.ref)
        return None
    why = unavailable(run.config.sandbox)
    if why:  # the question stays open; the tick says why it waits
        log.error("Issue %s: no agent starts: %s", run.ref, why)
        run.exit_code = 1
        return None
    slot = run.slot_path
    if slot is None or not (slot / ".git").exists():
        run.outcome = Outcome(status=S.FAILED, reason=f"the slot {slot} of the waiting session is gone")
        return S.FAILED
    run.work_in_slot = True
    entry = run.update(status=S.RUNNING, end_time=None)
    run.show(S.RUNNING)
    run.issue()
    run.notifications.notify(run.event("resumed", entry))
    run.launch = Launch(build_reply(replies), entry.session_id, True, "resume")
    return S.RUNNING


def start_finalize(run: Run, reason: Optional[str]) -> Optional[IssueStatus]:
    """An issue whose runner is gone (`lost`), whose question expired, or that was stopped."""
    entry = run.entry
    if not entry.is_active:
        log.info("Issue %s is already %s", run.ref, entry.status)
        return None
    run.work_in_slot = True
    if entry.cancel_reason:
        run.outcome = Outcome(status=S.CANCELLED, reason=entry.cancel_reason)
        return S.CANCELLED
    if reason and reason != "lost":
        run.outcome = Outcome(status=S.FAILED, reason=reason)
        return S.FAILED
    summary = summarize_stream(entry.log_path) if entry.log_path and os.path.exists(entry.log_path) else None
    if summary is not None and summary.result is not None:
        # A lost run has no exit code: its last invocation is judged by its result alone.
        outcome = classify(summary.result, settings=run.repository.claude, last_text=summary.last_text)
        run.record_invocation("lost", outcome)
        return conclude(run, outcome)
    if entry.retries < run.repository.claude.max_retries:
        return retry(run, "the run was lost without a result")
    run.outcome = Outcome(status=S.FAILED, summary=summary.last_text if summary else None,
                          reason="the runner was lost (killed, or the machine restarted) and Claude Code left no result")
    return S.FAILED


def run_mode(run: Run, mode: str, reason: Optional[str] = None) -> int:
    """The runner's work in `mode` (see the module docstring); its exit code."""
    if mode == RESUME:
        first = start_resume(run)
    elif mode == FINALIZE:
        first = start_finalize(run, reason)
    else:
        run.follow = mode == FOLLOW
        first = start_run(run)
    return drive(run, first)


# --- the process ------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m lib.runner") -> int:
    """The runner's entry point; the tick starts it detached, with stdout/stderr in `<attempt>.runner.log`."""
    parser = argparse.ArgumentParser(prog=prog, description="Run, resume, follow up or finalize Claude Code on"
                                                            " one issue (started by the tick; internal).")
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
    ref = issue_ref(repository.repo, args.issue)
    log.info("Runner for issue %s: %s%s (pid %s)", ref, args.mode, f" ({args.reason})" if args.reason else "",
             os.getpid())
    # Held for the life of this process: one runner per issue, ever.
    with exclusive_lock(config.issue_dir(repository.repo, args.issue) / "runner.lock", wait=False) as mine:
        if not mine:
            log.info("Issue %s: another runner works on it; this one leaves", ref)
            return 0
        try:
            run = Run(config, args.issue, repository.repo)
            signal.signal(signal.SIGTERM, run.on_sigterm)
            # Recorded by the runner itself: the tick's claim is one state transaction, and knows no pid.
            run.update(runner_pid=os.getpid(), runner_create_time=process_create_time(os.getpid()))
            return run_mode(run, args.mode, args.reason)
        except OrchestratorError as exc:
            # The entry stays active; the next tick sees this runner gone and finalizes the issue.
            log.error("Issue %s: %s", ref, exc)
            return 1
        except Exception:
            log.exception("Issue %s: unexpected error in the runner; the next tick finalizes the issue", ref)
            return 1


if __name__ == "__main__":
    sys.exit(main())

"""The cron tick: reconcile the state, read the chats, poll GitHub, claim, start detached runners, exit.

A tick never waits for an agent (unless asked to with --wait): every slow step (clone, setup.sh,
Claude itself, push, pull request) happens in a runner process per issue, started in its own
session so it outlives the tick. Ticks on one machine are serialized by a non-blocking flock. Its
parts: lib.reconcile (the active entries), lib.claims (the followed pull requests, then the queue),
lib.tick (what they share); once a day, lib.retention.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Dict

from lib.claims import poll_and_claim
from lib.files import exclusive_lock, writable
from lib.github_errors import RateLimitError
from lib.models import OrchestratorError, issue_ref
from lib.reconcile import reconcile
from lib.state_manager import issue_key
from lib.tick import EXIT_FAILED, EXIT_OK, Tick, TickSummary

__all__ = ["EXIT_FAILED", "EXIT_OK", "IssueOrchestrator", "TickSummary"]

log = logging.getLogger(__name__)


class IssueOrchestrator(Tick):
    """One tick of the orchestrator. `IssueOrchestrator(config).run()` as cron calls it."""

    def run(self) -> TickSummary:
        summary = self.summary
        with exclusive_lock(self.config.lock_file, wait=False, note_pid=True) as acquired:
            if not acquired:
                summary.lock_held = True
                log.info(summary.line())
                return summary
            if not self.dry_run:
                # Runners write their logs there: without it no run could be followed or judged.
                ok, why = writable(self.config.log_dir)
                if not ok:
                    raise OrchestratorError(f"Cannot write the log folder (log_dir): {why}")
                self.state.verify()
                self.executor.check()  # a broker that is down: one line now, and nothing half claimed
            try:
                self._read_chats()
                reconcile(self)
                poll_and_claim(self)
            except RateLimitError as exc:  # the token's limit: every repository waits for it
                summary.rate_limited_until = exc.reset_at  # the summary line says it, once
            if not self.dry_run:
                from lib.retention import prune_if_due  # at most once a day; a failure is a warning

                prune_if_due(self.config, self.state)
        log.info(summary.line())
        return summary

    def _read_chats(self) -> None:
        """Answers from Telegram and Slack go on the issues before reconcile looks (only while a question
        is open: a tick without one makes no chat request, nor loads the chat libraries)."""
        if self.dry_run or not self.state.load_state().asking():
            return
        from lib.chat_inbox import ChatInbox

        ChatInbox(self.config, self.state, self.github, self.trust).read()

    def wait_for_runners(self, poll_seconds: float = 0.25, out=None) -> None:
        """Block until no runner of the issues active at the start lives, printing each status change (--wait)."""
        out = out or sys.stdout
        watched = sorted(issue_key(entry) for entry in self.state.load_state().active())
        last_status: Dict[tuple, str] = {}
        while True:
            self.executor.reap()
            issues = self.state.load()
            live_runner = False
            for key in watched:
                entry = issues.get(key)
                if entry is None:
                    continue
                if last_status.get(key) != entry.status:
                    last_status[key] = entry.status
                    detail = f": {entry.error}" if entry.error and not entry.is_active else ""
                    pr = f" {entry.pr_url}" if entry.pr_url else ""
                    print(f"{issue_ref(*key)}: {entry.status}{detail}{pr}", file=out, flush=True)
                # A runner still ending (its notifications) is waited for, whatever the entry says already.
                live_runner = live_runner or self.executor.alive(entry)
            if not live_runner and not self.executor.children:
                return
            time.sleep(poll_seconds)


if __name__ == "__main__":  # `python -m lib.orchestrator`, as the seed README runs it
    from lib.cli import main

    sys.exit(main(prog="python -m lib.orchestrator"))

"""Where a runner runs, and how a tick knows it lives.

`LocalExecutor`: a detached process on this machine, in a session of its own, so that it outlives the
tick that started it and a Ctrl-C or SIGHUP to the tick never reaches it; alive is pid + create time
(the runner records its own), or, for the tick that started it, its child process.
`CeleryExecutor`: a task on the Redis broker, run by a worker on some host; alive is the runner's
heartbeat in the shared state, or a task sent and not yet taken (within the visibility timeout).

A dispatch is two steps: `dispatch_fields` are what the entry must hold before the runner starts
(written in the claim's own state transaction: a Celery task finds its dispatch id there, and a
delivery with another one does nothing), then `start`. `local` says whether this machine's processes
of a run may be signalled and ended directly.
"""

from __future__ import annotations

import logging
import subprocess
import uuid
from typing import Any, Dict, Optional

from lib.config import Config
from lib.lifecycle import RUN
from lib.models import IssueState, OrchestratorError, utc_now_iso
from lib.processes import process_alive
from lib.runner_command import launch_runner
from lib.state_manager import IssueKey, issue_key

log = logging.getLogger(__name__)


class LocalExecutor:
    """Starts the runner (`launch_runner`) as a detached process of this machine."""

    local = True

    def __init__(self, config: Config):
        self.config = config
        self.children: Dict[IssueKey, subprocess.Popen] = {}  # runners this process started, to reap

    def check(self) -> None:
        """Nothing to reach: a local runner is a process."""

    @staticmethod
    def dispatch_fields(entry: IssueState, mode: str) -> Dict[str, Any]:
        return {}

    def start(self, entry: IssueState, mode: str, reason: Optional[str] = None) -> str:
        child = launch_runner(self.config, entry.repo, entry.issue_number, entry.attempt, mode, reason)
        self.children[issue_key(entry)] = child
        return f"pid {child.pid}"

    def reap(self) -> None:
        """Collect runners of ours that ended: no zombie keeps a pid looking alive."""
        for key, child in list(self.children.items()):
            if child.poll() is not None:
                del self.children[key]

    def alive(self, entry: IssueState) -> bool:
        """Its runner's recorded pid lives, or it is a child of ours that has not recorded it yet."""
        child = self.children.get(issue_key(entry))
        return process_alive(entry.runner_pid, entry.runner_create_time) or (child is not None and child.poll() is None)


class CeleryExecutor:
    """Sends `orchestrator.run_issue` to the shared queue (a new run) or to the queue of the host that
    holds the run's slot and transcript (while its worker beats)."""

    local = False

    def __init__(self, config: Config, state):
        from lib import celery_app  # loaded only in the Celery mode: a local tick never imports celery

        self.celery = celery_app
        self.config = config
        self.state = state
        self.app = celery_app.make_app(config)
        self.children: Dict[IssueKey, subprocess.Popen] = {}  # none: runners live in the workers
        self._workers: Optional[Dict[str, int]] = None

    def check(self) -> None:
        self.celery.check_broker(self.app, self.config)

    def workers(self) -> Dict[str, int]:
        if self._workers is None:
            self._workers = self.state.live_workers()
        return self._workers

    def dispatch_fields(self, entry: IssueState, mode: str) -> Dict[str, Any]:
        """A new dispatch id, and the host whose own queue takes the task (None: the shared one)."""
        host = None if mode == RUN or entry.host not in self.workers() else entry.host
        return {"dispatch_id": uuid.uuid4().hex, "dispatched_at": utc_now_iso(), "dispatched_to": host}

    def start(self, entry: IssueState, mode: str, reason: Optional[str] = None) -> str:
        key, host = issue_key(entry), entry.dispatched_to
        queue = self.config.executor.host_queue(host) if host else self.config.executor.queue
        try:
            self.celery.send(self.app, self.config, queue, [key[0], key[1], mode, entry.attempt, entry.dispatch_id,
                                                            reason])
        except OrchestratorError:
            with self.state.transaction() as state:  # not sent: the next tick dispatches it again
                current = state.issues[key]
                if current.dispatch_id == entry.dispatch_id:
                    current.dispatch_id = current.dispatched_at = current.dispatched_to = None
            raise
        self.state.note_sent(entry.dispatch_id, self.config.executor.visibility_timeout_seconds)
        return f"a Celery task on {queue}"

    def reap(self) -> None:
        """Nothing to reap: no runner is a child of the tick."""

    def alive(self, entry: IssueState) -> bool:
        """A heartbeat in the shared state, or a task sent and not yet taken (to a host that still beats;
        a claim whose tick died before sending has its dispatch id but no task)."""
        if self.state.beating(issue_key(entry)):
            return True
        if entry.dispatched_to and entry.dispatched_to not in self.workers():
            return False  # sent to a host that died before taking it: the next dispatch goes elsewhere
        return self.state.sent(entry.dispatch_id)


def executor_for(config: Config, state) -> "LocalExecutor | CeleryExecutor":
    return CeleryExecutor(config, state) if config.executor.celery else LocalExecutor(config)

"""Where a runner runs, and how a tick knows it lives.

`LocalExecutor`: a detached process on this machine, in a session of its own, so that it outlives the
tick that started it and a Ctrl-C or SIGHUP to the tick never reaches it; alive is pid + create time.
`CeleryExecutor`: a task on the Redis broker, run by a worker on some host; alive is the runner's
heartbeat in the shared state, or a task sent and not yet taken (within the visibility timeout).

`dispatch` returns the fields the tick records on the entry; `local` says whether this machine's
processes of a run may be signalled and ended directly.
"""

from __future__ import annotations

import logging
import subprocess
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, Optional

from lib import celery_app
from lib.config import Config
from lib.lifecycle import MODES, RUN
from lib.models import IssueState, OrchestratorError, parse_iso, utc_now_iso
from lib.processes import process_alive, process_create_time
from lib.runner import launch_runner
from lib.state_manager import RedisStateStore, issue_key

log = logging.getLogger(__name__)


class LocalExecutor:
    """Starts the runner (`runner.launch_runner`) as a detached process of this machine."""

    local = True

    def __init__(self, config: Config):
        self.config = config
        self.children: Dict[int, subprocess.Popen] = {}  # runners this process started, to reap

    def check(self) -> None:
        """Nothing to reach: a local runner is a process."""

    def dispatch(self, entry: IssueState, mode: str, reason: Optional[str] = None) -> Dict[str, Any]:
        """Start the runner; returns its pid and create time, by which a later tick knows it."""
        child = launch_runner(self.config, entry.repo, entry.issue_number, entry.attempt, mode, reason)
        self.children[child.pid] = child
        return {"runner_pid": child.pid, "runner_create_time": process_create_time(child.pid)}

    def reap(self) -> None:
        """Collect runners of ours that ended: no zombie keeps a pid looking alive."""
        for pid, child in list(self.children.items()):
            if child.poll() is not None:
                del self.children[pid]

    @staticmethod
    def alive(entry: IssueState) -> bool:
        return process_alive(entry.runner_pid, entry.runner_create_time)


class CeleryExecutor:
    """Sends `orchestrator.run_issue` to the shared queue (a new run) or to the queue of the host that
    holds the run's slot and transcript (while its worker beats). The dispatch id is written to the
    entry before the task is sent: a task that finds another id there (sent twice, redelivered, or
    superseded) does nothing."""

    local = False

    def __init__(self, config: Config, state: RedisStateStore):
        self.config = config
        self.state = state
        self.app = celery_app.make_app(config)
        self.children: Dict[int, subprocess.Popen] = {}  # none: runners live in the workers
        self._workers: Optional[Dict[str, int]] = None

    def check(self) -> None:
        celery_app.check_broker(self.app, self.config)

    def workers(self) -> Dict[str, int]:
        if self._workers is None:
            self._workers = self.state.live_workers()
        return self._workers

    def dispatch(self, entry: IssueState, mode: str, reason: Optional[str] = None) -> Dict[str, Any]:
        if mode not in MODES:
            raise ValueError(f"unknown runner mode {mode!r}")
        dispatch_id = uuid.uuid4().hex
        key = issue_key(entry)
        host = None if mode == RUN or entry.host not in self.workers() else entry.host
        with self.state.transaction() as state:
            current = state.issues[key]
            current.dispatch_id, current.dispatched_at, current.dispatched_to = dispatch_id, utc_now_iso(), host
            attempt = current.attempt
        queue = self.config.executor.host_queue(host) if host else self.config.executor.queue
        try:
            celery_app.send(self.app, self.config, queue, [key[0], key[1], mode, attempt, dispatch_id, reason])
        except OrchestratorError:
            with self.state.transaction() as state:  # not sent: the next tick dispatches it again
                current = state.issues[key]
                if current.dispatch_id == dispatch_id:
                    current.dispatch_id = current.dispatched_at = current.dispatched_to = None
            raise
        log.debug("Issue %s: %s task %s sent to %s", key, mode, dispatch_id, queue)
        return {}

    def reap(self) -> None:
        """Nothing to reap: no runner is a child of the tick."""

    def alive(self, entry: IssueState) -> bool:
        """A heartbeat in the shared state, or a task sent and not yet taken (to a host that still beats)."""
        if self.state.beating(issue_key(entry)):
            return True
        if entry.dispatched_to and entry.dispatched_to not in self.workers():
            return False  # sent to a host that died before taking it: the next dispatch goes elsewhere
        sent = parse_iso(entry.dispatched_at) if entry.dispatch_id else None
        waited = (datetime.now(timezone.utc) - sent).total_seconds() if sent else None
        return waited is not None and waited < self.config.executor.visibility_timeout_seconds


def executor_for(config: Config, state) -> "LocalExecutor | CeleryExecutor":
    return CeleryExecutor(config, state) if config.executor.celery else LocalExecutor(config)

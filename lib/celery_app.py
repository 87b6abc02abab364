"""The Celery mode: the app, its one task and the worker.

The tick sends `orchestrator.run_issue(repo, number, mode, attempt, dispatch_id, reason)` to the shared
queue (a new run) or to a host's own queue (`<queue>.host.<host>`: a resume, a follow-up or a finalize
goes where the session's transcript and slot are). The task takes its dispatch (a repeated delivery
does nothing), keeps the run's heartbeat, and runs the runner as the local mode does,
`python -m lib.runner ...`, but in the worker's own process group, so that a worker that dies takes
its runners along (and their agents: see `spawn.start(die_with_parent=...)`).

The messages carry the repository, the number and ids; never a token: each host reads its own.
Broker settings that matter: `acks_late` with prefetch 1 (a task is taken only by a free slot and a
lost worker's task is not lost), and the Redis transport's visibility timeout above the longest run
(`executor.visibility_timeout_seconds`), or the broker hands a running task to a second worker.
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional

from lib.config import Config
from lib.models import OrchestratorError, issue_ref
from lib.processes import end_session_processes, process_alive, running_markers
from lib.lifecycle import RESUME, RUN
from lib.runner_command import launch_runner
from lib.sandbox import unavailable
from lib.state_manager import REDIS_RESTART_SECONDS, Heartbeat, RedisStateStore, StateStore, masked_url

log = logging.getLogger(__name__)

TASK = "orchestrator.run_issue"


def make_app(config: Config):
    """The Celery app of this config (celery is imported here: the local mode never loads it)."""
    from celery import Celery

    executor = config.executor
    timeout = executor.connect_timeout_seconds
    app = Celery("claude_orchestrator", broker=executor.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True, result_backend=None,
        task_serializer="json", accept_content=["json"], task_default_queue=executor.queue,
        broker_connection_timeout=timeout, broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": executor.visibility_timeout_seconds,
                                  "socket_connect_timeout": timeout, "socket_timeout": max(timeout, 5),
                                  "max_retries": 1},
        worker_hijack_root_logger=False, worker_send_task_events=False, worker_enable_remote_control=False,
    )
    app.task(name=TASK, bind=True)(_run_issue_task(config))
    return app


def broker_error(config: Config, exc: BaseException) -> OrchestratorError:
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return OrchestratorError(f"Cannot reach the Celery broker at {masked_url(config.executor.broker_url)}: {reason}")


def _broker_errors() -> tuple:
    from kombu.exceptions import KombuError
    from redis.exceptions import RedisError

    return KombuError, RedisError, OSError


def check_broker(app, config: Config) -> None:
    """The broker answers within executor.connect_timeout_seconds, or one OrchestratorError sentence."""
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=config.executor.connect_timeout_seconds)
    except _broker_errors() as exc:
        raise broker_error(config, exc) from None


def send(app, config: Config, queue: str, args: List) -> None:
    try:
        app.send_task(TASK, args=args, queue=queue, retry=False)
    except _broker_errors() as exc:
        raise broker_error(config, exc) from None


def _run_issue_task(config: Config):
    executor = config.executor

    def run_issue(task, repo: str, number: int, mode: str, attempt: int, dispatch_id: str,
                  reason: Optional[str] = None) -> int:
        """Take the dispatch (or leave: another delivery or a newer claim has it), then run the runner
        and beat in the shared state while it runs."""
        key, ref = (repo, number), issue_ref(repo, number)
        state = StateStore.for_config(config, patience=REDIS_RESTART_SECONDS)
        try:
            taken = state.take_dispatch(key, dispatch_id, attempt, executor.host)
        except OrchestratorError as exc:
            log.error("Issue %s: %s", ref, exc)
            return 1
        if taken is None:
            log.info("Issue %s: task %s is not its current dispatch; nothing to do", ref, dispatch_id)
            return 0
        if taken.adopted_from:  # the slot and the session were that host's: a new session, told the whole thread
            log.warning("Issue %s: host %s is gone; %s takes the run over", ref, taken.adopted_from, executor.host)
            mode = RUN if mode == RESUME else mode
        beat = Heartbeat(f"heartbeat of {ref}", lambda: state.beat(key, executor.host, executor.lost_after_seconds,
                                                                  dispatch_id), executor.heartbeat_seconds)
        beat.start()
        try:
            return launch_runner(config, repo, number, attempt, mode, reason, own_session=False,
                                 env={**os.environ, "ORCHESTRATOR_HOST": executor.host}).wait()
        finally:
            beat.stop()
            try:
                state.end_beat(key, executor.host, dispatch_id)
            except OrchestratorError:
                pass  # it expires by itself

    return run_issue


# --- the worker --------------------------------------------------------------------------------


def end_unowned_agents(config: Config, state: RedisStateStore) -> int:
    """A worker that starts ends what a killed worker of this host left: agents (and their tools) of
    runs that no live runner of this host holds now. Returns how many runs' processes were ended."""
    # The runner's pid means something here, on its own host (a heartbeat may outlive a killed runner).
    owned = {entry.session_id for entry in state.load().values()
             if entry.session_id and entry.host == config.executor.host and entry.is_active
             and process_alive(entry.runner_pid, entry.runner_create_time)}
    unowned = running_markers(config.executor.host_marker) - owned
    if unowned:
        log.warning("Ending what is left of session(s) %s, which no runner of this host owns",
                    ", ".join(sorted(unowned)))
    return sum(end_session_processes(marker, config.claude.kill_grace_seconds) > 0 for marker in unowned)


def run_worker(config: Config, *, loglevel: str = "INFO") -> int:
    """`run_orchestrator.py --worker`: serve the shared queue and this host's own, one task per slot."""
    executor = config.executor
    if not executor.celery:
        raise OrchestratorError(f"{config.path}: executor.type is {executor.type!r}; a worker needs \"celery\".")
    refused = unavailable(config.sandbox)
    if refused:  # fail closed: a host that cannot wall its agents in takes no task
        raise OrchestratorError(f"This host cannot run agents: {refused}")
    if not config.sandbox.enabled:
        log.warning("Worker %s: the sandbox is off (sandbox.mode): agents run unsandboxed", executor.host)
    state = StateStore.for_config(config, patience=REDIS_RESTART_SECONDS)
    state.verify()
    app = make_app(config)
    check_broker(app, config)
    ended = end_unowned_agents(config, state)
    log.info("Worker %s: %d slot(s), queues %s and %s%s", executor.host, executor.slots, executor.queue,
             executor.host_queue(executor.host), f"; ended the processes of {ended} unowned run(s)" if ended else "")
    # `worker:<host>` while this worker lives: resumes go to this host's queue only while it beats.
    beat = Heartbeat("worker heartbeat", lambda: state.worker_beat(executor.host, executor.slots,
                                                                   executor.lost_after_seconds),
                     executor.heartbeat_seconds)
    beat.start()
    try:
        app.worker_main(["worker", "--queues", f"{executor.queue},{executor.host_queue(executor.host)}",
                         "--concurrency", str(executor.slots), "--prefetch-multiplier", "1",
                         "--hostname", f"orchestrator@{executor.host}", "--loglevel", loglevel,
                         "--without-gossip", "--without-mingle", "--without-heartbeat"])
    finally:
        beat.stop()
    return 0

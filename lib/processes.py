"""Processes: every subprocess is recognised here later, and is ended here, whole (it starts in lib.spawn).

* `run` is `spawn.start` with captured output and a timeout that ends the command's whole tree.
* `live_process` recognises a recorded process: a pid alone is reused, pid + create time is not.
* `terminate_tree` ends a process, its process group and every descendant, including tools that
  moved to sessions of their own, found again by the run marker (SESSION_MARKER_VAR) they inherited.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

import psutil

from lib.spawn import start

log = logging.getLogger(__name__)

#: Set to the session id in the agent's environment. Every process Claude starts inherits it, so
#: what its tools leave behind is found even after it was reparented away from a dead Claude.
SESSION_MARKER_VAR = "CLAUDE_ORCHESTRATOR_SESSION"
#: Set to the worker host's `executor.host_marker` beside SESSION_MARKER_VAR in the Celery mode: a worker
#: that starts ends only its own host's leftovers (two "hosts", or two installations, may share a machine).
RUN_HOST_VAR = "CLAUDE_ORCHESTRATOR_HOST"
#: SIGTERM, then this long for a process tree to end, then SIGKILL (claude.kill_grace_seconds).
KILL_GRACE_SECONDS = 10.0

def run(command: Sequence[str], *, cwd: Union[str, os.PathLike], env: Optional[Mapping[str, str]] = None,
        timeout: float, grace_seconds: float = 2.0) -> subprocess.CompletedProcess:
    """Run `command` to its end with stdout and stderr captured as text.

    On a timeout its whole tree is ended (helpers such as git-remote-https or ssh would otherwise
    keep our pipes open) and subprocess.TimeoutExpired is raised.
    """
    process = start(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        terminate_tree(process, grace_seconds=grace_seconds)
        process.communicate()
        raise
    return subprocess.CompletedProcess(list(command), process.returncode, stdout, stderr)


# ------------------------------------------------------------------------------------------------
# Recognising a process
# ------------------------------------------------------------------------------------------------


def process_create_time(pid: int) -> Optional[float]:
    """psutil's create time of `pid` (with the pid it identifies a process), None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def live_process(pid: Optional[int], create_time: Optional[float]) -> Optional[psutil.Process]:
    """The process `pid` if it runs and is the one recorded (pids are reused: compare create time)."""
    if not pid:
        return None
    try:
        process = psutil.Process(pid)
        if create_time is not None and abs(process.create_time() - create_time) > 1.0:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return process


def process_alive(pid: Optional[int], create_time: Optional[float]) -> bool:
    return live_process(pid, create_time) is not None


def working_in(folder: Path) -> bool:
    """True when a live process has its working directory in `folder` (or below it)."""
    for process in psutil.process_iter(["cwd", "status"]):
        cwd = process.info.get("cwd")
        if cwd and process.info.get("status") != psutil.STATUS_ZOMBIE and Path(cwd).is_relative_to(folder):
            return True
    return False


def _descendants(process: Optional[psutil.Process]) -> List[psutil.Process]:
    if process is None:
        return []
    try:
        return process.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _gone(process: psutil.Process) -> bool:
    """Exited, or a zombie nobody reaps (an orphan under a PID 1 that does not reap)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return True


def _led_groups(processes: Iterable[psutil.Process]) -> Set[int]:
    """The process groups these processes lead. Tools run in their own group (setsid), and a tool's
    children started after we looked are reached only through it. A group one of them merely
    belongs to is left alone: it may be a shell's that has nothing to do with us."""
    groups = set()
    own = os.getpgrp()
    for process in processes:
        try:
            if os.getpgid(process.pid) == process.pid != own:
                groups.add(process.pid)
        except (ProcessLookupError, PermissionError):
            continue
    return groups


def _group_members(group: int) -> List[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group and not _gone(process):
                members.append(process)
        except (ProcessLookupError, PermissionError):
            continue
    return members


def _ourselves() -> Set[int]:
    """This process and its ancestors: never signalled, whatever marker they carry."""
    pids = {os.getpid()}
    try:
        pids.update(p.pid for p in psutil.Process().parents())
    except psutil.Error:
        pass
    return pids


def marked_processes(session_id: str) -> List[psutil.Process]:
    """Live processes whose environment carries SESSION_MARKER_VAR=session_id: the agent and all it started."""
    found: List[psutil.Process] = []
    # Our own marker is inherited from an agent we run inside (the orchestrator run by an agent).
    if not session_id or session_id == os.environ.get(SESSION_MARKER_VAR):
        return found
    ourselves = _ourselves()
    for process in psutil.process_iter():
        try:
            if (process.pid not in ourselves and process.environ().get(SESSION_MARKER_VAR) == session_id
                    and not _gone(process)):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def running_markers(host: str) -> Set[str]:
    """The run markers of live processes (other than ourselves) that carry RUN_HOST_VAR=host (the host's
    `executor.host_marker`)."""
    ourselves = _ourselves()
    return _run_markers((p for p in psutil.process_iter() if p.pid not in ourselves), host=host)


def _run_markers(processes: Iterable[psutil.Process], host: Optional[str] = None) -> Set[str]:
    """The run markers `processes` carry (of those that also carry RUN_HOST_VAR=host, when given)."""
    markers = set()
    for process in processes:
        try:
            env = process.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        if env.get(SESSION_MARKER_VAR) and (host is None or env.get(RUN_HOST_VAR) == host):
            markers.add(env[SESSION_MARKER_VAR])
    return markers


# ------------------------------------------------------------------------------------------------
# Ending a process tree
# ------------------------------------------------------------------------------------------------


def _signal(groups: Iterable[int], processes: Iterable[psutil.Process], signum: int) -> None:
    ourselves = _ourselves()
    for group in groups:
        try:
            if not any(os.getpgid(pid) == group for pid in ourselves):
                os.killpg(group, signum)
        except (ProcessLookupError, PermissionError):
            pass
    for process in processes:
        if process.pid in ourselves:
            continue
        try:
            process.send_signal(signum)  # psutil refuses if the pid now belongs to another process
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            pass


def _wait(popen: Optional[subprocess.Popen], processes: List[psutil.Process], deadline: float) -> bool:
    """Wait until everything is gone (our child reaped) or the deadline passes; True if all went."""
    while True:
        if popen is not None and popen.returncode is None:
            try:
                popen.wait(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
        done = (popen is None or popen.returncode is not None) and all(_gone(p) for p in processes)
        if done or time.monotonic() >= deadline:
            return done
        if popen is None or popen.returncode is not None:
            time.sleep(0.05)


def _end_all(popen: Optional[subprocess.Popen], leader: Optional[psutil.Process], processes: List[psutil.Process],
             groups: Set[int], grace_seconds: float) -> None:
    """SIGTERM, up to `grace_seconds` for all to go, then SIGKILL to the rest (and their groups)."""
    _signal(groups, processes, signal.SIGTERM)
    if _wait(popen, processes, time.monotonic() + grace_seconds):
        # Group members we never saw (no longer descendants) may still hold the groups.
        _signal(groups, [], signal.SIGKILL)
        return
    known = {p.pid for p in processes}
    processes = processes + [p for p in _descendants(leader) if p.pid not in known]  # born during the grace
    groups = groups | _led_groups(processes)
    survivors = [p for p in processes if not _gone(p)]
    log.warning("%d process(es) still running %g s after SIGTERM; sending SIGKILL",
                len(survivors) or 1, grace_seconds)
    _signal(groups, survivors, signal.SIGKILL)
    _wait(popen, survivors, time.monotonic() + 5.0)


def terminate_tree(target: Union[subprocess.Popen, psutil.Process, int], grace_seconds: float = KILL_GRACE_SECONDS,
                   *, create_time: Optional[float] = None) -> Optional[int]:
    """End a process, its process group and every descendant; returns its exit code if it is our child.

    SIGTERM to the process, its descendants (collected before any signal: once the parent dies they
    are orphans nobody can find), the processes that carry the same run marker (tools already
    reparented away) and the process groups they lead; up to `grace_seconds` for all of them to go,
    then SIGKILL to whatever is left. `create_time` guards a pid recorded earlier (by a tick): if the
    pid now names another process, nothing is signalled. Works on a runner's pid as well.
    """
    popen = target if isinstance(target, subprocess.Popen) else None
    if popen is not None:
        pid = popen.pid
    elif isinstance(target, psutil.Process):
        pid = target.pid
    else:
        pid = int(target)
    leader = live_process(pid, create_time) if popen is None or popen.poll() is None else None
    if popen is None and leader is None:
        return None  # gone, or the pid now names a process that is not ours
    tree = ([leader] if leader is not None else []) + _descendants(leader)
    known = {p.pid for p in tree}
    for marker in _run_markers(tree):
        tree += [p for p in marked_processes(marker) if p.pid not in known]
        known = {p.pid for p in tree}
    groups = _led_groups(tree)
    if popen is not None and pid != os.getpgrp():
        groups.add(pid)  # started with start_new_session: the group is ours even after its leader exits
    _end_all(popen, leader, tree, groups, grace_seconds)
    return popen.returncode if popen is not None else None


def end_run(runner: Tuple[Optional[int], Optional[float]], agent: Tuple[Optional[int], Optional[float]],
            session_id: Optional[str], grace_seconds: float = KILL_GRACE_SECONDS) -> None:
    """End whatever is left of a run on this machine, each (pid, create time) only while it is still that
    process: the runner first (a live runner would take its agent's end for a crash and retry), then the
    agent's tree, then what carries its session's marker (tools of an agent killed by SIGKILL)."""
    for pid, created in (runner, agent):
        if process_alive(pid, created):
            terminate_tree(pid, grace_seconds=grace_seconds, create_time=created)
    if session_id:
        end_session_processes(session_id, grace_seconds)


def end_session_processes(session_id: str, grace_seconds: float = KILL_GRACE_SECONDS) -> int:
    """End every process still carrying the marker of `session_id`: for a tick cleaning up after a
    Claude that died by SIGKILL (its running tool survives it). Returns how many there were."""
    processes = marked_processes(session_id)
    if processes:
        log.warning("Ending %d process(es) left by session %s", len(processes), session_id)
        _end_all(None, None, processes, _led_groups(processes), grace_seconds)
    return len(processes)


def end_leftovers(group: int, session_id: str, grace_seconds: float = KILL_GRACE_SECONDS) -> int:
    """A process that led group `group` ended on its own: end what it left behind (its group's
    members and the processes carrying its run marker). Returns how many there were."""
    leftovers = {p.pid: p for p in marked_processes(session_id) + _group_members(group)}
    if leftovers:
        processes = list(leftovers.values())
        groups = _led_groups(processes) | ({group} if group != os.getpgrp() else set())
        _end_all(None, None, processes, groups, grace_seconds)
    return len(leftovers)

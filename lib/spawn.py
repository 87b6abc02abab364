"""Starting processes: every subprocess of the orchestrator starts through `start`.

`start` launches a command in its own session (so its process group is its own and a signal to the
tick never reaches it), stdin /dev/null unless given (the agent reads its prompt from a file), no
inherited descriptors. Standard library only: the sandbox launcher, which starts every agent's wall,
imports this and nothing heavier (lib.processes recognises and ends processes, with psutil).
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import IO, Mapping, Optional, Sequence, Union

Output = Union[int, IO, None]


def start(command: Sequence[str], *, cwd: Union[str, os.PathLike], env: Optional[Mapping[str, str]] = None,
          stdout: Output = subprocess.DEVNULL, stderr: Output = subprocess.STDOUT,
          text: bool = False, stdin: Output = subprocess.DEVNULL, own_session: bool = True,
          die_with_parent: bool = False, pass_fds: Sequence[int] = ()) -> subprocess.Popen:
    """Launch `command` and return at once (FileNotFoundError and PermissionError are the caller's to
    put in words). `stdin` is /dev/null unless a file is given.

    `own_session=False` keeps it in our process group: a Celery task's runner dies with its worker.
    `die_with_parent` (Linux) has the kernel SIGKILL it when the thread that started it dies: an agent
    whose runner was killed never runs on beside a retry on another host. `pass_fds` stay open in it
    (the sandbox launcher reads its plan from one).
    """
    return subprocess.Popen(list(command), cwd=str(cwd), env=None if env is None else dict(env),
                            stdin=subprocess.DEVNULL if stdin is None else stdin, stdout=stdout, stderr=stderr,
                            start_new_session=own_session, close_fds=True, pass_fds=tuple(pass_fds), text=text,
                            errors="replace" if text else None,
                            preexec_fn=_die_with_parent if die_with_parent and _PRCTL is not None else None)


def _load_prctl():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: an orphaned agent is ended by the worker's sweep
        return None


_PRCTL = _load_prctl()  # resolved before any fork: the child calls it and nothing else
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)

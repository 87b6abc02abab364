"""Files: the one atomic write, the one exclusive lock, and readers of a file's end.

`atomic_write` is how every file the orchestrator rewrites is written (state, poll cache): a
reader sees the old content or the new one, never half. `exclusive_lock` is the one flock
helper: the tick's lock, the state's read-modify-write and the one-runner-per-issue lock.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

from lib.models import fault_point

#: Tail readers read at most this much from the end of a file by default.
TAIL_BUDGET_BYTES = 8 * 1024 * 1024
TAIL_LINES = 20
TAIL_LINE_CHARS = 1_000


def atomic_write(path: Union[str, Path], data: Union[str, bytes], mode: int = 0o600, *,
                 fault_step: Optional[str] = None) -> None:
    """Replace `path` with `data`: temp file, fsync, rename, fsync of the folder. `fault_step` names
    the crash-test step (models.fault_point) between writing and renaming."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if fault_step:
            fault_point(fault_step)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)


@contextmanager
def exclusive_lock(path: Union[str, Path], *, wait: bool = True, note_pid: bool = False) -> Iterator[bool]:
    """Hold an exclusive flock on `path` (created 0600) for the block; yields whether it was got.

    `wait=False` does not block: the block runs with False when another process holds the lock.
    `note_pid` writes this process's pid into the file, for a human wondering who holds it. The
    lock goes with the file descriptor, so a process that dies releases it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        if note_pid:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)


def iter_lines_reversed(path: Union[str, Path], budget: int = TAIL_BUDGET_BYTES,
                        block: int = 65536) -> Iterator[bytes]:
    """Complete lines of `path` from the last one backwards, reading at most `budget` bytes.

    A last line without its newline is still being written and is skipped.
    """
    with open(path, "rb") as handle:
        position = end = handle.seek(0, os.SEEK_END)
        buffer = b""  # from `position` up to the lines already yielded
        in_last_line = True  # until the newline that ends the last complete line is found
        while position > 0 and end - position < budget:
            step = min(block, position)
            position -= step
            handle.seek(position)
            buffer = handle.read(step) + buffer
            if in_last_line:
                newline = buffer.rfind(b"\n")
                if newline < 0:
                    continue
                buffer, in_last_line = buffer[:newline + 1], False
            lines = buffer.split(b"\n")
            buffer = lines[0]  # the end of a line that starts in an earlier block
            for line in reversed(lines[1:]):
                if line:
                    yield line
        if position == 0 and buffer and not in_last_line:
            yield buffer


def tail_lines(path: Union[str, Path], lines: int = TAIL_LINES, *, budget: int = 256 * 1024) -> List[str]:
    """The last `lines` non-empty lines of a file, oldest first, each cut to TAIL_LINE_CHARS; [] when it is missing."""
    found = []
    try:
        for line in iter_lines_reversed(path, budget=budget):
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                found.append(text[:TAIL_LINE_CHARS])
            if len(found) >= lines:
                break
    except OSError:
        return []
    return found[::-1]


def log_tail(path: Union[str, Path], lines: int = TAIL_LINES) -> Optional[str]:
    """The last `lines` non-empty lines of a log file, or None when it is missing or empty."""
    return "\n".join(tail_lines(path, lines)) or None


def writable(path: Path) -> Tuple[bool, str]:
    """(ok, text): `path` is writable, or can be created under its nearest existing parent."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return False, f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return False, f"{probe} is not writable by this user"
    return True, f"{path} writable" if probe == path else f"{path} will be created"

"""Where a runner runs. `LocalExecutor`: a detached process on this machine, in a session of its own,
so that it outlives the tick that started it and a Ctrl-C or SIGHUP to the tick never reaches it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Dict, Optional, Tuple

from lib.config import PROJECT_DIR, Config
from lib.models import IssueState
from lib.processes import process_alive, process_create_time, start
from lib.runner import MODES

log = logging.getLogger(__name__)


class LocalExecutor:
    """Starts `python -m lib.runner <mode> --issue N --repo OWNER/NAME --config PATH`, output to
    `<attempt>.runner.log`."""

    def __init__(self, config: Config):
        self.config = config
        self.children: Dict[int, subprocess.Popen] = {}  # runners this process started, to reap

    def dispatch(self, entry: IssueState, mode: str, reason: Optional[str] = None) -> Tuple[int, Optional[float]]:
        """Start the runner; returns its pid and create time, by which a later tick knows it."""
        if mode not in MODES:
            raise ValueError(f"unknown runner mode {mode!r}")
        issue_dir = self.config.issue_dir(entry.repo, entry.issue_number)
        issue_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "lib.runner", mode, "--issue", str(entry.issue_number),
                   "--repo", self.config.repository(entry.repo).repo, "--config", str(self.config.path)]
        if reason:
            command += ["--reason", reason]
        with open(issue_dir / f"{entry.attempt}.runner.log", "ab") as runner_log:
            child = start(command, cwd=PROJECT_DIR, stdout=runner_log)
        self.children[child.pid] = child
        return child.pid, process_create_time(child.pid)

    def reap(self) -> None:
        """Collect runners of ours that ended: no zombie keeps a pid looking alive."""
        for pid, child in list(self.children.items()):
            if child.poll() is not None:
                del self.children[pid]

    @staticmethod
    def alive(entry: IssueState) -> bool:
        return process_alive(entry.runner_pid, entry.runner_create_time)

"""The runner's command line: how the local tick (lib.executors) and a Celery task (lib.celery_app) start
one, `python -m lib.runner <mode> --issue N --repo OWNER/NAME --config PATH [--reason R]`, its output to
the issue's `<attempt>.runner.log`. Here, apart from lib.runner, so that starting a runner loads
nothing of it.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Dict, Optional

from lib.config import PROJECT_DIR, Config
from lib.lifecycle import MODES
from lib.spawn import start


def launch_runner(config: Config, repo: str, number: int, attempt: int, mode: str, reason: Optional[str] = None,
                  *, env: Optional[Dict[str, str]] = None, own_session: bool = True) -> subprocess.Popen:
    """Start `python -m lib.runner <mode> --issue N --repo OWNER/NAME --config PATH [--reason R]`,
    its output to `<attempt>.runner.log`: how the local tick and a Celery task both run a runner."""
    if mode not in MODES:
        raise ValueError(f"unknown runner mode {mode!r}")
    issue_dir = config.issue_dir(repo, number)
    issue_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "lib.runner", mode, "--issue", str(number),
               "--repo", config.repository(repo).repo, "--config", str(config.path)]
    if reason:
        command += ["--reason", reason]
    with open(issue_dir / f"{attempt}.runner.log", "ab") as runner_log:
        return start(command, cwd=PROJECT_DIR, env=env, stdout=runner_log, own_session=own_session)

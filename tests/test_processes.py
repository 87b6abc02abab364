"""Ending process trees: recorded pids are checked, our own session is never signalled."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from lib.processes import SESSION_MARKER_VAR, process_create_time, terminate_tree

PROJECT = Path(__file__).resolve().parent.parent


def test_terminate_tree_checks_the_create_time_of_a_recorded_pid(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path,
                               start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        created = process_create_time(sleeper.pid)
        assert terminate_tree(sleeper.pid, 0.5, create_time=created - 100) is None
        assert sleeper.poll() is None  # another process's create time: not ours, left alone
        terminate_tree(sleeper.pid, 0.5, create_time=created)
        assert sleeper.wait(timeout=10) == -signal.SIGTERM
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_an_orchestrator_running_inside_an_agent_never_ends_its_own_session(tmp_path):
    code = (
        "import subprocess, sys\n"
        "from lib.processes import end_session_processes, terminate_tree\n"
        "sibling = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], cwd='.')\n"
        "found = end_session_processes('outer-session', 0.2)\n"
        "terminate_tree(sibling, 0.2)\n"
        "print(found, sibling.returncode)\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), SESSION_MARKER_VAR: "outer-session"}
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["0", str(-signal.SIGTERM)]  # the sibling only by its own terminate_tree


def test_terminate_tree_on_a_gone_pid_is_a_no_op(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert terminate_tree(int(done.stdout), 0.1) is None

"""The stand-in `claude` (tests/bin/claude) for tests: where it is, an environment for it, and what
it recorded. Import the fixtures into a test module: `from claude_standin import claude_standin, slot_repo`.

`claude_standin` gives a Standin whose `env` has the stand-in first on PATH and sends everything it
writes into the test's tmp_path (CLAUDE_CONFIG_DIR, HOME, its invocation log, pid and dump files).
`slot_repo` is a git repo with one commit, on branch issue-7, with a committer configured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import psutil
import pytest

STANDIN = Path(__file__).resolve().parent / "bin" / "claude"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "claude"
ISSUE_NUMBER = 7
BRANCH = f"issue-{ISSUE_NUMBER}"


def scenario(name: str, arg: Optional[str] = None) -> str:
    """The marker that picks a stand-in scenario when it appears in a prompt or reply."""
    return f"[scenario:{name}{':' + arg if arg is not None else ''}]"


def replay(fixture: str, exit_code: int) -> str:
    """Marker: the stand-in prints a recorded stream from tests/fixtures/claude/ and exits with `exit_code`."""
    return scenario("replay", f"{exit_code}:{FIXTURES / fixture}")


def live_standins(under: Optional[Path] = None) -> List[int]:
    """Pids of the live stand-in agents (`python3 <STANDIN> ...`), of those working under `under` when given.
    Read from /proc as it is: tests sample this every 50 ms, and psutil's objects would cost seconds."""
    standin, found = os.fsencode(STANDIN), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                if cmdline.read().split(b"\0")[1:2] != [standin]:
                    continue  # a zombie's is empty
            if under is not None and not os.readlink(f"/proc/{name}/cwd").startswith(f"{under}/"):
                continue
        except OSError:  # ended meanwhile
            continue
        found.append(int(name))
    return found


def tagged_process(pidfile: str) -> int:
    """The pid of the live process tagged CLAUDE_STANDIN_GRANDCHILD=`pidfile`, else 0."""
    for process in psutil.process_iter():
        try:
            if process.environ().get("CLAUDE_STANDIN_GRANDCHILD") == pidfile and alive(process.pid):
                return process.pid
        except (psutil.Error, OSError):
            continue
    return 0


def end_grandchild(standin: "Standin") -> None:
    """Kill what the grandchild scenario left, if it still runs."""
    if standin.pidfile.exists():
        pid = tagged_process(str(standin.pidfile))
        if pid:
            psutil.Process(pid).kill()


def alive(pid: Optional[int]) -> bool:
    """True while `pid` runs. A zombie counts as gone: orphans here are reparented to a PID 1 that
    does not reap them."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=True,
                          stdin=subprocess.DEVNULL)
    return done.stdout.strip()


def make_repo(path: Path, branch: str = BRANCH) -> Path:
    """A git repo with one commit, checked out on `branch`."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Stand-in Tester")
    git(path, "config", "user.email", "tester@example.invalid")
    (path / "README.md").write_text("A project.\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "Initial commit")
    git(path, "checkout", "-q", "-b", branch)
    return path


@dataclass
class Standin:
    path: Path
    root: Path
    env: Dict[str, str]

    @property
    def config_dir(self) -> Path:
        return Path(self.env["CLAUDE_CONFIG_DIR"])

    @property
    def pidfile(self) -> Path:
        return Path(self.env["CLAUDE_STANDIN_PIDFILE"])

    def invocations(self) -> List[Dict[str, Any]]:
        """One entry per start of the stand-in: argv, cwd, session_id, resume, prompt (as it arrived, from
        argv or stdin), prompt_source ("argv", "stdin", "argv+stdin"), stdin (what fd 0 was: "file",
        "pipe", "null", ...), scenario, pid, pgid, sid."""
        log = Path(self.env["CLAUDE_STANDIN_LOG"])
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]

    def transcript(self, session_id: str) -> Optional[Path]:
        found = sorted(self.config_dir.glob(f"projects/*/{session_id}.jsonl"))
        return found[0] if found else None

    def grandchild_pid(self, timeout: float = 10.0) -> int:
        """The host pid of the process the grandchild scenario left, 0 once it is gone. It writes its pid
        file when the process runs; the pid in it is its namespace's in a sandbox, so the process is
        found by the tag in its environment instead."""
        deadline = time.monotonic() + timeout
        while not self.pidfile.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"the stand-in wrote no pid file at {self.pidfile}")
            time.sleep(0.02)
        return tagged_process(str(self.pidfile))

    def env_dump(self) -> Dict[str, str]:
        return json.loads(Path(self.env["CLAUDE_STANDIN_ENV_FILE"]).read_text(encoding="utf-8"))

    def argv_dump(self) -> List[str]:
        return json.loads(Path(self.env["CLAUDE_STANDIN_ARGV_FILE"]).read_text(encoding="utf-8"))


#: The stand-in's own variables: a sandboxed agent gets them only when agent.env names them.
STANDIN_ENV = ("CLAUDE_STANDIN_LOG", "CLAUDE_STANDIN_PIDFILE", "CLAUDE_STANDIN_ENV_FILE", "CLAUDE_STANDIN_ARGV_FILE",
               "CLAUDE_STANDIN_HUNT")


def sandbox_settings(standin_root: Path) -> Dict[str, object]:
    """The `sandbox` section that lets the stand-in run in the real sandbox: this project (the stand-in
    and the virtualenv) and the Python installation it runs on read-only, its log folder writable."""
    return {"read_only_paths": [str(STANDIN.parent.parent.parent), sys.base_prefix, sys.prefix],
            "writable_paths": [str(standin_root)]}


def standin_env(root: Path) -> Dict[str, str]:
    """Environment for the stand-in: nothing it writes leaves `root`, and no token of this machine."""
    (root / "home").mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join([str(STANDIN.parent), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {
        "PATH": path,
        "HOME": str(root / "home"),
        "LANG": "C.UTF-8",
        "CLAUDE_CONFIG_DIR": str(root / "claude-config"),
        "CLAUDE_STANDIN_LOG": str(root / "standin-invocations.jsonl"),
        "CLAUDE_STANDIN_PIDFILE": str(root / "standin-grandchild.pid"),
        "CLAUDE_STANDIN_ENV_FILE": str(root / "standin-env.json"),
        "CLAUDE_STANDIN_ARGV_FILE": str(root / "standin-argv.json"),
    }


@pytest.fixture
def claude_standin(tmp_path: Path):
    """A Standin writing under tmp_path/standin; the grandchild it may leave is ended afterwards."""
    root = tmp_path / "standin"
    standin = Standin(path=STANDIN, root=root, env=standin_env(root))
    yield standin
    end_grandchild(standin)


@pytest.fixture
def slot_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "slots" / "widgets_0")

"""An end-to-end world for tests: the GitHub emulator, a bare `origin` whose default branch is
`trunk`, the stand-in `claude`, optional Telegram and Slack stand-ins, and a config.json that ties
them together. Ticks run as real processes through `run_orchestrator.py`; runners are real detached
processes; git is real.

Import the fixture into a test module: `from world import world`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import psutil
import pytest

from chat_standins import SLACK_CHANNEL_ID, SLACK_TOKEN, TELEGRAM_CHAT_ID, TELEGRAM_TOKEN
from claude_standin import STANDIN, STANDIN_ENV, Standin, end_grandchild, sandbox_settings, standin_env
from git_fixtures import commit_to, git_env, make_origin, read_file
from github_emulator import REPO, TOKEN, GitHubEmulator
from lib.models import IssueState, IssueStatus, utc_now_iso
from lib.state_manager import StateManager

PROJECT = Path(__file__).resolve().parent.parent
MAINTAINER = "maintainer"


class World:
    """One orchestrator installation under `root`, talking to local stand-ins only."""

    def __init__(self, root: Path, github: GitHubEmulator):
        self.root = root
        self.github = github
        self.origin = make_origin(root / "origin.git")
        github.add_repo(REPO, default_branch="trunk", clone_url=str(self.origin))
        self.origins = {REPO: self.origin}
        github.set_role(MAINTAINER, "maintain")
        self.standin = Standin(path=STANDIN, root=root / "standin", env=standin_env(root / "standin"))
        self.config_path = root / "install" / "config.json"
        self.config_path.parent.mkdir(parents=True)
        self.settings: Dict[str, Any] = {
            "github": {"token": TOKEN, "repo": REPO, "base_repo_path": str(root / "slots"),
                       "max_concurrent": 3, "api_url": github.url},
            # Short waits: the stand-in and its tools end at once or never, so ten seconds prove nothing more.
            "claude": {"executable": str(STANDIN), "check_interval": 0.2, "timeout_seconds": 60,
                       "kill_grace_seconds": 1, "result_grace_seconds": 1},
            "notification_timeout_seconds": 2,
            "state_file": "state/processing-state.json",
            "log_dir": "logs",
            # The real sandbox: the stand-in (a Python script of this project's) and the interpreter it
            # runs on are shown read-only; it logs its invocations to its own folder.
            "sandbox": sandbox_settings(root / "standin"),
            "agent": {"env": sorted(STANDIN_ENV)},
        }
        self.env = {**self.standin.env, **git_env(root / "gitconfig")}
        for name in ("PYTHONPATH", "VIRTUAL_ENV", "TMPDIR", "LC_ALL"):
            if name in os.environ:
                self.env[name] = os.environ[name]
        self.write_config()

    # --- setup ---------------------------------------------------------------------------------

    def write_config(self, **changes: Any) -> None:
        """Merge `changes` (section -> dict, or key -> value) into config.json."""
        for key, value in changes.items():
            if isinstance(value, dict):
                self.settings.setdefault(key, {}).update(value)
            else:
                self.settings[key] = value
        self.config_path.write_text(json.dumps(self.settings, indent=2))
        self.config_path.chmod(0o600)

    def add_repository(self, repo: str, **settings: Any) -> Path:
        """Serve one more repository, with a bare origin of its own: the config becomes a
        `repositories` list (the first entry is the world's own REPO). Returns the origin."""
        origin = make_origin(self.root / f"{repo.replace('/', '--')}.git")
        self.github.add_repo(repo, default_branch="trunk", clone_url=str(origin))
        self.origins[repo] = origin
        if "repositories" not in self.settings:
            self.settings["github"].pop("repo", None)
            self.settings["repositories"] = [{"repo": REPO}]
        self.settings["repositories"].append({"repo": repo, **settings})
        self.write_config()
        return origin

    def chat(self, telegram=None, slack=None) -> None:
        if telegram is not None:
            self.write_config(telegram={"bot_token": TELEGRAM_TOKEN, "chat_id": TELEGRAM_CHAT_ID,
                                        "api_base_url": telegram.api_base_url})
        if slack is not None:
            self.write_config(slack={"bot_token": SLACK_TOKEN, "channel_id": SLACK_CHANNEL_ID,
                                     "api_base_url": slack.api_base_url})

    def add_issue(self, title: str = "Add a greeting", body: Optional[str] = "Please add a greeting.",
                  labels=("ready-for-claude",), labeled_by: str = MAINTAINER, **kwargs: Any) -> int:
        """Open an issue (in `repo=`, default the world's REPO) with `labels` applied by `labeled_by`."""
        return self.github.add_issue(title, body, labels=labels, labeled_by=labeled_by, **kwargs)

    def follow_pulls(self, count: int, check: Optional[str] = "success") -> List[int]:
        """`count` finished issues, each with its branch pushed to origin, its pull request open and a
        state entry following it (as a run leaves them, without running anything); with `check`, a
        check run of that conclusion on each head. Returns the pull request numbers."""
        state = StateManager(self.state_file, default_repo=REPO)
        pulls = []
        for index in range(count):
            number = self.add_issue(f"Done issue {index}", "finished", labels=("claude-completed",))
            head = commit_to(self.origin, f"issue-{number}", {f"fix_issue_{number}.txt": f"Fixed #{number}\n"},
                             f"Fix #{number}")
            pull = self.github.add_pull(f"issue-{number}", f"Done issue {index} (#{number})", f"Closes #{number}")
            if check:
                self.github.add_check_run(head, "tests", check)
            state.put(IssueState(issue_number=number, status=IssueStatus.COMPLETED, branch=f"issue-{number}",
                                 start_time=utc_now_iso(), end_time=utc_now_iso(), slot=0, repo=REPO,
                                 pr_number=pull, pr_url=f"https://github.com/{REPO}/pull/{pull}", following=True,
                                 session_id="d4e36535-7fb3-4ea9-a3c8-4018f155a1be"))
            pulls.append(pull)
        return pulls

    # --- running -------------------------------------------------------------------------------

    def tick(self, *args: str, wait: bool = True, timeout: float = 120, env: Optional[Dict[str, str]] = None
             ) -> subprocess.CompletedProcess:
        """One tick through the real entry point; with `wait`, until its runners have ended."""
        command = [sys.executable, str(PROJECT / "run_orchestrator.py"), "--config", str(self.config_path), *args]
        if wait:
            command.append("--wait")
        return subprocess.run(command, cwd=self.root, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start_tick(self, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        command = [sys.executable, str(PROJECT / "run_orchestrator.py"), "--config", str(self.config_path), *args]
        return subprocess.Popen(command, cwd=self.root, env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)

    # --- looking ---------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.config_path.parent / "state" / "processing-state.json"

    @property
    def log_dir(self) -> Path:
        return self.config_path.parent / "logs"

    @property
    def slots(self) -> Path:
        return self.root / "slots"

    def state(self) -> Dict[str, Any]:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def entry(self, number: int, repo: Optional[str] = None) -> Dict[str, Any]:
        """The state entry of issue `number` (of `repo`, once the config has several repositories)."""
        return self.state().get(f"{repo}#{number}" if repo else str(number), {})

    def labels(self, number: int, repo: Optional[str] = None) -> List[str]:
        return sorted(self.github.issue_labels(number, repo=repo))

    def comments(self, number: int, repo: Optional[str] = None) -> List[str]:
        return [c["body"] for c in self.github.comments(number, repo=repo)]

    def origin_file(self, branch: str, path: str, repo: Optional[str] = None) -> Optional[str]:
        return read_file(self.origins[repo or REPO], branch, path)

    def wait_for(self, condition: Callable[[], Any], timeout: float = 30, what: str = "the condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def log_text(self) -> str:
        """Everything the orchestrator logged: orchestrator.log and every runner log."""
        parts = []
        main_log = self.config_path.parent / "orchestrator.log"
        if main_log.exists():
            parts.append(main_log.read_text(errors="replace"))
        parts += [p.read_text(errors="replace") for p in sorted(self.log_dir.glob("issue-*/*.runner.log"))]
        return "\n".join(parts)

    def processes(self) -> List[psutil.Process]:
        """Runners and agents of this world still alive, each with its `info["cmdline"]` as found (one that
        ends meanwhile cannot be asked again)."""
        found = []
        for process in psutil.process_iter(["cmdline", "status"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if str(self.config_path) in cmdline or (str(STANDIN) in cmdline and str(self.root) in _cwd(process)):
                found.append(process)
        return found

    def leftovers(self) -> List[psutil.Process]:
        """Any live process working in a slot: what an agent, setup.sh or a check started and left.
        Each one's `info["name"]` is read with it (one that ends meanwhile cannot say its name)."""
        found = []
        for process in psutil.process_iter(["status", "name"]):
            if process.info["status"] != psutil.STATUS_ZOMBIE and _cwd(process).startswith(f"{self.slots}/"):
                found.append(process)
        return found

    def cleanup(self) -> None:
        for process in self.processes():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        for process in self.leftovers():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        end_grandchild(self.standin)


def _cwd(process: psutil.Process) -> str:
    try:
        return process.cwd()
    except (psutil.Error, OSError):
        return ""


def opened_pull(world: World):
    """An issue run to a pull request that is now followed; returns (issue number, PR number, session id)."""
    number = world.add_issue("Add a greeting")
    world.tick()
    entry = world.entry(number)
    assert entry["status"] == "completed" and entry["following"], entry
    return number, entry["pr_number"], entry["session_id"]


@pytest.fixture
def world(tmp_path: Path):
    emulator = GitHubEmulator().start()
    emulator.tokens.add(TOKEN)
    world = World(tmp_path, emulator)
    try:
        yield world
    finally:
        world.cleanup()
        emulator.close()
    assert not emulator.errors, "the GitHub emulator failed internally:\n" + "\n".join(emulator.errors)

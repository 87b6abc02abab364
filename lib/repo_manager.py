"""Agent slots: one clone of the repository per slot, made clean and ready for one issue.

Slot i is `<base_repo_path>/<repo_name>_<i>`. Before a run the runner calls `prepare_slot`: clone
when absent (else fetch), clean, run the repository's `setup.sh`, and check out `issue-<N>`.
After the run it calls `commit_all`, `commits_ahead` and `push_branch`.

* Git authenticates per command through the environment (`GIT_CONFIG_COUNT` with an
  `http.extraheader`), so the token is never in `.git/config`, an argv or a log line.
* Cleaning removes untracked files but keeps ignored ones: virtualenvs and `node_modules` made by
  `setup.sh` survive from one issue to the next, and a setup run stays fast.
* Unpushed commits of an issue branch are never thrown away: before a slot is reset they are kept
  on `refs/orchestrator/backup/<branch>-<time>` (and the log says so).
* Every git call gets `cwd=`; nothing calls `os.chdir` (runners of several slots share nothing).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from lib.models import OrchestratorError, fault_point

log = logging.getLogger(__name__)

#: Network operations (clone, fetch, push) may take this long; local ones much less.
NETWORK_TIMEOUT = 600
LOCAL_TIMEOUT = 120
#: Identity for commits the orchestrator makes, used only when git has none configured.
IDENTITY = ("Claude Issue Orchestrator", "orchestrator@localhost")
TAIL_LINES = 20


class GitError(OrchestratorError):
    """A git command failed; the message is one sentence plus git's last words, token-free."""


class SetupError(OrchestratorError):
    """The repository's setup.sh failed or timed out; `log_tail` holds the end of its output."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message + (f"\n{log_tail}" if log_tail else ""))
        self.log_tail = log_tail


@dataclass
class SlotInfo:
    path: Path
    branch: str
    base_branch: str
    continued: bool  # the branch continues origin/issue-<N> from an earlier attempt
    warnings: List[str] = field(default_factory=list)


class RepoManager:
    """`RepoManager(config)` as in the seed README; `token` defaults to config.github_token and
    `env` (default os.environ) is the environment git runs in."""

    def __init__(self, config, token: Optional[str] = None, *, env: Optional[Mapping[str, str]] = None):
        self.config = config
        self.token = token if token is not None else getattr(config, "github_token", None)
        self.env = env
        self._git_env: Optional[Dict[str, str]] = None  # made on first use: it asks git for an identity

    def repo_path(self, agent_index: int) -> Path:
        return self.config.get_repo_path(agent_index)

    # --- running git ---------------------------------------------------------------------------

    def git_env(self) -> Dict[str, str]:
        """This environment plus per-command git settings: auth header, no prompts, an identity
        when git has none."""
        env = dict(os.environ if self.env is None else self.env)
        env["GIT_TERMINAL_PROMPT"] = "0"
        env.setdefault("GIT_ASKPASS", "true")  # never wait for a password on a terminal-less box
        settings: List[tuple] = []
        if self.token:
            basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode()
            settings.append(("http.extraheader", f"AUTHORIZATION: basic {basic}"))
        if not self._has_identity(env):
            settings += [("user.name", IDENTITY[0]), ("user.email", IDENTITY[1])]
        start = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
        for offset, (key, value) in enumerate(settings):
            env[f"GIT_CONFIG_KEY_{start + offset}"] = key
            env[f"GIT_CONFIG_VALUE_{start + offset}"] = value
        env["GIT_CONFIG_COUNT"] = str(start + len(settings))
        return env

    @staticmethod
    def _has_identity(env: Mapping[str, str]) -> bool:
        if env.get("GIT_AUTHOR_EMAIL") and env.get("GIT_COMMITTER_EMAIL"):
            return True
        done = subprocess.run(["git", "config", "--get", "user.email"], env=dict(env), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=LOCAL_TIMEOUT, cwd="/")
        return bool(done.stdout.strip())

    def git(self, args: Sequence[str], cwd: os.PathLike, *, timeout: float = LOCAL_TIMEOUT,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run `git <args>` in `cwd`; with `check`, a failure raises GitError in words."""
        if self._git_env is None:
            self._git_env = self.git_env()
        try:
            done = subprocess.run(["git", *args], cwd=str(cwd), env=self._git_env, capture_output=True,
                                  text=True, errors="replace", stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} in {cwd} did not finish within {timeout:g} s") from None
        except FileNotFoundError:
            raise GitError("git is not installed (or not on PATH)") from None
        if check and done.returncode != 0:
            raise GitError(f"git {args[0]} failed in {cwd} (exit {done.returncode}): {self._last_words(done)}")
        return done

    def _last_words(self, done: subprocess.CompletedProcess) -> str:
        text = (done.stderr or done.stdout or "").strip().splitlines()
        words = " / ".join(line.strip() for line in text[-3:]) or "no message"
        return self._scrub(words)

    def _scrub(self, text: str) -> str:
        if self.token:
            text = text.replace(self.token, "***")
            text = text.replace(base64.b64encode(f"x-access-token:{self.token}".encode()).decode(), "***")
        return text

    # --- the slot ------------------------------------------------------------------------------

    def prepare_slot(self, agent_index: int, issue_number: int, *, base_branch: str, clone_url: str,
                     setup_log: Path) -> SlotInfo:
        """Make slot `agent_index` a clean checkout of `issue-<N>` for a run, ready for the agent."""
        path = self.repo_path(agent_index)
        branch = f"issue-{int(issue_number)}"  # never text from the issue
        self._clone_or_fetch(path, clone_url)
        warnings = self._clean(path, base_branch)
        continued = self._checkout(path, branch, base_branch)
        self._run_setup(path, setup_log)
        current = self.git(["symbolic-ref", "--short", "HEAD"], path, check=False).stdout.strip()
        if current != branch:
            raise GitError(f"{path} is on {current or 'a detached HEAD'} after setup.sh, not on {branch}")
        dirty = self.git(["status", "--porcelain"], path).stdout.strip()
        if dirty:
            warnings.append(f"setup.sh left uncommitted changes in {path}: {len(dirty.splitlines())} file(s)")
            log.warning("Slot %s: %s", agent_index, warnings[-1])
        log.info("Slot %s ready at %s on %s (%s)", agent_index, path, branch,
                 f"continuing origin/{branch}" if continued else f"new from origin/{base_branch}")
        return SlotInfo(path=path, branch=branch, base_branch=base_branch, continued=continued, warnings=warnings)

    def _clone_or_fetch(self, path: Path, clone_url: str) -> None:
        if path.exists() and not self._healthy(path, clone_url):
            self._set_aside(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            log.info("Cloning %s into %s", clone_url, path)
            fault_point("during-clone")
            try:
                self.git(["clone", "--quiet", "--no-tags", clone_url, str(path)], path.parent,
                         timeout=NETWORK_TIMEOUT)
            except GitError:
                shutil.rmtree(path, ignore_errors=True)  # a half clone would look like a damaged slot
                raise
            return
        self.git(["fetch", "--quiet", "--prune", "--no-tags", "origin"], path, timeout=NETWORK_TIMEOUT)

    def _healthy(self, path: Path, clone_url: str) -> bool:
        """The folder is a working clone of `clone_url` (else it is rebuilt)."""
        if not (path / ".git").exists():
            return False
        top = self.git(["rev-parse", "--show-toplevel"], path, check=False)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != path.resolve():
            return False
        if self.git(["status", "--porcelain"], path, check=False).returncode != 0:
            return False  # a damaged index or object store
        url = self.git(["config", "--get", "remote.origin.url"], path, check=False).stdout.strip()
        return url == clone_url

    def _set_aside(self, path: Path) -> None:
        """Move a damaged slot out of the way, keeping it (it may hold the only copy of some work)."""
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(aside)
        log.warning("Slot %s is not a working clone of the repository; moved it to %s and cloning afresh",
                    path, aside)

    def _clean(self, path: Path, base_branch: str) -> List[str]:
        """Leave nothing of an earlier run: unfinished operations, detached HEAD, edits, untracked
        files (ignored ones stay). Unpushed commits of an issue branch are kept on a backup ref."""
        warnings: List[str] = []
        git_dir = path / ".git"
        for marker, command in (("MERGE_HEAD", ["merge", "--abort"]), ("rebase-merge", ["rebase", "--abort"]),
                                ("rebase-apply", ["rebase", "--abort"]),
                                ("CHERRY_PICK_HEAD", ["cherry-pick", "--abort"]),
                                ("REVERT_HEAD", ["revert", "--abort"])):
            if (git_dir / marker).exists():
                self.git(command, path, check=False)
                warnings.append(f"aborted an unfinished {command[0]} in {path}")
                log.warning("Slot %s: %s", path, warnings[-1])
        self._back_up_unpushed(path, warnings)
        remote_base = f"origin/{base_branch}"
        if self.git(["rev-parse", "--verify", "--quiet", remote_base], path, check=False).returncode != 0:
            raise GitError(f"the base branch {base_branch!r} does not exist on origin")
        self.git(["checkout", "--quiet", "--force", "-B", base_branch, remote_base], path)
        self.git(["reset", "--quiet", "--hard", remote_base], path)
        self.git(["clean", "-fd", "--quiet"], path)  # no -x: ignored files (venvs, caches) stay
        return warnings

    def _back_up_unpushed(self, path: Path, warnings: List[str]) -> None:
        """Keep each local issue branch (and a detached HEAD) whose commits origin lacks."""
        heads = self.git(["for-each-ref", "--format=%(refname:short)", "refs/heads/issue-*"], path).stdout.split()
        candidates = [(name, name) for name in heads]
        if self.git(["symbolic-ref", "-q", "HEAD"], path, check=False).returncode != 0:
            candidates.append(("HEAD", "detached"))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for ref, label in candidates:
            unpushed = self.git(["rev-list", "--count", ref, "--not", "--remotes=origin"], path, check=False)
            count = int(unpushed.stdout.strip() or 0) if unpushed.returncode == 0 else 0
            if not count:
                continue
            backup = f"refs/orchestrator/backup/{label}-{stamp}"
            self.git(["update-ref", backup, ref], path)
            warnings.append(f"{count} unpushed commit(s) of {label} kept on {backup}")
            log.warning("Slot %s: %s", path, warnings[-1])

    def _checkout(self, path: Path, branch: str, base_branch: str) -> bool:
        """Check out `branch`: origin's when an earlier attempt pushed it, else new from the base."""
        remote = f"origin/{branch}"
        continued = self.git(["rev-parse", "--verify", "--quiet", remote], path, check=False).returncode == 0
        self.git(["checkout", "--quiet", "--force", "-B", branch, remote if continued else f"origin/{base_branch}"],
                 path)
        self.git(["branch", "--quiet", "--unset-upstream"], path, check=False)
        return continued

    def _run_setup(self, path: Path, setup_log: Path) -> None:
        """Run the repository's setup.sh (if any) in its own process group, output to `setup_log`."""
        script = path / "setup.sh"
        if not script.is_file():
            return
        from lib.claude_processor import log_tail, terminate_tree

        timeout = float(getattr(self.config, "setup_timeout_seconds", 1800))
        setup_log.parent.mkdir(parents=True, exist_ok=True)
        log.info("Running setup.sh in %s (log: %s)", path, setup_log)
        fault_point("during-setup")
        with open(setup_log, "ab") as out:
            process = subprocess.Popen(["bash", str(script)], cwd=str(path), env=self._setup_env(),
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                terminate_tree(process, grace_seconds=5)
                raise SetupError(f"setup.sh did not finish within {timeout:g} s (setup_timeout_seconds)",
                                 log_tail(setup_log, TAIL_LINES) or "") from None
        if code != 0:
            raise SetupError(f"setup.sh failed with exit code {code}", log_tail(setup_log, TAIL_LINES) or "")

    def _setup_env(self) -> Dict[str, str]:
        """setup.sh is the repository's code: it gets no token of ours."""
        env = {k: v for k, v in (os.environ if self.env is None else self.env).items()}
        for name in ("GITHUB_TOKEN", "GH_TOKEN", "TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN"):
            env.pop(name, None)
        return env

    # --- after the run ---------------------------------------------------------------------------

    def commit_all(self, path: os.PathLike, message: str) -> bool:
        """Commit every change in the working tree (ignored files stay ignored); False if none."""
        if not self.git(["status", "--porcelain"], path).stdout.strip():
            return False
        self.git(["add", "--all"], path)
        self.git(["commit", "--quiet", "--no-verify", "-m", message], path)
        return True

    def commits_ahead(self, path: os.PathLike, base_branch: str, branch: Optional[str] = None) -> int:
        """How many commits `branch` (default HEAD) has that origin/<base> lacks."""
        done = self.git(["rev-list", "--count", f"origin/{base_branch}..{branch or 'HEAD'}"], path)
        return int(done.stdout.strip() or 0)

    def push_branch(self, path: os.PathLike, branch: str) -> None:
        """Push `branch` to origin; a rejected non-fast-forward is an error in words."""
        done = self.git(["push", "--quiet", "--porcelain", "origin", f"refs/heads/{branch}:refs/heads/{branch}"],
                        path, timeout=NETWORK_TIMEOUT, check=False)
        if done.returncode == 0:
            log.info("Pushed %s from %s", branch, path)
            return
        said = self._last_words(done)
        if "non-fast-forward" in said or "rejected" in (done.stdout or ""):
            raise GitError(f"origin refused {branch}: it has commits this slot does not (someone pushed to the"
                           f" branch meanwhile); the work is kept in {path}")
        raise GitError(f"git push of {branch} failed (exit {done.returncode}): {said}")

    def head_sha(self, path: os.PathLike) -> str:
        return self.git(["rev-parse", "HEAD"], path).stdout.strip()

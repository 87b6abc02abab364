"""Running git for the slots and the object store: `Git(token, env)(args, cwd)`.

* Git authenticates per command through the environment (`GIT_CONFIG_COUNT` with an
  `http.extraheader`), so the token is never in `.git/config`, an argv or a log line; a clone URL
  that carries credentials itself is refused (`refuse_credentials_in`). No hook or fsmonitor runs,
  no prompt waits, and a commit has an identity even where git has none configured.
* Every call gets `cwd=` (nothing calls `os.chdir`) and runs in its own process group, so a
  timeout ends git's helpers with it. A failure is a GitError: one sentence plus git's last words,
  token-free.
* The refs the orchestrator keeps: `refs/orchestrator/backup/<what>-<time>` for work that would
  otherwise be lost (`backup`), `refs/orchestrator/origin/<branch>` for the last commit known to be
  on origin, so that a branch origin deleted after merging is not taken for unpushed work (`unpushed`).
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from lib import processes
from lib.models import OrchestratorError
from lib.redaction import redact, register_secret

log = logging.getLogger("lib.repo_manager")  # git's lines keep the logger name they always had

#: A local git command may take this long (a network one: lib.settings.NETWORK_TIMEOUT).
LOCAL_TIMEOUT = 120
#: Identity for commits the orchestrator makes, used only when git has none configured.
IDENTITY = ("Claude Issue Orchestrator", "orchestrator@localhost")
BACKUP_PREFIX = "refs/orchestrator/backup/"
ON_ORIGIN_PREFIX = "refs/orchestrator/origin/"


class GitError(OrchestratorError):
    """A git command failed; the message is one sentence plus git's last words, token-free."""


def refuse_credentials_in(clone_url: str) -> None:
    """A URL with credentials would be written to `.git/config`; the token goes per command."""
    try:
        has_password = bool(urlsplit(clone_url).password)
    except ValueError:
        has_password = False
    if has_password or redact(clone_url) != clone_url:
        raise GitError("The clone URL carries credentials; give it without them (the token is sent per"
                       " command, never stored in the clone).")


def last_words(done: subprocess.CompletedProcess) -> str:
    """git's last lines of output, for a message (token-free)."""
    text = (done.stderr or done.stdout or "").strip().splitlines()
    return redact(" / ".join(line.strip() for line in text[-3:]) or "no message")


class Git:
    """git with `token` sent per command; `env` (default os.environ) is the environment it starts from."""

    def __init__(self, token: Optional[str], env: Optional[Mapping[str, str]] = None):
        self.token = token
        if token:
            register_secret(token, self._basic_auth())  # the header git sends holds the token so
        self.base_env = env
        self._env: Optional[Dict[str, str]] = None  # made on first use: it asks git for an identity
        self._identity: Optional[Dict[str, str]] = None

    def env(self) -> Dict[str, str]:
        """The base environment plus per-command git settings: the auth header, no prompts, and an
        identity when git has none."""
        env = dict(os.environ if self.base_env is None else self.base_env)
        env["GIT_TERMINAL_PROMPT"] = "0"
        env.setdefault("GIT_ASKPASS", "true")  # an ssh or credential prompt answers empty instead of waiting
        # No hook or fsmonitor of the repository's (or the agent's) runs inside our git commands.
        settings: List[tuple] = [("core.hooksPath", os.devnull), ("core.fsmonitor", "false")]
        if self.token:
            settings.append(("http.extraheader", f"AUTHORIZATION: basic {self._basic_auth()}"))
        if not self._has_identity(env):
            settings += [("user.name", IDENTITY[0]), ("user.email", IDENTITY[1])]
        start = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
        for offset, (key, value) in enumerate(settings):
            env[f"GIT_CONFIG_KEY_{start + offset}"] = key
            env[f"GIT_CONFIG_VALUE_{start + offset}"] = value
        env["GIT_CONFIG_COUNT"] = str(start + len(settings))
        return env

    def _basic_auth(self) -> str:
        return base64.b64encode(f"x-access-token:{self.token}".encode()).decode()

    @staticmethod
    def _has_identity(env: Mapping[str, str]) -> bool:
        if env.get("GIT_AUTHOR_EMAIL") and env.get("GIT_COMMITTER_EMAIL"):
            return True
        done = processes.run(["git", "config", "--get", "user.email"], cwd="/", env=env, timeout=LOCAL_TIMEOUT)
        return bool(done.stdout.strip())

    def __call__(self, args: Sequence[str], cwd: os.PathLike, *, timeout: float = LOCAL_TIMEOUT,
                 check: bool = True) -> subprocess.CompletedProcess:
        """Run `git <args>` in `cwd`; with `check`, a failure raises GitError in words.

        git runs in its own process group: on a timeout its helpers (git-remote-https, ssh) are
        ended with it, and none of them is left holding our pipes open.
        """
        if self._env is None:
            self._env = self.env()
        args = [str(arg) for arg in args]
        log.debug("git %s (in %s)", " ".join(args), cwd)
        try:
            done = processes.run(["git", *args], cwd=cwd, env=self._env, timeout=timeout)
        except FileNotFoundError as exc:
            if not Path(cwd).is_dir():
                raise GitError(f"git {args[0]} cannot run in {cwd}: the folder does not exist") from None
            raise GitError("git is not installed (or not on PATH)") from exc
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} in {cwd} did not finish within {timeout:g} s") from None
        if check and done.returncode != 0:
            raise GitError(f"git {args[0]} failed in {cwd} (exit {done.returncode}): {last_words(done)}")
        return done

    def identity(self) -> Dict[str, str]:
        """The commit identity git has (else the orchestrator's), as the variables a sandbox passes on:
        the agent's sandbox shows no git config of the user's. Asked of git once."""
        if self._identity is None:
            name, email = (self(["config", "--get", key], "/", check=False).stdout.strip()
                           for key in ("user.name", "user.email"))  # env() sets IDENTITY where git has none
            self._identity = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
                              "GIT_COMMITTER_EMAIL": email}
        return self._identity

    def sha(self, path: Path, ref: str) -> Optional[str]:
        """The commit `ref` names in `path`, or None."""
        done = self(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], path, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def count(self, path: Path, args: Sequence[str]) -> int:
        """How many commits `git rev-list <args>` lists."""
        return int(self(["rev-list", "--count", *args], path).stdout.strip() or 0)

    def is_ancestor(self, path: Path, older: str, newer: str) -> bool:
        return self(["merge-base", "--is-ancestor", older, newer], path, check=False).returncode == 0

    def unpushed(self, path: Path, ref: str) -> int:
        """Commits of `ref` that origin lacks, as far as `path` knows (its remote-tracking refs and its
        marks of what was on origin)."""
        return self.count(path, [ref, "--not", "--remotes=origin", f"--glob={ON_ORIGIN_PREFIX}*"])

    def backup(self, path: Path, label: str, ref: str) -> str:
        """Keep `ref` on a new `refs/orchestrator/backup/<label>-<time>`; returns its name."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name, serial = f"{BACKUP_PREFIX}{label}-{stamp}", 1
        while self.sha(path, name) is not None:
            serial += 1
            name = f"{BACKUP_PREFIX}{label}-{stamp}-{serial}"
        self(["update-ref", name, ref], path)
        return name

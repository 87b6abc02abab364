"""A new install's first five minutes: `--init` writes config.json, `--cron-line` and `--systemd`
print how to run the tick, filled in for this install.

`--init` takes its answers from flags, or asks on a terminal; takes the token from the environment
or `gh auth token`; checks that the repository exists and that the token may push to it (GitHub's
`permissions.push`); writes config.json with mode 0600 (never over a config a user edited, unless
`--force`); and ends by running `--check`.
"""

from __future__ import annotations

import getpass
import json
import os
import pwd
import shlex
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

from lib.checks import run_checks
from lib.config import PROJECT_DIR, Config, gh_auth_token
from lib.files import atomic_write
from lib.github_client import GitHubClient
from lib.github_errors import GitHubError, GitHubNotFoundError
from lib.models import ConfigError, UsageError
from lib.redaction import register_secret
from lib.schema import repo as valid_repo

EXAMPLE = PROJECT_DIR / "config.example.json"
SCRIPT = PROJECT_DIR / "run_orchestrator.py"
#: Where a tick's tools usually live, after the folders they are found in now.
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
SCHEDULE = "*/5 * * * *"


# ------------------------------------------------------------------------------------------------
# --init
# ------------------------------------------------------------------------------------------------


def init(path: Path, *, repos: List[str], base_repo_path: Optional[str], api_url: str = "https://api.github.com",
         notifiers: Optional[Dict[str, Dict[str, str]]] = None, store_token: bool = True, force: bool = False,
         ask: Optional[Callable[[str], str]] = None, out=None) -> int:
    """Write a config for `repos` and run --check on it; returns --check's exit code.

    `ask(question)` answers what the flags left out (on a terminal); without it a missing answer is
    a UsageError. Raises UsageError or ConfigError, each a sentence, when nothing can be written.
    """
    out = out or sys.stdout
    _refuse_to_overwrite(path, force)
    if not repos and ask:
        repos = [answer.strip() for answer in ask("Repository (owner/name, several with commas): ").split(",")]
    if base_repo_path is None and ask:
        base_repo_path = ask("Folder for the agents' slot clones: ").strip()
    repos = [repo for repo in repos if repo]
    if not repos or not base_repo_path:
        raise UsageError("--init needs --repo OWNER/NAME and --base-repo-path DIR (or a terminal to ask them)")
    bad = [f"--repo {repo}: {problem}" for repo in repos for problem in [valid_repo(repo)] if problem]
    if bad:
        raise UsageError("; ".join(bad))
    token, source = _find_token(api_url)
    for repo in repos:
        _check_push(token, repo, api_url)
        print(f"  ok  {repo}: the token ({source}) can push to it", file=out)
    data = _config_data(repos, os.path.abspath(os.path.expanduser(base_repo_path)), api_url, notifiers or {},
                        token if store_token else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2) + "\n", mode=0o600)
    where = "stored in it" if data["github"].get("token") else \
        f"not stored: each tick takes it from {source}, which a cron job must have too"
    print(f"Wrote {path} (mode 0600; the token is {where}). Checking it:", file=out)
    return run_checks(path, out=out)


def _refuse_to_overwrite(path: Path, force: bool) -> None:
    """A config a user edited is theirs; a byte-identical copy of the example is not an edit."""
    if not path.exists() or force:
        return
    if EXAMPLE.is_file() and path.read_bytes() == EXAMPLE.read_bytes():
        return
    raise UsageError(f"{path} exists and is not the untouched example; --init --force replaces it")


def _find_token(api_url: str):
    for name in ("GITHUB_TOKEN", "GH_TOKEN"):
        if os.environ.get(name):
            register_secret(os.environ[name])
            return os.environ[name], f"${name}"
    token = gh_auth_token(api_url)
    if token:
        register_secret(token)
        return token, "gh auth token"
    raise ConfigError(["github.token: no GitHub token: export GITHUB_TOKEN (or GH_TOKEN), or log in with"
                       " `gh auth login`, then run --init again"])


def _check_push(token: str, repo: str, api_url: str) -> None:
    try:
        found = GitHubClient(token, repo, api_url).get_repository()
    except GitHubNotFoundError:
        raise UsageError(f"{repo} was not found, or the token cannot see it") from None
    except GitHubError as exc:
        raise UsageError(f"{repo}: {exc}") from None
    if (found.get("permissions") or {}).get("push") is not True:
        raise UsageError(f"the token cannot push to {repo} (GitHub says permissions.push is not true); the"
                         " agents' branches could not be pushed")


def _config_data(repos: List[str], base_repo_path: str, api_url: str, notifiers: Dict[str, Dict[str, str]],
                 token: Optional[str]) -> dict:
    """config.example.json with the answers filled in and its placeholders gone."""
    data = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    github = data["github"]
    github["base_repo_path"], github["api_url"] = base_repo_path, api_url
    if token:
        github["token"] = token
    else:
        github.pop("token", None)
    if len(repos) == 1:
        github["repo"] = repos[0]
    else:
        github.pop("repo", None)
        data["repositories"] = [{"repo": repo} for repo in repos]
    for section in ("telegram", "slack"):
        if notifiers.get(section):
            data[section] = {key: value for key, value in notifiers[section].items() if value}
        else:
            data.pop(section, None)
    return data


def ask_on_terminal(question: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError("--init needs --repo OWNER/NAME and --base-repo-path DIR (or a terminal to ask them)")
    return input(question)


# ------------------------------------------------------------------------------------------------
# --cron-line and --systemd
# ------------------------------------------------------------------------------------------------


def tool_path(config: Config) -> str:
    """A PATH holding claude, git and gh as they are found now, then the system's folders."""
    folders: List[str] = []
    for tool in (config.claude.executable, "git", "gh"):
        found = shutil.which(tool)
        if found:
            folders.append(os.path.dirname(os.path.abspath(found)))
    return ":".join(dict.fromkeys([*folders, *SYSTEM_PATH]))


def tick_command(config: Config) -> List[str]:
    return [sys.executable, str(SCRIPT), "--config", str(config.path)]


def cron_line(config: Config) -> str:
    """The crontab line of this install: absolute paths, its PATH, its log; `%` escaped for cron."""
    log = config.folder / "orchestrator.log"
    command = " ".join(shlex.quote(part) for part in tick_command(config))
    line = f"{SCHEDULE} PATH={shlex.quote(tool_path(config))} {command} >> {shlex.quote(str(log))} 2>&1"
    return line.replace("%", "\\%")  # cron turns a bare % into a newline


def systemd_units(config: Config) -> str:
    """The service (one tick) and the timer (every 5 minutes) of this install, as two files."""
    user = pwd.getpwuid(os.getuid()).pw_name if hasattr(os, "getuid") else getpass.getuser()
    exec_start = " ".join(_systemd_quote(part) for part in tick_command(config))
    return "\n".join([
        "# /etc/systemd/system/issue-orchestrator.service",
        "[Unit]",
        "Description=GitHub issue orchestrator for Claude Code: one tick",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"User={user}",
        f"WorkingDirectory={PROJECT_DIR}",
        f"Environment={_systemd_quote('PATH=' + tool_path(config))}",
        f"ExecStart={exec_start}",
        "# The runners must outlive the tick: only the tick itself is stopped when the service ends.",
        "KillMode=process",
        "",
        "# /etc/systemd/system/issue-orchestrator.timer",
        "[Unit]",
        "Description=Run the GitHub issue orchestrator tick every 5 minutes",
        "",
        "[Timer]",
        "OnCalendar=*:0/5",
        "Persistent=false",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ])


def _systemd_quote(value: str) -> str:
    """A word for ExecStart= or Environment=: quoted when it holds a space, `%` doubled (systemd's specifier)."""
    value = value.replace("%", "%%")
    if not any(c in value for c in ' "\\'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

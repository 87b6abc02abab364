"""Configuration: load config.json, apply environment overrides, validate everything at once.

Validation collects every problem and reports each as one line naming its key, the way borgmatic
does, so a user fixes a config in one pass instead of one traceback at a time. What a config may
hold and the checks across keys are lib/config_schema.py's; `Config` runs them and sets its
attributes (the settings' types are lib/settings.py's, a value's checkers lib/schema.py's).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from lib import processes
from lib.config_schema import (
    ENV_OVERRIDES,
    check_repositories,
    check_sections,
    check_slot_folders,
    check_top_level,
    cross_checks,
    placeholders_left,
    readable_token_warnings,
    reported,
    resolve_path,
)
from lib.models import ConfigError, OrchestratorError
from lib.redaction import register_secret
from lib.schema import got_kind
from lib.settings import (
    Agent,
    ClaudeSettings,
    Executor,
    FollowUp,
    Labels,
    Limits,
    Repository,
    Retention,
    Sandbox,
)

#: Folder holding run_orchestrator.py, claude_monitor.py and config.example.json.
PROJECT_DIR = Path(__file__).resolve().parent.parent

#: Label key -> (colour, description) for the labels a tick creates.
LABEL_SPECS = {
    "ready": ("0e8a16", "Queued for Claude Code"),
    "working": ("fbca04", "Claude Code is working on this issue"),
    "completed": ("1d76db", "Claude Code finished this issue"),
    "failed": ("d93f0b", "Claude Code could not finish this issue"),
    "needs_input": ("d876e3", "Claude Code waits for an answer in the comments"),
}


def default_config_path(env: Optional[Mapping[str, str]] = None) -> Path:
    """`ORCHESTRATOR_CONFIG`, else config.json beside the scripts (cron runs from anywhere)."""
    env = os.environ if env is None else env
    return Path(env.get("ORCHESTRATOR_CONFIG") or PROJECT_DIR / "config.json")


def github_host(api_url: str) -> str:
    """The host `gh` knows an API by: github.com for api.github.com, else the Enterprise server's, with
    its port when the URL has one (`gh auth login --hostname ghe.local:8443` stores it so)."""
    parts = urlsplit(api_url)
    host = parts.hostname or "github.com"
    if host == "api.github.com":
        return "github.com"
    host = f"[{host}]" if ":" in host else host  # an IPv6 address, as in a URL
    return f"{host}:{parts.port}" if parts.port else host


def gh_auth_token(api_url: str = "https://api.github.com", timeout: float = 10) -> Optional[str]:
    """The token `gh auth login` stored for the host of `api_url`, when gh is installed and logged in."""
    gh = shutil.which("gh")
    if not gh:
        return None
    try:
        done = processes.run([gh, "auth", "token", "--hostname", github_host(api_url)], cwd="/", timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    token = done.stdout.strip()
    return token if done.returncode == 0 and token else None


class Config:
    """The validated configuration. `Config("config.json")` as in the seed README."""

    def __init__(self, path: Optional[os.PathLike] = None, env: Optional[Mapping[str, str]] = None,
                 *, require_token: bool = True):
        """`require_token=False` is for readers of local state only (the monitor); they never ask
        `gh auth token` either."""
        env = dict(os.environ if env is None else env)
        config_path = Path(path) if path is not None else default_config_path(env)
        data = self._read(config_path)
        self._build(data, config_path.resolve().parent, env, config_path.resolve(), require_token, require_token,
                    warnings=readable_token_warnings(config_path, data))

    @classmethod
    def from_dict(cls, data: Dict[str, Any], folder: os.PathLike, env: Optional[Mapping[str, str]] = None,
                  *, require_token: bool = True) -> "Config":
        """Build from an already-parsed dict; relative paths resolve against `folder`.

        `env` defaults to empty and `gh auth token` is not asked, so tests never pick up the
        machine's tokens.
        """
        self = cls.__new__(cls)
        folder = Path(folder).resolve()
        self._build(data, folder, dict(env or {}), folder / "config.json", False, require_token)
        return self

    @staticmethod
    def _read(path: Path) -> Dict[str, Any]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError([
                f"{path}: config file not found (run ./setup.sh to create it from config.example.json,"
                " or pass --config PATH)"
            ]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: cannot read the config file: {exc}"]) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]) from None
        return data

    def _build(self, data: Any, folder: Path, env: Dict[str, str], path: Path, use_gh_cli: bool,
               require_token: bool, warnings: Sequence[str] = ()) -> None:
        """Validate `data` and set every attribute; `warnings` start the list of warnings."""
        self.path = path
        self.folder = folder
        self.warnings: List[str] = list(warnings)
        if not isinstance(data, dict):
            raise ConfigError([f"{path.name}: must be a JSON object with a \"github\" section,"
                               f" {got_kind(data)}"], self.warnings)
        errors: List[str] = []
        values = check_sections(data, errors, self.warnings)
        top = check_top_level(data, errors, self.warnings)
        for section, key, names in ENV_OVERRIDES:  # environment variables win over the file
            value = next((env[name] for name in names if env.get(name)), None)
            if value:
                values[section][key] = value
        github = values["github"]
        if not github.get("token") and use_gh_cli and github.get("api_url"):
            github["token"] = gh_auth_token(github["api_url"])
        if require_token and not github.get("token") and not reported(errors, "github.token", "github:"):
            errors.append("github.token: no GitHub token: set github.token or GITHUB_TOKEN (or GH_TOKEN),"
                          " or log in with `gh auth login`")
        errors += cross_checks(values, errors) + placeholders_left(data)
        repositories = check_repositories(data, values, top, folder, errors, self.warnings)
        template_path = None
        template = values["claude"].get("prompt_template")
        if isinstance(template, str) and template.strip():
            template_path = resolve_path(folder, template)
            if not template_path.is_file():
                errors.append(f"claude.prompt_template: file not found: {template_path}")
        host = values["executor"]["host"] or socket.gethostname()
        override = (values["executor"]["hosts"] or {}).get(host, {})
        if values["executor"]["type"] == "celery" and "base_repo_path" in override:
            for entry in repositories:  # this host's slots live under its own folder
                entry["base_repo_path"] = override["base_repo_path"]
            check_slot_folders(repositories, folder, errors)
        if errors:
            raise ConfigError(errors, self.warnings)
        self._assign(values, top, folder, template_path, repositories)
        self.executor = self._executor(values["executor"], host, override)
        if "log_dir" in override and self.executor.celery:
            self.log_dir = resolve_path(folder, override["log_dir"])
        register_secret(*self.secrets)

    def _assign(self, values: Dict[str, Dict[str, Any]], top: Dict[str, Any], folder: Path,
                template_path: Optional[Path], repositories: List[Dict[str, Any]]) -> None:
        github, telegram, slack = values["github"], values["telegram"], values["slack"]
        self.github_token: Optional[str] = github["token"] or None
        self.claude = ClaudeSettings(**{**values["claude"], "prompt_template": template_path})
        self.repositories: List[Repository] = [Repository(
            repo=entry["repo"], base_repo_path=resolve_path(folder, entry["base_repo_path"]),
            max_concurrent=entry["max_concurrent"], clone_url=entry["clone_url"], base_branch=entry["base_branch"],
            setup_command=entry["setup_command"], validate=list(entry["validate"] or []),
            claude=ClaudeSettings(**{**entry["claude"], "prompt_template": template_path}),
            limits=Limits(**entry["limits"]), agent=Agent(**entry["agent"]))
            for entry in repositories]
        sandbox = values["sandbox"]
        self.sandbox = Sandbox(mode=sandbox["mode"], model_hosts=list(sandbox["model_hosts"]),
                               read_only_paths=[resolve_path(folder, p) for p in sandbox["read_only_paths"]],
                               writable_paths=[resolve_path(folder, p) for p in sandbox["writable_paths"]])
        self.limits = Limits(**values["limits"])
        self.retention = Retention(**values["retention"])
        self.dashboard_token: Optional[str] = values["dashboard"]["token"] or None
        self.max_agents: int = top["max_agents"]
        first = self.repositories[0]
        # The seed's names, for the first (with one repository: the only) repository.
        self.github_repo: str = first.repo
        self.repo_name = first.name
        self.base_repo_path = first.base_repo_path
        self.max_concurrent: int = first.max_concurrent
        self.clone_url: Optional[str] = first.clone_url
        self.base_branch: Optional[str] = first.base_branch
        self.api_url: str = github["api_url"].rstrip("/")
        self.trusted_roles: List[str] = list(github["trusted_roles"])
        self.allowed_users: List[str] = list(github["allowed_users"])
        self.labels = Labels(**values["labels"])
        self.telegram_bot_token: Optional[str] = telegram["bot_token"] or None
        self.telegram_chat_id: Optional[str] = str(telegram["chat_id"]) if telegram["chat_id"] else None
        self.telegram_api_base_url: str = telegram["api_base_url"]
        self.slack_bot_token: Optional[str] = slack["bot_token"] or None
        self.slack_channel_id: Optional[str] = slack["channel_id"] or None
        self.slack_api_base_url: str = slack["api_base_url"]
        self.telegram_allowed_user_ids: List[int] = list(telegram["allowed_user_ids"] or [])
        self.slack_allowed_user_ids: List[str] = list(slack["allowed_user_ids"] or [])
        self.pull_request_create: bool = values["pull_request"]["create"]
        self.pull_request_draft: bool = values["pull_request"]["draft"]
        self.pull_request_on_failed_checks: str = values["pull_request"]["on_failed_checks"]
        self.max_fix_rounds: int = top["max_fix_rounds"]
        self.follow_up = FollowUp(**values["follow_up"])
        self.setup_timeout_seconds: float = top["setup_timeout_seconds"]
        self.notification_timeout_seconds: float = top["notification_timeout_seconds"]
        self.state_file = resolve_path(folder, top["state_file"])
        self.log_dir = resolve_path(folder, top["log_dir"])

    def _executor(self, values: Dict[str, Any], host: str, override: Dict[str, Any]) -> Executor:
        longest_run = max(repository.longest_run(self.setup_timeout_seconds, self.max_fix_rounds)
                          for repository in self.repositories)
        return Executor(
            type=values["type"], broker_url=values["broker_url"], state_url=values["state_url"] or values["broker_url"],
            queue=values["queue"], host=host, slots=override.get("slots") or values["slots"] or self.max_agents,
            heartbeat_seconds=values["heartbeat_seconds"], lost_after_seconds=values["lost_after_seconds"],
            connect_timeout_seconds=values["connect_timeout_seconds"],
            # Above the longest run, or the broker hands a running task to a second worker.
            visibility_timeout_seconds=values["visibility_timeout_seconds"] or longest_run + 600)

    # ----------------------------------------------------------------------------------------

    @property
    def lock_file(self) -> Path:
        """One tick per machine at a time holds this (beside the state file)."""
        return self.state_file.parent / "orchestrator.lock"

    @property
    def poll_cache_file(self) -> Path:
        """ETags of the label poll, kept beside the state so an unchanged poll is a free 304."""
        return self.state_file.parent / "github-poll-cache.json"

    @property
    def secrets(self) -> List[str]:
        """Every token this config holds, for redaction."""
        passwords = [urlsplit(u).password for u in (self.executor.broker_url, self.executor.state_url) if u]
        return [s for s in (self.github_token, self.telegram_bot_token, self.slack_bot_token, self.dashboard_token,
                            *passwords) if s]

    def get_repo_path(self, index: int) -> Path:
        """Slot i of the first repository (the seed's call): `<base_repo_path>/<repo_name>_<i>`."""
        return self.repositories[0].slot_path(index)

    @property
    def multi_repo(self) -> bool:
        return len(self.repositories) > 1

    def repository(self, repo: Optional[str]) -> Repository:
        """The configured repository `owner/name` (GitHub compares names without case); None: the first."""
        if repo is None:
            return self.repositories[0]
        for candidate in self.repositories:
            if candidate.repo.casefold() == repo.casefold():
                return candidate
        raise OrchestratorError(f"{repo} is not a repository of this config ({self.path}); it has "
                                f"{', '.join(r.repo for r in self.repositories)}.")

    def issue_dir(self, repo: Optional[str], issue_number: int) -> Path:
        """The log folder of one issue: `logs/issue-<N>` with one repository (the seed's layout),
        `logs/<owner>/<name>/issue-<N>` with several."""
        if not self.multi_repo:
            return self.log_dir / f"issue-{issue_number}"
        repository = self.repository(repo)
        return self.log_dir / repository.owner / repository.name / f"issue-{issue_number}"


def print_error(exc: OrchestratorError) -> int:
    """What a main says on stderr for an expected error, one line each; returns its exit code."""
    lines = config_error_lines(exc) if isinstance(exc, ConfigError) else [f"error: {exc}"]
    for line in lines:
        print(line, file=sys.stderr)
    return exc.exit_code


def config_error_lines(exc: ConfigError) -> List[str]:
    """What a main prints to stderr for `exc`: each error, then each warning (a typo's warning often
    explains an error), one line each."""
    return [f"config error: {line}" for line in exc.errors] + [f"config warning: {line}" for line in exc.warnings]


def label_specs(config: Config) -> Dict[str, Tuple[str, str]]:
    """Configured label name -> (colour, description), for the labels that are turned on."""
    return {getattr(config.labels, key): spec for key, spec in LABEL_SPECS.items()
            if getattr(config.labels, key)}

"""Configuration: load config.json, apply environment overrides, validate everything at once.

Validation collects every problem and reports each as one line naming its key, the way borgmatic
does, so a user fixes a config in one pass instead of one traceback at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from lib import processes
from lib.models import ConfigError, OrchestratorError
from lib.redaction import register_secret
from lib.schema import (
    boolean,
    branch,
    chat_id,
    env_names,
    check_list,
    days,
    got_kind,
    host_list,
    host_overrides,
    int_at_least,
    label,
    label_ranks,
    one_of,
    optional,
    positive_number,
    redis_url,
    repo,
    roles,
    slack_user_ids,
    string,
    string_list,
    telegram_user_ids,
    unset_or,
    url,
)
from lib.settings import (
    DEFAULT_LABELS,
    DEFAULT_PRIORITIES,
    Agent,
    ClaudeSettings,
    Executor,
    FollowUp,
    Labels,
    Limits,
    Repository,
    Sandbox,
    Retention,
)
from lib.redaction import TOKEN_ENV_VARS

#: Folder holding run_orchestrator.py, claude_monitor.py and config.example.json.
PROJECT_DIR = Path(__file__).resolve().parent.parent

#: `--permission-mode` values the Claude Code CLI accepts.
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "manual", "plan")

#: Label key -> (colour, description) for the labels a tick creates.
LABEL_SPECS = {
    "ready": ("0e8a16", "Queued for Claude Code"),
    "working": ("fbca04", "Claude Code is working on this issue"),
    "completed": ("1d76db", "Claude Code finished this issue"),
    "failed": ("d93f0b", "Claude Code could not finish this issue"),
    "needs_input": ("d876e3", "Claude Code waits for an answer in the comments"),
}

#: Environment variables that win over the file, as (section, key, variable names in priority order).
ENV_OVERRIDES = (
    ("github", "token", ("GITHUB_TOKEN", "GH_TOKEN")),
    ("telegram", "bot_token", ("TELEGRAM_BOT_TOKEN",)),
    ("telegram", "chat_id", ("TELEGRAM_CHAT_ID",)),
    ("slack", "bot_token", ("SLACK_BOT_TOKEN",)),
    ("slack", "channel_id", ("SLACK_CHANNEL_ID",)),
    ("executor", "host", ("ORCHESTRATOR_HOST",)),
    ("dashboard", "token", ("ORCHESTRATOR_DASHBOARD_TOKEN",)),
)

# The schema: section -> key -> (checker, default). A checker returns an error text or None.
SCHEMA: Dict[str, Dict[str, tuple]] = {
    "github": {
        "token": (unset_or(string), None),
        "repo": (repo, None),
        "base_repo_path": (string, None),
        "max_concurrent": (int_at_least(1), 3),
        "api_url": (url, "https://api.github.com"),
        "clone_url": (unset_or(string), None),
        "base_branch": (optional(branch), None),
        "setup_command": (optional(string), None),
        "trusted_roles": (roles, ["admin", "maintain", "write"]),
        "allowed_users": (string_list, []),
    },
    "labels": {
        "ready": (label, DEFAULT_LABELS["ready"]),
        "working": (label, DEFAULT_LABELS["working"]),
        "completed": (label, DEFAULT_LABELS["completed"]),
        "failed": (label, DEFAULT_LABELS["failed"]),
        "needs_input": (optional(label), DEFAULT_LABELS["needs_input"]),
        "model_prefix": (optional(label), "claude-model:"),
        "priorities": (label_ranks, DEFAULT_PRIORITIES),
    },
    "telegram": {
        "bot_token": (unset_or(string), None),
        "chat_id": (unset_or(chat_id), None),
        "api_base_url": (url, "https://api.telegram.org/bot"),
        "allowed_user_ids": (telegram_user_ids, []),  # who may answer and command from Telegram
    },
    "slack": {
        "bot_token": (unset_or(string), None),
        "channel_id": (unset_or(string), None),
        "api_base_url": (url, "https://slack.com/api/"),
        "allowed_user_ids": (slack_user_ids, []),  # who may answer and command from Slack
    },
    "claude": {
        "executable": (string, "claude"),
        "timeout_seconds": (positive_number, 3600),
        "check_interval": (positive_number, 5),
        "model": (optional(string), None),
        "max_turns": (optional(int_at_least(1)), None),
        "max_budget_usd": (optional(positive_number), None),
        "permission_mode": (optional(one_of(PERMISSION_MODES)), None),
        "allowed_tools": (string_list, []),
        "disallowed_tools": (string_list, []),
        "extra_args": (string_list, []),
        "prompt_template": (optional(string), None),
        "idle_timeout_seconds": (optional(positive_number), None),
        "append_system_prompt": (optional(string), None),
        "input_wait_hours": (positive_number, 72),
        "max_retries": (int_at_least(0), 1),
        "inherit_tokens": (boolean, False),
        "kill_grace_seconds": (positive_number, processes.KILL_GRACE_SECONDS),
        "result_grace_seconds": (positive_number, 5.0),
    },
    "follow_up": {
        "enabled": (boolean, True),
        "trigger": (one_of(("any", "mention")), "any"),
        "mentions": (string_list, ["@claude", "/claude"]),
        "max_rounds": (int_at_least(0), 5),
        "max_ci_fixes": (int_at_least(0), 2),
        "max_conflict_fixes": (int_at_least(0), 2),
        "update_branch": (one_of(("on_conflict", "always", "never")), "on_conflict"),
    },
    "executor": {
        "type": (one_of(("local", "celery")), "local"),
        "broker_url": (optional(redis_url), None),
        "state_url": (optional(redis_url), None),
        "queue": (label, "claude-orchestrator"),
        "host": (optional(string), None),
        "slots": (optional(int_at_least(1)), None),
        "hosts": (host_overrides, {}),
        "heartbeat_seconds": (positive_number, 10),
        "lost_after_seconds": (positive_number, 60),
        "connect_timeout_seconds": (positive_number, 5),
        "visibility_timeout_seconds": (optional(positive_number), None),
    },
    "limits": {
        "daily_usd": (optional(positive_number), None),
        "monthly_usd": (optional(positive_number), None),
    },
    "dashboard": {
        "token": (unset_or(string), None),
    },
    "sandbox": {
        "mode": (one_of(("bwrap", "off")), "bwrap"),
        "read_only_paths": (string_list, []),
        "writable_paths": (string_list, []),
        "model_hosts": (host_list, []),
    },
    "agent": {
        "env": (env_names, []),
        "allowed_hosts": (host_list, []),
    },
    "retention": {key: (days, default) for key, default in vars(Retention()).items()},
    "pull_request": {
        "create": (boolean, True),
        "draft": (boolean, True),
        "on_failed_checks": (one_of(("draft", "none")), "draft"),
    },
}

TOP_LEVEL: Dict[str, tuple] = {
    "state_file": (string, "processing-state.json"),
    "log_dir": (string, "logs"),
    "setup_timeout_seconds": (positive_number, 1800),
    "notification_timeout_seconds": (positive_number, 10),
    "max_agents": (optional(int_at_least(1)), None),
    "validate": (check_list, []),
    "max_fix_rounds": (int_at_least(0), 2),
}

#: What a `repositories` entry may set. Those missing come from the `github` section (repo aside).
REPOSITORY_KEYS: Dict[str, Any] = {**{key: SCHEMA["github"][key][0] for key in
                                      ("repo", "base_repo_path", "max_concurrent", "clone_url", "base_branch",
                                       "setup_command")}, "validate": check_list}
#: The `claude` settings a repository may override.
REPOSITORY_CLAUDE_KEYS = ("model", "max_turns", "max_budget_usd", "timeout_seconds", "allowed_tools",
                          "permission_mode", "extra_args", "append_system_prompt")

REQUIRED: set = set()  # github.repo and github.base_repo_path: unless a repositories list gives them
#: Keys older versions read, accepted and ignored: (section, key) -> the warning.
LEGACY_KEYS = {("github", "repo_path"): "legacy key, ignored; slots live under github.base_repo_path"}
#: config.example.json's values that a user must replace, and how.
PLACEHOLDERS = {("github", "repo"): "owner/repository",
                ("github", "base_repo_path"): "/path/to/base/directory/for/repo/clones"}
PLACEHOLDER_HINTS = {"repo": "set it to the repository to work on (owner/name)",
                     "base_repo_path": "set it to a folder for the slot clones (it is created)"}
#: Keys holding a token: a config file with one must not be readable by other users.
TOKEN_KEYS = (("github", "token"), ("telegram", "bot_token"), ("slack", "bot_token"), ("dashboard", "token"))
OPTIONAL_SECTIONS = {"telegram", "slack", "labels", "claude", "pull_request", "follow_up", "executor", "limits",
                     "dashboard", "sandbox", "agent", "retention"}
#: A repository's own objects that override the global section of the same name, key by key.
REPOSITORY_SECTIONS = {"claude": REPOSITORY_CLAUDE_KEYS, "limits": ("daily_usd", "monthly_usd"),
                       "agent": ("env", "allowed_hosts")}


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


def _check_slot_folders(repositories: List[Dict[str, Any]], folder: Path, errors: List[str]) -> None:
    """Two repositories never share a slot folder (`<base_repo_path>/<name>_<i>`), nor one config twice."""
    seen: Dict[Any, str] = {}
    for entry in repositories:
        if entry["repo"].casefold() in seen:
            errors.append(f"{entry['where']}.repo: {entry['repo']} is listed twice"
                          f" (first at {seen[entry['repo'].casefold()]})")
            continue
        seen[entry["repo"].casefold()] = entry["where"]
        base = Config._resolve(folder, entry["base_repo_path"])
        slot = (os.path.normpath(base), entry["repo"].split("/")[1].casefold())
        if slot in seen:
            errors.append(f"{entry['where']}.base_repo_path: the slots of {entry['repo']} would be those of"
                          f" {seen[slot]} ({base}/{entry['repo'].split('/')[1]}_<i>); give one of them its own"
                          " base_repo_path")
        else:
            seen[slot] = entry["repo"]


def _placeholders_left(data: Dict[str, Any]) -> List[str]:
    """Values still as config.example.json has them: they name nothing real."""
    found = []
    for (section, key), placeholder in PLACEHOLDERS.items():
        given = data.get(section)
        if isinstance(given, dict) and given.get(key) == placeholder:
            found.append(f"{section}.{key}: still the example's placeholder {placeholder!r}; {PLACEHOLDER_HINTS[key]}")
    for i, entry in enumerate(data.get("repositories") or []):
        if isinstance(entry, dict) and entry.get("repo") == PLACEHOLDERS[("github", "repo")]:
            found.append(f"repositories[{i}].repo: still the example's placeholder {entry['repo']!r};"
                         f" {PLACEHOLDER_HINTS['repo']}")
    return found


def _reported(errors: List[str], *prefixes: str) -> bool:
    return any(error.startswith(prefixes) for error in errors)


def _refuse_token_vars(where: str, names: Any, errors: List[str]) -> None:
    tokens = [name for name in names or () if name in TOKEN_ENV_VARS] if isinstance(names, list) else []
    if tokens:
        what = "holds the orchestrator's token, which never enters" if len(tokens) == 1 else \
            "hold the orchestrator's tokens, which never enter"
        errors.append(f"{where}: {', '.join(tokens)} {what} the sandbox; remove {'it' if len(tokens) == 1 else 'them'}")


def _cross_checks(values: Dict[str, Dict[str, Any]], errors: List[str]) -> List[str]:
    """Problems no single key has: a notifier half configured, two lifecycle labels alike."""
    found = []
    for section, pair in (("telegram", ("bot_token", "chat_id")), ("slack", ("bot_token", "channel_id"))):
        given = [k for k in pair if values[section].get(k)]
        if len(given) == 1 and not _reported(errors, f"{section}.", f"{section}:"):
            missing = pair[1] if given[0] == pair[0] else pair[0]
            found.append(f"{section}.{missing}: is required when {section}.{given[0]} is set"
                         f" (or remove {section} to turn it off)")
    executor = values["executor"]
    if executor.get("type") == "celery" and not executor.get("broker_url") and not _reported(errors, "executor."):
        found.append("executor.broker_url: is required when executor.type is celery (redis://host:6379/0)")
    _refuse_token_vars("agent.env", values["agent"].get("env"), found)
    if values["sandbox"].get("mode") != "off" and values["claude"].get("inherit_tokens"):
        found.append("claude.inherit_tokens: cannot be true while the sandbox is on (the agent never gets the"
                     ' orchestrator\'s tokens); remove it, or set "sandbox": {"mode": "off"}')
    labels = values["labels"]
    names = [labels[k] for k in DEFAULT_LABELS if isinstance(labels.get(k), str)]
    if len(set(names)) != len(names):
        found.append(f"labels: every label must be different, got {', '.join(names)}")
    return found


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
                    warnings=self._readable_token_warnings(config_path, data))

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
        values = self._check_sections(data, errors)
        top = self._check_top_level(data, errors)
        for section, key, names in ENV_OVERRIDES:  # environment variables win over the file
            value = next((env[name] for name in names if env.get(name)), None)
            if value:
                values[section][key] = value
        github = values["github"]
        if not github.get("token") and use_gh_cli and github.get("api_url"):
            github["token"] = gh_auth_token(github["api_url"])
        if require_token and not github.get("token") and not _reported(errors, "github.token", "github:"):
            errors.append("github.token: no GitHub token: set github.token or GITHUB_TOKEN (or GH_TOKEN),"
                          " or log in with `gh auth login`")
        errors += _cross_checks(values, errors) + _placeholders_left(data)
        repositories = self._check_repositories(data, values, top, folder, errors)
        template_path = None
        template = values["claude"].get("prompt_template")
        if isinstance(template, str) and template.strip():
            template_path = self._resolve(folder, template)
            if not template_path.is_file():
                errors.append(f"claude.prompt_template: file not found: {template_path}")
        host = values["executor"]["host"] or socket.gethostname()
        override = (values["executor"]["hosts"] or {}).get(host, {})
        if values["executor"]["type"] == "celery" and "base_repo_path" in override:
            for entry in repositories:  # this host's slots live under its own folder
                entry["base_repo_path"] = override["base_repo_path"]
            _check_slot_folders(repositories, folder, errors)
        if errors:
            raise ConfigError(errors, self.warnings)
        self._assign(values, top, folder, template_path, repositories)
        self.executor = self._executor(values["executor"], host, override)
        if "log_dir" in override and self.executor.celery:
            self.log_dir = self._resolve(folder, override["log_dir"])
        register_secret(*self.secrets)

    def _check_sections(self, data: Dict[str, Any], errors: List[str]) -> Dict[str, Dict[str, Any]]:
        """Every section's values (defaults for what is missing); problems go to `errors`."""
        values: Dict[str, Dict[str, Any]] = {}
        for section, keys in SCHEMA.items():
            raw = data.get(section, {})
            if raw is None and section in OPTIONAL_SECTIONS:
                raw = {}
            values[section] = {key: default for key, (_, default) in keys.items()}
            if section == "github" and section not in data and "repositories" not in data:
                errors.append("github: section is required (token, repo, base_repo_path)")
                continue
            if not isinstance(raw, dict):
                errors.append(f"{section}: must be an object, {got_kind(raw)}")
                continue
            for key in raw:
                if key not in keys:
                    why = LEGACY_KEYS.get((section, key), "unknown key, ignored (a typo?)")
                    self.warnings.append(f"{section}.{key}: {why}")
            for key, (checker, _) in keys.items():
                if key not in raw:
                    if (section, key) in REQUIRED:
                        errors.append(f"{section}.{key}: is required")
                    continue
                problem = checker(raw[key])
                if problem:
                    errors.append(f"{section}.{key}: {problem}")
                    values[section][key] = None  # reported once; later checks skip it
                else:
                    values[section][key] = raw[key]
        return values

    def _check_repositories(self, data: Dict[str, Any], values: Dict[str, Dict[str, Any]], top: Dict[str, Any],
                            folder: Path, errors: List[str]) -> List[Dict[str, Any]]:
        """Each repository's settings, the `github` section's filling in what an entry leaves out; the
        seed's single `github.repo` is a list of one. Problems go to `errors`, with their path."""
        github = values["github"]
        raw = data.get("repositories")
        if raw is None:
            if github.get("repo") is None and not _reported(errors, "github.repo", "github:"):
                errors.append("github.repo: is required (or a repositories list)")
            entries = [({"repo": github.get("repo")}, "github")]
        elif not isinstance(raw, list) or not raw:
            errors.append(f"repositories: must be a non-empty list of objects, {got_kind(raw)}")
            return []
        else:
            if isinstance(data.get("github"), dict) and "repo" in data["github"]:
                errors.append("github.repo: give either github.repo or a repositories list, not both")
            entries = [(entry, f"repositories[{i}]") for i, entry in enumerate(raw)]
        found = [self._check_repository(entry, where, github, values, top.get("validate") or [], errors)
                 for entry, where in entries]
        found = [entry for entry in found if entry is not None]
        _check_slot_folders(found, folder, errors)
        if top.get("max_agents") is None and found:
            top["max_agents"] = sum(entry["max_concurrent"] or 0 for entry in found) or 1
        return found

    def _check_repository(self, entry: Any, where: str, github: Dict[str, Any], sections: Dict[str, Dict[str, Any]],
                          validate: List[Dict[str, Any]], errors: List[str]) -> Optional[Dict[str, Any]]:
        if not isinstance(entry, dict):
            errors.append(f"{where}: must be an object with at least \"repo\", {got_kind(entry)}")
            return None
        single = where == "github"  # the seed's form: github's own keys, checked with that section
        settings = {key: github.get(key) for key in REPOSITORY_KEYS}
        settings["validate"] = validate
        overrides = {} if single else entry
        for key in entry if not single else ():
            if key not in REPOSITORY_KEYS and key not in REPOSITORY_SECTIONS:
                self.warnings.append(f"{where}.{key}: unknown key, ignored (a typo?)")
        for key, checker in REPOSITORY_KEYS.items():
            if key in overrides:
                problem = checker(overrides[key]) if overrides[key] is not None or key == "repo" else None
                if problem:
                    errors.append(f"{where}.{key}: {problem}")
                    return None
                settings[key] = overrides[key]
        if not single and "repo" not in entry:
            errors.append(f"{where}.repo: is required")
            return None
        if settings["repo"] is None:
            return None
        if settings["base_repo_path"] is None:
            if not _reported(errors, "github.base_repo_path", "github:"):
                errors.append(f"{where}.base_repo_path: is required" + ("" if single else
                                                                          " (or set github.base_repo_path)"))
            return None
        for section, keys in REPOSITORY_SECTIONS.items():  # the global section, then the repository's own keys
            settings[section] = {**(sections[section] if section != "limits" else {}),
                                 **self._check_repository_section(entry.get(section, {}) if not single else {},
                                                                  where, section, keys, errors)}
        own_env = entry.get("agent", {}).get("env") if not single and isinstance(entry.get("agent"), dict) else None
        _refuse_token_vars(f"{where}.agent.env", own_env, errors)
        settings["where"] = where
        return settings

    def _check_repository_section(self, raw: Any, where: str, section: str, keys: Sequence[str],
                                  errors: List[str]) -> Dict[str, Any]:
        """A repository's own `claude`, `limits` or `agent` object: the `keys` of that section a repository may
        set, each checked as the global section's is."""
        if not isinstance(raw, dict):
            errors.append(f"{where}.{section}: must be an object, {got_kind(raw)}")
            return {}
        checked = {}
        for key, value in raw.items():
            if key not in keys:
                self.warnings.append(f"{where}.{section}.{key}: not a per-repository setting, ignored (these are:"
                                     f" {', '.join(keys)})")
                continue
            problem = SCHEMA[section][key][0](value)
            if problem:
                errors.append(f"{where}.{section}.{key}: {problem}")
            else:
                checked[key] = value
        return checked

    def _check_top_level(self, data: Dict[str, Any], errors: List[str]) -> Dict[str, Any]:
        top: Dict[str, Any] = {}
        for key, (checker, default) in TOP_LEVEL.items():
            top[key] = data.get(key, default)
            problem = checker(top[key])
            if problem:
                errors.append(f"{key}: {problem}")
        for key in data:
            if key not in SCHEMA and key not in TOP_LEVEL and key != "repositories":
                self.warnings.append(f"{key}: unknown key, ignored (a typo?)")
        return top

    def _assign(self, values: Dict[str, Dict[str, Any]], top: Dict[str, Any], folder: Path,
                template_path: Optional[Path], repositories: List[Dict[str, Any]]) -> None:
        github, telegram, slack = values["github"], values["telegram"], values["slack"]
        self.github_token: Optional[str] = github["token"] or None
        self.claude = ClaudeSettings(**{**values["claude"], "prompt_template": template_path})
        self.repositories: List[Repository] = [Repository(
            repo=entry["repo"], base_repo_path=self._resolve(folder, entry["base_repo_path"]),
            max_concurrent=entry["max_concurrent"], clone_url=entry["clone_url"], base_branch=entry["base_branch"],
            setup_command=entry["setup_command"], validate=list(entry["validate"] or []),
            claude=ClaudeSettings(**{**entry["claude"], "prompt_template": template_path}),
            limits=Limits(**entry["limits"]), agent=Agent(**entry["agent"]))
            for entry in repositories]
        sandbox = values["sandbox"]
        self.sandbox = Sandbox(mode=sandbox["mode"], model_hosts=list(sandbox["model_hosts"]),
                               read_only_paths=[self._resolve(folder, p) for p in sandbox["read_only_paths"]],
                               writable_paths=[self._resolve(folder, p) for p in sandbox["writable_paths"]])
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
        self.state_file = self._resolve(folder, top["state_file"])
        self.log_dir = self._resolve(folder, top["log_dir"])

    def _executor(self, values: Dict[str, Any], host: str, override: Dict[str, Any]) -> Executor:
        longest_run = max(2 * 300 + self.setup_timeout_seconds + repository.claude.timeout_seconds * (
            repository.claude.max_retries + 1) + sum(check.get("timeout_seconds", 1800) for check in repository.validate)
            * (self.max_fix_rounds + 1) for repository in self.repositories)
        return Executor(
            type=values["type"], broker_url=values["broker_url"], state_url=values["state_url"] or values["broker_url"],
            queue=values["queue"], host=host, slots=override.get("slots") or values["slots"] or self.max_agents,
            heartbeat_seconds=values["heartbeat_seconds"], lost_after_seconds=values["lost_after_seconds"],
            connect_timeout_seconds=values["connect_timeout_seconds"],
            # Above the longest run, or the broker hands a running task to a second worker.
            visibility_timeout_seconds=values["visibility_timeout_seconds"] or longest_run + 600)

    @staticmethod
    def _resolve(folder: Path, value: str) -> Path:
        """Relative paths are taken from the config file's folder, never the current directory."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else folder / path

    @staticmethod
    def _readable_token_warnings(path: Path, data: Any) -> List[str]:
        """The warning for a config file, parsed into `data`, that holds a token other users can read."""
        holds_token = isinstance(data, dict) and any(
            isinstance(data.get(section), dict) and data[section].get(key) for section, key in TOKEN_KEYS
        )
        if not holds_token:
            return []
        try:
            mode = path.stat().st_mode
        except OSError:
            return []
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            return [f"{path}: holds a token but is readable by other users; run chmod 600 {path}"]
        return []

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

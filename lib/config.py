"""Configuration: load config.json, apply environment overrides, validate everything at once.

Validation collects every problem and reports each as one line naming its key, the way borgmatic
does, so a user fixes a config in one pass instead of one traceback at a time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from lib import processes
from lib.models import ConfigError
from lib.redaction import register_secret

#: Folder holding run_orchestrator.py, claude_monitor.py and config.example.json.
PROJECT_DIR = Path(__file__).resolve().parent.parent

#: Roles GitHub reports in `role_name` of the collaborator-permission endpoint.
GITHUB_ROLES = ("admin", "maintain", "write", "triage", "read")

#: `--permission-mode` values the Claude Code CLI accepts.
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "manual", "plan")

DEFAULT_LABELS = {
    "ready": "ready-for-claude",
    "working": "claude-working",
    "completed": "claude-completed",
    "failed": "claude-failed",
    "needs_input": "claude-needs-input",
}

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
)

_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_URL_RE = re.compile(r"^https?://[^\s/]+(/\S*)?$")
# git check-ref-format in short: no spaces, control characters, "..", or the special characters.
_BAD_REF_RE = re.compile(r"[\s~^:?*\[\\\x00-\x1f\x7f]|\.\.|@\{|^[-/.]|[/.]$|\.lock$|//")


@dataclass(frozen=True)
class Labels:
    ready: str = DEFAULT_LABELS["ready"]
    working: str = DEFAULT_LABELS["working"]
    completed: str = DEFAULT_LABELS["completed"]
    failed: str = DEFAULT_LABELS["failed"]
    needs_input: Optional[str] = DEFAULT_LABELS["needs_input"]  # None: no needs-input label


@dataclass(frozen=True)
class ClaudeSettings:
    executable: str = "claude"
    timeout_seconds: float = 3600
    check_interval: float = 5
    model: Optional[str] = None
    max_turns: Optional[int] = None
    max_budget_usd: Optional[float] = None
    permission_mode: Optional[str] = None
    allowed_tools: List[str] = field(default_factory=list)
    disallowed_tools: List[str] = field(default_factory=list)
    extra_args: List[str] = field(default_factory=list)
    prompt_template: Optional[Path] = None
    idle_timeout_seconds: Optional[float] = None
    input_wait_hours: float = 72
    max_retries: int = 1
    inherit_tokens: bool = False
    kill_grace_seconds: float = processes.KILL_GRACE_SECONDS
    result_grace_seconds: float = 5.0


# The schema: section -> key -> (checker, default). A checker returns an error text or None.
Checker = Callable[[Any], Optional[str]]


def _got(value: Any) -> str:
    return f"got {json.dumps(value)}" if not isinstance(value, str) else f"got {value!r}"


def _got_kind(value: Any) -> str:
    """`_got` for what should be an object: a list is named, not printed, as it may be a whole config,
    tokens included."""
    return "got a list" if isinstance(value, list) else _got(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string(value: Any) -> Optional[str]:
    return None if isinstance(value, str) and value.strip() else f"must be a non-empty string, {_got(value)}"


def _optional(checker: Checker) -> Checker:
    return lambda value: None if value is None else checker(value)


def _unset_or(checker: Checker) -> Checker:
    """For tokens and ids: null or "" (config.example.json's placeholder) means not configured."""
    return lambda value: None if value is None or value == "" else checker(value)


def _int_at_least(minimum: int) -> Checker:
    return lambda v: None if _is_int(v) and v >= minimum else f"must be an integer >= {minimum}, {_got(v)}"


def _positive_number(value: Any) -> Optional[str]:
    return None if _is_number(value) and value > 0 else f"must be a number > 0, {_got(value)}"


def _boolean(value: Any) -> Optional[str]:
    return None if isinstance(value, bool) else f"must be true or false, {_got(value)}"


def _url(value: Any) -> Optional[str]:
    if isinstance(value, str) and _URL_RE.match(value):
        return None
    return f"must be an http(s) URL, {_got(value)}"


def _string_list(value: Any) -> Optional[str]:
    if isinstance(value, list) and all(isinstance(item, str) and item for item in value):
        return None
    return f"must be a list of non-empty strings, {_got(value)}"


def _one_of(choices) -> Checker:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, {_got(v)}"


def _repo(value: Any) -> Optional[str]:
    if isinstance(value, str) and _REPO_RE.match(value):
        return None
    return f'must be "owner/name", {_got(value)}'


def _branch(value: Any) -> Optional[str]:
    if isinstance(value, str) and value and not _BAD_REF_RE.search(value):
        return None
    return f"must be a valid git branch name, {_got(value)}"


def _roles(value: Any) -> Optional[str]:
    if isinstance(value, list) and value and all(role in GITHUB_ROLES for role in value):
        return None
    return f"must be a non-empty list of roles from {', '.join(GITHUB_ROLES)}, {_got(value)}"


def _chat_id(value: Any) -> Optional[str]:
    if _is_int(value) or (isinstance(value, str) and value.strip()):
        return None
    return f"must be a chat id (number or @channelname), {_got(value)}"


def _label(value: Any) -> Optional[str]:
    if isinstance(value, str) and value.strip() and len(value) <= 50:
        return None
    return f"must be a label name of 1 to 50 characters, {_got(value)}"


SCHEMA: Dict[str, Dict[str, tuple]] = {
    "github": {
        "token": (_unset_or(_string), None),
        "repo": (_repo, None),
        "base_repo_path": (_string, None),
        "max_concurrent": (_int_at_least(1), 3),
        "api_url": (_url, "https://api.github.com"),
        "clone_url": (_unset_or(_string), None),
        "base_branch": (_optional(_branch), None),
        "trusted_roles": (_roles, ["admin", "maintain", "write"]),
        "allowed_users": (_string_list, []),
    },
    "labels": {
        "ready": (_label, DEFAULT_LABELS["ready"]),
        "working": (_label, DEFAULT_LABELS["working"]),
        "completed": (_label, DEFAULT_LABELS["completed"]),
        "failed": (_label, DEFAULT_LABELS["failed"]),
        "needs_input": (_optional(_label), DEFAULT_LABELS["needs_input"]),
    },
    "telegram": {
        "bot_token": (_unset_or(_string), None),
        "chat_id": (_unset_or(_chat_id), None),
        "api_base_url": (_url, "https://api.telegram.org/bot"),
    },
    "slack": {
        "bot_token": (_unset_or(_string), None),
        "channel_id": (_unset_or(_string), None),
        "api_base_url": (_url, "https://slack.com/api/"),
    },
    "claude": {
        "executable": (_string, "claude"),
        "timeout_seconds": (_positive_number, 3600),
        "check_interval": (_positive_number, 5),
        "model": (_optional(_string), None),
        "max_turns": (_optional(_int_at_least(1)), None),
        "max_budget_usd": (_optional(_positive_number), None),
        "permission_mode": (_optional(_one_of(PERMISSION_MODES)), None),
        "allowed_tools": (_string_list, []),
        "disallowed_tools": (_string_list, []),
        "extra_args": (_string_list, []),
        "prompt_template": (_optional(_string), None),
        "idle_timeout_seconds": (_optional(_positive_number), None),
        "input_wait_hours": (_positive_number, 72),
        "max_retries": (_int_at_least(0), 1),
        "inherit_tokens": (_boolean, False),
        "kill_grace_seconds": (_positive_number, processes.KILL_GRACE_SECONDS),
        "result_grace_seconds": (_positive_number, 5.0),
    },
    "pull_request": {
        "create": (_boolean, True),
        "draft": (_boolean, True),
    },
}

TOP_LEVEL: Dict[str, tuple] = {
    "state_file": (_string, "processing-state.json"),
    "log_dir": (_string, "logs"),
    "setup_timeout_seconds": (_positive_number, 1800),
    "notification_timeout_seconds": (_positive_number, 10),
}

REQUIRED = {("github", "repo"), ("github", "base_repo_path")}
#: Keys older versions read, accepted and ignored: (section, key) -> the warning.
LEGACY_KEYS = {("github", "repo_path"): "legacy key, ignored; slots live under github.base_repo_path"}
#: Keys holding a token: a config file with one must not be readable by other users.
TOKEN_KEYS = (("github", "token"), ("telegram", "bot_token"), ("slack", "bot_token"))
OPTIONAL_SECTIONS = {"telegram", "slack", "labels", "claude", "pull_request"}


def default_config_path(env: Optional[Mapping[str, str]] = None) -> Path:
    """`ORCHESTRATOR_CONFIG`, else config.json beside the scripts (cron runs from anywhere)."""
    env = os.environ if env is None else env
    return Path(env.get("ORCHESTRATOR_CONFIG") or PROJECT_DIR / "config.json")


def gh_auth_token(timeout: float = 10) -> Optional[str]:
    """The token `gh auth login` stored, when the gh CLI is installed and logged in."""
    gh = shutil.which("gh")
    if not gh:
        return None
    try:
        done = processes.run([gh, "auth", "token"], cwd="/", timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    token = done.stdout.strip()
    return token if done.returncode == 0 and token else None


def _reported(errors: List[str], *prefixes: str) -> bool:
    return any(error.startswith(prefixes) for error in errors)


def _cross_checks(values: Dict[str, Dict[str, Any]], errors: List[str]) -> List[str]:
    """Problems no single key has: a notifier half configured, two lifecycle labels alike."""
    found = []
    for section, pair in (("telegram", ("bot_token", "chat_id")), ("slack", ("bot_token", "channel_id"))):
        given = [k for k in pair if values[section].get(k)]
        if len(given) == 1 and not _reported(errors, f"{section}.", f"{section}:"):
            missing = pair[1] if given[0] == pair[0] else pair[0]
            found.append(f"{section}.{missing}: is required when {section}.{given[0]} is set"
                         f" (or remove {section} to turn it off)")
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
                               f" {_got_kind(data)}"], self.warnings)
        errors: List[str] = []
        values = self._check_sections(data, errors)
        top = self._check_top_level(data, errors)
        for section, key, names in ENV_OVERRIDES:  # environment variables win over the file
            value = next((env[name] for name in names if env.get(name)), None)
            if value:
                values[section][key] = value
        github = values["github"]
        if not github.get("token") and use_gh_cli:
            github["token"] = gh_auth_token()
        if require_token and not github.get("token") and not _reported(errors, "github.token", "github:"):
            errors.append("github.token: no GitHub token: set github.token or GITHUB_TOKEN (or GH_TOKEN),"
                          " or log in with `gh auth login`")
        errors += _cross_checks(values, errors)
        template_path = None
        template = values["claude"].get("prompt_template")
        if isinstance(template, str) and template.strip():
            template_path = self._resolve(folder, template)
            if not template_path.is_file():
                errors.append(f"claude.prompt_template: file not found: {template_path}")
        if errors:
            raise ConfigError(errors, self.warnings)
        self._assign(values, top, folder, template_path)
        register_secret(*self.secrets)

    def _check_sections(self, data: Dict[str, Any], errors: List[str]) -> Dict[str, Dict[str, Any]]:
        """Every section's values (defaults for what is missing); problems go to `errors`."""
        values: Dict[str, Dict[str, Any]] = {}
        for section, keys in SCHEMA.items():
            raw = data.get(section, {})
            if raw is None and section in OPTIONAL_SECTIONS:
                raw = {}
            values[section] = {key: default for key, (_, default) in keys.items()}
            if section == "github" and section not in data:
                errors.append("github: section is required (token, repo, base_repo_path)")
                continue
            if not isinstance(raw, dict):
                errors.append(f"{section}: must be an object, {_got_kind(raw)}")
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

    def _check_top_level(self, data: Dict[str, Any], errors: List[str]) -> Dict[str, Any]:
        top: Dict[str, Any] = {}
        for key, (checker, default) in TOP_LEVEL.items():
            top[key] = data.get(key, default)
            problem = checker(top[key])
            if problem:
                errors.append(f"{key}: {problem}")
        for key in data:
            if key not in SCHEMA and key not in TOP_LEVEL:
                self.warnings.append(f"{key}: unknown key, ignored (a typo?)")
        return top

    def _assign(self, values: Dict[str, Dict[str, Any]], top: Dict[str, Any], folder: Path,
                template_path: Optional[Path]) -> None:
        github, telegram, slack = values["github"], values["telegram"], values["slack"]
        self.github_token: Optional[str] = github["token"] or None
        self.github_repo: str = github["repo"]
        self.repo_name = self.github_repo.split("/")[1]
        self.base_repo_path = self._resolve(folder, github["base_repo_path"])
        self.max_concurrent: int = github["max_concurrent"]
        self.api_url: str = github["api_url"].rstrip("/")
        self.clone_url: Optional[str] = github["clone_url"]
        self.base_branch: Optional[str] = github["base_branch"]
        self.trusted_roles: List[str] = list(github["trusted_roles"])
        self.allowed_users: List[str] = list(github["allowed_users"])
        self.labels = Labels(**values["labels"])
        self.telegram_bot_token: Optional[str] = telegram["bot_token"] or None
        self.telegram_chat_id: Optional[str] = str(telegram["chat_id"]) if telegram["chat_id"] else None
        self.telegram_api_base_url: str = telegram["api_base_url"]
        self.slack_bot_token: Optional[str] = slack["bot_token"] or None
        self.slack_channel_id: Optional[str] = slack["channel_id"] or None
        self.slack_api_base_url: str = slack["api_base_url"]
        self.claude = ClaudeSettings(**{**values["claude"], "prompt_template": template_path})
        self.pull_request_create: bool = values["pull_request"]["create"]
        self.pull_request_draft: bool = values["pull_request"]["draft"]
        self.setup_timeout_seconds: float = top["setup_timeout_seconds"]
        self.notification_timeout_seconds: float = top["notification_timeout_seconds"]
        self.state_file = self._resolve(folder, top["state_file"])
        self.log_dir = self._resolve(folder, top["log_dir"])

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
        return [s for s in (self.github_token, self.telegram_bot_token, self.slack_bot_token) if s]

    def get_repo_path(self, agent_index: int) -> Path:
        """Slot i is its own clone: `<base_repo_path>/<repo_name>_<i>`."""
        return self.base_repo_path / f"{self.repo_name}_{agent_index}"


def config_error_lines(exc: ConfigError) -> List[str]:
    """What a main prints to stderr for `exc`: each error, then each warning (a typo's warning often
    explains an error), one line each."""
    return [f"config error: {line}" for line in exc.errors] + [f"config warning: {line}" for line in exc.warnings]


def label_specs(config: Config) -> Dict[str, Tuple[str, str]]:
    """Configured label name -> (colour, description), for the labels that are turned on."""
    return {getattr(config.labels, key): spec for key, spec in LABEL_SPECS.items()
            if getattr(config.labels, key)}

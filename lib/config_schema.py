"""What config.json may hold, and the checks of a parsed config that go beyond one value.

* The tables: `SCHEMA` (section -> key -> (checker, default)), `TOP_LEVEL`, what a `repositories`
  entry may set (`REPOSITORY_KEYS`, `REPOSITORY_SECTIONS`), `ENV_OVERRIDES`, the example's
  `PLACEHOLDERS`, `TOKEN_KEYS`, `LEGACY_KEYS`, `OPTIONAL_SECTIONS`.
* `check_sections` and `check_top_level`: every value checked, defaults for what is missing;
  `check_repositories`: each repository's settings, the `github` section filling in what an entry
  leaves out, and no two repositories in one slot folder (`check_slot_folders`).
* `cross_checks` and `placeholders_left`: problems no single key has.

Each problem is one line, `path: what is wrong`, appended to `errors` (a warning to `warnings`).
The checkers of one value are lib/schema.py's; lib/config.py's Config runs these and builds the settings.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from lib import processes
from lib.redaction import TOKEN_ENV_VARS
from lib.schema import (
    boolean,
    branch,
    chat_id,
    check_list,
    days,
    env_names,
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
from lib.settings import DEFAULT_LABELS, DEFAULT_PRIORITIES, Retention

#: `--permission-mode` values the Claude Code CLI accepts.
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "manual", "plan")

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


def resolve_path(folder: Path, value: str) -> Path:
    """Relative paths are taken from the config file's folder, never the current directory."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


def reported(errors: List[str], *prefixes: str) -> bool:
    """Whether a problem of one of these paths is already in `errors` (each is reported once)."""
    return any(error.startswith(prefixes) for error in errors)


def readable_token_warnings(path: Path, data: Any) -> List[str]:
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


# ------------------------------------------------------------------------------------------------
# The sections and the top level
# ------------------------------------------------------------------------------------------------


def check_sections(data: Dict[str, Any], errors: List[str], warnings: List[str]) -> Dict[str, Dict[str, Any]]:
    """Every section's values (defaults for what is missing)."""
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
                warnings.append(f"{section}.{key}: {why}")
        for key, (checker, _) in keys.items():
            if key not in raw:
                continue
            problem = checker(raw[key])
            if problem:
                errors.append(f"{section}.{key}: {problem}")
                values[section][key] = None  # reported once; later checks skip it
            else:
                values[section][key] = raw[key]
    return values


def check_top_level(data: Dict[str, Any], errors: List[str], warnings: List[str]) -> Dict[str, Any]:
    top: Dict[str, Any] = {}
    for key, (checker, default) in TOP_LEVEL.items():
        top[key] = data.get(key, default)
        problem = checker(top[key])
        if problem:
            errors.append(f"{key}: {problem}")
    for key in data:
        if key not in SCHEMA and key not in TOP_LEVEL and key != "repositories":
            warnings.append(f"{key}: unknown key, ignored (a typo?)")
    return top


# ------------------------------------------------------------------------------------------------
# Repositories
# ------------------------------------------------------------------------------------------------


def check_repositories(data: Dict[str, Any], values: Dict[str, Dict[str, Any]], top: Dict[str, Any], folder: Path,
                       errors: List[str], warnings: List[str]) -> List[Dict[str, Any]]:
    """Each repository's settings, the `github` section's filling in what an entry leaves out; the
    seed's single `github.repo` is a list of one. Sets `top["max_agents"]` when the config does not."""
    github = values["github"]
    raw = data.get("repositories")
    if raw is None:
        if github.get("repo") is None and not reported(errors, "github.repo", "github:"):
            errors.append("github.repo: is required (or a repositories list)")
        entries = [({"repo": github.get("repo")}, "github")]
    elif not isinstance(raw, list) or not raw:
        errors.append(f"repositories: must be a non-empty list of objects, {got_kind(raw)}")
        return []
    else:
        if isinstance(data.get("github"), dict) and "repo" in data["github"]:
            errors.append("github.repo: give either github.repo or a repositories list, not both")
        entries = [(entry, f"repositories[{i}]") for i, entry in enumerate(raw)]
    found = [_check_repository(entry, where, github, values, top.get("validate") or [], errors, warnings)
             for entry, where in entries]
    found = [entry for entry in found if entry is not None]
    check_slot_folders(found, folder, errors)
    if top.get("max_agents") is None and found:
        top["max_agents"] = sum(entry["max_concurrent"] or 0 for entry in found) or 1
    return found


def _check_repository(entry: Any, where: str, github: Dict[str, Any], sections: Dict[str, Dict[str, Any]],
                      validate: List[Dict[str, Any]], errors: List[str],
                      warnings: List[str]) -> Optional[Dict[str, Any]]:
    if not isinstance(entry, dict):
        errors.append(f"{where}: must be an object with at least \"repo\", {got_kind(entry)}")
        return None
    single = where == "github"  # the seed's form: github's own keys, checked with that section
    settings = {key: github.get(key) for key in REPOSITORY_KEYS}
    settings["validate"] = validate
    overrides = {} if single else entry
    for key in entry if not single else ():
        if key not in REPOSITORY_KEYS and key not in REPOSITORY_SECTIONS:
            warnings.append(f"{where}.{key}: unknown key, ignored (a typo?)")
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
        if not reported(errors, "github.base_repo_path", "github:"):
            errors.append(f"{where}.base_repo_path: is required" + ("" if single else
                                                                      " (or set github.base_repo_path)"))
        return None
    for section, keys in REPOSITORY_SECTIONS.items():  # the global section, then the repository's own keys
        own = entry.get(section, {}) if not single else {}
        settings[section] = {**(sections[section] if section != "limits" else {}),
                             **_check_repository_section(own, where, section, keys, errors, warnings)}
    own_env = entry.get("agent", {}).get("env") if not single and isinstance(entry.get("agent"), dict) else None
    _refuse_token_vars(f"{where}.agent.env", own_env, errors)
    settings["where"] = where
    return settings


def _check_repository_section(raw: Any, where: str, section: str, keys: Sequence[str], errors: List[str],
                              warnings: List[str]) -> Dict[str, Any]:
    """A repository's own `claude`, `limits` or `agent` object: the `keys` of that section a repository may
    set, each checked as the global section's is."""
    if not isinstance(raw, dict):
        errors.append(f"{where}.{section}: must be an object, {got_kind(raw)}")
        return {}
    checked = {}
    for key, value in raw.items():
        if key not in keys:
            warnings.append(f"{where}.{section}.{key}: not a per-repository setting, ignored (these are:"
                            f" {', '.join(keys)})")
            continue
        problem = SCHEMA[section][key][0](value)
        if problem:
            errors.append(f"{where}.{section}.{key}: {problem}")
        else:
            checked[key] = value
    return checked


def check_slot_folders(repositories: List[Dict[str, Any]], folder: Path, errors: List[str]) -> None:
    """Two repositories never share a slot folder (`<base_repo_path>/<name>_<i>`), nor one config twice."""
    seen: Dict[Any, str] = {}
    for entry in repositories:
        if entry["repo"].casefold() in seen:
            errors.append(f"{entry['where']}.repo: {entry['repo']} is listed twice"
                          f" (first at {seen[entry['repo'].casefold()]})")
            continue
        seen[entry["repo"].casefold()] = entry["where"]
        base = resolve_path(folder, entry["base_repo_path"])
        slot = (os.path.normpath(base), entry["repo"].split("/")[1].casefold())
        if slot in seen:
            errors.append(f"{entry['where']}.base_repo_path: the slots of {entry['repo']} would be those of"
                          f" {seen[slot]} ({base}/{entry['repo'].split('/')[1]}_<i>); give one of them its own"
                          " base_repo_path")
        else:
            seen[slot] = entry["repo"]


# ------------------------------------------------------------------------------------------------
# Across keys
# ------------------------------------------------------------------------------------------------


def placeholders_left(data: Dict[str, Any]) -> List[str]:
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


def _refuse_token_vars(where: str, names: Any, errors: List[str]) -> None:
    tokens = [name for name in names or () if name in TOKEN_ENV_VARS] if isinstance(names, list) else []
    if tokens:
        what = "holds the orchestrator's token, which never enters" if len(tokens) == 1 else \
            "hold the orchestrator's tokens, which never enter"
        errors.append(f"{where}: {', '.join(tokens)} {what} the sandbox; remove {'it' if len(tokens) == 1 else 'them'}")


def cross_checks(values: Dict[str, Dict[str, Any]], errors: List[str]) -> List[str]:
    """Problems no single key has: a notifier half configured, two lifecycle labels alike."""
    found = []
    for section, pair in (("telegram", ("bot_token", "chat_id")), ("slack", ("bot_token", "channel_id"))):
        given = [k for k in pair if values[section].get(k)]
        if len(given) == 1 and not reported(errors, f"{section}.", f"{section}:"):
            missing = pair[1] if given[0] == pair[0] else pair[0]
            found.append(f"{section}.{missing}: is required when {section}.{given[0]} is set"
                         f" (or remove {section} to turn it off)")
    executor = values["executor"]
    if executor.get("type") == "celery" and not executor.get("broker_url") and not reported(errors, "executor."):
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

"""Checkers for configuration values: each takes a value and returns what is wrong with it, or None.

The message completes a sentence that starts with the key's path: `github.max_concurrent: must be
an integer >= 1, got 0`. A value is quoted as the user wrote it, except a list where an object was
expected, which may be a whole config, tokens included.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

#: Roles GitHub reports in `role_name` of the collaborator-permission endpoint.
GITHUB_ROLES = ("admin", "maintain", "write", "triage", "read")

_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_URL_RE = re.compile(r"^https?://[^\s/]+(/\S*)?$")
# git check-ref-format in short: no spaces, control characters, "..", or the special characters.
_BAD_REF_RE = re.compile(r"[\s~^:?*\[\\\x00-\x1f\x7f]|\.\.|@\{|^[-/.]|[/.]$|\.lock$|//")
# A host the sandbox may reach: a name (a leading "*." for its subdomains) or an IP, and an optional port.
_HOST_RE = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: A checker: the value -> what is wrong with it, or None.
Checker = Callable[[Any], Optional[str]]


def got(value: Any) -> str:
    return f"got {json.dumps(value)}" if not isinstance(value, str) else f"got {value!r}"


def got_kind(value: Any) -> str:
    """`got` for what should be an object: a list is named, not printed, as it may be a whole config,
    tokens included."""
    return "got a list" if isinstance(value, list) else got(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def string(value: Any) -> Optional[str]:
    return None if isinstance(value, str) and value.strip() else f"must be a non-empty string, {got(value)}"


def optional(checker: Checker) -> Checker:
    return lambda value: None if value is None else checker(value)


def unset_or(checker: Checker) -> Checker:
    """For tokens and ids: null or "" (config.example.json's placeholder) means not configured."""
    return lambda value: None if value is None or value == "" else checker(value)


def int_at_least(minimum: int) -> Checker:
    return lambda v: None if is_int(v) and v >= minimum else f"must be an integer >= {minimum}, {got(v)}"


def positive_number(value: Any) -> Optional[str]:
    return None if is_number(value) and value > 0 else f"must be a number > 0, {got(value)}"


def boolean(value: Any) -> Optional[str]:
    return None if isinstance(value, bool) else f"must be true or false, {got(value)}"


def url(value: Any) -> Optional[str]:
    if not (isinstance(value, str) and _URL_RE.match(value)):
        return f"must be an http(s) URL, {got(value)}"
    try:
        urlsplit(value).port
    except ValueError:
        return f"must be an http(s) URL whose port is a number from 0 to 65535, {got(value)}"
    return None


def redis_url(value: Any) -> Optional[str]:
    if isinstance(value, str) and re.match(r"^rediss?://[^\s/]+(/\d+)?/?$", value):
        return None
    shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", value) if isinstance(value, str) else value
    return f"must be a redis:// or rediss:// URL (redis://[:password@]host[:port][/db]), {got(shown)}"


def host_overrides(value: Any) -> Optional[str]:
    """`{"host-name": {"base_repo_path": "...", "slots": 2, "log_dir": "..."}}`."""
    if not isinstance(value, dict):
        return f"must be an object of host names and their settings, {got_kind(value)}"
    for host, settings in value.items():
        if not isinstance(settings, dict):
            return f"[{host!r}] must be an object (base_repo_path, slots, log_dir), {got_kind(settings)}"
        unknown = set(settings) - {"base_repo_path", "slots", "log_dir"}
        if unknown:
            return f"[{host!r}] has unknown keys {sorted(unknown)} (base_repo_path, slots and log_dir are known)"
        for key in ("base_repo_path", "log_dir"):
            if key in settings and string(settings[key]):
                return f"[{host!r}].{key} {string(settings[key])}"
        if "slots" in settings and int_at_least(1)(settings["slots"]):
            return f"[{host!r}].slots {int_at_least(1)(settings['slots'])}"
    return None


def string_list(value: Any) -> Optional[str]:
    if isinstance(value, list) and all(isinstance(item, str) and item for item in value):
        return None
    return f"must be a list of non-empty strings, {got(value)}"


def one_of(choices) -> Checker:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, {got(v)}"


def repo(value: Any) -> Optional[str]:
    if isinstance(value, str) and _REPO_RE.match(value):
        return None
    return f'must be "owner/name", {got(value)}'


def branch(value: Any) -> Optional[str]:
    if isinstance(value, str) and value and not _BAD_REF_RE.search(value):
        return None
    return f"must be a valid git branch name, {got(value)}"


def roles(value: Any) -> Optional[str]:
    if isinstance(value, list) and value and all(role in GITHUB_ROLES for role in value):
        return None
    return f"must be a non-empty list of roles from {', '.join(GITHUB_ROLES)}, {got(value)}"


def chat_id(value: Any) -> Optional[str]:
    if is_int(value) or (isinstance(value, str) and value.strip()):
        return None
    return f"must be a chat id (number or @channelname), {got(value)}"


def telegram_user_ids(value: Any) -> Optional[str]:
    """`[123456789, ...]`: who may answer and command from Telegram (a user id is a positive integer)."""
    if not isinstance(value, list):
        return f"must be a list of Telegram user ids (positive integers), {got_kind(value)}"
    for i, item in enumerate(value):
        if not (is_int(item) and item > 0):
            return f"[{i}] must be a Telegram user id (a positive integer such as 123456789), {got(item)}"
    return None


def slack_user_ids(value: Any) -> Optional[str]:
    """`["U0123ABCD", ...]`: who may answer and command from Slack (a member id, as its profile shows it)."""
    if not isinstance(value, list):
        return f"must be a list of Slack member ids (such as U0123ABCD), {got_kind(value)}"
    for i, item in enumerate(value):
        if not (isinstance(item, str) and re.match(r"^[UW][A-Z0-9]{2,}$", item)):
            return f"[{i}] must be a Slack member id (U or W, then capitals and digits: U0123ABCD), {got(item)}"
    return None


def label(value: Any) -> Optional[str]:
    if isinstance(value, str) and value.strip() and len(value) <= 50:
        return None
    return f"must be a label name of 1 to 50 characters, {got(value)}"


def label_ranks(value: Any) -> Optional[str]:
    """{label: rank}: priority labels and the integer each ranks at."""
    if isinstance(value, dict) and all(label(name) is None and is_int(rank) for name, rank in value.items()):
        return None
    return f"must be an object of label names and integer ranks, {got_kind(value)}"


def check_list(value: Any) -> Optional[str]:
    """`[{"name": "tests", "run": "pytest -q", "timeout_seconds": 900}, ...]`: names unique, commands set."""
    if not isinstance(value, list):
        return f'must be a list of {{"name", "run"}} objects, {got_kind(value)}'
    names = []
    for i, check in enumerate(value):
        if not isinstance(check, dict) or string(check.get("name")) or string(check.get("run")):
            return f'[{i}] must be an object with a "name" and a "run" command, {got_kind(check)}'
        unknown = set(check) - {"name", "run", "timeout_seconds"}
        if unknown:
            return f"[{i}] has unknown keys {sorted(unknown)} (name, run and timeout_seconds are known)"
        if "timeout_seconds" in check and positive_number(check["timeout_seconds"]):
            return f"[{i}].timeout_seconds {positive_number(check['timeout_seconds'])}"
        names.append(check["name"])
    if len(set(names)) != len(names):
        return f"must give each check its own name, got {', '.join(names)}"
    return None


def host_list(value: Any) -> Optional[str]:
    """`["pypi.org", "*.pythonhosted.org", "registry.internal:8443"]`: the hosts the sandbox lets through."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return f'must be a list of host names (e.g. ["pypi.org", "*.pythonhosted.org"]), {got(value)}'
    for item in value:
        port = item.rpartition(":")[2] if ":" in item and not item.endswith("]") else None
        if not _HOST_RE.match(item) or (port is not None and not 0 < int(port) < 65536):
            return f"must hold host names with an optional :port (e.g. pypi.org, *.npmjs.org), got {item!r}"
    return None


def env_names(value: Any) -> Optional[str]:
    """`["NPM_CONFIG_REGISTRY", ...]`: environment variables passed into the sandbox by name."""
    if not isinstance(value, list) or not all(isinstance(item, str) and _ENV_NAME_RE.match(item) for item in value):
        return f"must be a list of environment variable names, {got(value)}"
    return None


def days(value: Any) -> Optional[str]:
    """A retention: days (fractions allowed), or null for ever."""
    if value is None or (is_number(value) and value > 0):
        return None
    return f"must be a number of days > 0, or null to keep for ever, {got(value)}"

"""`run_orchestrator.py --check`: one line per thing a first run needs, ok / FAIL / warn / skip.

Every check runs, whatever an earlier one found, so a new install is fixed in one pass: a config
with mistakes gets a FAIL line for each, and the checks that need what it lacks say why they were
skipped. The exit code is 2 when the config (or the token) is wrong, else 1 when a check failed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

from lib import celery_app
from lib.config import Config, gh_auth_token, label_specs
from lib.files import writable
from lib.github_client import GitHubClient
from lib.github_errors import GitHubError
from lib.models import ConfigError, OrchestratorError
from lib.notifications import Notifications
from lib.sandbox import model_hosts, unavailable
from lib.retention import usage_lines
from lib.state_manager import StateManager, StateStore, masked_url

from lib.redaction import register_secret

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

NO_TOKEN = "no GitHub token: set github.token or GITHUB_TOKEN (or GH_TOKEN), or log in with `gh auth login`"
PATH_HINT = ("cron runs with a short PATH (often /usr/bin:/bin): set {key} to the full path"
             " (`command -v {name}` in your shell prints it)")


class Report:
    """Prints each line as it is found and counts the failures."""

    def __init__(self, out):
        self.out = out
        self.failures = 0

    def __call__(self, ok: Optional[bool], item: str, text: str) -> None:
        self.failures += ok is False
        mark = {True: "  ok", False: "FAIL", None: "warn"}[ok]
        print(f"{mark}  {item}: {text}", file=self.out, flush=True)

    def skipped(self, item: str, why: str) -> None:
        print(f"skip  {item}: {why}", file=self.out, flush=True)


def run_checks(path: Path, *, notify_test: bool = False, out=None) -> int:
    """Print ok / FAIL / warn / skip for each thing a first run needs; see the module's exit codes."""
    out = out or sys.stdout
    report = Report(out)
    try:
        config = Config(path, require_token=False)
    except ConfigError as exc:
        for error in exc.errors:
            report(False, "config", error)
        for warning in exc.warnings:
            report(None, "config", warning)
        raw = _raw_config(path)
        check_tools(_raw_value(raw, "claude", "executable") or "claude", report)
        if not (_raw_value(raw, "github", "token") or any(os.environ.get(name) for name in ("GITHUB_TOKEN", "GH_TOKEN"))
                or gh_auth_token(_raw_value(raw, "github", "api_url") or "https://api.github.com")):
            report(False, "github.token", NO_TOKEN)
        for item in ("GitHub", "folders", "notifications"):
            report.skipped(item, "the config has mistakes (above)")
        return _summary(report, out, EXIT_CONFIG)
    report(True, "config", str(config.path))
    for warning in config.warnings:
        report(None, "config", warning)
    check_tools(config.claude.executable, report)
    check_sandbox(config, report)
    token_ok = check_token(config, report)
    if token_ok:
        check_github(config, report)
    else:
        report.skipped("GitHub", "no GitHub token (above)")
    check_folders(config, report)
    check_disk(config, report)
    check_notifications(config, report, notify_test)
    check_chat_answers(config, report)
    return _summary(report, out, EXIT_OK if token_ok else EXIT_CONFIG)


def _summary(report: Report, out, code: int) -> int:
    print("All checks passed." if not report.failures else f"{report.failures} check(s) failed.", file=out)
    return code if code != EXIT_OK else (EXIT_FAILED if report.failures else EXIT_OK)


def _raw_config(path: Path) -> dict:
    """The config file as JSON, for what can still be checked when it does not validate."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _raw_value(data: dict, section: str, key: str) -> Optional[str]:
    value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
    return value if isinstance(value, str) and value else None


def check_tools(executable: str, report: Report) -> None:
    git = shutil.which("git")
    report(bool(git), "git", git or "not found on PATH; " + PATH_HINT.format(key="PATH in the crontab", name="git"))
    claude = shutil.which(executable)
    report(bool(claude), "claude", claude or f"{executable!r} not found or not executable; "
           + PATH_HINT.format(key="claude.executable", name="claude"))


def check_sandbox(config: Config, report: Report) -> None:
    """Whether agents can start here: a real wall is built around `true` (fail closed)."""
    if not config.sandbox.enabled:
        report(None, "sandbox", 'off (sandbox.mode is "off"): agents run unsandboxed, with this user\'s files,'
                                " processes and network within their reach")
        return
    why = unavailable(config.sandbox)
    if why:
        report(False, "sandbox", f"{why} Until then no agent starts; issues stay queued.")
        return
    hosts = ", ".join(model_hosts(config.sandbox, os.environ))
    reach = "; ".join(f"{r.repo}: {', '.join(r.agent.allowed_hosts) or 'no other host'}" for r in config.repositories)
    report(True, "sandbox", f"bubblewrap works; agents reach {hosts} and, per repository, {reach}")


def check_token(config: Config, report: Report) -> bool:
    """A token from the config, the environment or `gh auth token`; one FAIL line when there is none."""
    if not config.github_token:
        config.github_token = gh_auth_token(config.api_url)
        register_secret(config.github_token)
    if not config.github_token:
        report(False, "github.token", NO_TOKEN)
    return bool(config.github_token)


def check_github(config: Config, report: Report) -> None:
    """The token once; then, for each repository, that it exists, the token can push, its labels."""
    github = GitHubClient(config.github_token, config.repositories[0].repo, config.api_url)
    try:
        user = github.get_authenticated_user()
    except GitHubError as exc:
        report(False, "GitHub", str(exc))
        return
    report(True, "GitHub token", f"accepted (user {user.get('login')})")
    for repository in config.repositories:
        check_repository(config, repository.repo, report)


def check_repository(config: Config, repo: str, report: Report) -> None:
    github = GitHubClient(config.github_token, repo, config.api_url)
    try:
        found = github.get_repository()
        can_push = (found.get("permissions") or {}).get("push")
        report(True if can_push is not False else False, "repository",
               f"{repo} reachable (default branch {found.get('default_branch')})" if can_push is not False else
               f"{repo}: the token cannot push to it (permissions.push is false); branches could not be pushed")
        existing = {label["name"] for label in github.list_labels()}
        missing = [name for name in label_specs(config) if name not in existing]
        if missing:
            report(None, "labels", f"{repo}: missing {', '.join(missing)} (the first real tick creates them)")
        else:
            report(True, "labels", f"{repo}: all present")
    except GitHubError as exc:
        report(False, "GitHub", f"{repo}: {exc}")


def check_folders(config: Config, report: Report) -> None:
    folders = [("base_repo_path", repository.base_repo_path) for repository in config.repositories]
    for item, folder in (*dict.fromkeys(folders), ("state folder", config.state_file.parent),
                         ("log_dir", config.log_dir)):
        ok, text = writable(folder)
        report(ok, item, text)
    if config.executor.celery:
        check_shared_state(config, report)
        return
    try:
        StateManager(config.state_file).load()
        report(True, "state file", f"{config.state_file} readable")
    except OrchestratorError as exc:
        report(False, "state file", str(exc))


def check_disk(config: Config, report: Report) -> None:
    """The disk each kind of leftover uses and how long it is kept (lib.retention), one line each."""
    for kind, measured, text in usage_lines(config):
        report(True if measured else None, f"disk {kind}", text)


def check_shared_state(config: Config, report: Report) -> None:
    """The Celery mode: the shared state's Redis, the broker, and the workers that beat."""
    store = StateStore.for_config(config)
    try:
        store.load_state()
        report(True, "shared state", f"{store.where} answers")
        workers = store.live_workers()
        report(True if workers else None, "workers",
               ", ".join(f"{host} ({slots} slot{'s' * (slots != 1)})" for host, slots in sorted(workers.items()))
               or "none beats yet: start `run_orchestrator.py --worker` on each worker host")
    except OrchestratorError as exc:
        report(False, "shared state", str(exc))
    try:
        celery_app.check_broker(celery_app.make_app(config), config)
        report(True, "broker", f"{masked_url(config.executor.broker_url)} answers")
    except OrchestratorError as exc:
        report(False, "broker", str(exc))


def check_notifications(config: Config, report: Report, notify_test: bool) -> None:
    notifications = Notifications.from_config(config)
    if not notifications.names:
        report(None, "notifications", "none configured (telegram and slack are optional)")
    elif not notify_test:
        report(True, "notifications", f"{', '.join(notifications.names)} configured"
                                      " (--notify-test sends a test message)")
    else:
        for name, error in notifications.test_all():
            # The notifier's errors name it already ("Telegram: chat not found").
            report(error is None, name, error.removeprefix(f"{name}: ") if error else "test message sent")


def check_chat_answers(config: Config, report: Report) -> None:
    """Who may answer a question (and run commands) from each chat."""
    for service, allowed, configured in (
            ("telegram", config.telegram_allowed_user_ids, config.telegram_bot_token and config.telegram_chat_id),
            ("slack", config.slack_allowed_user_ids, config.slack_bot_token and config.slack_channel_id)):
        item = f"{service.capitalize()} answers"
        if not allowed:
            report.skipped(item, f"nobody may answer from {service.capitalize()} ({service}.allowed_user_ids is empty)")
        elif not configured:
            report(None, item, f"{service}.allowed_user_ids is set, but {service} is not configured: nobody answers there")
        else:
            report(True, item, f"from user{'s' * (len(allowed) > 1)} {', '.join(map(str, allowed))}"
                               f" ({service}.allowed_user_ids)")

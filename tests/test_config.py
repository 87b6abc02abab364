"""Config loading and validation: every mistake reported, each on its own line with its key."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.config import Config, config_error_lines, default_config_path
from lib.config_schema import ENV_OVERRIDES
from lib.redaction import RedactingFilter, redact, register_secret
from lib.models import ConfigError

PROJECT = Path(__file__).resolve().parent.parent
MINIMAL = {"github": {"token": "ghp_abcdef123456", "repo": "octo/widgets", "base_repo_path": "slots"}}


def with_changes(**sections):
    data = json.loads(json.dumps(MINIMAL))
    for section, values in sections.items():
        if values is None:
            data.pop(section, None)
        elif isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    return data


def config_error_of(data, env=None) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        Config.from_dict(data, "/tmp", env or {})
    return raised.value


def errors_of(data, env=None):
    return config_error_of(data, env).errors


def test_defaults_and_paths_resolve_against_the_config_folder(tmp_path):
    config = Config.from_dict(MINIMAL, tmp_path)
    assert config.github_repo == "octo/widgets" and config.repo_name == "widgets"
    assert config.max_concurrent == 3
    assert config.api_url == "https://api.github.com"
    assert config.base_repo_path == tmp_path / "slots"
    assert config.get_repo_path(2) == tmp_path / "slots" / "widgets_2"
    assert config.state_file == tmp_path / "processing-state.json"
    assert config.log_dir == tmp_path / "logs"
    assert config.lock_file.parent == tmp_path
    assert config.trusted_roles == ["admin", "maintain", "write"] and config.allowed_users == []
    assert config.labels.ready == "ready-for-claude" and config.labels.needs_input == "claude-needs-input"
    assert config.claude.timeout_seconds == 3600 and config.claude.check_interval == 5
    assert config.claude.input_wait_hours == 72 and config.claude.max_retries == 1
    assert config.pull_request_create is True and config.pull_request_draft is True
    assert config.telegram_bot_token is None and config.slack_bot_token is None
    assert config.telegram_api_base_url == "https://api.telegram.org/bot"
    assert config.slack_api_base_url == "https://slack.com/api/"
    assert config.follow_up.max_conflict_fixes == 2 and config.follow_up.update_branch == "on_conflict"


def test_env_wins_over_the_file():
    env = {"GITHUB_TOKEN": "ghp_fromenv1234", "GH_TOKEN": "ghp_second", "TELEGRAM_BOT_TOKEN": "123:tg",
           "TELEGRAM_CHAT_ID": "-100", "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_CHANNEL_ID": "C1"}
    config = Config.from_dict(MINIMAL, "/tmp", env)
    assert config.github_token == "ghp_fromenv1234"
    assert (config.telegram_bot_token, config.telegram_chat_id) == ("123:tg", "-100")
    assert (config.slack_bot_token, config.slack_channel_id) == ("xoxb-1", "C1")
    assert set(config.secrets) == {"ghp_fromenv1234", "123:tg", "xoxb-1"}
    assert Config.from_dict(with_changes(github={"token": None}), "/tmp",
                            {"GH_TOKEN": "ghp_gh"}).github_token == "ghp_gh"


def test_five_mistakes_five_lines():
    data = with_changes(github={"repo": "no-slash", "max_concurrent": 0, "api_url": "ftp://x"},
                        claude={"timeout_seconds": "soon", "permission_mode": "yolo"})
    errors = errors_of(data)
    assert errors == [
        "github.repo: must be \"owner/name\", got 'no-slash'",
        "github.max_concurrent: must be an integer >= 1, got 0",
        "github.api_url: must be an http(s) URL, got 'ftp://x'",
        "claude.timeout_seconds: must be a number > 0, got 'soon'",
        "claude.permission_mode: must be one of acceptEdits, auto, bypassPermissions, default, dontAsk,"
        " manual, plan, got 'yolo'",
    ]


# A catalogue of broken configs: (changes, the key its one error line must start with).
BROKEN = [
    (dict(github=None), "github:"),
    (dict(github="octo/widgets"), "github:"),
    (dict(github={"repo": None}), "github.repo"),
    (dict(github={"repo": "a/b/c"}), "github.repo"),
    (dict(github={"base_repo_path": ""}), "github.base_repo_path"),
    (dict(github={"base_repo_path": 5}), "github.base_repo_path"),
    (dict(github={"token": None}), "github.token"),
    (dict(github={"token": ""}), "github.token"),
    (dict(github={"max_concurrent": "3"}), "github.max_concurrent"),
    (dict(github={"max_concurrent": True}), "github.max_concurrent"),
    (dict(github={"max_concurrent": 2.5}), "github.max_concurrent"),
    (dict(github={"api_url": "api.github.com"}), "github.api_url"),
    (dict(github={"clone_url": 7}), "github.clone_url"),
    (dict(github={"base_branch": "a b"}), "github.base_branch"),
    (dict(github={"base_branch": "x..y"}), "github.base_branch"),
    (dict(github={"trusted_roles": []}), "github.trusted_roles"),
    (dict(github={"trusted_roles": ["owner"]}), "github.trusted_roles"),
    (dict(github={"allowed_users": "alice"}), "github.allowed_users"),
    (dict(labels={"ready": ""}), "labels.ready"),
    (dict(labels={"working": "x" * 51}), "labels.working"),
    (dict(labels={"completed": "claude-working"}), "labels:"),
    (dict(labels=[]), "labels:"),
    (dict(telegram={"bot_token": "123:abc"}), "telegram.chat_id"),
    (dict(telegram={"chat_id": 42}), "telegram.bot_token"),
    (dict(telegram={"bot_token": "1:a", "chat_id": 1, "api_base_url": "localhost"}), "telegram.api_base_url"),
    (dict(slack={"bot_token": "xoxb-1"}), "slack.channel_id"),
    (dict(slack={"channel_id": ["C1"]}), "slack.channel_id"),
    (dict(slack={"bot_token": "", "channel_id": "C1"}), "slack.bot_token"),
    (dict(claude={"executable": ""}), "claude.executable"),
    (dict(claude={"check_interval": 0}), "claude.check_interval"),
    (dict(claude={"max_turns": 0}), "claude.max_turns"),
    (dict(claude={"max_budget_usd": -1}), "claude.max_budget_usd"),
    (dict(claude={"allowed_tools": "Bash"}), "claude.allowed_tools"),
    (dict(claude={"extra_args": [1]}), "claude.extra_args"),
    (dict(claude={"prompt_template": "/nonexistent/prompt.txt"}), "claude.prompt_template"),
    (dict(claude={"idle_timeout_seconds": 0}), "claude.idle_timeout_seconds"),
    (dict(claude={"input_wait_hours": "3d"}), "claude.input_wait_hours"),
    (dict(claude={"max_retries": -1}), "claude.max_retries"),
    (dict(claude={"inherit_tokens": "yes"}), "claude.inherit_tokens"),
    (dict(pull_request={"draft": "no"}), "pull_request.draft"),
    (dict(follow_up={"max_conflict_fixes": -1}), "follow_up.max_conflict_fixes: must be an integer >= 0, got -1"),
    (dict(follow_up={"max_conflict_fixes": "2"}), "follow_up.max_conflict_fixes"),
    (dict(follow_up={"update_branch": "rebase"}),
     "follow_up.update_branch: must be one of on_conflict, always, never, got 'rebase'"),
    (dict(follow_up={"update_branch": True}), "follow_up.update_branch"),
    (dict(github={"api_url": "https://ghe.example.com:99999/api/v3"}),
     "github.api_url: must be an http(s) URL whose port is a number from 0 to 65535"),
    (dict(state_file=""), "state_file"),
    (dict(log_dir=[]), "log_dir"),
    (dict(setup_timeout_seconds=0), "setup_timeout_seconds"),
    # A section of the wrong type.
    (dict(github=5), "github: must be an object, got 5"),
    (dict(github=True), "github: must be an object, got true"),
    (dict(github=False), "github: must be an object, got false"),
    (dict(github=["octo/widgets"]), "github: must be an object, got a list"),
    (dict(github="repo_path"), "github: must be an object, got 'repo_path'"),
    (dict(telegram="x"), "telegram: must be an object, got 'x'"),
    (dict(slack=7), "slack: must be an object, got 7"),
    (dict(claude=[]), "claude: must be an object, got a list"),
    (dict(labels=True), "labels: must be an object, got true"),
    (dict(pull_request="yes"), "pull_request: must be an object, got 'yes'"),
    # The sandbox and what a repository lets into it.
    (dict(sandbox={"mode": "on"}), "sandbox.mode: must be one of bwrap, off"),
    (dict(sandbox={"read_only_paths": "/opt/tools"}), "sandbox.read_only_paths"),
    (dict(sandbox={"writable_paths": [""]}), "sandbox.writable_paths"),
    (dict(sandbox={"model_hosts": ["https://api.anthropic.com"]}), "sandbox.model_hosts"),
    (dict(sandbox="off"), "sandbox: must be an object, got 'off'"),
    (dict(agent={"env": ["NPM TOKEN"]}), "agent.env: must be a list of environment variable names"),
    (dict(agent={"env": ["GITHUB_TOKEN"]}), "agent.env: GITHUB_TOKEN holds the orchestrator's token"),
    (dict(agent={"allowed_hosts": ["pypi.org:99999"]}), "agent.allowed_hosts"),
    (dict(claude={"inherit_tokens": True}), "claude.inherit_tokens: cannot be true while the sandbox is on"),
]


@pytest.mark.parametrize("changes, key", BROKEN, ids=[k for _, k in BROKEN])
def test_each_broken_config_gets_one_line_naming_its_key(changes, key):
    errors = errors_of(with_changes(**changes))
    assert len(errors) == 1, errors
    assert errors[0].startswith(key), errors
    assert "Traceback" not in errors[0] and "\n" not in errors[0]


def test_example_config_needs_only_a_token_and_real_paths(tmp_path):
    example = json.loads((Path(__file__).resolve().parent.parent / "config.example.json").read_text())
    assert errors_of(example) == [
        "github.token: no GitHub token: set github.token or GITHUB_TOKEN (or GH_TOKEN), or log in with `gh auth login`",
        "github.repo: still the example's placeholder 'owner/repository'; set it to the repository to work on"
        " (owner/name)",
        "github.base_repo_path: still the example's placeholder '/path/to/base/directory/for/repo/clones'; set it"
        " to a folder for the slot clones (it is created)"]
    example["github"].update(repo="acme/widgets", base_repo_path="/srv/clones")
    config = Config.from_dict(example, tmp_path, {"GITHUB_TOKEN": "ghp_x123456"})
    assert config.telegram_bot_token is None and config.slack_channel_id is None


def test_not_an_object():
    assert errors_of([1, 2])[0].startswith("config.json: must be a JSON object")
    assert errors_of("x") == ["config.json: must be a JSON object with a \"github\" section, got 'x'"]


def test_a_list_is_named_not_printed_as_it_may_hold_tokens():
    assert errors_of([MINIMAL]) == ["config.json: must be a JSON object with a \"github\" section, got a list"]
    assert errors_of(with_changes(github=[MINIMAL["github"]])) == ["github: must be an object, got a list"]


def test_every_section_of_the_wrong_type_is_reported_at_once():
    data = {"github": 5, "labels": True, "telegram": "x", "slack": 7, "claude": [], "pull_request": "yes",
            "state_file": 1}
    assert errors_of(data) == [
        "github: must be an object, got 5",
        "labels: must be an object, got true",
        "telegram: must be an object, got 'x'",
        "slack: must be an object, got 7",
        "claude: must be an object, got a list",
        "pull_request: must be an object, got 'yes'",
        "state_file: must be a non-empty string, got 1",
    ]


def test_a_notifier_section_of_the_wrong_type_is_one_line_even_with_its_token_in_the_env():
    env = {"TELEGRAM_BOT_TOKEN": "123:tg", "SLACK_CHANNEL_ID": "C1"}
    assert errors_of(with_changes(telegram="x", slack=[]), env) == [
        "telegram: must be an object, got 'x'", "slack: must be an object, got a list"]


def test_warnings_come_with_the_errors():
    github = {"token": "ghp_abcdef123456", "rep": "octo/widgets", "base_repo_path": "slots", "repo_path": "/old"}
    raised = config_error_of({"github": github, "extra": 1})
    assert raised.errors == ["github.repo: is required (or a repositories list)"]
    assert raised.warnings == [
        "github.rep: unknown key, ignored (a typo?)",
        "github.repo_path: legacy key, ignored; slots live under github.base_repo_path",
        "extra: unknown key, ignored (a typo?)",
    ]
    assert raised.exit_code == 2 and str(raised) == "github.repo: is required (or a repositories list)"
    assert config_error_lines(raised) == [
        "config error: github.repo: is required (or a repositories list)",
        "config warning: github.rep: unknown key, ignored (a typo?)",
        "config warning: github.repo_path: legacy key, ignored; slots live under github.base_repo_path",
        "config warning: extra: unknown key, ignored (a typo?)",
    ]


def test_a_section_of_the_wrong_type_warns_of_nothing_inside_it():
    assert config_error_of(with_changes(github="repo_path")).warnings == []


def test_config_error_without_warnings_keeps_its_api():
    raised = ConfigError(["a: is wrong", "b: is wrong"])
    assert raised.errors == ["a: is wrong", "b: is wrong"] and raised.warnings == [] and raised.exit_code == 2
    assert config_error_lines(raised) == ["config error: a: is wrong", "config error: b: is wrong"]


def test_unknown_and_legacy_keys_are_warnings():
    config = Config.from_dict(with_changes(github={"repo_path": "/old", "tokn": "x"}, extra=1), "/tmp")
    assert "github.tokn: unknown key, ignored (a typo?)" in config.warnings
    assert "extra: unknown key, ignored (a typo?)" in config.warnings
    assert any(w.startswith("github.repo_path: legacy key") for w in config.warnings)


def test_needs_input_label_can_be_turned_off():
    assert Config.from_dict(with_changes(labels={"needs_input": None}), "/tmp").labels.needs_input is None


def test_file_errors_are_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Config(tmp_path / "missing.json", env={})
    bad = tmp_path / "config.json"
    bad.write_text('{"github": {"repo": "a/b",}}')
    with pytest.raises(ConfigError, match=r"not valid JSON: .*\(line 1, column 27\)"):
        Config(bad, env={})


def test_readable_config_with_a_token_is_warned_about(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(MINIMAL))
    os.chmod(path, 0o644)
    assert any("chmod 600" in w for w in Config(path, env={}).warnings)
    os.chmod(path, 0o600)
    assert not Config(path, env={}).warnings


def test_a_readable_token_is_warned_about_when_the_config_is_also_broken(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(with_changes(github={"max_concurrent": 0})))
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError) as raised:
        Config(path, env={})
    assert raised.value.errors == ["github.max_concurrent: must be an integer >= 1, got 0"]
    assert raised.value.warnings == [f"{path}: holds a token but is readable by other users; run chmod 600 {path}"]


# Every entry point that reads a config, with the arguments it needs besides `--config PATH`.
ENTRY_POINTS = {
    "run_orchestrator.py": ["run_orchestrator.py"],
    "claude_monitor.py": ["claude_monitor.py"],
    "runner": ["-m", "lib.runner", "run", "--issue", "1"],
    "runner, as earlier versions started it": ["-m", "lib.claude_processor", "run", "--issue", "1"],
}


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_sections_of_the_wrong_type_through_the_real_cli(tmp_path, entry_point):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"github": True, "telegram": "x", "slack": 7, "claude": [], "labels": 0,
                                "pull_request": "yes"}))
    token_variables = {name for _, _, names in ENV_OVERRIDES for name in names}
    env = {name: value for name, value in os.environ.items() if name not in token_variables}
    done = subprocess.run([sys.executable, *ENTRY_POINTS[entry_point], "--config", str(path)], cwd=PROJECT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "config error: github: must be an object, got true",
        "config error: labels: must be an object, got 0",
        "config error: telegram: must be an object, got 'x'",
        "config error: slack: must be an object, got 7",
        "config error: claude: must be an object, got a list",
        "config error: pull_request: must be an object, got 'yes'",
    ]


def test_config_path_from_env():
    assert default_config_path({"ORCHESTRATOR_CONFIG": "/etc/orch.json"}) == Path("/etc/orch.json")
    assert default_config_path({}).name == "config.json"


def test_prompt_template_resolves_relative_to_config(tmp_path):
    (tmp_path / "prompt.txt").write_text("Fix {issue_number}")
    config = Config.from_dict(with_changes(claude={"prompt_template": "prompt.txt"}), tmp_path)
    assert config.claude.prompt_template == tmp_path / "prompt.txt"


def test_redacting_filter_scrubs_messages_args_and_tracebacks():
    import logging
    register_secret("ghp_secret123", "xy")
    redactor = RedactingFilter()
    try:
        raise ValueError("token ghp_secret123 in exception")
    except ValueError:
        import sys
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "using %s", ("ghp_secret123",),
                                   sys.exc_info())
    redactor.filter(record)
    assert record.getMessage() == "using ***"
    assert "ghp_secret123" not in record.exc_text and "***" in record.exc_text
    assert redact("xy stays: too short to redact safely") == "xy stays: too short to redact safely"


def test_executor_mistakes_each_get_a_line_with_the_password_masked():
    errors = errors_of({**MINIMAL, "executor": {
        "type": "celery", "broker_url": "http://:hunter2@broker:6379", "heartbeat_seconds": 0,
        "hosts": {"box": {"slots": 0, "colour": "red"}}}})
    assert any(e.startswith("executor.broker_url: must be a redis:// or rediss:// URL") and "hunter2" not in e
               and "***@broker" in e for e in errors), errors
    assert any(e.startswith("executor.heartbeat_seconds: must be a number > 0") for e in errors)
    assert any(e.startswith("executor.hosts: ['box'] has unknown keys ['colour']") for e in errors)
    assert errors_of({**MINIMAL, "executor": {"type": "celery"}}) == [
        "executor.broker_url: is required when executor.type is celery (redis://host:6379/0)"]
    assert errors_of({**MINIMAL, "executor": {"type": "kubernetes"}}) == [
        "executor.type: must be one of local, celery, got 'kubernetes'"]


def test_the_local_executor_is_the_default():
    config = Config.from_dict(MINIMAL, "/tmp")
    assert config.executor.type == "local" and not config.executor.celery


def test_the_sandbox_is_on_unless_turned_off_and_a_repository_overrides_what_it_lets_in(tmp_path):
    data = {"github": {"token": "ghp_abcdef123456", "base_repo_path": "slots"},
            "sandbox": {"read_only_paths": ["tools"], "writable_paths": ["/var/cache/pip"]},
            "agent": {"env": ["PIP_INDEX_URL"], "allowed_hosts": ["pypi.org", "*.pythonhosted.org"]},
            "repositories": [{"repo": "octo/widgets"},
                             {"repo": "octo/site", "agent": {"allowed_hosts": ["registry.npmjs.org"]}}]}
    config = Config.from_dict(data, tmp_path)

    assert config.sandbox.enabled and config.sandbox.mode == "bwrap"
    assert config.sandbox.read_only_paths == [tmp_path / "tools"]
    assert config.sandbox.writable_paths == [Path("/var/cache/pip")]
    widgets, site = config.repositories
    assert widgets.agent.allowed_hosts == ["pypi.org", "*.pythonhosted.org"] and widgets.agent.env == ["PIP_INDEX_URL"]
    assert site.agent.allowed_hosts == ["registry.npmjs.org"] and site.agent.env == ["PIP_INDEX_URL"]
    off = Config.from_dict(with_changes(sandbox={"mode": "off"}, claude={"inherit_tokens": True}), tmp_path)
    assert not off.sandbox.enabled and off.claude.inherit_tokens


def test_a_repositorys_agent_env_naming_a_token_is_one_line_with_its_path():
    data = {"github": {"token": "ghp_abcdef123456", "base_repo_path": "slots"},
            "repositories": [{"repo": "octo/widgets", "agent": {"env": ["SLACK_BOT_TOKEN", "GH_TOKEN"]}}]}
    assert errors_of(data) == ["repositories[0].agent.env: SLACK_BOT_TOKEN, GH_TOKEN hold the orchestrator's"
                               " tokens, which never enter the sandbox; remove them"]

"""GitHub issue orchestrator for Claude Code.

Names are imported lazily (PEP 562), so `import lib` costs nothing and loads no third-party
package: an idle cron tick never pays for python-telegram-bot or slack_sdk.
"""

import importlib

__version__ = "1.0.0"

_EXPORTS = {
    "Config": "config",
    "GitHubClient": "github_client",
    "TelegramNotifier": "telegram_notifier",
    "SlackNotifier": "slack_notifier",
    "RepoManager": "repo_manager",
    "StateManager": "state_manager",
    "ClaudeProcessor": "claude_processor",
    "ClaudeMonitor": "claude_monitor",
    "IssueOrchestrator": "orchestrator",
    # models and the lifecycle
    "IssueStatus": "lifecycle",
    "ProcessStatus": "models",  # the seed README's names of IssueStatus
    "InstanceStatus": "models",
    "IssueState": "models",
    "Message": "models",
    "ClaudeInstance": "models",
    "MonitorReport": "models",
    "OrchestratorError": "models",
    "ConfigError": "models",
    "StateError": "models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'lib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

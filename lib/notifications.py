"""One notification interface and the dispatcher that sends each event to every configured notifier.

Modelled on borgmatic's monitoring hooks: every notifier has `name`, `send(event)` and `send_test()`;
the dispatcher calls them all and turns any failure into one warning line. A notification is never
worth failing or stalling a run for.

Only the standard library is imported here. The notifier modules (and python-telegram-bot or
slack_sdk with them) are imported by `Notifications.from_config` only when that notifier is
configured, so an idle tick loads neither.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple
from urllib.parse import quote

from lib.models import OrchestratorError

logger = logging.getLogger(__name__)

#: kind -> (emoji, label). The first four are the seed README's.
EVENT_KINDS = {
    "started": ("🚀", "Started"),
    "completed": ("✅", "Completed"),
    "needs_input": ("⏳", "Needs input"),
    "error": ("❌", "Error"),
    "resumed": ("▶️", "Resumed"),
    "paused": ("⏸️", "Paused"),
    "cancelled": ("⏹️", "Cancelled"),  # a human closed the issue or took claude-working off it
    "test": ("🔔", "Test"),
}

DEFAULT_TIMEOUT = 10.0

#: A rate-limit wait is only worth it when this much of the budget is left for the resend.
MIN_RESEND_SECONDS = 1.0


class NotifierError(OrchestratorError):
    """A notification was not delivered. `str(err)` is one sentence naming the service, never a token."""


@dataclass
class Event:
    """Something a human should hear about. Which fields matter depends on `kind`."""

    kind: str  # one of EVENT_KINDS
    repo: str  # "owner/name"
    issue_number: Optional[int] = None
    title: str = ""
    url: Optional[str] = None  # the issue's html_url
    agent_index: Optional[int] = None
    branch: Optional[str] = None
    duration_seconds: Optional[float] = None
    cost_usd: Optional[float] = None
    num_turns: Optional[int] = None
    pr_url: Optional[str] = None
    question: Optional[str] = None  # needs_input
    reason: Optional[str] = None  # error; paused (why)
    log_tail: Optional[str] = None  # error: the last lines of the agent's log
    until: Optional[str] = None  # paused: ISO time launches resume

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown notification kind {self.kind!r}; expected one of {sorted(EVENT_KINDS)}")

    @property
    def emoji(self) -> str:
        return EVENT_KINDS[self.kind][0]

    @property
    def label(self) -> str:
        return EVENT_KINDS[self.kind][1]

    @property
    def issue_ref(self) -> str:
        """`owner/name#12`, or just the repository for events about no single issue (paused, test)."""
        return f"{self.repo}#{self.issue_number}" if self.issue_number is not None else self.repo


# ------------------------------------------------------------------------------------------------
# Formatting helpers shared by the notifiers
# ------------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """725 -> "12m 5s", 45 -> "45s", 3725 -> "1h 2m 5s"."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_cost(usd: float) -> str:
    """0.4213 -> "$0.42"."""
    return f"${usd:.2f}"


def is_web_url(url: Optional[str]) -> bool:
    """Only http(s) URLs become links; anything else is shown as text."""
    return bool(url) and re.match(r"https?://[^\s<>\"|]+$", url) is not None


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, ending in "…" when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip_tail(text: str, max_lines: int, max_chars: int) -> str:
    """The end of a log: its last lines, then its last characters, starting "…" when cut."""
    lines = text.rstrip("\n").splitlines()
    tail = "\n".join(lines[-max_lines:])
    if len(lines) > max_lines or len(tail) > max_chars:
        tail = "…" + tail[-(max_chars - 1):]
    return tail


def one_line(text: str) -> str:
    """Collapse whitespace so a message from an API is one log line."""
    return " ".join(text.split())


def summary(event: Event) -> str:
    """One sentence saying what happened, the same for every notifier."""
    return {
        "started": "Claude Code started working on the issue.",
        "completed": "Claude Code finished the issue.",
        "needs_input": "Claude Code has a question: answer it on the issue to resume.",
        "error": "Claude Code did not finish the issue.",
        "resumed": "Claude Code resumed the session with the answer from the issue.",
        "paused": f"Usage limit reached: no new launches until {event.until or 'the limit resets'}.",
        "cancelled": "Claude Code was stopped; the work so far is saved on the branch.",
        "test": "Test message from the issue orchestrator: this notifier works.",
    }[event.kind]


# ------------------------------------------------------------------------------------------------
# Secrets: never in a log record or an error message
# ------------------------------------------------------------------------------------------------

#: Longest first, so a token that contains another is replaced whole. Replaced, never mutated,
#: so readers on other threads need no lock.
_secrets: Tuple[str, ...] = ()
_secrets_lock = threading.Lock()
REDACTED = "***"


def register_secret(secret: str) -> None:
    """Remember a token so `redact` and the log filter hide it (also percent-encoded, as in a URL)."""
    global _secrets
    if secret:
        with _secrets_lock:
            known = set(_secrets) | {secret, quote(secret, safe="")}
            _secrets = tuple(sorted(known, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with every registered token replaced by ***."""
    for secret in _secrets:
        text = text.replace(secret, REDACTED)
    return text


class RedactSecretsFilter(logging.Filter):
    """Rewrites any record that contains a registered token. Libraries log URLs, and a Telegram URL
    holds the bot token in its path, so this sits on their loggers whatever level they log at."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_filter = RedactSecretsFilter()


def protect_loggers(prefixes: Iterable[str]) -> None:
    """Put the redacting filter on every existing logger under `prefixes`.

    A logger's filter only sees records created on that very logger, not its children's, so each
    one is covered. Libraries create their loggers at import time: call this after importing them.
    """
    prefixes = tuple(prefixes)
    names = {name for name in list(logging.root.manager.loggerDict)
             if any(name == p or name.startswith(p + ".") for p in prefixes)}
    for name in names | set(prefixes):
        log = logging.getLogger(name)
        if _filter not in log.filters:
            log.addFilter(_filter)


# ------------------------------------------------------------------------------------------------
# The dispatcher
# ------------------------------------------------------------------------------------------------


class Notifications:
    """Sends each event to every notifier, in parallel, within `timeout` seconds in all.

    A notifier that fails costs one warning line; one that has not answered by the deadline is
    left behind on its daemon thread (its own timeouts end it soon after) and costs one warning too.
    """

    def __init__(self, notifiers: List, timeout: float = DEFAULT_TIMEOUT, repo: str = ""):
        self.notifiers = list(notifiers)
        self.timeout = timeout
        self.repo = repo  # for the test message

    @classmethod
    def from_config(cls, config, timeout: float = DEFAULT_TIMEOUT) -> "Notifications":
        """Build the configured notifiers from a Config-like object (attributes only; None = unset)."""
        notifiers = []
        if getattr(config, "telegram_bot_token", None) and getattr(config, "telegram_chat_id", None):
            from lib.telegram_notifier import TelegramNotifier

            notifiers.append(TelegramNotifier(
                config.telegram_bot_token, config.telegram_chat_id,
                api_base_url=getattr(config, "telegram_api_base_url", None), timeout=timeout,
            ))
        if getattr(config, "slack_bot_token", None) and getattr(config, "slack_channel_id", None):
            from lib.slack_notifier import SlackNotifier

            notifiers.append(SlackNotifier(
                config.slack_bot_token, config.slack_channel_id,
                api_base_url=getattr(config, "slack_api_base_url", None), timeout=timeout,
            ))
        return cls(notifiers, timeout=timeout, repo=getattr(config, "github_repo", "") or "")

    @property
    def names(self) -> List[str]:
        return [n.name for n in self.notifiers]

    def notify(self, event: Event) -> None:
        """Send `event` everywhere. Never raises; logs one warning line per notifier that failed."""
        for _name, error in self._run_all(lambda n: n.send(event)):
            if error is not None:
                logger.warning("%s notification for %s not sent: %s", event.label, event.issue_ref, error)

    def test_all(self) -> List[Tuple[str, Optional[str]]]:
        """Send a test message through each notifier: [(name, None if delivered else the error)]."""
        return self._run_all(lambda n: n.send_test(self.repo))

    def _run_all(self, call) -> List[Tuple[str, Optional[str]]]:
        results: List[Optional[str]] = ["" for _ in self.notifiers]  # "" = still running

        def run(i: int, notifier) -> None:
            try:
                call(notifier)
                results[i] = None
            except NotifierError as exc:
                results[i] = one_line(redact(str(exc)))
            except Exception as exc:  # a bug in a notifier must not cost the run
                results[i] = one_line(redact(f"{notifier.name}: unexpected {type(exc).__name__}: {exc}"))

        threads = []
        for i, notifier in enumerate(self.notifiers):
            thread = threading.Thread(target=run, args=(i, notifier), name=f"notify-{notifier.name}", daemon=True)
            thread.start()
            threads.append(thread)
        deadline = time.monotonic() + self.timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [
            (n.name, f"{n.name}: no answer within {self.timeout:g} s" if result == "" else result)
            for n, result in zip(self.notifiers, results)
        ]

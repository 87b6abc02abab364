"""What a notifier is told, and what every notifier is: an Event, and the Notifier interface.

A notifier is one module (lib/<name>_notifier.py) with a class that subclasses `Notifier` and a
`from_config(config, timeout)`; `lib.notifications` lists it in its table and sends it every event.
Helpers here keep the notifiers' messages alike: one sentence per kind, cut the same way.
A notifier whose service can carry answers also reads people's messages as `ChatMessage`s
(lib/chat_inbox.py).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional, Tuple

from lib.models import OrchestratorError, issue_ref
from lib.redaction import redact

#: kind -> (emoji, label). The first four are the seed README's.
EVENT_KINDS = {
    "started": ("🚀", "Started"),
    "completed": ("✅", "Completed"),
    "needs_input": ("⏳", "Needs input"),
    "error": ("❌", "Error"),
    "resumed": ("▶️", "Resumed"),
    "paused": ("⏸️", "Paused"),
    "cancelled": ("⏹️", "Cancelled"),  # a human closed the issue or took claude-working off it
    "spend_limit": ("💰", "Spend limit"),  # limits.daily_usd / monthly_usd reached: no new run until the period turns
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
    slot: Optional[int] = None
    branch: Optional[str] = None
    duration_seconds: Optional[float] = None
    cost_usd: Optional[float] = None
    num_turns: Optional[int] = None
    pr_url: Optional[str] = None
    question: Optional[str] = None  # needs_input
    reason: Optional[str] = None  # error; paused (why)
    log_tail: Optional[str] = None  # error: the last lines of the agent's log
    until: Optional[str] = None  # paused: ISO time launches resume
    checks: Optional[str] = None  # completed / error: the repository's checks, "✅ tests 12.4 s · ❌ lint 0.8 s"

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
        return issue_ref(self.repo, self.issue_number) if self.issue_number is not None else self.repo


# ------------------------------------------------------------------------------------------------
# Formatting helpers shared by the notifiers
# ------------------------------------------------------------------------------------------------


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
        "spend_limit": f"Spend limit reached: no new run starts until {event.until or 'the period turns'};"
                       " runs already going finish.",
        "test": "Test message from the issue orchestrator: this notifier works.",
    }[event.kind]


@dataclass
class ChatMessage:
    """A person's message read from a chat, in words every service shares. Every text in it was
    written by whoever is in the chat: hostile until checked."""

    service: str  # "telegram" | "slack"
    chat: str  # Telegram's chat id; Slack's channel id
    id: str  # Telegram's message id; Slack's ts
    user: str  # the sender's id as text: what telegram/slack.allowed_user_ids list
    name: str  # how the sender calls themselves
    text: Optional[str]  # plain text (Slack's escapes and links undone); None: no text (a photo)
    reply_to: Optional[str] = None  # the message it answers (Telegram) or the thread it is in (Slack)
    reply_to_bot: bool = False  # the message it answers is the bot's own
    edited: bool = False  # an edit of a message sent earlier
    update_id: Optional[int] = None  # Telegram: the update it came in, for the offset


class Notifier(ABC):
    """One chat service. `send` raises NotifierError (one sentence naming the service, never a token)."""

    name: str  # as a person calls the service: "Telegram"

    @abstractmethod
    def send(self, event: Event) -> Optional[Tuple[str, str]]:
        """Deliver `event` within the notifier's timeout, or raise NotifierError. Returns where the
        message went, (chat, message id), when a reply to it can be read back; else None."""

    def failure(self, what: str) -> NotifierError:
        """What went wrong, to raise: one line naming the service, any secret redacted. Raise it
        `from None`: a chained client exception may quote the request's URL."""
        return NotifierError(redact(one_line(f"{self.name}: {what}")))

    def send_test(self, repo: str = "") -> None:
        """A test message, for `--check --notify-test`."""
        self.send(Event(kind="test", repo=repo))

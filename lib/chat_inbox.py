"""Answers and operator commands from Telegram and Slack, read by the tick: no webhook, no daemon.

A question's notification is something to reply to: on Telegram a reply to the bot's message, on
Slack a reply in the thread the message starts (the runner keeps each question's message in the
state entry's `chat_questions`). Once per tick, and only while a question is open, the tick reads:

- Telegram: one getUpdates (no long polling) from the offset kept in the state's meta
  (`telegram_offset`, the same in the file and the Redis store). The offset moves past an update
  in the same state transaction that records what handling it did, and Telegram forgets an update
  only when a later getUpdates passes that offset: a crash between reading and handling loses
  nothing, and an update handled is never read again.
- Slack: one conversations.replies per thread of an open question, after the last reply read (the
  question's `seen`, moved the same way).

The reads run in parallel within notification_timeout_seconds, and so do the replies in the chats
afterwards: a slow or broken chat costs a tick at most twice that bound, one warning line, and never
the tick; answers on GitHub work as ever.

Only users listed in telegram.allowed_user_ids / slack.allowed_user_ids count (a service with nobody
listed is not read at all); anyone else's message is logged and ignored. An answer taken is posted
on the issue (lib/answers.py), where the tick's reconcile then finds it as it finds a trusted comment
and resumes the session with it. The first answer wins: a later one, in a chat or after an answer on
GitHub, is told so in the chat, as are an edit and a reply to a question no longer open. The commands
/status, /pause [UNTIL], /unpause, /cancel ISSUE and /retry ISSUE are lib/operations.py's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from lib.answers import (SERVICE_NAMES, answered, chat_answer_comment, chat_answer_to_open_question, is_open,
                         replies_to_question)
from lib.comments import post_once
from lib.events import ChatMessage, NotifierError, clip, one_line
from lib.github_errors import GitHubError, RateLimitError
from lib.models import IssueState, OrchestratorError, IssueStatus, fault_point
from lib.notifications import Notifications, within
from lib.operations import Operations
from lib.state_manager import State, key_text, issue_key

log = logging.getLogger(__name__)

#: The state meta's key for the next Telegram update to read.
OFFSET = "telegram_offset"
_COMMAND = re.compile(r"^/(status|pause|unpause|cancel|retry)(?:@\w+)?(?:\s+(.*))?$", re.IGNORECASE | re.DOTALL)
NOT_USED = "your reply was not used. To tell Claude Code more, comment on the issue."

Change = Callable[[State], None]


@dataclass
class _Reply:
    """What to say in a chat once the tick's reading is recorded."""

    service: str
    chat: str
    to: Optional[str]  # Telegram: the message answered; Slack: the thread
    text: str
    link: Optional[Tuple[str, str]] = None  # (url, label)


class _Later(Exception):
    """GitHub cannot take an answer now (down, rate limited): its message is read again next tick."""


class ChatInbox:
    """One tick's reading of the chats. `github` and `trust` give the tick's client and Trust of a repository."""

    def __init__(self, config, state, github: Callable[[str], Any], trust: Callable[[str], Any]):
        self.config, self.state, self.github, self.trust = config, state, github, trust
        self.allowed = {"telegram": {str(user) for user in config.telegram_allowed_user_ids},
                        "slack": set(config.slack_allowed_user_ids)}
        self.snapshot = State()
        self.pending: List[Change] = []  # offsets and `seen` marks not yet written
        self.replies: List[_Reply] = []

    def read(self) -> None:
        """Read the chats of the open questions once. Never raises: the tick goes on whatever a chat does."""
        try:
            self._read()
        except Exception:  # a bug here must not cost the tick its reconcile
            log.exception("Reading answers from the chats failed; answers on GitHub work as ever")

    def _read(self) -> None:
        self.snapshot = self.state.load_state()
        asking = self.snapshot.asking()
        if not asking:
            return  # no open question: no chat request at all
        chats = {notifier.name.lower(): notifier for notifier in Notifications.from_config(self.config).notifiers
                 if self.allowed.get(notifier.name.lower())}
        calls: List[Tuple[str, Callable[[], Any]]] = []
        if "telegram" in chats:
            offset = self.snapshot.meta.get(OFFSET)
            calls.append(("Telegram", lambda: chats["telegram"].updates(offset)))
        for entry in asking if "slack" in chats else ():
            for question in entry.chat_questions:
                if question["service"] == "slack" and is_open(entry, question):
                    calls.append((f"Slack ({key_text(issue_key(entry))})", lambda e=entry, q=question: (
                        e, q, chats["slack"].thread_replies(q["chat"], q["id"], q.get("seen")))))
        warned = set()  # a revoked token fails every thread alike: one line says it
        for name, found, error in within(self.config.notification_timeout_seconds, calls):
            if error is not None:
                if error not in warned:
                    log.warning("%s; answers and commands from %s are not read this tick (answers on GitHub work"
                                " as ever)", error, name.split(" ")[0])
                warned.add(error)
            elif name == "Telegram":
                self._telegram(found)
            else:
                self._slack(*found)
        fault_point("before-chat-replies")
        self._say_all(chats)

    # --- the two chats --------------------------------------------------------------------------

    def _telegram(self, messages: List[ChatMessage]) -> None:
        """Each update in order; an edit read with the message it edits is folded into it."""
        newest = {(m.chat, m.id): m.text for m in messages}
        originals = {(m.chat, m.id) for m in messages if not m.edited}
        for message in messages:
            if not message.edited:
                message.text = newest[(message.chat, message.id)]
            folded = message.edited and (message.chat, message.id) in originals
            try:
                change = None if folded else self._handle(message)
            except _Later as exc:
                log.warning("Telegram: %s; the message is read again next tick", exc)
                break
            self.pending.append(lambda state, offset=message.update_id + 1: state.meta.__setitem__(OFFSET, offset))
            if change is not None:
                self._commit(change)
        self._commit(None)

    def _slack(self, entry: IssueState, question: Dict[str, Any], messages: List[ChatMessage]) -> None:
        for message in messages:
            try:
                change = self._handle(message)
            except _Later as exc:
                log.warning("Slack: %s; the reply is read again next tick", exc)
                break
            self.pending.append(lambda state, ts=message.id: _mark_seen(state, entry, question, ts))
            if change is not None:
                self._commit(change)
        self._commit(None)

    def _commit(self, change: Optional[Change]) -> None:
        """What handling did and how far reading got, in one transaction; the snapshot follows."""
        changes = [*self.pending, *([change] if change else [])]
        if not changes:
            return
        with self.state.transaction() as state:
            for apply in changes:
                apply(state)
        self.pending = []
        self.snapshot = self.state.load_state()

    # --- one message ----------------------------------------------------------------------------

    def _handle(self, message: ChatMessage) -> Optional[Change]:
        """Take `message` as a command or an answer, or leave it; what to say goes to `replies`.
        Returns the state change that records it, if any."""
        service = SERVICE_NAMES[message.service]
        allowed = message.user in self.allowed[message.service]
        command = _COMMAND.match((message.text or "").strip())
        if command:
            if not allowed:
                log.warning("%s: %s by %s is ignored: user %s is not in %s.allowed_user_ids", service,
                            one_line(clip(message.text or "", 60)), _shown(message.name), message.user, message.service)
                return None
            return None if message.edited else self._command(message, command.group(1).lower(),
                                                             (command.group(2) or "").strip())
        if not message.reply_to_bot:
            return None  # people talking among themselves
        found = self._question(message)
        if found is None:
            if allowed and not message.edited:
                self._say(message, "That message asks nothing, so " + NOT_USED)
            return None
        entry, question = found
        ref = key_text(issue_key(entry))
        if not allowed:
            log.warning("%s: a reply by %s to the question of %s is ignored: user %s is not in %s.allowed_user_ids",
                        service, _shown(message.name), ref, message.user, message.service)
            return None
        if message.edited:
            self._say(message, f"Edits are not read: an answer counts as it was first sent. To add to it, comment on"
                               f" {ref}.")
            return None
        if not message.text or not message.text.strip():
            self._say(message, f"Only text answers the question of {ref}: reply again with the answer in words.")
            return None
        if not is_open(entry, question):
            self._say(message, f"{_closed(entry, question)}: {NOT_USED}")
            return None
        taken = chat_answer_to_open_question(entry)
        if taken is not None:
            self._say(message, f"The question of {ref} was answered already, by {taken['who']} on"
                               f" {SERVICE_NAMES.get(taken['service'], 'a chat')}: {NOT_USED}")
            return None
        return self._answer(message, entry)

    def _answer(self, message: ChatMessage, entry: IssueState) -> Optional[Change]:
        """Post the answer on the issue, then record it: the tick's reconcile resumes the session with it."""
        ref = key_text(issue_key(entry))
        asked_on = entry.question_number or entry.issue_number  # a follow-up asks on its pull request
        key = f"chat-answer:{message.service}:{message.chat}:{message.id}"
        try:
            if replies_to_question(self.trust(entry.repo), entry):
                self._say(message, f"The question of {ref} was answered on GitHub already: {NOT_USED}")
                return None
            body, left_out = chat_answer_comment(message.service, message.name, message.user, message.text, key)
            comment = post_once(self.github(entry.repo), asked_on, key, body)
        except GitHubError as exc:
            if isinstance(exc, RateLimitError) or exc.status is None or exc.status >= 500:
                raise _Later(f"the answer to {ref} could not be posted on GitHub now: {exc}") from None
            log.error("%s: the answer by %s to %s could not be posted: %s", SERVICE_NAMES[message.service],
                      _shown(message.name), ref, exc)
            self._say(message, f"Your answer could not be posted on {ref} ({exc}); please answer on GitHub.")
            return None
        fault_point("chat-answer-posted")
        log.info("Issue %s: %s answered its question on %s (user %s); posted as comment %s", ref,
                 _shown(message.name), SERVICE_NAMES[message.service], message.user, comment.get("id"))
        paused = self.snapshot.paused_until()
        text = (f"✅ Thanks, {message.name}: your answer is on {ref}, and the session resumes "
                + (f"when launches resume ({paused:%Y-%m-%d %H:%M} UTC)." if paused else "now."))
        if left_out:
            text += f" It was cut to fit in a GitHub comment: its last {left_out:,} characters are left out."
        if message.service == "slack":
            text += " Later replies in this thread are not read."
        self._say(message, text, (comment["html_url"], "the comment") if comment.get("html_url") else None)
        who, service, key_of = message.name, message.service, issue_key(entry)

        def record(state: State) -> None:
            current = state.issues.get(key_of)
            if current is not None:
                current.chat_answers = answered(current, comment, service, who)
        return record

    def _command(self, message: ChatMessage, name: str, argument: str) -> Change:
        """Run an operator command (lib/operations.py) and say in the chat what it said."""
        operations = Operations(self.config, state=self.state)
        try:
            if name in ("cancel", "retry") and not argument:
                text = f"/{name} needs an issue: /{name} owner/name#N"
            elif name in ("cancel", "retry", "pause", "status"):
                text = getattr(operations, name)(argument or None)
            else:
                text = operations.unpause()
        except OrchestratorError as exc:
            text = str(exc)
        log.info("%s: /%s%s by %s (user %s): %s", SERVICE_NAMES[message.service], name,
                 f" {one_line(clip(argument, 60))}" if argument else "", _shown(message.name), message.user,
                 one_line(text))
        self._say(message, text)
        return lambda state: None  # written now with the offset: a command is not run twice

    def _question(self, message: ChatMessage) -> Optional[Tuple[IssueState, Dict[str, Any]]]:
        """The entry and chat question whose message `message` replies to, if any."""
        for entry in self.snapshot.issues.values():
            for question in entry.chat_questions:
                if (question["service"], str(question["chat"]), str(question["id"])) == \
                        (message.service, message.chat, message.reply_to):
                    return entry, question
        return None

    # --- replies in the chats -------------------------------------------------------------------

    def _say(self, message: ChatMessage, text: str, link: Optional[Tuple[str, str]] = None) -> None:
        to = message.id if message.service == "telegram" else message.reply_to
        self.replies.append(_Reply(message.service, message.chat, to, text, link))

    def _say_all(self, chats: Dict[str, Any]) -> None:
        """Every reply, once what they say is recorded: in order in each chat, the chats in parallel,
        all within the timeout."""
        def say(service: str) -> List[str]:
            failed = []
            for reply in (r for r in self.replies if r.service == service):
                try:
                    chats[service].reply(reply.chat, reply.to, reply.text, reply.link)
                except NotifierError as exc:
                    failed.append(str(exc))
            return failed

        services = sorted({reply.service for reply in self.replies})
        for _, failed, error in within(self.config.notification_timeout_seconds,
                                       [(SERVICE_NAMES[service], lambda s=service: say(s)) for service in services]):
            for problem in [error] if error else failed:
                log.warning("%s; a reply in the chat was not sent", one_line(problem))
        self.replies = []


def _closed(entry: IssueState, question: Dict[str, Any]) -> str:
    """Why the question `question` asked is no longer open."""
    ref = key_text(issue_key(entry))
    if entry.is_finished or entry.status == IssueStatus.WAITING:
        return f"{ref} is {entry.status} now, so its question is closed"
    if question.get("question") != entry.question_comment_id and entry.status == IssueStatus.NEEDS_INPUT:
        return f"That question of {ref} was answered already (its newest question is another message)"
    return f"The question of {ref} was answered already and the session went on"


def _mark_seen(state: State, entry: IssueState, question: Dict[str, Any], ts: str) -> None:
    current = state.issues.get(issue_key(entry))
    for asked in current.chat_questions if current is not None else ():
        if (asked["service"], asked["chat"], asked["id"]) == (question["service"], question["chat"], question["id"]):
            asked["seen"] = ts


def _shown(name: str) -> str:
    """A person's name as a log line may show it: one line, short."""
    return repr(one_line(clip(name, 60)))

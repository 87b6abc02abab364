"""Slack notifications through slack_sdk's WebClient: Block Kit blocks with a plain `text` fallback;
and a question's thread read back.

Slack reads `&`, `<` and `>` as control characters (`<@U123>` mentions someone, `<url|label>` is a
link), so issue-derived text is escaped, and every text object is kept within Block Kit's limits
after escaping. Free text from the issue goes into plain_text objects, where `*_~` stay literal.

For answers from the chat (lib/chat_inbox.py) a question's message starts a thread: `send` returns
its ts, `thread_replies` reads the thread (one conversations.replies: scope channels:history, or
groups:history in a private channel) and `reply` posts in it (chat:write). A person's text arrives
in Slack's markup; `plain_text` undoes it.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from lib.events import (
    DEFAULT_TIMEOUT,
    MIN_RESEND_SECONDS,
    ChatMessage,
    Event,
    Notifier,
    NotifierError,
    clip_tail,
    is_web_url,
    summary,
)
from lib.figures import BRANCH_CHARS, LOG_TAIL_LINES, REASON_CHARS, TITLE_CHARS, figures
from lib.redaction import protect_loggers, register_secret

DEFAULT_API_BASE_URL = "https://slack.com/api/"
MAX_TEXT = 3000  # a section's text object
MAX_FALLBACK_TEXT = 1000  # `text`: what notifications and screen readers show; Slack allows more

#: What a question's message adds when answers from Slack are taken.
REPLY_HINT = "↩️ Or reply in this thread with the answer (from a member listed in slack.allowed_user_ids)."
#: Replies read from a thread at once; more wait for the next read.
MAX_REPLIES = 200

#: The SDK logs its own error line for a failed request; the dispatcher already says it in one
#: warning line. Lower this logger's level to see the SDK's request and response dumps.
_sdk_logger = logging.getLogger(__name__ + ".sdk")


# ------------------------------------------------------------------------------------------------
# Formatting (pure: no network)
# ------------------------------------------------------------------------------------------------


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip_escaped(text: str, limit: int) -> str:
    """`text` escaped, then cut to `limit` characters without splitting an `&amp;`; "…" marks a cut."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    out: List[str] = []
    used = 0
    for char in text:
        piece = escape(char)
        if used + len(piece) > limit - 1:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out) + "…"


def clip_escaped_tail(text: str, limit: int) -> str:
    """Like clip_escaped, but keeps the end: the last lines of a log matter most."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    out: List[str] = []
    used = 0
    for char in reversed(text):
        piece = escape(char)
        if used + len(piece) > limit - 1:
            break
        out.append(piece)
        used += len(piece)
    return "…" + "".join(reversed(out))


#: Slack's markup in a message: <@U123>, <@U123|name>, <#C123|general>, <!here>, <!subteam^S1|@team>,
#: <https://x|label>, <mailto:a@b|a@b>.
_MARKUP = re.compile(r"<([@#!]?)([^<>|]*)(?:\|([^<>]*))?>")


def plain_text(markup: str) -> str:
    """A message as Slack sends it, as the person meant it: mentions as @name, links as
    "label (url)", and Slack's three escapes undone (last, so `&amp;lt;` stays `&lt;`)."""
    def readable(match: "re.Match[str]") -> str:
        sigil, target, label = match.groups()
        if sigil in ("@", "#"):
            return sigil + (label or target).lstrip("@#")
        if sigil == "!":
            return label or "@" + target.split("^")[0]
        if label and label != target and label != target.removeprefix("mailto:"):
            return f"{label} ({target})"
        return target.removeprefix("mailto:")

    text = _MARKUP.sub(readable, markup)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _link(url: Optional[str], label: str) -> str:
    if is_web_url(url):
        return f"<{escape(url)}|{escape(label)}>"
    return escape(label)


def _mrkdwn(text: str) -> Dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _plain(text: str, limit: int) -> Dict[str, Any]:
    return {"type": "section", "text": {"type": "plain_text", "text": clip_escaped(text, limit), "emoji": True}}


def _code_block(log: str) -> Dict[str, Any]:
    # A zero-width space after each backtick that precedes another: the log cannot close the fence.
    body = re.sub(r"`(?=`)", "`\u200b", clip_tail(log, LOG_TAIL_LINES, MAX_TEXT))
    return _mrkdwn("```\n" + clip_escaped_tail(body, MAX_TEXT - len("```\n\n```")) + "\n```")


def format_blocks(event: Event) -> Tuple[str, List[Dict[str, Any]]]:
    """The event as (fallback text, Block Kit blocks), every text escaped and within limits."""
    blocks: List[Dict[str, Any]] = [_mrkdwn(f"{event.emoji} *{event.label}* · {_link(event.url, event.issue_ref)}")]
    if event.title:
        blocks.append(_plain(event.title, TITLE_CHARS))
    fields = []
    if event.slot is not None:
        fields.append(f"*Slot*\n{event.slot}")
    if event.branch:
        fields.append(f"*Branch*\n{clip_escaped(event.branch, BRANCH_CHARS)}")
    fields += [f"*{name}*\n{value}" for name, value in figures(event.cost_usd, event.num_turns, event.duration_seconds,
                                                               unknown=None)]
    if event.pr_url:
        fields.append(f"*Pull request*\n{_link(event.pr_url, event.pr_url)}")
    if event.checks:
        fields.append(f"*Checks*\n{escape(event.checks)}")
    if fields:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]})
    blocks.append(_mrkdwn(escape(summary(event))))
    if event.reason:
        blocks.append(_plain(f"Reason: {event.reason}", REASON_CHARS))
    if event.question:
        blocks.append(_plain(event.question, MAX_TEXT))
    if event.log_tail:
        blocks.append(_code_block(event.log_tail))
    fallback = f"{event.emoji} {event.label}: {event.issue_ref} {event.title}".rstrip()
    return clip_escaped(fallback, MAX_FALLBACK_TEXT), blocks



# ------------------------------------------------------------------------------------------------
# Sending
# ------------------------------------------------------------------------------------------------


def _retry_after_seconds(headers) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            value = value[0] if isinstance(value, list) else value
            try:
                return float(value)
            except ValueError:
                break
    return 1.0  # what the SDK waits when the header is missing


class _RateLimitWithinBudget(RateLimitErrorRetryHandler):
    """The SDK's own 429 handler (one retry after Retry-After), used only when the wait still
    leaves time to resend before `deadline`; the resend then gets what is left of the budget."""

    def __init__(self, deadline: float):
        super().__init__(max_retry_count=1)
        self.deadline = deadline
        self.client: Optional[WebClient] = None

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        wait = _retry_after_seconds(response.headers) + 1  # the SDK adds up to 1 s of jitter
        return time.monotonic() + wait + MIN_RESEND_SECONDS <= self.deadline

    def prepare_for_next_attempt(self, *, state, request, response=None, error=None) -> None:
        super().prepare_for_next_attempt(state=state, request=request, response=response, error=error)
        self.client.timeout = max(MIN_RESEND_SECONDS, self.deadline - time.monotonic())


def _describe(response) -> str:
    """The API's answer in words: "channel_not_found"; "missing_scope (needs channels:history)"."""
    error = response.get("error") or f"HTTP {response.status_code}"
    if response.status_code == 429 or error == "ratelimited":
        return f"rate limited for {_retry_after_seconds(response.headers or {}):g} s; message dropped"
    if error == "missing_scope" and response.get("needed"):
        return f"missing_scope (the bot token needs {response.get('needed')})"
    details = response.get("errors") or (response.get("response_metadata") or {}).get("messages") or []
    return error + (f" ({'; '.join(details)})" if details else "")


class SlackNotifier(Notifier):
    """Posts events to one Slack channel. `send` raises NotifierError with the API's error code."""

    name = "Slack"

    def __init__(
        self,
        bot_token: str,
        channel_id: str,
        api_base_url: Optional[str] = DEFAULT_API_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        answers: bool = False,
    ):
        if not bot_token or not channel_id:
            raise NotifierError("Slack: both a bot token and a channel id are needed.")
        register_secret(bot_token)
        if _sdk_logger.level == logging.NOTSET:
            _sdk_logger.setLevel(logging.CRITICAL)
        protect_loggers(("slack_sdk", _sdk_logger.name))
        self._token = bot_token
        self.channel_id = channel_id
        self.api_base_url = api_base_url or DEFAULT_API_BASE_URL
        self.timeout = timeout
        self.answers = answers  # replies in a question's thread are read back (slack.allowed_user_ids is set)

    def send(self, event: Event) -> Optional[Tuple[str, str]]:
        text, blocks = format_blocks(event)
        if self.answers and event.kind == "needs_input":
            blocks = [*blocks, _mrkdwn(escape(REPLY_HINT))]
        answer = self._call(lambda client: client.chat_postMessage(
            channel=self.channel_id, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False))
        return str(answer.get("channel") or self.channel_id), str(answer["ts"])

    def reply(self, chat: str, thread_ts: Optional[str], text: str, link: Optional[Tuple[str, str]] = None) -> None:
        """Post `text` (plain: escaped here), then `link` (url, label), in the thread of `thread_ts`."""
        body = clip_escaped(text, MAX_TEXT) + (f" {_link(*link)}" if link else "")
        self._call(lambda client: client.chat_postMessage(channel=chat, thread_ts=thread_ts, text=body,
                                                          unfurl_links=False, unfurl_media=False))

    def thread_replies(self, chat: str, thread_ts: str, after: Optional[str]) -> List[ChatMessage]:
        """One conversations.replies: people's replies in the thread of `thread_ts` newer than
        `after` (else all), oldest first, at most MAX_REPLIES; the bot's own messages left out."""
        answer = self._call(lambda client: client.conversations_replies(
            channel=chat, ts=thread_ts, oldest=after or thread_ts, inclusive=False, limit=MAX_REPLIES))
        found = []
        for message in answer.get("messages") or []:
            if (message.get("ts") == thread_ts or message.get("bot_id") or not message.get("user")
                    or message.get("subtype") not in (None, "thread_broadcast")):
                continue
            profile = message.get("user_profile") or {}
            found.append(ChatMessage(
                service="slack", chat=chat, id=str(message["ts"]), user=str(message["user"]),
                name=profile.get("display_name") or profile.get("real_name") or str(message["user"]),
                # A reply is read once, after `after`: an edit made before that is simply its text.
                text=plain_text(message.get("text") or ""), reply_to=thread_ts, reply_to_bot=True))
        return found

    def _call(self, request):
        """`request(client)` within `timeout` (a rate-limit wait included when it fits), every failure
        as NotifierError."""
        # A client per request: the retry handler carries this request's deadline.
        handler = _RateLimitWithinBudget(time.monotonic() + self.timeout)
        client = WebClient(
            token=self._token,
            base_url=self.api_base_url,
            timeout=self.timeout,
            logger=_sdk_logger,
            retry_handlers=[handler],
        )
        handler.client = client
        try:
            return request(client)
        except SlackApiError as exc:
            raise self.failure(_describe(exc.response)) from None
        except socket.timeout:
            raise self.failure(f"no answer within {self.timeout:g} s") from None
        except URLError as exc:
            if isinstance(exc.reason, socket.timeout):
                raise self.failure(f"no answer within {self.timeout:g} s") from None
            raise self.failure(f"cannot reach the API ({exc.reason})") from None
        except (SlackClientError, OSError) as exc:
            raise self.failure(str(exc)) from None


def from_config(config, timeout: float = DEFAULT_TIMEOUT) -> SlackNotifier:
    return SlackNotifier(config.slack_bot_token, config.slack_channel_id,
                         api_base_url=getattr(config, "slack_api_base_url", None), timeout=timeout,
                         answers=bool(getattr(config, "slack_allowed_user_ids", None)))

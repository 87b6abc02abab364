"""Telegram notifications through python-telegram-bot 22, in HTML parse mode; and the chat read back.

Every piece of issue-derived text is HTML-escaped, and the message is cut to Telegram's 4096
characters between tags and entities, so a title like `<script>&` neither breaks the message nor
gets it rejected. The bot token is in every request URL (`/bot<token>/sendMessage`): it is
registered for redaction and never put into an error message.

For answers from the chat (lib/chat_inbox.py) a question's message id is returned by `send`;
`updates` reads people's messages (one getUpdates, never long polling) and `reply` answers one.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from datetime import timedelta
from typing import List, Optional, Tuple, Union

from telegram import Bot, LinkPreviewOptions, Message, ReplyParameters, Update
from telegram.constants import MessageLimit, ParseMode
from telegram.error import BadRequest, Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.request import HTTPXRequest

from lib.events import (
    DEFAULT_TIMEOUT,
    MIN_RESEND_SECONDS,
    ChatMessage,
    Event,
    Notifier,
    NotifierError,
    clip,
    clip_tail,
    is_web_url,
    summary,
)
from lib.figures import BRANCH_CHARS, LOG_TAIL_CHARS, LOG_TAIL_LINES, REASON_CHARS, TITLE_CHARS, figures_line
from lib.redaction import protect_loggers, register_secret

DEFAULT_API_BASE_URL = "https://api.telegram.org/bot"
MAX_MESSAGE_LENGTH = MessageLimit.MAX_TEXT_LENGTH  # 4096, counted on the text after parsing

#: What a question's message adds when answers from Telegram are taken.
REPLY_HINT = "↩️ Or reply to this message with the answer (from a user listed in telegram.allowed_user_ids)."
#: getUpdates answers at most this many updates; the rest wait for the next read.
MAX_UPDATES = 100


# ------------------------------------------------------------------------------------------------
# Formatting (pure: no network)
# ------------------------------------------------------------------------------------------------


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _link(url: Optional[str], label: str) -> str:
    if is_web_url(url):
        return f'<a href="{html.escape(url, quote=True)}">{_esc(label)}</a>'
    return _esc(label)


def format_message(event: Event, answers: bool = False) -> str:
    """The event as Telegram HTML, at most MAX_MESSAGE_LENGTH visible characters; with `answers`, a
    question says that a reply to it is an answer."""
    lines: List[str] = [f"{event.emoji} <b>{event.label}</b> · {_link(event.url, event.issue_ref)}"]
    if event.title:
        lines.append(f"<b>{_esc(clip(event.title, TITLE_CHARS))}</b>")
    where = []
    if event.slot is not None:
        where.append(f"Slot {event.slot}")
    if event.branch:
        where.append(f"branch <code>{_esc(clip(event.branch, BRANCH_CHARS))}</code>")
    if where:
        lines.append(" · ".join(where))
    lines.append(_esc(summary(event)))
    if answers and event.kind == "needs_input":
        lines.append(_esc(REPLY_HINT))
    stats = figures_line(event.cost_usd, event.num_turns, event.duration_seconds, unknown=None)
    if stats:
        lines.append(_esc(stats))
    if event.checks:
        lines.append(f"Checks: {_esc(event.checks)}")
    if event.pr_url:
        lines.append(f"Pull request: {_link(event.pr_url, event.pr_url)}")
    if event.reason:
        lines.append(f"Reason: {_esc(clip(event.reason, REASON_CHARS))}")
    # Long free text goes last: if the message must be cut, only its end is lost.
    if event.question:
        lines.append(f"<blockquote>{_esc(event.question)}</blockquote>")
    if event.log_tail:
        lines.append(f"<pre>{_esc(clip_tail(event.log_tail, LOG_TAIL_LINES, LOG_TAIL_CHARS))}</pre>")
    return truncate_html("\n".join(lines), MAX_MESSAGE_LENGTH)


# A tag, an entity, or one character of text: the units a cut must not split.
_HTML_TOKEN = re.compile(r"<(/?)([a-z-]+)[^>]*>|&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);|[^<&]", re.S)


def _visible_units(token: str) -> int:
    """UTF-16 code units of what a text token shows: Telegram counts lengths in UTF-16."""
    if token.startswith("&"):
        return 1  # this module only writes entities of BMP characters
    return len(token.encode("utf-16-le")) // 2


def visible_length(html_text: str) -> int:
    """Length of `html_text` as Telegram counts it after parsing the tags and entities."""
    return sum(_visible_units(m.group(0)) for m in _HTML_TOKEN.finditer(html_text) if not m.group(2))


def truncate_html(html_text: str, limit: int) -> str:
    """Cut well-formed HTML to `limit` visible characters, between tokens, ending in "…" and
    closing every tag left open."""
    if visible_length(html_text) <= limit:
        return html_text
    out: List[str] = []
    open_tags: List[str] = []
    used = 0
    for match in _HTML_TOKEN.finditer(html_text):
        token = match.group(0)
        if match.group(2):
            if match.group(1):
                open_tags.pop()
            else:
                open_tags.append(match.group(2))
            out.append(token)
            continue
        size = _visible_units(token)
        if used + size > limit - 1:  # keep one for "…"
            break
        out.append(token)
        used += size
    return "".join(out) + "…" + "".join(f"</{tag}>" for tag in reversed(open_tags))


# ------------------------------------------------------------------------------------------------
# Sending
# ------------------------------------------------------------------------------------------------


def _quiet_http_loggers() -> None:
    """httpx logs every request URL at INFO, and this one holds the token: keep it at WARNING
    unless someone set a level on purpose. The redacting filter covers every level anyway."""
    for name in ("httpx", "httpcore"):
        log = logging.getLogger(name)
        if log.level == logging.NOTSET:
            log.setLevel(logging.WARNING)
    protect_loggers(("httpx", "httpcore", "telegram"))


def _seconds(value: Union[int, float, timedelta]) -> float:
    # PTB 22 gives an int and warns it will become a timedelta: accept both.
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _sentence(message: str) -> str:
    """PTB capitalises the API's description ("Chat not found"); a report reads "chat not found"."""
    return message[:1].lower() + message[1:]


class TelegramNotifier(Notifier):
    """Sends events to one Telegram chat. `send` raises NotifierError with the API's error in words."""

    name = "Telegram"

    def __init__(
        self,
        bot_token: str,
        chat_id: Union[str, int],
        api_base_url: Optional[str] = DEFAULT_API_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        answers: bool = False,
    ):
        if not bot_token or not chat_id:
            raise NotifierError("Telegram: both a bot token and a chat id are needed.")
        register_secret(bot_token)
        _quiet_http_loggers()
        self._token = bot_token
        self.chat_id = str(chat_id)
        self.api_base_url = api_base_url or DEFAULT_API_BASE_URL
        self.timeout = timeout
        self.answers = answers  # replies to a question are read back (telegram.allowed_user_ids is set)
        self.bot_id = bot_token.split(":", 1)[0]  # a token is "<bot id>:<secret>"

    def send(self, event: Event) -> Optional[Tuple[str, str]]:
        message = self._call(lambda bot, deadline: self._post(bot, format_message(event, self.answers), deadline))
        return str(message.chat_id), str(message.message_id)

    def reply(self, chat: str, message_id: Optional[str], text: str, link: Optional[Tuple[str, str]] = None) -> None:
        """Answer message `message_id` of `chat` with `text` (plain: escaped here), then `link` (url, label)."""
        html_text = truncate_html(_esc(text) + (f" {_link(*link)}" if link else ""), MAX_MESSAGE_LENGTH)
        reply = ReplyParameters(int(message_id), allow_sending_without_reply=True) if message_id else None
        self._call(lambda bot, deadline: self._post(bot, html_text, deadline, chat=chat, reply=reply))

    def updates(self, offset: Optional[int]) -> List[ChatMessage]:
        """One getUpdates from `offset` (which confirms every update below it): people's messages
        and edits, oldest first; other kinds of update come back as messages without text."""
        found = self._call(lambda bot, deadline: bot.get_updates(
            offset=offset, limit=MAX_UPDATES, timeout=0, allowed_updates=["message", "edited_message"]))
        return [self._chat_message(update) for update in found]

    def _chat_message(self, update: Update) -> ChatMessage:
        message: Optional[Message] = update.message or update.edited_message
        if message is None or message.from_user is None:  # a kind not asked for, queued before
            return ChatMessage(service="telegram", chat="", id="", user="", name="", text=None,
                               update_id=update.update_id)
        sender, answered = message.from_user, message.reply_to_message
        name = " ".join(part for part in (sender.first_name, sender.last_name) if part)
        return ChatMessage(
            service="telegram", chat=str(message.chat_id), id=str(message.message_id), user=str(sender.id),
            name=f"{name} (@{sender.username})" if sender.username else name,
            text=message.text if message.text is not None else message.caption,
            reply_to=str(answered.message_id) if answered else None,
            reply_to_bot=bool(answered and answered.from_user and str(answered.from_user.id) == self.bot_id),
            edited=update.edited_message is not None, update_id=update.update_id)

    def _call(self, step):
        """Run `step(bot, deadline)` within `timeout` seconds in all, a rate-limit wait included;
        every failure as NotifierError."""
        try:
            return asyncio.run(asyncio.wait_for(self._session(step, time.monotonic() + self.timeout), self.timeout))
        except (asyncio.TimeoutError, TimedOut):
            raise self.failure(f"no answer within {self.timeout:g} s") from None
        except RetryAfter as exc:
            raise self.failure(f"rate limited for {_seconds(exc.retry_after):g} s; message dropped") from None
        except InvalidToken as exc:
            raise self.failure(f"the bot token was rejected ({exc.message})") from None
        except Conflict as exc:  # a webhook is set, or another program reads this bot's updates
            raise self.failure(f"cannot read the bot's updates ({_sentence(exc.message)})") from None
        except BadRequest as exc:  # before NetworkError, its base class
            raise self.failure(_sentence(exc.message)) from None
        except NetworkError as exc:
            raise self.failure(f"cannot reach the API ({exc.message})") from None
        except TelegramError as exc:
            raise self.failure(_sentence(exc.message)) from None

    async def _session(self, step, deadline: float):
        request = HTTPXRequest(
            connection_pool_size=1,
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            write_timeout=self.timeout,
            pool_timeout=self.timeout,
        )
        # Not `async with bot`: that calls getMe first, a second round trip whose InvalidToken
        # message quotes the token.
        bot = Bot(self._token, base_url=self.api_base_url, request=request, get_updates_request=request)
        try:
            return await step(bot, deadline)
        finally:
            await request.shutdown()

    async def _post(self, bot: Bot, text: str, deadline: float, chat: Optional[str] = None,
                    reply: Optional[ReplyParameters] = None) -> Message:
        try:
            return await self._send_message(bot, text, chat, reply)
        except RetryAfter as exc:
            wait = _seconds(exc.retry_after)
            if time.monotonic() + wait + MIN_RESEND_SECONDS > deadline:
                raise
            await asyncio.sleep(wait)
            return await self._send_message(bot, text, chat, reply)

    async def _send_message(self, bot: Bot, text: str, chat: Optional[str], reply: Optional[ReplyParameters]) -> Message:
        return await bot.send_message(
            chat_id=chat or self.chat_id,
            text=text,
            parse_mode=ParseMode.HTML,
            link_preview_options=LinkPreviewOptions(is_disabled=True),
            reply_parameters=reply,
        )


def from_config(config, timeout: float = DEFAULT_TIMEOUT) -> TelegramNotifier:
    return TelegramNotifier(config.telegram_bot_token, config.telegram_chat_id,
                            api_base_url=getattr(config, "telegram_api_base_url", None), timeout=timeout,
                            answers=bool(getattr(config, "telegram_allowed_user_ids", None)))

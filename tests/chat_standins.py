"""Stand-ins for the Telegram Bot API and the Slack Web API on 127.0.0.1, for driving the real
python-telegram-bot and slack_sdk through their base_url.

They answer like the real services, errors included, and record every message they accept:
- Telegram: POST /bot<token>/sendMessage; a wrong token is 401 Unauthorized (404 Not Found when it
  is not even shaped like one), an unknown chat 400 "chat not found", parse_mode=HTML is really
  parsed (unknown or unbalanced tags, a bare `<` or `&` are 400 "can't parse entities"), text over
  4096 characters after parsing is 400 "message is too long", flood control is 429 with
  parameters.retry_after; reply_parameters names the message answered. getUpdates as the Bot API
  documents it: updates in update_id order, at most `limit` (100); an `offset` confirms every
  update below it, which is then gone for good; `allowed_updates` filters. People's messages and
  edits are queued as updates by `user_message` and `edit_message` (a reply carries the whole
  message it answers in reply_to_message); `revoke()` makes the bot's token 401 Unauthorized.
- Slack: POST /api/chat.postMessage with a Bearer token (thread_ts posts in a thread); errors are
  HTTP 200 with ok=false (not_authed, invalid_auth, token_revoked, channel_not_found, no_text,
  invalid_blocks), rate limits HTTP 429 with a Retry-After header. Blocks are checked against
  Block Kit's limits. conversations.replies returns a thread, its parent message first, then the
  replies after `oldest` (exclusive unless `inclusive`), at most `limit` with `has_more` and a
  `response_metadata.next_cursor`; it needs the scope channels:history (groups:history for a
  private channel), else missing_scope with `needed` and `provided`. `user_reply` adds a person's
  reply to a thread (text as Slack stores it: `slack_typed` escapes what a person types).

`requests` lists every request as (API method, HTTP status); `count(method)` counts them.

Plus two servers that fail below HTTP: a port nobody listens on, and one that never answers.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs

import pytest

TELEGRAM_TOKEN = "123456789:AAH-stand-in-token_0123456789abcdefXYZ"
TELEGRAM_CHAT_ID = "4242"
SLACK_TOKEN = "xoxb-1111-2222-standintokenABCDEF"
SLACK_CHANNEL_ID = "C0STANDIN1"


# ------------------------------------------------------------------------------------------------
# HTTP plumbing shared by both stand-ins
# ------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (slack_sdk reads with GET and a query string)
        path, _, query = self.path.partition("?")
        self._reply(path, {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()})

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype == "application/json":
            params = json.loads(body or b"{}")
        else:
            params = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        self._reply(self.path, params)

    def _reply(self, path: str, params: Dict[str, Any]) -> None:
        status, payload, headers = self.server.standin.handle(path, dict(self.headers), params)
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


class _StandIn:
    """A ThreadingHTTPServer on an ephemeral loopback port; use as a context manager."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: List[Tuple[str, int]] = []  # (API method, HTTP status) of every request
        self._rate_limits: List[int] = []
        self._server: Optional[ThreadingHTTPServer] = None

    def start(self) -> "_StandIn":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.standin = self
        # A short poll interval: shutdown() waits for the loop to notice, once per test.
        threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name=type(self).__name__, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def rate_limit_next(self, retry_after: int, times: int = 1) -> None:
        """Answer the next `times` message requests with a rate-limit error."""
        with self.lock:
            self._rate_limits.extend([retry_after] * times)

    def _take_rate_limit(self) -> Optional[int]:
        with self.lock:
            return self._rate_limits.pop(0) if self._rate_limits else None

    def handle(self, path: str, headers: Dict[str, str], params: Dict[str, Any]):
        status, payload, extra_headers, method = self._answer(path, headers, params)
        with self.lock:
            self.requests.append((method, status))
        return status, payload, extra_headers

    def count(self, method: str) -> int:
        """How many requests called the API method `method` (any answer)."""
        with self.lock:
            return sum(1 for name, _ in self.requests if name == method)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# ------------------------------------------------------------------------------------------------
# Telegram
# ------------------------------------------------------------------------------------------------


class TelegramParseError(Exception):
    pass


_TG_TAGS = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
    "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
    "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre", "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TG_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_TG_ENTITY = re.compile(r"&(?:#(\d+)|#[xX]([0-9a-fA-F]+)|([a-zA-Z]+));")
_TG_ATTR = re.compile(r"\s+([a-zA-Z-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'=<>`]+)))?")


def _tg_decode(text: str, start: int, source: str) -> str:
    """Decode the entities in `text` (a piece of `source` at `start`), as strictly as Telegram."""
    out = []
    i = 0
    while i < len(text):
        if text[i] != "&":
            out.append(text[i])
            i += 1
            continue
        m = _TG_ENTITY.match(text, i)
        offset = len(source[: start + i].encode("utf-8"))
        if not m or (m.group(3) and m.group(3) not in _TG_NAMED_ENTITIES):
            raise TelegramParseError(f'Unsupported HTML entity or unescaped "&" at byte offset {offset}')
        if m.group(3):
            out.append(_TG_NAMED_ENTITIES[m.group(3)])
        else:
            out.append(chr(int(m.group(1)) if m.group(1) else int(m.group(2), 16)))
        i = m.end()
    return "".join(out)


def parse_telegram_html(source: str) -> Tuple[str, List[Dict[str, Any]]]:
    """The text and the entities (offsets in UTF-16 units) Telegram makes of an HTML message.

    Raises TelegramParseError with the text Telegram puts after "can't parse entities: ".
    """
    text: List[str] = []
    length = 0  # UTF-16 units in `text`
    entities: List[Dict[str, Any]] = []
    stack: List[Tuple[str, Dict[str, Any]]] = []
    i = 0
    while i < len(source):
        lt = source.find("<", i)
        chunk = source[i:] if lt < 0 else source[i:lt]
        decoded = _tg_decode(chunk, i, source)
        text.append(decoded)
        length += utf16_len(decoded)
        if lt < 0:
            break
        offset = len(source[:lt].encode("utf-8"))
        gt = source.find(">", lt)
        if gt < 0:
            raise TelegramParseError(f"Unclosed start tag at byte offset {offset}")
        inner = source[lt + 1: gt]
        if inner.startswith("/"):
            name = inner[1:].strip().lower()
            if not stack:
                raise TelegramParseError(f"Unexpected end tag at byte offset {offset}")
            if stack[-1][0] != name:
                raise TelegramParseError(
                    f'Unmatched end tag at byte offset {offset}, expected "</{stack[-1][0]}>", found "</{name}>"'
                )
            _, entity = stack.pop()
            entity["length"] = length - entity["offset"]
            if entity["length"] > 0:
                entities.append(entity)
        else:
            m = re.match(r"([a-zA-Z][a-zA-Z0-9-]*)", inner)
            name = m.group(1).lower() if m else inner[:20]
            if not m or name not in _TG_TAGS:
                raise TelegramParseError(f'Unsupported start tag "{name}" at byte offset {offset}')
            attrs = {}
            rest = inner[m.end():].rstrip()
            pos = 0
            while pos < len(rest):
                am = _TG_ATTR.match(rest, pos)
                if not am:
                    raise TelegramParseError(f"Can't parse attributes of the tag at byte offset {offset}")
                value = next((v for v in am.group(2, 3, 4) if v is not None), "")
                attrs[am.group(1).lower()] = _tg_decode(value, lt, source)
                pos = am.end()
            if any(open_name in ("code", "pre") for open_name, _ in stack) and not (
                name == "code" and stack[-1][0] == "pre"
            ):
                raise TelegramParseError(f"Entities can't be nested in pre or code, at byte offset {offset}")
            if name == "span" and attrs.get("class") != "tg-spoiler":
                raise TelegramParseError(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
            entity: Dict[str, Any] = {"type": _TG_TAGS[name], "offset": length}
            if name == "a":
                if not attrs.get("href"):
                    raise TelegramParseError(f"Tag \"a\" has no href at byte offset {offset}")
                entity["url"] = attrs["href"]
            stack.append((name, entity))
        i = gt + 1
    if stack:
        raise TelegramParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(text), sorted(entities, key=lambda e: e["offset"])


def telegram_user(user_id: int, first_name: str, username: Optional[str] = None,
                  last_name: Optional[str] = None) -> Dict[str, Any]:
    """A Telegram User object, as a person's message carries it in `from`."""
    user: Dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username:
        user["username"] = username
    if last_name:
        user["last_name"] = last_name
    return user


class TelegramStandIn(_StandIn):
    """The Bot API's sendMessage and getUpdates. `messages` holds every message the bot sent:
    chat_id, message_id, text (as sent), parse_mode, plain_text and entities (as Telegram would
    show them) and reply_to (the message it answered, or None)."""

    MAX_LENGTH = 4096
    MAX_UPDATES = 100

    def __init__(self, token: str = TELEGRAM_TOKEN, chat_id: str = TELEGRAM_CHAT_ID):
        super().__init__()
        self.token = token
        self.chat_id = str(chat_id)
        self.messages: List[Dict[str, Any]] = []
        self.bot = {"id": int(token.split(":")[0]), "is_bot": True, "first_name": "Orchestrator",
                    "username": "orchestrator_bot"}
        self.updates: List[Dict[str, Any]] = []  # not yet confirmed by an offset, in update_id order
        self.offsets: List[Optional[int]] = []  # the offset of each getUpdates, as asked
        self._chats: Dict[str, Dict[str, Any]] = {self.chat_id: self._chat(self.chat_id, "group")}
        self._stored: Dict[Tuple[str, int], Dict[str, Any]] = {}  # (chat, message_id) -> Message
        self._message_ids: Dict[str, int] = {}
        self._next_update = 870_000_001

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @staticmethod
    def _chat(chat_id: str, kind: str) -> Dict[str, Any]:
        return {"id": int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id, "type": kind}

    @staticmethod
    def _error(code: int, description: str, **parameters):
        payload: Dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if parameters:
            payload["parameters"] = parameters
        return code, payload

    # --- what people do -------------------------------------------------------------------------

    def user_message(self, user: Dict[str, Any], text: Optional[str], reply_to: Optional[int] = None,
                     chat_id: Optional[str] = None) -> int:
        """A person writes `text` in the chat (default: the bot's chat; a private chat's id is the
        person's), replying to message `reply_to` if given; queued as a `message` update. Returns
        the message id."""
        chat = str(chat_id or self.chat_id)
        with self.lock:
            if chat not in self._chats:
                self._chats[chat] = self._chat(chat, "private" if chat == str(user["id"]) else "group")
            message = {"message_id": self._new_message_id(chat), "from": user, "chat": self._chats[chat],
                       "date": int(time.time())}
            if text is not None:
                message["text"] = text
            else:
                message["photo"] = [{"file_id": "AgAD-photo", "file_unique_id": "AQAD", "width": 90, "height": 90}]
            if reply_to is not None:
                # "will not contain further reply_to_message fields even if it itself is a reply"
                message["reply_to_message"] = {k: v for k, v in self._stored[(chat, reply_to)].items()
                                               if k != "reply_to_message"}
            self._stored[(chat, message["message_id"])] = message
            self._queue("message", message)
            return message["message_id"]

    def edit_message(self, message_id: int, text: str, chat_id: Optional[str] = None) -> None:
        """The person edits their message: an `edited_message` update with the new text."""
        chat = str(chat_id or self.chat_id)
        with self.lock:
            stored = self._stored[(chat, message_id)]
            stored["text"] = text
            edited = dict(stored, edit_date=int(time.time()))
            self._queue("edited_message", edited)

    def revoke(self) -> None:
        """The bot's token is revoked (@BotFather /revoke): every request with it is 401 Unauthorized."""
        with self.lock:
            self.token = self.token.split(":")[0] + ":AAnew-token-after-revoke_000000000000"

    def _new_message_id(self, chat: str) -> int:
        self._message_ids[chat] = self._message_ids.get(chat, 0) + 1
        return self._message_ids[chat]

    def _queue(self, kind: str, message: Dict[str, Any]) -> None:
        self.updates.append({"update_id": self._next_update, kind: json.loads(json.dumps(message))})
        self._next_update += 1

    # --- the API --------------------------------------------------------------------------------

    def _answer(self, path, headers, params):
        m = re.match(r"^/bot([^/]*)/(\w+)$", path)
        method = m.group(2) if m else path
        code, payload = self._answer_method(m, params)
        return code, payload, {}, method

    def _answer_method(self, match, params):
        if not match or not re.match(r"^\d+:[\w-]{20,}$", match.group(1)):
            return self._error(404, "Not Found")
        if match.group(1) != self.token:
            return self._error(401, "Unauthorized")
        if match.group(2) == "getUpdates":
            return self._get_updates(params)
        if match.group(2) != "sendMessage":
            return self._error(404, "Not Found")
        return self._send_message(params)

    def _get_updates(self, params):
        def number(name: str) -> Optional[int]:
            value = params.get(name)
            return int(value) if value not in (None, "") else None

        offset, limit = number("offset"), number("limit") or self.MAX_UPDATES
        allowed = params.get("allowed_updates")
        allowed = json.loads(allowed) if isinstance(allowed, str) else allowed
        with self.lock:
            self.offsets.append(offset)
            if offset is not None:  # "All previous updates will be forgotten."
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
            found = [u for u in self.updates if not allowed or next(k for k in u if k != "update_id") in allowed]
            return 200, {"ok": True, "result": found[: max(1, min(limit, self.MAX_UPDATES))]}

    def _send_message(self, params):
        if not params.get("chat_id"):
            return self._error(400, "Bad Request: chat_id is empty")
        chat = str(params["chat_id"])
        if chat not in self._chats:
            return self._error(400, "Bad Request: chat not found")
        retry_after = self._take_rate_limit()
        if retry_after is not None:
            return self._error(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)
        source = params.get("text") or ""
        parse_mode = params.get("parse_mode")
        if parse_mode == "HTML":
            try:
                plain, entities = parse_telegram_html(source)
            except TelegramParseError as exc:
                return self._error(400, f"Bad Request: can't parse entities: {exc}")
        elif parse_mode:
            return self._error(400, f"Bad Request: unsupported parse_mode {parse_mode!r} in this stand-in")
        else:
            plain, entities = source, []
        if not plain.strip():
            return self._error(400, "Bad Request: message text is empty")
        if utf16_len(plain) > self.MAX_LENGTH:
            return self._error(400, "Bad Request: message is too long")
        reply = params.get("reply_parameters")
        reply = json.loads(reply) if isinstance(reply, str) else reply
        with self.lock:
            reply_to = (reply or {}).get("message_id")
            if reply_to is not None and (chat, reply_to) not in self._stored:
                if not reply.get("allow_sending_without_reply"):
                    return self._error(400, "Bad Request: message to be replied not found")
                reply_to = None
            result = {"message_id": self._new_message_id(chat), "date": int(time.time()), "chat": self._chats[chat],
                      "from": self.bot, "text": plain}
            if entities:
                result["entities"] = entities
            self._stored[(chat, result["message_id"])] = result
            self.messages.append({
                "chat_id": chat, "message_id": result["message_id"], "text": source, "parse_mode": parse_mode,
                "plain_text": plain, "entities": entities, "reply_to": reply_to,
            })
        return 200, {"ok": True, "result": result}


# ------------------------------------------------------------------------------------------------
# Slack
# ------------------------------------------------------------------------------------------------

_SLACK_CONTROL = re.compile(r"<(?:(?:https?://|mailto:)[^<>|]+|#C\w+|@[UW]\w+|![\w^-]+)(?:\|[^<>]*)?>")


def slack_escape_problems(text: str) -> List[str]:
    """Where `text` uses `&` or `<` other than as Slack's escapes or control sequences, which
    Slack would then misread (a swallowed tag, a mention, a link)."""
    problems = []
    for m in re.finditer(r"&(?!amp;|lt;|gt;)", text):
        problems.append(f"bare '&' at {m.start()}")
    i = 0
    while True:
        i = text.find("<", i)
        if i < 0:
            break
        m = _SLACK_CONTROL.match(text, i)
        if not m:
            problems.append(f"bare '<' at {i}")
            i += 1
        else:
            i = m.end()
    return problems


def slack_render(text: str, mrkdwn: bool = True) -> str:
    """What Slack shows for a text object: links become their label, the escapes their characters."""
    if mrkdwn:
        text = _SLACK_CONTROL.sub(lambda m: m.group(0)[1:-1].split("|", 1)[-1], text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def slack_typed(text: str) -> str:
    """What Slack stores for text a person typed: `&`, `<` and `>` escaped (its control sequences
    for links and mentions are what a client makes of pasted links and @-mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackStandIn(_StandIn):
    """The Web API's chat.postMessage and conversations.replies. `messages` holds every message
    the bot posted: channel, ts, thread_ts, text, blocks, rendered (what Slack would show, one line
    per text object) and problems (misused `&`/`<` that Slack would not reject but would display
    wrongly). `threads` holds each thread's replies, people's and the bot's, by parent ts."""

    MAX_BLOCKS = 50
    MAX_SECTION_TEXT = 3000
    MAX_FIELDS = 10
    MAX_FIELD_TEXT = 2000
    MAX_CONTEXT_ELEMENTS = 10
    MAX_HEADER_TEXT = 150
    BOT_ID, BOT_USER = "B0STANDIN", "U0STANDBOT"

    def __init__(self, token: str = SLACK_TOKEN, channel_id: str = SLACK_CHANNEL_ID):
        super().__init__()
        self.token = token
        self.channel_id = channel_id
        self.messages: List[Dict[str, Any]] = []
        self.scopes = {"chat:write", "channels:history", "groups:history"}
        self.threads: Dict[str, List[Dict[str, Any]]] = {}
        self._parents: Dict[str, Dict[str, Any]] = {}
        self._revoked: Dict[str, str] = {}  # token -> the error Slack gives it now
        self._clock = int(time.time())
        self._counter = 0

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # --- what people do -------------------------------------------------------------------------

    def user_reply(self, thread_ts: str, user: str, text: str, name: Optional[str] = None) -> str:
        """Person `user` (a member id) replies in the thread of `thread_ts` with `text` as Slack
        stores it (see slack_typed). Returns the reply's ts."""
        with self.lock:
            reply = {"type": "message", "user": user, "text": text, "ts": self._new_ts(), "thread_ts": thread_ts,
                     "parent_user_id": self.BOT_USER}
            if name:
                reply["user_profile"] = {"real_name": name, "display_name": name, "name": name.lower()}
            self.threads[thread_ts].append(reply)
            return reply["ts"]

    def edit_reply(self, thread_ts: str, ts: str, text: str) -> None:
        with self.lock:
            reply = next(r for r in self.threads[thread_ts] if r["ts"] == ts)
            reply["text"], reply["edited"] = text, {"user": reply["user"], "ts": self._new_ts()}

    def revoke(self, error: str = "token_revoked") -> None:
        """The bot's token stops working: token_revoked (its app was uninstalled, the token revoked)
        or invalid_auth."""
        with self.lock:
            self._revoked[self.token] = error

    def _new_ts(self) -> str:
        self._counter += 1
        return f"{self._clock}.{self._counter:06d}"

    # --- the API --------------------------------------------------------------------------------

    def _answer(self, path, headers, params):
        method = path.rsplit("/", 1)[-1]
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not path.startswith("/api/"):
            return 404, {"ok": False, "error": "unknown_method"}, {}, method
        if not auth.startswith("Bearer "):
            return 200, {"ok": False, "error": "not_authed"}, {}, method
        token = auth[len("Bearer "):]
        if token in self._revoked:
            return 200, {"ok": False, "error": self._revoked[token]}, {}, method
        if token != self.token:
            return 200, {"ok": False, "error": "invalid_auth"}, {}, method
        if method not in ("chat.postMessage", "conversations.replies"):
            return 200, {"ok": False, "error": "unknown_method"}, {}, method
        retry_after = self._take_rate_limit()
        if retry_after is not None:
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}, method
        if method == "conversations.replies":
            return (*self._replies(params), {}, method)
        return (*self._post_message(params), {}, method)

    def _replies(self, params):
        channel = params.get("channel")
        if channel != self.channel_id:
            return 200, {"ok": False, "error": "channel_not_found"}
        needed = "groups:history" if channel.startswith("G") else "channels:history"
        if needed not in self.scopes:
            return 200, {"ok": False, "error": "missing_scope", "needed": needed,
                         "provided": ",".join(sorted(self.scopes))}
        with self.lock:
            parent = self._parents.get(params.get("ts") or "")
            if parent is None:
                return 200, {"ok": False, "error": "thread_not_found"}
            inclusive = params.get("inclusive") in ("1", "true", True)
            oldest = Decimal(params.get("oldest") or "0")
            replies = [r for r in self.threads[parent["ts"]]
                       if Decimal(r["ts"]) > oldest or (inclusive and Decimal(r["ts"]) == oldest)]
            start = int(params.get("cursor") or 0)
            limit = max(1, min(int(params.get("limit") or 1000), 1000))
            page = replies[start: start + limit]
            more = start + limit < len(replies)
            # The parent always comes first, whatever the range: "an entire thread (a message plus
            # all the messages in reply to it)".
            answer = {"ok": True, "messages": json.loads(json.dumps([parent, *page])), "has_more": more}
            if more:
                answer["response_metadata"] = {"next_cursor": str(start + limit)}
            return 200, answer

    def _post_message(self, params):
        if params.get("channel") != self.channel_id:
            return 200, {"ok": False, "error": "channel_not_found"}
        text = params.get("text")
        blocks = params.get("blocks")
        if isinstance(blocks, str):  # form-encoded requests carry blocks as a JSON string
            blocks = json.loads(blocks)
        if not text:
            return 200, {"ok": False, "error": "no_text"}
        rendered: List[str] = []
        problems = slack_escape_problems(text)
        errors = self._check_blocks(blocks or [], rendered, problems)
        if errors:
            return 200, {
                "ok": False, "error": "invalid_blocks", "errors": errors,
                "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]},
            }
        if not blocks:
            rendered.append(slack_render(text))
        thread_ts = params.get("thread_ts") or None
        with self.lock:
            if thread_ts is not None and thread_ts not in self._parents:
                return 200, {"ok": False, "error": "thread_not_found"}
            ts = self._new_ts()
            message = {"type": "message", "text": text, "blocks": blocks or [], "ts": ts, "user": self.BOT_USER,
                       "bot_id": self.BOT_ID}
            if thread_ts:
                message["thread_ts"] = thread_ts
                self.threads[thread_ts].append(message)
            else:
                self._parents[ts] = message
                self.threads[ts] = []
            self.messages.append({
                "channel": self.channel_id, "ts": ts, "thread_ts": thread_ts, "text": text, "blocks": blocks,
                "rendered": "\n".join(rendered), "problems": problems,
            })
        return 200, {"ok": True, "channel": self.channel_id, "ts": ts, "message": message}

    def _check_blocks(self, blocks, rendered: List[str], problems: List[str]) -> List[str]:
        if not isinstance(blocks, list):
            return ["must provide an array [json-pointer:/blocks]"]
        if len(blocks) > self.MAX_BLOCKS:
            return [f"no more than {self.MAX_BLOCKS} items allowed [json-pointer:/blocks]"]
        errors: List[str] = []

        def text_object(obj, pointer: str, limit: int, plain_only: bool = False) -> None:
            if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
                errors.append(f"must provide an object [json-pointer:{pointer}]")
                return
            if plain_only and obj["type"] != "plain_text":
                errors.append(f"must be a plain_text object [json-pointer:{pointer}/type]")
                return
            value = obj.get("text")
            if not isinstance(value, str) or not value:
                errors.append(f"must be more than 0 characters [json-pointer:{pointer}/text]")
                return
            if len(value) > limit:
                errors.append(f"must be less than {limit + 1} characters [json-pointer:{pointer}/text]")
                return
            rendered.append(slack_render(value, mrkdwn=obj["type"] == "mrkdwn"))
            problems.extend(f"{pointer}: {p}" for p in slack_escape_problems(value))

        for n, block in enumerate(blocks):
            pointer = f"/blocks/{n}"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "section":
                if "text" not in block and "fields" not in block:
                    errors.append(f"must provide either text or fields [json-pointer:{pointer}]")
                if "text" in block:
                    text_object(block["text"], f"{pointer}/text", self.MAX_SECTION_TEXT)
                fields = block.get("fields", [])
                if len(fields) > self.MAX_FIELDS:
                    errors.append(f"no more than {self.MAX_FIELDS} items allowed [json-pointer:{pointer}/fields]")
                for i, field in enumerate(fields[: self.MAX_FIELDS]):
                    text_object(field, f"{pointer}/fields/{i}", self.MAX_FIELD_TEXT)
            elif kind == "context":
                elements = block.get("elements") or []
                if not 1 <= len(elements) <= self.MAX_CONTEXT_ELEMENTS:
                    errors.append(f"must have 1 to {self.MAX_CONTEXT_ELEMENTS} items [json-pointer:{pointer}/elements]")
                for i, element in enumerate(elements[: self.MAX_CONTEXT_ELEMENTS]):
                    text_object(element, f"{pointer}/elements/{i}", self.MAX_SECTION_TEXT)
            elif kind == "header":
                text_object(block.get("text"), f"{pointer}/text", self.MAX_HEADER_TEXT, plain_only=True)
            elif kind != "divider":
                errors.append(f"unsupported type {kind!r} in this stand-in [json-pointer:{pointer}/type]")
        return errors


# ------------------------------------------------------------------------------------------------
# Servers that fail below HTTP
# ------------------------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port with no listener: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SilentServer:
    """Accepts TCP connections and never answers: a hung API. The kernel completes the handshake
    for the listen backlog and buffers the request, so nothing needs to call accept()."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "SilentServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def telegram_api():
    with TelegramStandIn() as api:
        yield api


@pytest.fixture
def slack_api():
    with SlackStandIn() as api:
        yield api


@pytest.fixture
def silent_server():
    with SilentServer() as server:
        yield server

"""Stand-ins for the Telegram Bot API and the Slack Web API on 127.0.0.1, for driving the real
python-telegram-bot and slack_sdk through their base_url.

They answer like the real services, errors included, and record every message they accept:
- Telegram: POST /bot<token>/sendMessage; a wrong token is 401 Unauthorized (404 Not Found when it
  is not even shaped like one), an unknown chat 400 "chat not found", parse_mode=HTML is really
  parsed (unknown or unbalanced tags, a bare `<` or `&` are 400 "can't parse entities"), text over
  4096 characters after parsing is 400 "message is too long", flood control is 429 with
  parameters.retry_after.
- Slack: POST /api/chat.postMessage with a Bearer token; errors are HTTP 200 with ok=false
  (not_authed, invalid_auth, channel_not_found, no_text, invalid_blocks), rate limits HTTP 429
  with a Retry-After header. Blocks are checked against Block Kit's limits.

Plus two servers that fail below HTTP: a port nobody listens on, and one that never answers.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
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
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype == "application/json":
            params = json.loads(body or b"{}")
        else:
            params = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        status, payload, headers = self.server.standin.handle(self.path, dict(self.headers), params)
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


class TelegramStandIn(_StandIn):
    """The Bot API's sendMessage. `messages` holds every accepted message: chat_id, text (as
    sent), parse_mode, plain_text and entities (as Telegram would show them)."""

    MAX_LENGTH = 4096

    def __init__(self, token: str = TELEGRAM_TOKEN, chat_id: str = TELEGRAM_CHAT_ID):
        super().__init__()
        self.token = token
        self.chat_id = str(chat_id)
        self.messages: List[Dict[str, Any]] = []

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @staticmethod
    def _error(code: int, description: str, **parameters):
        payload: Dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if parameters:
            payload["parameters"] = parameters
        return code, payload

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
        if match.group(2) != "sendMessage":
            return self._error(404, "Not Found")
        if not params.get("chat_id"):
            return self._error(400, "Bad Request: chat_id is empty")
        if str(params["chat_id"]) != self.chat_id:
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
        with self.lock:
            self.messages.append({
                "chat_id": self.chat_id, "text": source, "parse_mode": parse_mode,
                "plain_text": plain, "entities": entities,
            })
            message_id = len(self.messages)
        chat_id = int(self.chat_id) if self.chat_id.lstrip("-").isdigit() else self.chat_id
        result = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private"},
            "from": {"id": int(self.token.split(":")[0]), "is_bot": True, "first_name": "Orchestrator"},
            "text": plain,
        }
        if entities:
            result["entities"] = entities
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


class SlackStandIn(_StandIn):
    """The Web API's chat.postMessage. `messages` holds every accepted message: channel, text,
    blocks, rendered (what Slack would show, one line per text object) and problems (misused
    `&`/`<` that Slack would not reject but would display wrongly)."""

    MAX_BLOCKS = 50
    MAX_SECTION_TEXT = 3000
    MAX_FIELDS = 10
    MAX_FIELD_TEXT = 2000
    MAX_CONTEXT_ELEMENTS = 10
    MAX_HEADER_TEXT = 150

    def __init__(self, token: str = SLACK_TOKEN, channel_id: str = SLACK_CHANNEL_ID):
        super().__init__()
        self.token = token
        self.channel_id = channel_id
        self.messages: List[Dict[str, Any]] = []

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def _answer(self, path, headers, params):
        method = path.rsplit("/", 1)[-1]
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not path.startswith("/api/"):
            return 404, {"ok": False, "error": "unknown_method"}, {}, method
        if not auth.startswith("Bearer "):
            return 200, {"ok": False, "error": "not_authed"}, {}, method
        if auth[len("Bearer "):] != self.token:
            return 200, {"ok": False, "error": "invalid_auth"}, {}, method
        if method != "chat.postMessage":
            return 200, {"ok": False, "error": "unknown_method"}, {}, method
        retry_after = self._take_rate_limit()
        if retry_after is not None:
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}, method
        return (*self._post_message(params), {}, method)

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
        with self.lock:
            self.messages.append({
                "channel": self.channel_id, "text": text, "blocks": blocks,
                "rendered": "\n".join(rendered), "problems": problems,
            })
            ts = f"{int(time.time())}.{len(self.messages):06d}"
        return 200, {
            "ok": True, "channel": self.channel_id, "ts": ts,
            "message": {"type": "message", "text": text, "blocks": blocks or [], "ts": ts},
        }

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

"""Readers of Claude Code's two JSONL files: the stream-json log of a run and the session transcript.

* Where the CLI keeps a session's transcript: `<CLAUDE_CONFIG_DIR or ~/.claude>/projects/<escaped
  cwd>/<session>.jsonl` (`project_dir_name`, `find_transcript`).
* `iter_records` reads either file line by line with bounded memory: a line longer than
  MAX_LINE_BYTES is skipped in chunks and described from its edges, and a last line still being
  written is left for the next read.
* `ConversationReader` turns transcript lines or stream-json events into Messages.
* `StreamTracker` follows a stream log's invocations (an `init` starts one, a `result` ends it);
  `summarize_stream` reads a finished log after the fact.

Stream log layout: `<log_dir>/issue-<N>/<attempt>.stream.jsonl`; a `--resume` of the same attempt
appends to it, and every invocation starts with a `system/init` line except a failed `--resume`,
which prints only a `result` line.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from lib.models import Message, shorten

#: Claude Code cuts escaped project folder names longer than this and appends a hash.
MAX_PROJECT_DIR_LENGTH = 200
#: A JSONL line longer than this is not parsed; it counts as one message shown as a placeholder.
MAX_LINE_BYTES = 4 * 1024 * 1024
#: How much of an oversize line's start and end is kept to recognise what it is.
OVERSIZE_EDGE_BYTES = 64 * 1024
TOOL_INPUT_CHARS = 120
TOOL_RESULT_CHARS = 400
TOOL_RESULT_LINES = 8
#: The input key that says most about a tool call, in order of preference.
TOOL_INPUT_KEYS = ("command", "file_path", "notebook_path", "path", "pattern", "url", "query",
                   "description", "prompt")
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9-]+$")  # a UUID; anything else could escape the folder

# ------------------------------------------------------------------------------------------------
# Where Claude Code keeps a session's transcript
# ------------------------------------------------------------------------------------------------


def java_string_hash(text: str) -> int:
    """Java's String.hashCode over UTF-16 code units, as a signed 32-bit int (what Claude Code uses)."""
    value = 0
    units = text.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(units), 2):
        value = (31 * value + int.from_bytes(units[i:i + 2], "little")) & 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def to_base36(number: int) -> str:
    """Non-negative int in base 36 with lowercase digits, like JavaScript's toString(36)."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, remainder = divmod(number, 36)
        text = digits[remainder] + text
        if number == 0:
            return text


def project_dir_name(path: str) -> str:
    """The folder name Claude Code gives the project at physical path `path`.

    Every UTF-16 code unit other than [A-Za-z0-9] becomes '-' (the CLI's regex runs on UTF-16, so a
    character outside the BMP becomes two); names over 200 characters are cut to 200 and get
    '-' + base36(|javaStringHash(path)|) appended.
    """
    escaped = "".join(
        char if char.isascii() and char.isalnum() else "-" * (2 if ord(char) > 0xFFFF else 1)
        for char in path
    )
    if len(escaped) <= MAX_PROJECT_DIR_LENGTH:
        return escaped
    return f"{escaped[:MAX_PROJECT_DIR_LENGTH]}-{to_base36(abs(java_string_hash(path)))}"


def default_claude_config_dir(env: Optional[Mapping[str, str]] = None) -> Path:
    """`$CLAUDE_CONFIG_DIR`, else ~/.claude: where Claude Code keeps projects/<folder>/<session>.jsonl."""
    env = os.environ if env is None else env
    configured = env.get("CLAUDE_CONFIG_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".claude"


def session_config_dir(issue_dir: Path) -> Path:
    """The Claude Code config dir of a sandboxed issue's sessions, in its log folder: their transcripts
    are under its `projects/` (lib.walls shows it to the agent as ~/.claude)."""
    return issue_dir / "claude"


def find_transcript(session_id: Optional[str], cwds: Iterable[str], config_dir: Path,
                    extra_dirs: Iterable[Path] = ()) -> Optional[Path]:
    """The transcript of `session_id`: in the project folder of one of `cwds` (physical paths),
    in one of `extra_dirs`, or else in any project folder (`--resume` from another cwd appends to
    the original file)."""
    if not session_id or not _SESSION_ID_RE.match(session_id):
        return None
    name = f"{session_id}.jsonl"
    projects = config_dir / "projects"
    folders = [projects / project_dir_name(cwd) for cwd in cwds] + list(extra_dirs)
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return next((path for path in projects.glob(f"*/{name}") if path.is_file()), None)


# ------------------------------------------------------------------------------------------------
# Reading JSONL files with bounded memory
# ------------------------------------------------------------------------------------------------


def parse_line(line: bytes) -> Optional[Dict[str, Any]]:
    try:
        record = json.loads(line)
    except ValueError:  # a torn or foreign line: skip it, as the CLI itself does
        return None
    return record if isinstance(record, dict) else None


def _last_match(pattern: "re.Pattern[bytes]", *chunks: bytes) -> Optional[str]:
    for chunk in chunks:
        found = pattern.findall(chunk)
        if found:
            return found[-1].decode("utf-8", "replace")
    return None


#: Every user, assistant and result line holds one of these (as its "type" value).
CONVERSATION_MARKERS = (b'"user"', b'"assistant"', b'"result"')
_TYPE_RE = re.compile(rb'"type"\s*:\s*"(user|assistant)"')
_TIMESTAMP_RE = re.compile(rb'"timestamp"\s*:\s*"([^"]+)"')
_MESSAGE_ID_RE = re.compile(rb'"message"\s*:\s*\{\s*"id"\s*:\s*"([^"]+)"')
_SIDECHAIN_RE = re.compile(rb'"isSidechain"\s*:\s*true')
_SUBAGENT_RE = re.compile(rb'"parent_tool_use_id"\s*:\s*"')


def _oversize_record(head: bytes, tail: bytes, size: int) -> Optional[Dict[str, Any]]:
    """What can be told of a line too long to parse, from its first and last bytes."""
    # "type" is the first key of a stream-json event; in a transcript it comes before the message
    # of a user line and after that of an assistant line.
    kind = _last_match(_TYPE_RE, head[:4096], tail)
    if kind is None:
        return None
    edges = head + tail
    return {
        "type": kind,
        "isSidechain": bool(_SIDECHAIN_RE.search(edges)),
        "parent_tool_use_id": "?" if _SUBAGENT_RE.search(edges) else None,
        "timestamp": _last_match(_TIMESTAMP_RE, tail, head),
        "message": {"id": _last_match(_MESSAGE_ID_RE, head),
                    "content": f"[entry of {size / 1048576:.1f} MB not shown]"},
    }


def iter_records(handle, conversation_only: bool = False) -> Iterator[Tuple[Optional[Dict[str, Any]], int]]:
    """(record or None, offset just past its line) for each complete line from the handle's position.

    A last line without its newline is still being written: it is left for the next read, so a
    follower resumes at the last offset yielded. `conversation_only` leaves lines that cannot be a
    user, assistant or result line unparsed (None): parsing is most of the cost of a long file.
    """
    offset = handle.tell()
    while True:
        line = handle.readline(MAX_LINE_BYTES)
        if not line:
            return
        if line.endswith(b"\n"):
            offset += len(line)
            wanted = not conversation_only or any(marker in line for marker in CONVERSATION_MARKERS)
            yield parse_line(line) if wanted else None, offset
            continue
        if len(line) < MAX_LINE_BYTES:
            return
        head, tail, size = line[:OVERSIZE_EDGE_BYTES], line[-OVERSIZE_EDGE_BYTES:], len(line)
        while not line.endswith(b"\n"):
            line = handle.readline(MAX_LINE_BYTES)
            if not line:
                return
            size += len(line)
            tail = (tail + line)[-OVERSIZE_EDGE_BYTES:]
        offset += size
        yield _oversize_record(head, tail, size), offset


def read_first_record(path: Path) -> Optional[Dict[str, Any]]:
    """The first line of a JSONL file, parsed (a stream log starts with the `system/init` event)."""
    try:
        with open(path, "rb") as handle:
            return next((record for record, _ in iter_records(handle)), None)
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------
# Conversation: transcript lines and stream-json events -> Messages
# ------------------------------------------------------------------------------------------------


def _block_text(content: Any) -> str:
    """Text of a tool_result's content: a string, or a list of text/image blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict):
                parts.append(f"[{block.get('type', 'block')}]")
        return "\n".join(parts)
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def tool_input_summary(tool_input: Any) -> str:
    """The part of a tool call's input that tells what it does (the command, the file, ...)."""
    if isinstance(tool_input, dict):
        for key in TOOL_INPUT_KEYS:
            value = tool_input.get(key)
            if isinstance(value, str) and value.strip():
                return value
    return json.dumps(tool_input, ensure_ascii=False)


class ConversationReader:
    """Turns transcript lines or stream-json events, fed in file order, into Messages.

    Keeps only main-thread user/assistant lines (`isSidechain: false`, no `parent_tool_use_id`).
    The CLI writes each content block of an assistant message as its own line with the same
    `message.id`: they count as one message, and consecutive text blocks become one Message.
    Also tracks the message count, the newest timestamp and the last `result` event.
    """

    def __init__(self, full: bool = False):
        self.full = full
        self.message_count = 0
        self.last_activity: Optional[str] = None
        self.last_result: Optional[Dict[str, Any]] = None
        self._assistant_id: Optional[str] = None
        self._pending_text: Optional[Message] = None

    def feed(self, record: Dict[str, Any]) -> List[Message]:
        kind = record.get("type")
        if kind == "result":
            self.last_result = record
            return self._take_pending() + self._result_messages(record)
        if kind not in ("user", "assistant") or record.get("isSidechain") or record.get("parent_tool_use_id"):
            return []
        timestamp = record.get("timestamp")
        if timestamp:
            self.last_activity = timestamp
        message = record.get("message") if isinstance(record.get("message"), dict) else {}
        if kind == "user":
            self._assistant_id = None
            self.message_count += 1
            return self._take_pending() + self._user_messages(message.get("content"), timestamp)
        message_id = message.get("id")
        emitted: List[Message] = []
        if message_id is None or message_id != self._assistant_id:
            self.message_count += 1
            emitted = self._take_pending()  # a new message never continues the previous one's text
        self._assistant_id = message_id
        failed = bool(record.get("error") or record.get("isApiErrorMessage"))
        for message_part in self._assistant_messages(message.get("content"), timestamp, failed):
            if message_part.kind == "text":
                if self._pending_text is not None:
                    self._pending_text.text += "\n" + message_part.text
                else:
                    self._pending_text = message_part
            else:
                emitted += self._take_pending() + [message_part]
        return emitted

    def flush(self) -> List[Message]:
        """The text held back in case the next line continues the same message."""
        return self._take_pending()

    def _take_pending(self) -> List[Message]:
        pending, self._pending_text = self._pending_text, None
        return [pending] if pending is not None else []

    def _user_messages(self, content: Any, timestamp: Optional[str]) -> List[Message]:
        if isinstance(content, str):
            return [Message("user", "prompt", content, timestamp)]
        messages = []
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_result":
                text = _block_text(block.get("content"))
                if not self.full:
                    text = shorten(text, TOOL_RESULT_CHARS, TOOL_RESULT_LINES)
                messages.append(Message("user", "tool_result", text, timestamp,
                                        is_error=bool(block.get("is_error"))))
            elif block.get("type") == "text":
                messages.append(Message("user", "prompt", str(block.get("text", "")), timestamp))
            else:
                messages.append(Message("user", "prompt", f"[{block.get('type', 'block')}]", timestamp))
        return messages

    def _assistant_messages(self, content: Any, timestamp: Optional[str], failed: bool) -> List[Message]:
        if isinstance(content, str):  # an oversize line's placeholder
            return [Message("assistant", "text", content, timestamp)]
        messages = []
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                text = str(block.get("text", ""))
                if failed:
                    messages.append(Message("assistant", "error", text, timestamp, is_error=True))
                else:
                    messages.append(Message("assistant", "text", text, timestamp))
            elif block.get("type") in ("tool_use", "server_tool_use"):
                summary = tool_input_summary(block.get("input"))
                if not self.full:
                    summary = shorten(summary, TOOL_INPUT_CHARS, 1)
                messages.append(Message("assistant", "tool_use", summary, timestamp,
                                        tool_name=str(block.get("name", "?"))))
        return messages

    @staticmethod
    def _result_messages(record: Dict[str, Any]) -> List[Message]:
        """A stream-json `result` is shown only when the run failed (success repeats the last text)."""
        if not record.get("is_error"):
            return []
        errors = record.get("errors")
        why = record.get("result") or ("; ".join(map(str, errors)) if isinstance(errors, list) else "")
        subtype = record.get("subtype", "error")
        return [Message("assistant", "error", f"run ended with an error ({subtype}): {why}".rstrip(": "),
                        record.get("timestamp"), is_error=True)]




# ------------------------------------------------------------------------------------------------
# A run's stream log
# ------------------------------------------------------------------------------------------------


@dataclass
@dataclass
class StreamSummary:
    """A stream log read after the fact."""

    path: Path
    session_id: Optional[str] = None
    result: Optional[Dict[str, Any]] = None  # `result` of the LAST invocation; None if it has none
    invocations: int = 0
    message_count: int = 0
    last_activity: Optional[str] = None  # newest event timestamp, else the file's mtime (ISO UTC)
    last_text: Optional[str] = None  # last assistant text of the last invocation


class StreamTracker:
    """Follows stream-json events in file order: session id, invocations, messages, last result."""

    def __init__(self) -> None:
        self.reader = ConversationReader()
        self.session_id: Optional[str] = None
        self.result: Optional[Dict[str, Any]] = None
        self.invocations = 0
        self.last_text: Optional[str] = None
        self._open = False  # an init was seen and its result not yet

    def feed(self, record: Dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "system" and record.get("subtype") == "init":
            self.start_invocation()
            self.invocations += 1
            self._open = True
            if isinstance(record.get("session_id"), str):
                self.session_id = record["session_id"]
        elif kind == "result":
            if not self._open:  # a failed --resume prints a result without an init
                self.start_invocation()
                self.invocations += 1
            self._open = False
            self.result = record
            if self.session_id is None and isinstance(record.get("session_id"), str):
                self.session_id = record["session_id"]
        self._take(self.reader.feed(record))

    def start_invocation(self) -> None:
        """What is judged per invocation starts afresh; message counts go on."""
        self._take(self.reader.flush())
        self.result, self.last_text, self._open = None, None, False

    def finish(self) -> None:
        self._take(self.reader.flush())

    def _take(self, messages) -> None:
        for message in messages:
            if message.role == "assistant" and message.kind == "text":
                self.last_text = message.text


def read_complete_lines(handle, tracker: StreamTracker) -> int:
    """Feed every complete line from the handle's position; leave it at the first incomplete one."""
    position = handle.tell()
    for record, position in iter_records(handle):
        if record is not None:
            tracker.feed(record)
    handle.seek(position)
    return position


def read_last_line(handle, tracker: StreamTracker) -> None:
    """A last line without its newline, once its writer has exited, is all there will be of it."""
    rest = handle.read(MAX_LINE_BYTES)
    if rest.strip():
        try:
            record = json.loads(rest)
        except ValueError:
            return
        if isinstance(record, dict):
            tracker.feed(record)


def summarize_stream(path: Union[str, os.PathLike]) -> StreamSummary:
    """What a stream log says, read line by line (memory stays flat however long the file is).

    `result` is that of the last invocation in the file: None when it never wrote one, even if an
    earlier invocation did. A missing file gives an empty summary.
    """
    path = Path(path)
    summary = StreamSummary(path=path)
    tracker = StreamTracker()
    try:
        with open(path, "rb") as handle:
            read_complete_lines(handle, tracker)
            read_last_line(handle, tracker)
        mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).replace(microsecond=0).isoformat()
    except FileNotFoundError:
        return summary
    tracker.finish()
    summary.session_id = tracker.session_id
    summary.result = tracker.result
    summary.invocations = tracker.invocations
    summary.message_count = tracker.reader.message_count
    summary.last_activity = tracker.reader.last_activity or mtime
    summary.last_text = tracker.last_text
    return summary


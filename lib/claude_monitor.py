"""What the Claude Code agents do: live process facts, conversation history, reports.

Sources, in order of trust:

* `processing-state.json` (through StateManager) says which issue runs in which slot, with pids.
* psutil says whether those pids still are the processes we started (pid + create time), and
  finds `claude` processes in slot folders that the state does not know of.
* Claude Code's own transcript, `<CLAUDE_CONFIG_DIR or ~/.claude>/projects/<escaped cwd>/<session>.jsonl`,
  holds the whole conversation across `--resume`d invocations; the run's stream-json log
  (`logs/issue-<N>/<attempt>.stream.jsonl`) stands in when the transcript is gone.

Files are read as streams: counting messages of a session of hundreds of MB keeps memory flat
(one line at a time, and a line longer than MAX_LINE_BYTES is skipped in chunks), and `status`
reads only the end of a large file.

JSON shape (`claude_monitor.py [monitor] --format json`), stable:

    {
      "timestamp": "2024-01-15T10:30:00+00:00",      # UTC, when the report was made
      "total_instances": 3, "active_count": 2, "completed_count": 1,
      "active_instances": [Instance, ...],             # by issue number; unknown processes last
      "completed_instances": [Instance, ...]           # most recently ended first
    }

    Instance = {
      "issue_number": 101,           # null for a claude process the state does not know of
      "status": "running",           # pending | preparing | running | needs_input | waiting | lost |
                                     # unknown (active); completed | failed | cancelled (completed)
      "pid": 12345,                  # the live claude (else runner) pid, or the recorded one when lost
      "agent_index": 0, "session_id": "...", "branch": "issue-101",
      "cwd": "/path/to/clones/myproject_0",
      "start_time": "...", "end_time": null,            # ISO 8601 as in the state file
      "runtime_seconds": 120.5,      # live process age; end - start once finished
      "message_count": 8,            # user + assistant messages (blocks of one API message count once);
                                     # null from `status` when the file is large and the runner recorded none
      "last_activity": "2024-01-15T10:29:45.123Z",  # timestamp of the newest message
      "cpu_percent": 1.5, "memory_mb": 210.3,       # live processes only, else null
      "children": [12350],           # pids of the live process's descendants (tool commands)
      "process_state": "sleeping",   # psutil status of the live process, else null
      "cost_usd": 0.025, "num_turns": 3,            # from the state, else the log's last `result`
      "pr_url": null, "error": null, "question": null
    }

`status --issue N --format json` prints one Instance plus "source" ("transcript" | "stream_log" |
null), "conversation_path" and "recent_messages"; `history --format json` prints
{"issue_number", "session_id", "source", "conversation_path", "message_count", "truncated" (older
entries left out by --limit), "messages"}; `follow
--format json` prints one Message per line. Message = {"role": "user" | "assistant" | "system",
"kind": "prompt" | "text" | "tool_use" | "tool_result" | "error" | "status", "text", "timestamp",
"tool_name", "is_error"}; "system"/"status" is follow's last line, saying how the run ended.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import psutil

from lib.config import Config, default_config_path
from lib.models import (
    ClaudeInstance,
    FINISHED_STATUSES,
    ConfigError,
    InstanceStatus,
    IssueState,
    Message,
    MonitorReport,
    OrchestratorError,
    ProcessStatus,
    UsageError,
    parse_iso,
    utc_now_iso,
)
from lib.state_manager import StateManager

OUTPUT_FORMATS = ("text", "json")

#: Claude Code cuts escaped project folder names longer than this and appends a hash.
MAX_PROJECT_DIR_LENGTH = 200
#: A JSONL line longer than this is not parsed; it counts as one message shown as a placeholder.
MAX_LINE_BYTES = 4 * 1024 * 1024
#: How much of an oversize line's start and end is kept to recognise what it is.
OVERSIZE_EDGE_BYTES = 64 * 1024
#: `status` counts messages by reading files up to this size; of larger ones it reads only the end.
STATUS_FULL_SCAN_BYTES = 4 * 1024 * 1024
#: `status` reads at most this much from the end of a file.
TAIL_BUDGET_BYTES = 8 * 1024 * 1024
STATUS_RECENT_MESSAGES = 5
#: Default `--limit` of `history`.
HISTORY_LIMIT = 50
#: The default command lists this many finished runs when nothing is active.
RECENT_FINISHED = 5
TOOL_INPUT_CHARS = 120
TOOL_RESULT_CHARS = 400
TOOL_RESULT_LINES = 8

#: States in which the agent (or its runner) should be alive; a dead pid then means "lost".
LIVE_STATUSES = frozenset({ProcessStatus.PENDING.value, ProcessStatus.PREPARING.value,
                           ProcessStatus.RUNNING.value})
FINISHED = frozenset(status.value for status in FINISHED_STATUSES)
CLAUDE_PROCESS_NAMES = frozenset({"claude", "claude.exe"})
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


def _parse_line(line: bytes) -> Optional[Dict[str, Any]]:
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
            yield _parse_line(line) if wanted else None, offset
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


def iter_lines_reversed(path: Path, budget: int = TAIL_BUDGET_BYTES, block: int = 65536) -> Iterator[bytes]:
    """Complete lines of `path` from the last one backwards, reading at most `budget` bytes.

    A last line without its newline is still being written and is skipped.
    """
    with open(path, "rb") as handle:
        position = end = handle.seek(0, os.SEEK_END)
        buffer = b""  # from `position` up to the lines already yielded
        in_last_line = True  # until the newline that ends the last complete line is found
        while position > 0 and end - position < budget:
            step = min(block, position)
            position -= step
            handle.seek(position)
            buffer = handle.read(step) + buffer
            if in_last_line:
                newline = buffer.rfind(b"\n")
                if newline < 0:
                    continue
                buffer, in_last_line = buffer[:newline + 1], False
            lines = buffer.split(b"\n")
            buffer = lines[0]  # the end of a line that starts in an earlier block
            for line in reversed(lines[1:]):
                if line:
                    yield line
        if position == 0 and buffer and not in_last_line:
            yield buffer


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


def _cut(text: str, limit: int, max_lines: Optional[int] = None) -> str:
    """At most `limit` characters and `max_lines` lines of `text`, saying how much was left out."""
    text = text.rstrip()
    shown = text
    if max_lines is not None:
        lines = text.split("\n")
        if len(lines) > max_lines:
            shown = "\n".join(lines[:max_lines])
    shown = shown[:limit]
    dropped = len(text) - len(shown)
    return f"{shown} [... {dropped} more chars]" if dropped else shown


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
                    text = _cut(text, TOOL_RESULT_CHARS, TOOL_RESULT_LINES)
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
                    summary = _cut(summary, TOOL_INPUT_CHARS, 1)
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
# Results
# ------------------------------------------------------------------------------------------------


@dataclass
class ConversationSource:
    path: Path
    kind: str  # "transcript" | "stream_log"


@dataclass
class ConversationHistory:
    issue_number: int
    session_id: Optional[str]
    source: Optional[ConversationSource]
    message_count: int
    messages: List[Message]
    truncated: bool = False  # older entries were left out (--limit)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "issue_number": self.issue_number,
            "session_id": self.session_id,
            "source": self.source.kind if self.source else None,
            "conversation_path": str(self.source.path) if self.source else None,
            "message_count": self.message_count,
            "truncated": self.truncated,
            "messages": [message.to_dict() for message in self.messages],
        }


@dataclass
class InstanceStatusReport:
    """`status --issue N`: one instance and its last few messages."""

    instance: ClaudeInstance
    source: Optional[ConversationSource]
    recent_messages: List[Message]

    def to_dict(self) -> Dict[str, Any]:
        data = self.instance.to_dict()
        data["source"] = self.source.kind if self.source else None
        data["conversation_path"] = str(self.source.path) if self.source else None
        data["recent_messages"] = [message.to_dict() for message in self.recent_messages]
        return data


@dataclass
class _Conversation:
    """What reading one conversation file gave."""

    message_count: Optional[int]  # None: only the end of the file was read
    last_activity: Optional[str] = None
    last_result: Optional[Dict[str, Any]] = None
    messages: List[Message] = field(default_factory=list)
    truncated: bool = False


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------


def live_process(pid: Optional[int], create_time: Optional[float]) -> Optional[psutil.Process]:
    """The process `pid` if it runs and is the one recorded (pids are reused: compare create time)."""
    if not pid:
        return None
    try:
        process = psutil.Process(pid)
        if create_time is not None and abs(process.create_time() - create_time) > 1.0:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return process


def _is_claude_process(name: Optional[str], cmdline: Optional[List[str]]) -> bool:
    if name in CLAUDE_PROCESS_NAMES:
        return True
    return bool(cmdline) and os.path.basename(cmdline[0]) == "claude"


def _describe_process(instance: ClaudeInstance, process: psutil.Process) -> None:
    """Fill pid, process state, memory, children and runtime (CPU comes from a shared sample)."""
    try:
        with process.oneshot():
            instance.pid = process.pid
            instance.process_state = process.status()
            instance.memory_mb = round(process.memory_info().rss / 1048576, 1)
            instance.runtime_seconds = round(max(0.0, time.time() - process.create_time()), 1)
        instance.children = [child.pid for child in process.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass


def _sample_cpu(pairs: List[Tuple[ClaudeInstance, psutil.Process]], interval: float) -> None:
    """CPU percent of every process over one shared interval (psutil's first reading is meaningless)."""
    if not pairs:
        return
    for _, process in pairs:
        try:
            process.cpu_percent(None)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    time.sleep(interval)
    for instance, process in pairs:
        try:
            instance.cpu_percent = round(process.cpu_percent(None), 1)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def _seconds_between(start: Optional[str], end: Optional[str]) -> Optional[float]:
    try:
        started, ended = parse_iso(start), parse_iso(end) if end else datetime.now(timezone.utc)
    except ValueError:
        return None
    if started is None or ended is None:
        return None
    return round(max(0.0, (ended - started).total_seconds()), 1)


# ------------------------------------------------------------------------------------------------
# The monitor
# ------------------------------------------------------------------------------------------------


def load_config(path: Union[None, str, os.PathLike, Config] = None) -> Config:
    """A Config from a Config, a config file, or a folder holding config.json (the orchestrator folder,
    or a repo with it in scripts/issue-orchestrator/); None: the default config path."""
    if isinstance(path, Config):
        return path
    if path is None:
        return Config(default_config_path(), require_token=False)
    path = Path(path).expanduser()
    if path.is_dir():
        candidates = [path / "config.json", path / "scripts" / "issue-orchestrator" / "config.json"]
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        if found is None:
            raise ConfigError([f"{path}: no config.json in this folder or in scripts/issue-orchestrator/"
                               " (pass the orchestrator folder or its config file)"])
        path = found
    return Config(path, require_token=False)


class ClaudeMonitor:
    """Monitor of the orchestrator's Claude Code agents.

    `ClaudeMonitor(path, output_format="text")`: `path` is the orchestrator folder, its config file,
    or a Config. `claude_config_dir` overrides `$CLAUDE_CONFIG_DIR`/~/.claude; `cpu_interval` is the
    CPU sampling window of a report (0 skips CPU).
    """

    def __init__(self, path: Union[None, str, os.PathLike, Config] = None, output_format: str = "text", *,
                 claude_config_dir: Optional[os.PathLike] = None, cpu_interval: float = 0.1):
        if output_format not in OUTPUT_FORMATS:
            raise UsageError(f"Unknown output format {output_format!r}: use text or json.")
        self.config = load_config(path)
        self.output_format = output_format
        self.claude_config_dir = Path(claude_config_dir) if claude_config_dir else default_claude_config_dir()
        self.cpu_interval = cpu_interval

    # --- state ------------------------------------------------------------------------------------

    def load_states(self) -> Dict[int, IssueState]:
        state_file = self.config.state_file
        if not state_file.is_file():
            raise OrchestratorError(f"No state file at {state_file}: the orchestrator has not run yet"
                                    " (or --config points to another setup).")
        try:
            return StateManager(state_file).load()
        except OSError as exc:  # e.g. no permission to open the lock file beside it
            raise OrchestratorError(f"Cannot read the state file {state_file}: {exc.strerror or exc}.") from None

    def _entry(self, issue_number: int) -> IssueState:
        states = self.load_states()
        entry = states.get(int(issue_number))
        if entry is None:
            known = ", ".join(f"#{n}" for n in sorted(states)) or "none"
            raise OrchestratorError(f"Issue #{issue_number} is not in the state file {self.config.state_file}"
                                    f" (known: {known}).")
        return entry

    # --- files ------------------------------------------------------------------------------------

    def stream_log_path(self, entry: IssueState) -> Path:
        if entry.log_path:
            return Path(entry.log_path)
        return self.config.log_dir / f"issue-{entry.issue_number}" / f"{entry.attempt}.stream.jsonl"

    def slot_path(self, agent_index: Optional[int]) -> Optional[Path]:
        return None if agent_index is None else self.config.get_repo_path(agent_index)

    def locate_conversation(self, entry: IssueState) -> Tuple[Optional[str], Optional[ConversationSource]]:
        """(session id, where its conversation is): the transcript, else the stream log, else None."""
        log_path = self.stream_log_path(entry)
        init = read_first_record(log_path) if log_path.is_file() else None
        if init is not None and init.get("subtype") != "init":
            init = None
        session_id = entry.session_id or (init or {}).get("session_id")
        cwds, extra_dirs = [], []
        if init and isinstance(init.get("cwd"), str):
            cwds.append(init["cwd"])
        memory = ((init or {}).get("memory_paths") or {}).get("auto")
        if isinstance(memory, str):  # the agent's own config dir, whatever this shell's env says
            extra_dirs.append(Path(memory).parent)
        slot = self.slot_path(entry.agent_index)
        if slot is not None:
            cwds.append(os.path.realpath(slot))
        transcript = find_transcript(session_id, dict.fromkeys(cwds), self.claude_config_dir, extra_dirs)
        if transcript is not None:
            return session_id, ConversationSource(transcript, "transcript")
        if log_path.is_file():
            return session_id, ConversationSource(log_path, "stream_log")
        return session_id, None

    def _read_conversation(self, source: Optional[ConversationSource], *, limit: Optional[int] = 0,
                           full: bool = False, tail_only: bool = False) -> _Conversation:
        """Stream the whole file, keeping the last `limit` messages (None: all); with `tail_only`,
        read only the end of a file larger than STATUS_FULL_SCAN_BYTES."""
        if source is None:
            return _Conversation(0)
        try:
            if tail_only and source.path.stat().st_size > STATUS_FULL_SCAN_BYTES:
                return self._read_tail(source.path, limit or 0)
            reader = ConversationReader(full=full)
            kept: Deque[Message] = deque(maxlen=limit)
            steps = 0
            with open(source.path, "rb") as handle:
                for record, _ in iter_records(handle, conversation_only=True):
                    if record is not None:
                        messages = reader.feed(record)
                        steps += len(messages)
                        kept.extend(messages)
            messages = reader.flush()
            kept.extend(messages)
            steps += len(messages)
        except OSError:
            return _Conversation(0)
        return _Conversation(reader.message_count, reader.last_activity, reader.last_result, list(kept),
                             truncated=steps > len(kept))

    @staticmethod
    def _read_tail(path: Path, limit: int) -> _Conversation:
        """Last activity and the last `limit` messages, from the end of the file only."""
        records: List[Dict[str, Any]] = []
        for line in iter_lines_reversed(path):
            record = _parse_line(line)
            if record is None or record.get("type") not in ("user", "assistant", "result"):
                continue
            records.append(record)
            # A line gives at most a few messages, and blocks of one message merge: twice is plenty.
            if len(records) >= 2 * limit + 1:
                break
        reader = ConversationReader()
        kept: Deque[Message] = deque(maxlen=limit)
        for record in reversed(records):
            kept.extend(reader.feed(record))
        kept.extend(reader.flush())
        return _Conversation(None, reader.last_activity, reader.last_result, list(kept), truncated=True)

    # --- instances --------------------------------------------------------------------------------

    def _instance(self, entry: IssueState, *, tail_only: bool = False,
                  recent: int = 0) -> Tuple[ClaudeInstance, Optional[psutil.Process], _Conversation,
                                            Optional[ConversationSource]]:
        """The instance of one state entry, the live process behind it (if any), and its conversation
        (`recent` messages of it, read only at the end with `tail_only`)."""
        session_id, source = self.locate_conversation(entry)
        slot = self.slot_path(entry.agent_index)
        instance = ClaudeInstance(
            issue_number=entry.issue_number, status=entry.status, agent_index=entry.agent_index,
            session_id=session_id, branch=entry.branch, cwd=str(slot) if slot else None,
            start_time=entry.start_time, end_time=entry.end_time, cost_usd=entry.cost_usd,
            num_turns=entry.num_turns, pr_url=entry.pr_url, error=entry.error, question=entry.question,
        )
        process = None
        if not entry.is_finished:
            process = (live_process(entry.claude_pid, entry.claude_create_time)
                       or live_process(entry.runner_pid, entry.runner_create_time))
            recorded_pid = entry.claude_pid or entry.runner_pid
            # Only a run that should have a process can lose it; needs_input and waiting have none.
            if process is None and entry.status in LIVE_STATUSES and recorded_pid:
                instance.status, instance.pid = InstanceStatus.LOST.value, recorded_pid
        if process is not None:
            _describe_process(instance, process)
        else:
            instance.runtime_seconds = _seconds_between(entry.start_time, entry.end_time)

        # A finished run's counts, as its runner recorded them, spare reading its whole transcript.
        recorded = entry.is_finished and entry.message_count is not None and entry.last_activity
        if recorded and not recent:
            conversation = _Conversation(entry.message_count, entry.last_activity)
        else:
            conversation = self._read_conversation(source, limit=recent, tail_only=tail_only)
        instance.message_count = (conversation.message_count if conversation.message_count is not None
                                  else entry.message_count)
        instance.last_activity = conversation.last_activity or entry.last_activity
        result = conversation.last_result or {}
        if instance.cost_usd is None and isinstance(result.get("total_cost_usd"), (int, float)):
            instance.cost_usd = result["total_cost_usd"]
        if instance.num_turns is None and isinstance(result.get("num_turns"), int):
            instance.num_turns = result["num_turns"]
        return instance, process, conversation, source

    def _unknown_instances(self, states: Dict[int, IssueState]) -> List[Tuple[ClaudeInstance, psutil.Process]]:
        """`claude` processes working in a slot folder that no unfinished state entry accounts for."""
        base = os.path.realpath(self.config.base_repo_path)
        slot_re = re.compile(rf"^{re.escape(self.config.repo_name)}_(\d+)$")
        known = {pid for entry in states.values() if not entry.is_finished
                 for pid in (entry.claude_pid, entry.runner_pid) if pid}
        found = []
        for process in psutil.process_iter(["name", "cmdline", "cwd"]):
            info = process.info
            if not info.get("cwd") or not _is_claude_process(info.get("name"), info.get("cmdline")):
                continue
            relative = os.path.relpath(info["cwd"], base)
            slot_match = slot_re.match(relative.split(os.sep)[0])
            if not slot_match:
                continue
            try:
                # A runner's claude is known before the runner has recorded its pid.
                if process.pid in known or any(parent.pid in known for parent in process.parents()):
                    continue
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            instance = ClaudeInstance(issue_number=None, status=InstanceStatus.UNKNOWN.value,
                                         agent_index=int(slot_match.group(1)), cwd=info["cwd"])
            _describe_process(instance, process)
            self._describe_newest_session(instance, process)
            found.append((instance, process))
        return found

    def _describe_newest_session(self, instance: ClaudeInstance, process: psutil.Process) -> None:
        """An unknown process's conversation: the newest transcript of its folder written since it started."""
        folder = self.claude_config_dir / "projects" / project_dir_name(instance.cwd or "")
        try:
            started = process.create_time()
            transcripts = [(path.stat().st_mtime, path) for path in folder.glob("*.jsonl")]
        except (OSError, psutil.NoSuchProcess, psutil.AccessDenied):
            return
        recent = [item for item in transcripts if item[0] >= started - 1]
        if not recent:
            return
        path = max(recent)[1]
        instance.session_id = path.stem
        conversation = self._read_conversation(ConversationSource(path, "transcript"))
        instance.message_count = conversation.message_count or 0
        instance.last_activity = conversation.last_activity

    def get_active_instances(self) -> List[ClaudeInstance]:
        """Every unfinished issue (running, lost, needing input, queued), then every unknown claude process."""
        return self._active(self.load_states())

    def _active(self, states: Dict[int, IssueState]) -> List[ClaudeInstance]:
        sampled: List[Tuple[ClaudeInstance, psutil.Process]] = []
        instances = []
        for number in sorted(states):
            if states[number].is_finished:
                continue
            instance, process, _, _ = self._instance(states[number])
            instances.append(instance)
            if process is not None:
                sampled.append((instance, process))
        unknown = self._unknown_instances(states)
        instances += [instance for instance, _ in unknown]
        if self.cpu_interval > 0:
            _sample_cpu(sampled + unknown, self.cpu_interval)
        return instances

    def _finished(self, states: Dict[int, IssueState], limit: Optional[int] = None) -> List[ClaudeInstance]:
        entries = sorted((entry for entry in states.values() if entry.is_finished),
                         key=lambda entry: entry.end_time or entry.start_time or "", reverse=True)
        return [self._instance(entry)[0] for entry in entries[:limit]]

    def monitor_all(self) -> MonitorReport:
        """Every active instance and every finished run the state remembers."""
        states = self.load_states()
        return MonitorReport(timestamp=utc_now_iso(), active_instances=self._active(states),
                      completed_instances=self._finished(states))

    def overview(self) -> MonitorReport:
        """The default command: what is active, or, when nothing is, the most recently finished runs."""
        states = self.load_states()
        active = self._active(states)
        if active:
            return MonitorReport(timestamp=utc_now_iso(), active_instances=active)
        return MonitorReport(timestamp=utc_now_iso(), completed_instances=self._finished(states, RECENT_FINISHED))

    def get_status(self, issue_number: int, recent: int = STATUS_RECENT_MESSAGES) -> InstanceStatusReport:
        """One issue; of a large conversation file only the end is read."""
        instance, process, conversation, source = self._instance(self._entry(issue_number), tail_only=True,
                                                                 recent=recent)
        if process is not None and self.cpu_interval > 0:
            _sample_cpu([(instance, process)], self.cpu_interval)
        return InstanceStatusReport(instance, source, conversation.messages)

    def history(self, issue_number: int, limit: Optional[int] = HISTORY_LIMIT,
                full: bool = False) -> ConversationHistory:
        """The last `limit` messages (None or 0: all) of the issue's session, across resumed invocations."""
        session_id, source = self.locate_conversation(self._entry(issue_number))
        conversation = self._read_conversation(source, limit=limit or None, full=full)
        return ConversationHistory(int(issue_number), session_id, source, conversation.message_count or 0,
                                   conversation.messages, conversation.truncated)

    def get_conversation_history(self, issue_number: int, limit: Optional[int] = None,
                                 full: bool = False) -> List[Message]:
        """The issue's conversation as Messages (all of them unless `limit`)."""
        return self.history(issue_number, limit=limit, full=full).messages

    def follow(self, issue_number: int, backlog: int = 10, poll_interval: float = 0.5) -> Iterator[Message]:
        """The last `backlog` messages, then each new one as the agent writes it, like `tail -f`.

        Ends once the run has ended (its state leaves pending/preparing/running, or its recorded
        process is gone) and the file is read to its end, with a `system`/`status` Message saying how.
        """
        source: Optional[ConversationSource] = None
        reader = ConversationReader()
        position = 0
        while True:
            entry = self._entry(issue_number)
            recorded_pid = entry.claude_pid or entry.runner_pid
            alive = (live_process(entry.claude_pid, entry.claude_create_time)
                     or live_process(entry.runner_pid, entry.runner_create_time)) is not None
            running = entry.status in LIVE_STATUSES and (alive or not recorded_pid)
            first_read = source is None
            if source is None:
                session_id, found = self.locate_conversation(entry)
                # The transcript appears with the session id: choosing earlier could pick the stream log.
                if found is not None and (session_id or not running):
                    source = found
            if source is not None and source.path.exists():
                kept: Optional[Deque[Message]] = deque(maxlen=backlog) if first_read else None
                with open(source.path, "rb") as handle:
                    handle.seek(position)
                    for record, offset in iter_records(handle, conversation_only=True):
                        position = offset
                        messages = reader.feed(record) if record is not None else []
                        if kept is None:
                            yield from messages
                        else:
                            kept.extend(messages)
                if kept is None:
                    yield from reader.flush()
                else:
                    kept.extend(reader.flush())
                    yield from kept
            if not running:
                how = entry.status
                if entry.status in LIVE_STATUSES:
                    how = f"{InstanceStatus.LOST.value}: process {recorded_pid} is gone"
                yield Message("system", "status", f"Issue #{entry.issue_number}: run ended ({how}).", utc_now_iso())
                return
            time.sleep(poll_interval)

    # --- output -----------------------------------------------------------------------------------

    def render(self, result: Union[MonitorReport, ConversationHistory, InstanceStatusReport, Message]) -> str:
        """`result` in this monitor's output format (JSON: a Message is one line, the rest indented)."""
        if self.output_format == "json":
            return json.dumps(result.to_dict(), indent=None if isinstance(result, Message) else 2,
                              ensure_ascii=False)
        if isinstance(result, MonitorReport):
            return report_to_text(result)
        if isinstance(result, ConversationHistory):
            return history_to_text(result)
        if isinstance(result, InstanceStatusReport):
            return status_to_text(result)
        return message_to_text(result)


# ------------------------------------------------------------------------------------------------
# Text output (the seed README's report format)
# ------------------------------------------------------------------------------------------------


def _local(timestamp: Optional[str]) -> Optional[datetime]:
    try:
        moment = parse_iso(timestamp)
    except ValueError:
        return None
    return moment.astimezone() if moment else None


def _clock(timestamp: Optional[str]) -> str:
    """HH:MM:SS in local time, with the date when it is not today."""
    moment = _local(timestamp)
    if moment is None:
        return timestamp or "-"
    if moment.date() == datetime.now().astimezone().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _instance_lines(instance: ClaudeInstance, active: bool) -> List[str]:
    if instance.issue_number is None:
        lines = ["  Unknown Claude process (not in the state file):"]
    else:
        lines = [f"  Issue #{instance.issue_number}:"]
    if active and instance.pid is not None:
        lines.append(f"    PID: {instance.pid}")
    lines.append(f"    Status: {instance.status}")
    if instance.runtime_seconds is not None:
        lines.append(f"    Runtime: {instance.runtime_seconds:.1f}s")
    lines.append(f"    Messages: {instance.message_count if instance.message_count is not None else '?'}")
    if active and instance.last_activity:
        lines.append(f"    Last Activity: {_clock(instance.last_activity)}")
    process_state = instance.process_state
    if process_state:
        cpu = "?" if instance.cpu_percent is None else instance.cpu_percent
        lines.append(f"    Process: {process_state}, CPU {cpu}%, memory {instance.memory_mb} MB")
    if instance.children:
        lines.append(f"    Child Processes: {', '.join(map(str, instance.children))}")
    if instance.agent_index is not None:
        lines.append(f"    Slot: {instance.agent_index} ({instance.cwd})")
    if instance.session_id:
        lines.append(f"    Session: {instance.session_id}")
    if not active and instance.end_time:
        lines.append(f"    Ended: {_clock(instance.end_time)}")
    if instance.cost_usd is not None:
        lines.append(f"    Cost: ${instance.cost_usd:.4f}")
    if instance.num_turns is not None:
        lines.append(f"    Turns: {instance.num_turns}")
    if instance.pr_url:
        lines.append(f"    PR: {instance.pr_url}")
    if instance.question:
        lines.append(f"    Question: {_cut(instance.question, 200, 1)}")
    if instance.error:
        lines.append(f"    Error: {_cut(instance.error, 300, 1)}")
    return lines


def report_to_text(report: MonitorReport) -> str:
    """The report in the seed README's text format (extra facts follow the seed's lines)."""
    generated = _local(report.timestamp)
    lines = [
        "Claude Code Instance Monitor Report",
        f"Generated: {generated.strftime('%Y-%m-%d %H:%M:%S') if generated else report.timestamp}",
        "=" * 60,
        f"Total Instances: {report.total_instances}",
        f"Active: {len(report.active_instances)}",
        f"Completed: {len(report.completed_instances)}",
        "",
    ]
    for title, instances, active in (("ACTIVE INSTANCES:", report.active_instances, True),
                                     ("COMPLETED INSTANCES:", report.completed_instances, False)):
        lines += [title, "-" * 40]
        for instance in instances:
            lines += _instance_lines(instance, active) + [""]
        if not instances:
            lines += ["  (none)", ""]
    return "\n".join(lines).rstrip("\n")


def message_to_text(message: Message) -> str:
    """One Message as `[time] who: text`, continuation lines indented."""
    if message.kind == "tool_use":
        who = f"tool {message.tool_name}"
    elif message.kind == "tool_result":
        who = "result (error)" if message.is_error else "result"
    elif message.kind in ("error", "status"):
        who = message.kind
    else:
        who = message.role
    stamp = _local(message.timestamp)
    prefix = f"[{stamp.strftime('%Y-%m-%d %H:%M:%S') if stamp else '-' * 19}] {who}: "
    return prefix + message.text.replace("\n", "\n    ")


def history_to_text(history: ConversationHistory) -> str:
    if history.source is None:
        return f"Issue #{history.issue_number}: no conversation recorded (no transcript and no stream log)."
    header = [f"Conversation of issue #{history.issue_number}"
              + (f" (session {history.session_id})" if history.session_id else ""),
              f"From the {history.source.kind.replace('_', ' ')} {history.source.path}",
              f"{history.message_count} messages"
              + (f"; the last {len(history.messages)} entries follow (--limit 0 shows all)"
                 if history.truncated else ""),
              ""]
    return "\n".join(header + [message_to_text(message) for message in history.messages])


def status_to_text(status: InstanceStatusReport) -> str:
    lines = _instance_lines(status.instance, active=status.instance.status not in FINISHED)
    if status.source is not None:
        lines.append(f"    Conversation: {status.source.path}")
    if status.recent_messages:
        lines += ["", "  Recent activity:"]
        lines += ["    " + message_to_text(message).replace("\n", "\n    ") for message in status.recent_messages]
    return "\n".join(lines)

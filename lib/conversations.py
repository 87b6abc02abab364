"""A run's conversation as the monitor reads it: where it is, and what reading it gives.

* `locate_conversation`: Claude Code's transcript of the session (the whole conversation across
  `--resume`d invocations), else the run's stream-json log, else nothing; a run of the Celery mode
  on another host (`elsewhere`) has its files there.
* `read_conversation` streams a file with flat memory, keeping the last messages asked for; given
  `tail_after`, it reads only the end of a larger file (the count is then unknown).
* The results of `history` (`ConversationHistory`) and `status --issue N` (`InstanceStatusReport`),
  with their JSON shape (lib/claude_monitor.py's docstring describes it).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Tuple

from lib.config import Config
from lib.files import iter_lines_reversed
from lib.models import ClaudeInstance, IssueState, Message, OrchestratorError
from lib.transcripts import (
    ConversationReader,
    find_transcript,
    iter_records,
    parse_line,
    read_first_record,
    session_config_dir,
)


@dataclass
class ConversationSource:
    path: Path
    kind: str  # "transcript" | "stream_log"


@dataclass
class Conversation:
    """What reading one conversation file gave."""

    message_count: Optional[int]  # None: only the end of the file was read
    last_activity: Optional[str] = None
    last_result: Optional[Dict[str, Any]] = None
    messages: List[Message] = field(default_factory=list)
    truncated: bool = False


@dataclass
class ConversationHistory:
    issue_number: int
    session_id: Optional[str]
    source: Optional[ConversationSource]
    message_count: Optional[int]  # None: only the end of a large file was read
    messages: List[Message]
    truncated: bool = False  # older entries were left out (--limit)
    repo: Optional[str] = None
    host: Optional[str] = None  # the Celery mode: the conversation is on this other host

    def to_dict(self) -> Dict[str, Any]:
        return {
            "issue_number": self.issue_number,
            "repo": self.repo,
            "session_id": self.session_id,
            "source": self.source.kind if self.source else None,
            "conversation_path": str(self.source.path) if self.source else None,
            "message_count": self.message_count,
            "truncated": self.truncated,
            "messages": [message.to_dict() for message in self.messages],
            "host": self.host,
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


# ------------------------------------------------------------------------------------------------
# Where it is
# ------------------------------------------------------------------------------------------------


def elsewhere(config: Config, entry: IssueState) -> Optional[str]:
    """The other host a run of the Celery mode is on: its processes and transcript are there."""
    return entry.host if config.executor.celery and entry.host not in (None, config.executor.host) else None


def stream_log_path(config: Config, entry: IssueState) -> Path:
    if entry.log_path:
        return Path(entry.log_path)
    try:
        folder = config.issue_dir(entry.repo, entry.issue_number)
    except OrchestratorError:  # a repository no longer in the config
        folder = config.log_dir / f"issue-{entry.issue_number}"
    return folder / f"{entry.attempt}.stream.jsonl"


def slot_path(config: Config, entry: IssueState) -> Optional[Path]:
    if entry.slot is None:
        return None
    try:
        return config.repository(entry.repo).slot_path(entry.slot)
    except OrchestratorError:  # a repository no longer in the config
        return None


def locate_conversation(config: Config, entry: IssueState,
                        claude_config_dir: Path) -> Tuple[Optional[str], Optional[ConversationSource]]:
    """(session id, where its conversation is): the transcript, else the stream log, else None."""
    if elsewhere(config, entry):
        return entry.session_id, None
    log_path = stream_log_path(config, entry)
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
    slot = slot_path(config, entry)
    if slot is not None:
        cwds.append(os.path.realpath(slot))
    # A sandboxed session's config dir is its issue's own; an unsandboxed one used this machine's.
    transcript = (find_transcript(session_id, dict.fromkeys(cwds), session_config_dir(log_path.parent))
                  or find_transcript(session_id, dict.fromkeys(cwds), claude_config_dir, extra_dirs))
    if transcript is not None:
        return session_id, ConversationSource(transcript, "transcript")
    if log_path.is_file():
        return session_id, ConversationSource(log_path, "stream_log")
    return session_id, None


# ------------------------------------------------------------------------------------------------
# Reading it
# ------------------------------------------------------------------------------------------------


def read_conversation(source: Optional[ConversationSource], *, limit: Optional[int] = 0, full: bool = False,
                      tail_after: Optional[int] = None) -> Conversation:
    """Stream the whole file, keeping the last `limit` messages (None: all); of a file larger than
    `tail_after` bytes, read only the end."""
    if source is None:
        return Conversation(0)
    try:
        if tail_after is not None and source.path.stat().st_size > tail_after:
            return read_tail(source.path, limit or 0, full=full)
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
        return Conversation(0)
    return Conversation(reader.message_count, reader.last_activity, reader.last_result, list(kept),
                        truncated=steps > len(kept))


def read_tail(path: Path, limit: int, full: bool = False) -> Conversation:
    """Last activity and the last `limit` messages, from the end of the file only."""
    records: List[Dict[str, Any]] = []
    for line in iter_lines_reversed(path):
        record = parse_line(line)
        if record is None or record.get("type") not in ("user", "assistant", "result"):
            continue
        records.append(record)
        # A line gives at most a few messages, and blocks of one message merge: twice is plenty.
        if len(records) >= 2 * limit + 1:
            break
    reader = ConversationReader(full=full)
    kept: Deque[Message] = deque(maxlen=limit)
    for record in reversed(records):
        kept.extend(reader.feed(record))
    kept.extend(reader.flush())
    return Conversation(None, reader.last_activity, reader.last_result, list(kept), truncated=True)

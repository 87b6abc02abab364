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
      "repo": "owner/name",          # the issue's repository (of the slot, for an unknown process)
      "status": "running",           # pending | preparing | running | validating | fixing | needs_input | waiting | lost |
                                     # unknown (active); completed | failed | cancelled (completed)
      "pid": 12345,                  # the live claude (else runner) pid, or the recorded one when lost
      "slot": 0, "session_id": "...", "branch": "issue-101",
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
      "pr_url": null, "error": null, "question": null,
      "upkeep": null                 # a followed pull request: {"pr_number", "base", "mergeable", "mergeable_state",
                                     # "behind_by", "conflict_fixes_used", "max_conflict_fixes", "summary"}
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
import time
from collections import deque
from pathlib import Path
from typing import Deque, Dict, Iterator, List, Optional, Tuple, Union

import psutil

from lib.config import Config, default_config_path
from lib.conversations import (
    Conversation,
    ConversationHistory,
    ConversationSource,
    InstanceStatusReport,
    elsewhere,
    locate_conversation,
    read_conversation,
    slot_path,
)
from lib.models import (
    LIVE_STATUSES,
    ClaudeInstance,
    ConfigError,
    IssueState,
    IssueStatus,
    Message,
    MonitorReport,
    OrchestratorError,
    UsageError,
    issue_ref,
    seconds_between,
    utc_now_iso,
)
from lib.process_view import describe_process, run_process, sample_cpu, unknown_instances
from lib.pull_upkeep import upkeep_view
from lib.state_manager import IssueKey, StateStore, parse_key
from lib.transcripts import ConversationReader, default_claude_config_dir, iter_records

OUTPUT_FORMATS = ("text", "json")

#: `status` counts messages by reading files up to this size; of larger ones it reads only the end.
STATUS_FULL_SCAN_BYTES = 4 * 1024 * 1024
STATUS_RECENT_MESSAGES = 5
#: `history --limit N` counts every message of files up to this size; of larger ones it reads the end.
HISTORY_FULL_SCAN_BYTES = 16 * 1024 * 1024
#: Default `--limit` of `history`.
MESSAGES_SHOWN = 50
#: The default command lists this many finished runs when nothing is active.
RECENT_FINISHED = 5


def _sort_key(key: IssueKey) -> Tuple[str, int]:
    return key[0] or "", key[1]


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
    CPU sampling window of a report (0 skips CPU). Where a conversation is and how it is read:
    lib/conversations.py; the processes: lib/process_view.py; text output: lib/monitor_text.py.
    """

    def __init__(self, path: Union[None, str, os.PathLike, Config] = None, output_format: str = "text", *,
                 repo: Optional[str] = None, claude_config_dir: Optional[os.PathLike] = None,
                 cpu_interval: float = 0.1):
        if output_format not in OUTPUT_FORMATS:
            raise UsageError(f"Unknown output format {output_format!r}: use text or json.")
        self.config = load_config(path)
        self.repo = self.config.repository(repo).repo if repo else None  # only this repository's runs
        self.output_format = output_format
        self.claude_config_dir = Path(claude_config_dir) if claude_config_dir else default_claude_config_dir()
        self.cpu_interval = cpu_interval

    # --- state ------------------------------------------------------------------------------------

    def load_states(self) -> Dict[IssueKey, IssueState]:
        """The state's entries (of `repo` only, when the monitor was given one)."""
        state_file = self.config.state_file
        if not state_file.is_file() and not self.config.executor.celery:
            raise OrchestratorError(f"No state file at {state_file}: the orchestrator has not run yet"
                                    " (or --config points to another setup).")
        try:
            states = StateStore.for_config(self.config).load()
        except OSError as exc:  # e.g. no permission to open the lock file beside it
            raise OrchestratorError(f"Cannot read the state file {state_file}: {exc.strerror or exc}.") from None
        return {key: entry for key, entry in states.items() if self.repo is None or key[0] == self.repo}

    def entry(self, issue: Union[int, str]) -> IssueState:
        """The entry of issue `N` or `owner/name#N`; a number two repositories share must be told apart."""
        repo, number = parse_key(issue)
        states = self.load_states()
        found = [entry for (entry_repo, entry_number), entry in states.items() if entry_number == number
                 and (repo is None or (entry_repo or "").casefold() == repo.casefold())]
        if len(found) > 1:
            raise UsageError(f"Issue {issue_ref(None, number)} is in {len(found)} repositories ("
                             f"{', '.join(sorted(e.repo or '?' for e in found))}): say which with --repo OWNER/NAME"
                             f" or --issue OWNER/NAME#{number}.")
        if not found:
            known = ", ".join(issue_ref(*key) for key in sorted(states, key=_sort_key)) or "none"
            raise OrchestratorError(f"Issue {issue_ref(repo, number)} is not in the state file"
                                    f" {self.config.state_file} (known: {known}).")
        return found[0]

    def locate_conversation(self, entry: IssueState) -> Tuple[Optional[str], Optional[ConversationSource]]:
        """(session id, where its conversation is): the transcript, else the stream log, else None."""
        return locate_conversation(self.config, entry, self.claude_config_dir)

    # --- instances --------------------------------------------------------------------------------

    def _instance(self, entry: IssueState, *, tail_only: bool = False,
                  recent: int = 0) -> Tuple[ClaudeInstance, Optional[psutil.Process], Conversation,
                                            Optional[ConversationSource]]:
        """The instance of one state entry, the live process behind it (if any), and its conversation
        (`recent` messages of it, read only at the end with `tail_only`)."""
        session_id, source = self.locate_conversation(entry)
        slot = slot_path(self.config, entry)
        instance = ClaudeInstance(
            issue_number=entry.issue_number, status=entry.status, repo=entry.repo, slot=entry.slot,
            session_id=session_id, branch=entry.branch, cwd=str(slot) if slot else None,
            start_time=entry.start_time, end_time=entry.end_time, cost_usd=entry.cost_usd,
            num_turns=entry.num_turns, pr_url=entry.pr_url, error=entry.error, question=entry.question,
            host=entry.host, upkeep=upkeep_view(entry, self.config.follow_up),
        )
        process = None
        if not entry.is_finished and not elsewhere(self.config, entry):
            process = run_process(entry)
            recorded_pid = entry.claude_pid or entry.runner_pid
            # Only a run that should have a process can lose it; needs_input and waiting have none.
            if process is None and entry.status in LIVE_STATUSES and recorded_pid:
                instance.status, instance.pid = IssueStatus.LOST, recorded_pid
        if process is not None:
            describe_process(instance, process)
        else:
            runtime = seconds_between(entry.start_time, entry.end_time)
            instance.runtime_seconds = round(runtime, 1) if runtime is not None else None

        # A finished run's counts, as its runner recorded them, spare reading its whole transcript.
        recorded = entry.is_finished and entry.message_count is not None and entry.last_activity
        if recorded and not recent:
            conversation = Conversation(entry.message_count, entry.last_activity)
        else:
            conversation = read_conversation(source, limit=recent,
                                             tail_after=STATUS_FULL_SCAN_BYTES if tail_only else None)
        instance.message_count = (conversation.message_count if conversation.message_count is not None
                                  else entry.message_count)
        instance.last_activity = conversation.last_activity or entry.last_activity
        result = conversation.last_result or {}
        if instance.cost_usd is None and isinstance(result.get("total_cost_usd"), (int, float)):
            instance.cost_usd = result["total_cost_usd"]
        if instance.num_turns is None and isinstance(result.get("num_turns"), int):
            instance.num_turns = result["num_turns"]
        return instance, process, conversation, source

    def get_active_instances(self) -> List[ClaudeInstance]:
        """Every unfinished issue (running, lost, needing input, queued), then every unknown claude process."""
        return self._active(self.load_states())

    def _active(self, states: Dict[IssueKey, IssueState]) -> List[ClaudeInstance]:
        sampled: List[Tuple[ClaudeInstance, psutil.Process]] = []
        instances = []
        for key in sorted(states, key=_sort_key):
            if states[key].is_finished:
                continue
            # A live run's count comes from its runner's records; its (maybe huge) file is read at the end only.
            instance, process, _, _ = self._instance(states[key], tail_only=True)
            instances.append(instance)
            if process is not None:
                sampled.append((instance, process))
        unknown = unknown_instances(self.config, states, self.claude_config_dir, self.repo)
        instances += [instance for instance, _ in unknown]
        if self.cpu_interval > 0:
            sample_cpu(sampled + unknown, self.cpu_interval)
        return instances

    def _finished(self, states: Dict[IssueKey, IssueState], limit: Optional[int] = None) -> List[ClaudeInstance]:
        entries = sorted((entry for entry in states.values() if entry.is_finished),
                         key=lambda entry: entry.end_time or entry.start_time or "", reverse=True)
        return [self._instance(entry, tail_only=True)[0] for entry in entries[:limit]]

    def recent_finished(self, limit: int) -> List[ClaudeInstance]:
        """The `limit` most recently finished runs."""
        return self._finished(self.load_states(), limit)

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

    def get_status(self, issue_number: Union[int, str], recent: int = STATUS_RECENT_MESSAGES) -> InstanceStatusReport:
        """One issue; of a large conversation file only the end is read."""
        instance, process, conversation, source = self._instance(self.entry(issue_number), tail_only=True,
                                                                 recent=recent)
        if process is not None and self.cpu_interval > 0:
            sample_cpu([(instance, process)], self.cpu_interval)
        return InstanceStatusReport(instance, source, conversation.messages)

    def history(self, issue_number: Union[int, str], limit: Optional[int] = MESSAGES_SHOWN,
                full: bool = False) -> ConversationHistory:
        """The last `limit` messages (None or 0: all) of the issue's session, across resumed invocations."""
        entry = self.entry(issue_number)
        session_id, source = self.locate_conversation(entry)
        # The last entries of a large file are read from its end: counting every earlier one would
        # read it all (hundreds of MB), so the count is then unknown ("earlier entries left out").
        conversation = read_conversation(source, limit=limit or None, full=full,
                                         tail_after=HISTORY_FULL_SCAN_BYTES if limit else None)
        return ConversationHistory(entry.issue_number, session_id, source, conversation.message_count,
                                   conversation.messages, conversation.truncated, repo=entry.repo,
                                   host=elsewhere(self.config, entry))

    def get_conversation_history(self, issue_number: Union[int, str], limit: Optional[int] = None,
                                 full: bool = False) -> List[Message]:
        """The issue's conversation as Messages (all of them unless `limit`)."""
        return self.history(issue_number, limit=limit, full=full).messages

    def follow(self, issue_number: Union[int, str], backlog: int = 10, poll_interval: float = 0.5) -> Iterator[Message]:
        """The last `backlog` messages, then each new one as the agent writes it, like `tail -f`.

        Ends once the run has ended (its state leaves pending/preparing/running, or its recorded
        process is gone) and the file is read to its end, with a `system`/`status` Message saying how.
        """
        source: Optional[ConversationSource] = None
        reader = ConversationReader()
        position = 0
        while True:
            entry = self.entry(issue_number)
            recorded_pid = entry.claude_pid or entry.runner_pid
            running = entry.status in LIVE_STATUSES and (run_process(entry) is not None or not recorded_pid)
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
                    how = f"{IssueStatus.LOST}: process {recorded_pid} is gone"
                yield Message("system", "status", f"Issue {issue_ref(entry.repo, entry.issue_number)}: run ended"
                              f" ({how}).", utc_now_iso())
                return
            time.sleep(poll_interval)

    # --- output -----------------------------------------------------------------------------------

    def render(self, result: Union[MonitorReport, ConversationHistory, InstanceStatusReport, Message]) -> str:
        """`result` in this monitor's output format (JSON: a Message is one line, the rest indented)."""
        if self.output_format == "json":
            return json.dumps(result.to_dict(), indent=None if isinstance(result, Message) else 2,
                              ensure_ascii=False)
        from lib.monitor_text import to_text  # the text rendering loads only for text output

        return to_text(result)

"""Data classes, enums and the error hierarchy shared by every module.

Only the standard library (and lib.lifecycle, the statuses) is imported here, so any module (and
`import lib`) can use these cheaply.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from lib.lifecycle import ACTIVE_STATUSES, FINISHED_STATUSES, LIVE_STATUSES, IssueStatus  # noqa: F401 (exported)


# --------------------------------------------------------------------------------------------
# Errors. Expected failures are an OrchestratorError whose message is one sentence for the user;
# anything else is a bug and gets a traceback in the log.
# --------------------------------------------------------------------------------------------


class OrchestratorError(Exception):
    """Root of every expected error. `str(err)` is a complete sentence for the user."""

    exit_code = 1


class ConfigError(OrchestratorError):
    """The configuration is unusable. Carries every problem found, one line each."""

    exit_code = 2

    def __init__(self, errors: List[str], warnings: Optional[List[str]] = None):
        """`warnings` are the config's warnings found on the way (a typo's warning often explains an error)."""
        self.errors = list(errors)
        self.warnings = list(warnings or [])
        super().__init__("\n".join(self.errors))


class StateError(OrchestratorError):
    """The state file cannot be trusted (corrupt, or written by a newer version)."""

    exit_code = 2


class StateUnreachable(StateError):
    """The shared state's Redis does not answer (down, restarting, refused our password): a passing
    condition, so exit 1 as any failed run, and the next tick tries again."""

    exit_code = 1


class UsageError(OrchestratorError):
    """The command line asks for something that cannot be done."""

    exit_code = 2


# --------------------------------------------------------------------------------------------
# Enums
# --------------------------------------------------------------------------------------------


#: The seed README's names for the issue status (lib.lifecycle.IssueStatus), kept for its examples.
ProcessStatus = InstanceStatus = IssueStatus


# --------------------------------------------------------------------------------------------
# Figures and text, formatted one way for comments, notifications and the monitor
# --------------------------------------------------------------------------------------------


def format_cost(usd: float) -> str:
    """0.4213 -> "$0.42"; under ten cents four places, so a cheap run is not "$0.00": 0.025 -> "$0.0250"."""
    return f"${usd:.2f}" if abs(usd) >= 0.1 else f"${usd:.4f}"


def format_duration(seconds: float) -> str:
    """725 -> "12m 5s", 45 -> "45s", 3725 -> "1h 2m 5s"."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def shorten(text: str, limit: int, max_lines: Optional[int] = None) -> str:
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


def issue_ref(repo: Optional[str], number: int) -> str:
    """How an issue is named everywhere, logs included: `owner/name#N` (`#N` when the repository is unknown)."""
    return f"{repo or ''}#{number}"


def fault_point(step: str) -> None:
    """Crash-test hook: `ORCHESTRATOR_FAULT=<step>` kills this process with SIGKILL at that step.

    The reliability tests use it to prove that a crash between any two steps loses nothing.
    """
    if os.environ.get("ORCHESTRATOR_FAULT") == step:
        os.kill(os.getpid(), signal.SIGKILL)


def utc_now_iso() -> str:
    """Current UTC time as ISO 8601 with seconds precision, e.g. 2024-01-15T10:30:00+00:00."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@functools.lru_cache(maxsize=None)
def _field_names(cls) -> Tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _known_fields(cls, data: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of `data` that are fields of the dataclass `cls`; the rest (keys of a newer version,
    or computed ones like MonitorReport's counts) is ignored."""
    known = _field_names(cls)
    return {key: value for key, value in data.items() if key in known}


def _json_copy(value: Any) -> Any:
    """A copy of JSON-shaped data (dicts, lists, scalars): what dataclasses.asdict gives for such fields,
    at a tenth of its cost (a tick or a runner writes every entry of the state at each change)."""
    if isinstance(value, dict):
        return {key: _json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_copy(item) for item in value]
    return value


def parse_iso(value: Optional[str]) -> Optional[datetime]:
    """Parse an ISO 8601 timestamp (naive values are taken as UTC); None stays None."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def seconds_between(start: Optional[str], end: Optional[str] = None) -> Optional[float]:
    """Seconds from the ISO time `start` to `end` (now when None), never below 0; None when `start` is
    missing or either one is not a time."""
    try:
        started, ended = parse_iso(start), parse_iso(end) if end else datetime.now(timezone.utc)
    except ValueError:
        return None
    return max(0.0, (ended - started).total_seconds()) if started and ended else None


# --------------------------------------------------------------------------------------------
# State of one issue
# --------------------------------------------------------------------------------------------


@dataclass
class IssueState:
    """One entry of processing-state.json (keyed there by str(issue_number)).

    The first six fields are the seed README's; the rest is what the lifecycle needs.
    """

    issue_number: int
    status: IssueStatus  # a plain value ("running") is taken too
    branch: str
    start_time: str
    session_id: Optional[str] = None
    slot: Optional[int] = None

    repo: Optional[str] = None  # "owner/name"
    title: str = ""
    model: Optional[str] = None  # from a trusted claude-model:<name> label; None: the repository's
    attempt: int = 1  # 1 for the first run; +1 each time the issue is re-labeled ready
    retries: int = 0  # automatic retries of this attempt (lost runner, crash without result)
    runner_pid: Optional[int] = None
    runner_create_time: Optional[float] = None  # psutil create_time(): a pid alone is reused
    claude_pid: Optional[int] = None
    claude_create_time: Optional[float] = None
    log_path: Optional[str] = None  # stream-json log of the current invocation
    end_time: Optional[str] = None
    error: Optional[str] = None
    cost_usd: Optional[float] = None  # cumulative over the session, as the CLI reports it
    num_turns: Optional[int] = None
    message_count: Optional[int] = None
    last_activity: Optional[str] = None
    pr_url: Optional[str] = None
    question: Optional[str] = None
    question_comment_id: Optional[int] = None
    not_before: Optional[str] = None  # WAITING: do not launch before this time
    cancel_reason: Optional[str] = None  # set by a tick: the runner stops its agent and saves the work
    requeues: int = 0  # usage-limit/outage requeues in a row: the backoff grows with it
    slot_notes: List[str] = field(default_factory=list)  # what preparing the slot kept or found, for the comment
    validation_round: int = 0  # 0: the agent's own work; n: after the n-th fix round
    checks: List[Dict[str, Any]] = field(default_factory=list)  # the last validation: name, passed, duration
    #: each Claude invocation of this attempt: kind ("run", "resume", "fix-1", ...), cost_usd (the CLI's
    #: running total of the session), num_turns, duration_seconds
    invocations: List[Dict[str, Any]] = field(default_factory=list)
    #: {"session_id", "cost_usd"}: the last running total the CLI reported for the session, kept across
    #: runs and follow-ups (which resume it), so that an invocation's own cost is what it adds to it
    session_spent: Dict[str, Any] = field(default_factory=dict)
    # Following the pull request it opened, until it is merged or closed:
    pr_number: Optional[int] = None
    following: bool = False
    follow_marks: Dict[str, int] = field(default_factory=dict)  # newest review / review_comment / comment id seen
    follow_rounds: int = 0  # follow-ups run for reviews and comments
    ci_fixes: int = 0  # follow-ups run for failing checks
    ci_fixed_shas: List[str] = field(default_factory=list)  # head commits already fixed once
    follow_work: Dict[str, Any] = field(default_factory=dict)  # what the pending follow-up is to address
    question_number: Optional[int] = None  # where the open question was asked: the PR, or None for the issue
    #: the chat messages that asked questions, newest last (10 kept): {"service": "telegram" | "slack", "chat",
    #: "id": message id | thread ts, "question": the question comment's id, "seen": the last reply read (Slack)}
    chat_questions: List[Dict[str, Any]] = field(default_factory=list)
    #: answers taken from a chat and posted on GitHub by the orchestrator, newest last (20 kept): {"comment":
    #: its id, "service", "who"}. Only a comment whose id is here counts as a chat answer (lib/answers.py).
    chat_answers: List[Dict[str, Any]] = field(default_factory=list)
    #: what the tick last learned of the pull request (lib/pull_upkeep.py): its updated_at and head, the
    #: base tip it was compared with, mergeable, behind_by, the conflict fixes used for that base tip
    upkeep: Dict[str, Any] = field(default_factory=dict)
    # The Celery executor: the worker host that holds the run (its slot, its transcript), and the task
    # sent for it; a task whose id is not the entry's is a stale or repeated delivery and does nothing.
    host: Optional[str] = None
    dispatch_id: Optional[str] = None
    dispatched_at: Optional[str] = None
    dispatched_to: Optional[str] = None  # the host whose own queue the task went to; None: the shared one
    updated_at: Optional[str] = None

    def __post_init__(self) -> None:
        self.status = IssueStatus(self.status)  # ValueError for a status no version wrote

    @property
    def is_active(self) -> bool:
        """True while the issue owns its agent slot."""
        return self.status in ACTIVE_STATUSES

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def to_dict(self) -> Dict[str, Any]:
        data = {name: _json_copy(getattr(self, name)) for name in _field_names(IssueState)}
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "IssueState":
        """Build from a state-file entry; unknown keys (a newer minor version) are ignored, and the
        names of earlier versions are read (`agent_index`, now `slot`)."""
        if "agent_index" in data and "slot" not in data:
            data = {**data, "slot": data["agent_index"]}
        return cls(**_known_fields(cls, data))


# --------------------------------------------------------------------------------------------
# Monitoring
# --------------------------------------------------------------------------------------------


@dataclass
class Message:
    """One step of a conversation: a prompt, assistant text, a tool call or a tool result."""

    role: str  # "user" | "assistant" | "system"
    kind: str  # "prompt" | "text" | "tool_use" | "tool_result" | "error" | "status"
    text: str
    timestamp: Optional[str] = None
    tool_name: Optional[str] = None
    is_error: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Message":
        return cls(**_known_fields(cls, data))


@dataclass
class ClaudeInstance:
    """One Claude Code run as the monitor sees it."""

    issue_number: Optional[int]
    status: IssueStatus  # a plain value ("running") is taken too
    pid: Optional[int] = None
    repo: Optional[str] = None  # "owner/name"
    slot: Optional[int] = None
    session_id: Optional[str] = None
    branch: Optional[str] = None
    cwd: Optional[str] = None
    start_time: Optional[str] = None
    end_time: Optional[str] = None
    runtime_seconds: Optional[float] = None
    message_count: int = 0
    last_activity: Optional[str] = None
    cpu_percent: Optional[float] = None
    memory_mb: Optional[float] = None
    children: List[int] = field(default_factory=list)
    process_state: Optional[str] = None  # psutil's view: sleeping, running, zombie, ...
    cost_usd: Optional[float] = None
    num_turns: Optional[int] = None
    pr_url: Optional[str] = None
    error: Optional[str] = None
    question: Optional[str] = None
    host: Optional[str] = None  # the Celery mode: the worker host the run is on
    upkeep: Optional[Dict[str, Any]] = None  # a followed pull request's upkeep (lib/pull_upkeep.upkeep_view)

    def __post_init__(self) -> None:
        self.status = IssueStatus(self.status)

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ClaudeInstance":
        return cls(**_known_fields(cls, data))


@dataclass
class MonitorReport:
    """What `claude_monitor.py monitor` prints: active and finished instances."""

    timestamp: str
    active_instances: List[ClaudeInstance] = field(default_factory=list)
    completed_instances: List[ClaudeInstance] = field(default_factory=list)

    @property
    def total_instances(self) -> int:
        return len(self.active_instances) + len(self.completed_instances)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "total_instances": self.total_instances,
            "active_count": len(self.active_instances),
            "completed_count": len(self.completed_instances),
            "active_instances": [i.to_dict() for i in self.active_instances],
            "completed_instances": [i.to_dict() for i in self.completed_instances],
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "MonitorReport":
        """Build from `to_dict` output; its counts are derived, so they are ignored."""
        values = _known_fields(cls, data)
        for key in ("active_instances", "completed_instances"):
            values[key] = [ClaudeInstance.from_dict(item) for item in values.get(key, [])]
        return cls(**values)

    def to_text(self) -> str:
        return report_to_text(self)


# --------------------------------------------------------------------------------------------
# A report as text (the seed README's format)
# --------------------------------------------------------------------------------------------


def local_time(timestamp: Optional[str]) -> Optional[datetime]:
    try:
        moment = parse_iso(timestamp)
    except ValueError:
        return None
    return moment.astimezone() if moment else None


def clock(timestamp: Optional[str]) -> str:
    """HH:MM:SS in local time, with the date when it is not today."""
    moment = local_time(timestamp)
    if moment is None:
        return timestamp or "-"
    if moment.date() == datetime.now().astimezone().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def instance_lines(instance: ClaudeInstance, active: bool) -> List[str]:
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
        lines.append(f"    Last Activity: {clock(instance.last_activity)}")
    process_state = instance.process_state
    if process_state:
        cpu = "?" if instance.cpu_percent is None else instance.cpu_percent
        lines.append(f"    Process: {process_state}, CPU {cpu}%, memory {instance.memory_mb} MB")
    if instance.children:
        lines.append(f"    Child Processes: {', '.join(map(str, instance.children))}")
    if instance.repo:
        lines.append(f"    Repository: {instance.repo}")
    if instance.slot is not None:
        lines.append(f"    Slot: {instance.slot} ({instance.cwd})" + (f" on host {instance.host}"
                                                                         if instance.host else ""))
    if instance.session_id:
        lines.append(f"    Session: {instance.session_id}")
    if not active and instance.end_time:
        lines.append(f"    Ended: {clock(instance.end_time)}")
    if instance.cost_usd is not None:
        lines.append(f"    Cost: {format_cost(instance.cost_usd)}")
    if instance.num_turns is not None:
        lines.append(f"    Turns: {instance.num_turns}")
    if instance.pr_url:
        lines.append(f"    PR: {instance.pr_url}")
    if instance.upkeep:
        lines.append(f"    Upkeep: {instance.upkeep['summary']}")
    if instance.question:
        lines.append(f"    Question: {shorten(instance.question, 200, 1)}")
    if instance.error:
        lines.append(f"    Error: {shorten(instance.error, 300, 1)}")
    return lines


def report_to_text(report: MonitorReport) -> str:
    """The report in the seed README's text format (extra facts follow the seed's lines)."""
    generated = local_time(report.timestamp)
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
            lines += instance_lines(instance, active) + [""]
        if not instances:
            lines += ["  (none)", ""]
    return "\n".join(lines).rstrip("\n")

"""The monitor's text output: a report, a conversation's history, one issue's status, a message.

The report's lines are the seed README's (lib/models.report_to_text and instance_lines); a message
is `[time] who: text`, its continuation lines indented. Loaded only for text output: JSON needs none
of it (`ClaudeMonitor.render`); the dashboard shows messages as these lines too.
"""

from __future__ import annotations

from typing import Union

from lib.conversations import ConversationHistory, InstanceStatusReport
from lib.models import (
    FINISHED_STATUSES,
    Message,
    MonitorReport,
    instance_lines,
    issue_ref,
    local_time,
    report_to_text,
)


def to_text(result: Union[MonitorReport, ConversationHistory, InstanceStatusReport, Message]) -> str:
    if isinstance(result, MonitorReport):
        return report_to_text(result)
    if isinstance(result, ConversationHistory):
        return history_to_text(result)
    if isinstance(result, InstanceStatusReport):
        return status_to_text(result)
    return message_to_text(result)


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
    stamp = local_time(message.timestamp)
    prefix = f"[{stamp.strftime('%Y-%m-%d %H:%M:%S') if stamp else '-' * 19}] {who}: "
    return prefix + message.text.replace("\n", "\n    ")


def history_to_text(history: ConversationHistory) -> str:
    issue = issue_ref(history.repo, history.issue_number)
    if history.source is None and history.host:  # JSON says it with "host"
        return f"Issue {issue}: its conversation is on host {history.host}, where it runs (run claude_monitor.py there)."
    if history.source is None:
        return f"Issue {issue}: no conversation recorded (no transcript and no stream log)."
    header = [f"Conversation of issue {issue}" + (f" (session {history.session_id})" if history.session_id else ""),
              f"From the {history.source.kind.replace('_', ' ')} {history.source.path}",
              (f"{history.message_count} messages" if history.message_count is not None else
               "A large conversation: earlier entries left out, not counted")
              + (f"; the last {len(history.messages)} entries follow (--limit 0 shows all)"
                 if history.truncated else ""),
              ""]
    return "\n".join(header + [message_to_text(message) for message in history.messages])


def status_to_text(status: InstanceStatusReport) -> str:
    lines = instance_lines(status.instance, active=status.instance.status not in FINISHED_STATUSES)
    if status.source is not None:
        lines.append(f"    Conversation: {status.source.path}")
    if status.recent_messages:
        lines += ["", "  Recent activity:"]
        lines += ["    " + message_to_text(message).replace("\n", "\n    ") for message in status.recent_messages]
    return "\n".join(lines)

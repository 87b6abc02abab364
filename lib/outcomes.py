"""How one Claude Code invocation ended, judged by the stream's `result` event, in words a user can act on.

Never by the exit code: the CLI exits 0 without a result on SIGINT, and 1 with a perfectly good
`result` on API errors. A result can mean: done, a question for a human (a `NEEDS_INPUT:` line, or
tools a headless run may not use), a usage limit or API outage (back to the queue until the reset),
a `--resume` whose session is gone, or a failure with its reason; no result means the process was
ended (by a limit or a stop) or died, and the exit code and stderr say how.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Mapping, Optional, Tuple

from lib.models import IssueStatus
from lib.transcripts import tool_input_summary

#: API statuses that mean "come back later", not "this issue failed".
REQUEUE_API_STATUSES = (429, 529)
REASON_CHARS = 500


@dataclass
class Outcome:
    """How one invocation ended, in words a user can act on."""

    #: COMPLETED, NEEDS_INPUT (a question for a human), WAITING (usage limit or API outage: run again
    #: after reset_at), FAILED or CANCELLED (a stop was asked for)
    status: IssueStatus
    reason: Optional[str] = None  # why it failed / was requeued / cancelled; None when completed
    summary: Optional[str] = None  # the final result text, else the last assistant text
    question: Optional[str] = None  # needs_input: what to ask on the issue
    cost_usd: Optional[float] = None  # cumulative over the session, as the CLI reports it
    num_turns: Optional[int] = None  # of this invocation
    duration_seconds: Optional[float] = None
    reset_at: Optional[datetime] = None  # requeue: when the usage limit resets (UTC), if the CLI said
    limit: Optional[str] = None  # "timeout" | "idle" | "max_turns" | "max_budget" | None
    permission_denials: List[Dict[str, Any]] = field(default_factory=list)
    session_missing: bool = False  # FAILED because --resume found no conversation: start a fresh one
    checks: List[Dict[str, Any]] = field(default_factory=list)  # the validation it passed or failed, if any


_NEEDS_INPUT_RE = re.compile(r"^[ \t>*_`]*NEEDS_INPUT[*_`]*\s*:[*_`]*[ \t]*(.*)$", re.M)
_MAX_TURNS_RE = re.compile(r"turns\s*\((\d+)\)")
_BUDGET_RE = re.compile(r"\((\$[0-9.]+)\)")
_MISSING_SESSION_TEXT = "No conversation found with session ID"
_USAGE_LIMIT_RE = re.compile(
    r"usage limit|hit your (?:usage |session |weekly )?limit|(?:session|weekly|daily|5-hour) limit"
    r"|limit reached|out of (?:extra )?usage|rate limit", re.I)
# How the notice itself begins, for CLIs that reported it as a successful result.
_LIMIT_NOTICE_RE = re.compile(
    r"\s*(?:Claude AI usage limit reached|You(?:'|\u2019)ve hit your|You have hit your|"
    r"(?:\d+-hour|session|weekly|daily) limit reached)", re.I)
_EPOCH_RE = re.compile(r"\|\s*(\d{10})(?:\d{3})?\b")
_RESET_IN_RE = re.compile(r"\b(?:resets?|try again|retry)\s+in\s+(\d+)\s*(h|hr|hour|m|min|minute)s?\b", re.I)
_RESET_AT_RE = re.compile(
    r"\bresets?\s+(?:at\s+|on\s+)?"
    r"(?:(?P<month>[A-Za-z]{3,9})\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,?\s+(?:at\s+)?)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?\s?m\.?)?"
    r"(?:\s*\((?P<tz>[^)]+)\))?", re.I)
_MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}


def _timezone(name: Optional[str]):
    """The zone the CLI named, else this machine's (the CLI prints local time)."""
    if name:
        name = name.strip()
        if name.upper() in ("UTC", "GMT", "Z"):
            return timezone.utc
        try:
            from zoneinfo import ZoneInfo

            return ZoneInfo(name)
        except Exception:  # unknown zone or no tz database: fall back to local time
            pass
    return datetime.now().astimezone().tzinfo


def parse_reset_time(text: Optional[str], now: Optional[datetime] = None) -> Optional[datetime]:
    """When a usage limit resets, from the CLI's words, in UTC; None when the text does not say.

    Liberal: "resets 3pm", "resets 3:30pm (UTC)", "resets at 15:00 (Europe/Berlin)",
    "resets Nov 26, 3pm", "resets in 2 hours", "Claude AI usage limit reached|1732000000".
    A time without a date is its next occurrence after `now`.
    """
    if not text:
        return None
    now = now or datetime.now(timezone.utc)
    epoch = _EPOCH_RE.search(text)
    if epoch:
        return datetime.fromtimestamp(int(epoch.group(1)), timezone.utc)
    relative = _RESET_IN_RE.search(text)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2).lower()
        return now + (timedelta(hours=amount) if unit.startswith("h") else timedelta(minutes=amount))
    for match in _RESET_AT_RE.finditer(text):
        hour, minute, ampm = int(match.group("hour")), int(match.group("minute") or 0), match.group("ampm")
        if not ampm and match.group("minute") is None:
            continue  # a bare number ("resets 3 times") is no time
        if ampm:
            if not 1 <= hour <= 12:
                continue
            hour = hour % 12 + (12 if ampm.lower().startswith("p") else 0)
        if hour > 23 or minute > 59:
            continue
        zone = _timezone(match.group("tz"))
        local_now = now.astimezone(zone)
        when = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        month = _MONTHS.get((match.group("month") or "")[:3].lower())
        if month:
            try:
                when = when.replace(month=month, day=int(match.group("day")))
            except ValueError:
                continue
            if when < local_now - timedelta(days=1):
                when = when.replace(year=when.year + 1)
        elif when <= local_now:
            when += timedelta(days=1)
        return when.astimezone(timezone.utc)
    return None


def needs_input_question(text: Optional[str]) -> Optional[str]:
    """The question after the last `NEEDS_INPUT:` line of the final text, if there is one."""
    matches = list(_NEEDS_INPUT_RE.finditer(text or ""))
    if not matches:
        return None
    last = matches[-1]
    question = (last.group(1) + text[last.end():]).strip().strip("*_`").strip()
    return question or text[:last.start()].strip() or None


def ends_with_question(text: Optional[str]) -> bool:
    return bool(text) and text.rstrip().rstrip("*_`").rstrip().endswith("?")


def _denials_question(denials: List[Dict[str, Any]]) -> str:
    lines = []
    for denial in denials:
        summary = tool_input_summary(denial.get("tool_input")).replace("\n", " ")
        summary = summary if len(summary) <= 120 else summary[:117] + "..."
        lines.append(f"- {denial.get('tool_name', '?')}: {summary}")
    return ("Claude Code was not allowed to use these tools, so the work may be incomplete:\n"
            + "\n".join(lines)
            + "\nA headless run cannot ask for permission. Allow them (claude.permission_mode or"
              " claude.allowed_tools) and label the issue again, or reply with how to go on without them.")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


def _seconds(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify(result: Optional[Mapping[str, Any]], *, exit_code: Optional[int] = None,
             killed_by: Optional[str] = None, stop_reason: Optional[str] = None, settings: Any = None,
             no_changes: bool = False, last_text: Optional[str] = None, stderr_tail: Optional[str] = None,
             now: Optional[datetime] = None) -> Outcome:
    """Judge an invocation by its `result` event (the exit code only explains a missing result).

    killed_by: why we ended it ("timeout", "idle", "stop", "after_result"); stop_reason: the words
    for "stop". settings: config.claude, for the limits named in reasons. no_changes: the runner
    found no new commit or edit; a success whose final text ends with a question then needs input.
    """
    if result is None:
        return _classify_without_result(exit_code, killed_by, stop_reason, settings, last_text, stderr_tail)

    text = result.get("result") if isinstance(result.get("result"), str) else None
    errors = [str(e) for e in result.get("errors") or [] if e] if isinstance(result.get("errors"), list) else []
    duration_ms = result.get("duration_ms")
    status_code = result.get("api_error_status") if isinstance(result.get("api_error_status"), int) else None
    outcome = Outcome(
        status=IssueStatus.FAILED,
        summary=text or last_text,
        cost_usd=result.get("total_cost_usd"),
        num_turns=result.get("num_turns"),
        duration_seconds=duration_ms / 1000 if isinstance(duration_ms, (int, float)) else None,
        permission_denials=[d for d in result.get("permission_denials") or [] if isinstance(d, dict)],
    )
    is_error = result.get("is_error") is not False
    said = "; ".join(([text] if text else []) + errors)

    if _MISSING_SESSION_TEXT in said:
        outcome.session_missing, outcome.reason = True, _short(said)
        return outcome
    # Older CLIs reported the subscription limit as a plain success whose text is the notice.
    limit_notice = bool(_USAGE_LIMIT_RE.search(said)) if is_error else bool(_LIMIT_NOTICE_RE.match(said))
    if status_code in REQUEUE_API_STATUSES or limit_notice:
        outcome.status = IssueStatus.WAITING
        outcome.reset_at = parse_reset_time(said, now)
        prefix = f"API error {status_code}: " if status_code else "usage limit: "
        outcome.reason = _short(prefix + (said or "no details"))
    elif result.get("subtype") == "success" and not is_error:
        _judge_success(outcome, text, no_changes)
    else:
        outcome.limit, outcome.reason = _error_reason(result, said, status_code, settings)
    return outcome


def _judge_success(outcome: Outcome, text: Optional[str], no_changes: bool) -> None:
    """A successful result is done, unless it ends with a question or tools were refused."""
    question = needs_input_question(text)
    if not question and outcome.permission_denials:
        question = _denials_question(outcome.permission_denials)
    if not question and no_changes and ends_with_question(text):
        question = text.strip()
    outcome.status = IssueStatus.NEEDS_INPUT if question else IssueStatus.COMPLETED
    outcome.question = question


def _error_reason(result: Mapping[str, Any], said: str, status_code: Optional[int],
                  settings: Any) -> Tuple[Optional[str], str]:
    """(limit, reason) of a result that reports an error."""
    subtype = result.get("subtype")
    if status_code:
        return None, _short(f"API error {status_code}: {said or result.get('api_error_type') or 'no details'}")
    if subtype == "error_max_turns":
        found = _MAX_TURNS_RE.search(said)
        turns = found.group(1) if found else getattr(settings, "max_turns", None) or "?"
        return "max_turns", f"reached the max_turns limit ({turns})"
    if subtype == "error_max_budget_usd":
        found = _BUDGET_RE.search(said)
        budget = getattr(settings, "max_budget_usd", None)
        amount = found.group(1) if found else (f"${budget:g}" if budget is not None else "$?")
        return "max_budget", f"reached the max_budget_usd limit ({amount})"
    if subtype == "error_during_execution":
        return None, _short(f"Claude Code stopped with an error during execution: {said or 'no details'}")
    return None, _short(f"Claude Code reported an error ({subtype or 'unknown'}): {said or 'no details'}")


def _classify_without_result(exit_code: Optional[int], killed_by: Optional[str], stop_reason: Optional[str],
                             settings: Any, last_text: Optional[str], stderr_tail: Optional[str]) -> Outcome:
    outcome = Outcome(status=IssueStatus.FAILED, summary=last_text)
    if killed_by == "stop":
        outcome.status, outcome.reason = IssueStatus.CANCELLED, stop_reason or "stopped on request"
    elif killed_by == "timeout":
        seconds = _seconds(getattr(settings, "timeout_seconds", "?"))
        outcome.limit, outcome.reason = "timeout", f"timed out after {seconds} s (claude.timeout_seconds)"
    elif killed_by == "idle":
        seconds = _seconds(getattr(settings, "idle_timeout_seconds", "?"))
        outcome.limit, outcome.reason = "idle", f"no output for {seconds} s (claude.idle_timeout_seconds)"
    elif exit_code is None:
        outcome.reason = "Claude Code ended without a result"
    elif exit_code < 0:
        outcome.reason = f"Claude Code was killed by signal {-exit_code} ({_signal_name(-exit_code)}) without a result"
    else:
        outcome.reason = f"Claude Code exited with code {exit_code} without a result"
    if stderr_tail and outcome.status == IssueStatus.FAILED and not outcome.limit:
        outcome.reason = _short(f"{outcome.reason}: {stderr_tail}")
    return outcome

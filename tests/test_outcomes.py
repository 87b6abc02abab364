"""How an invocation ended, judged from its `result` event alone: no process, the clock passed in."""

from datetime import datetime, timedelta, timezone

import pytest

from claude_standin import FIXTURES
from lib.models import IssueStatus
from lib.outcomes import classify, parse_reset_time
from lib.transcripts import summarize_stream

NOON = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
QUESTION_SESSION = "d4e36535-7fb3-4ea9-a3c8-4018f155a1be"


def verdict(outcome) -> str:
    """An outcome's status, or "session_missing" for a --resume that found no session."""
    return "session_missing" if outcome.session_missing else outcome.status.value


#: Every recorded stream, its exit code, and how it is judged (the same table, through a real
#: process, is in test_claude_processor.py).
RECORDED = [
    ("stream-success.jsonl", 0, "completed", "Done: added fix_issue_7.txt and committed it (fixes #7)."),
    ("stream-resumed.jsonl", 0, "completed", "Done: fixed issue #7 in the v2 API as you asked, and committed it."),
    ("stream-question.jsonl", 0, "completed",  # a question without NEEDS_INPUT: the runner asks git
     "Before I change anything: should the fix for issue #7 go into the v1 API or the v2 API?"),
    ("stream-error-401.jsonl", 1, "failed", "API error 401: Invalid API key · Fix external API key"),
    ("stream-error-529-overloaded.jsonl", 1, "waiting", "API error 529: API Error: 529 Overloaded."),
    ("stream-error-max-turns.jsonl", 1, "failed", "reached the max_turns limit (1)"),
    ("stream-error-max-budget.jsonl", 1, "failed", "reached the max_budget_usd limit ($0.001)"),
    ("stream-error-resume-missing.jsonl", 1, "session_missing", "No conversation found with session ID"),
    ("stream-permission-denied.jsonl", 0, "needs_input", "Done: added fix_issue_7.txt"),
    ("stream-sigterm-during-tool.jsonl", 143, "failed", "Claude Code exited with code 143 without a result"),
    ("stream-sigint-during-api.jsonl", 0, "failed", "Claude Code exited with code 0 without a result"),
]


@pytest.mark.parametrize("fixture, exit_code, expected, words", RECORDED, ids=[r[0] for r in RECORDED])
def test_each_recorded_ending_is_judged_by_its_result(fixture, exit_code, expected, words):
    summary = summarize_stream(FIXTURES / fixture)
    outcome = classify(summary.result, exit_code=exit_code, last_text=summary.last_text, now=NOON)

    assert verdict(outcome) == expected
    assert words in (outcome.reason or outcome.summary or "")
    if summary.result is not None:
        assert outcome.cost_usd == summary.result["total_cost_usd"]
        assert outcome.num_turns == summary.result["num_turns"]


def test_a_question_with_no_change_needs_input_and_with_changes_is_done():
    result = summarize_stream(FIXTURES / "stream-question.jsonl").result

    asked = classify(result, no_changes=True)
    assert asked.status == IssueStatus.NEEDS_INPUT and asked.question.endswith("the v2 API?")
    assert classify(result, no_changes=False).status == IssueStatus.COMPLETED


def test_refused_tools_become_a_question_naming_them():
    outcome = classify(summarize_stream(FIXTURES / "stream-permission-denied.jsonl").result)

    assert outcome.status == IssueStatus.NEEDS_INPUT
    assert "- Write: /home/user/work/myproject_0/fix_issue_7.txt" in outcome.question
    assert "- Bash: git add -A" in outcome.question and "claude.permission_mode" in outcome.question


@pytest.mark.parametrize("killed_by, words", [
    ("timeout", "timed out after 60 s (claude.timeout_seconds)"),
    ("idle", "no output for 30 s (claude.idle_timeout_seconds)"),
    ("stop", "the issue was closed"),
])
def test_an_ended_process_says_which_limit_or_request_ended_it(killed_by, words):
    class Settings:
        timeout_seconds, idle_timeout_seconds = 60, 30

    outcome = classify(None, exit_code=-15, killed_by=killed_by, stop_reason="the issue was closed",
                       settings=Settings())
    assert outcome.reason == words
    assert outcome.status == (IssueStatus.CANCELLED if killed_by == "stop" else IssueStatus.FAILED)


def test_a_missing_result_quotes_the_last_stderr_line():
    outcome = classify(None, exit_code=1, stderr_tail="Error: unknown option --frobnicate")
    assert outcome.reason == "Claude Code exited with code 1 without a result: Error: unknown option --frobnicate"


def result_event(**fields) -> dict:
    event = {"type": "result", "subtype": "success", "is_error": False, "result": "Done.", "num_turns": 1,
             "total_cost_usd": 0.01, "duration_ms": 1200, "permission_denials": [], "session_id": QUESTION_SESSION}
    event.update(fields)
    return event


@pytest.mark.parametrize("text, expected", [
    ("You've hit your limit · resets 3pm (Europe/Berlin)", datetime(2026, 11, 24, 14, 0, tzinfo=timezone.utc)),
    ("You've hit your limit · resets 3:30pm (UTC)", datetime(2026, 11, 24, 15, 30, tzinfo=timezone.utc)),
    ("Usage limit reached, resets at 09:15 (UTC)", datetime(2026, 11, 25, 9, 15, tzinfo=timezone.utc)),
    ("Claude AI usage limit reached|1795543559", datetime.fromtimestamp(1795543559, timezone.utc)),
    ("5-hour limit reached · resets in 2 hours", NOON + timedelta(hours=2)),
    ("Weekly limit reached · resets Nov 26, 9am (UTC)", datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)),
    ("usage limit reached", None),
])
def test_usage_limits_requeue_with_the_reset_time(text, expected):
    outcome = classify(result_event(is_error=True, result=text), exit_code=1, now=NOON)

    assert outcome.status == "waiting"
    assert outcome.reset_at == expected


def test_rate_limit_status_requeues_and_a_success_mentioning_limits_does_not():
    assert classify(result_event(is_error=True, result="API Error: 429 rate_limit_error", api_error_status=429),
                    now=NOON).status == "waiting"
    for summary in ("Fixed the rate limit bug.", "Done: the usage limit reached banner no longer sticks."):
        assert classify(result_event(result=summary), now=NOON).status == "completed"
    notice = classify(result_event(result="Claude AI usage limit reached|1795543559"), now=NOON)
    assert notice.status == "waiting" and notice.reset_at == datetime.fromtimestamp(1795543559, timezone.utc)


def test_reset_time_without_a_zone_is_local_and_in_the_future():
    reset = parse_reset_time("resets 3pm", now=NOON)
    local = reset.astimezone(datetime.now().astimezone().tzinfo)
    assert (local.hour, local.minute) == (15, 0)
    assert NOON < reset <= NOON + timedelta(days=1)


def test_needs_input_marker_variants():
    text = "I looked around.\n\n**NEEDS_INPUT:** Which database should the cache use?"
    outcome = classify(result_event(result=text))
    assert outcome.status == "needs_input"
    assert outcome.question == "Which database should the cache use?"
    assert outcome.summary == text


def test_classification_without_result_names_the_signal():
    outcome = classify(None, exit_code=-9)
    assert outcome.reason == "Claude Code was killed by signal 9 (SIGKILL) without a result"
    assert classify(None, exit_code=None).reason == "Claude Code ended without a result"
    assert classify(result_event(subtype="error_weird", is_error=True, result=None, errors=["boom"])).reason == (
        "Claude Code reported an error (error_weird): boom")
    assert IssueStatus.COMPLETED == "completed"

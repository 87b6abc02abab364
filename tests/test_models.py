"""The models survive a JSON round trip: what `to_dict` writes, `from_dict` reads back equal."""

import json

import pytest

from lib.models import ClaudeInstance, InstanceStatus, IssueState, Message, MonitorReport, IssueStatus


def through_json(model):
    return type(model).from_dict(json.loads(json.dumps(model.to_dict())))


RUNNING = ClaudeInstance(
    issue_number=7, status=InstanceStatus.RUNNING.value, pid=4242, slot=1,
    session_id="d4e36535-7fb3-4ea9-a3c8-4018f155a1be", branch="issue-7", cwd="/srv/slots/widgets_1",
    start_time="2026-11-24T18:05:50+00:00", runtime_seconds=93.5, message_count=12,
    last_activity="2026-11-24T18:07:20+00:00", cpu_percent=3.5, memory_mb=180.25, children=[4243, 4250],
    process_state="sleeping", cost_usd=0.4125, num_turns=6,
)
QUESTION = ClaudeInstance(issue_number=8, status=InstanceStatus.NEEDS_INPUT.value, slot=0,
                          question="Which database should the migration target?")
FINISHED = ClaudeInstance(issue_number=5, status=InstanceStatus.COMPLETED.value, end_time="2026-11-24T17:00:00+00:00",
                          pr_url="https://github.com/octo/widgets/pull/9")
FAILED = ClaudeInstance(issue_number=6, status=InstanceStatus.FAILED.value, error="claude exited with code 1")
STRANGER = ClaudeInstance(issue_number=None, status=InstanceStatus.UNKNOWN.value, pid=777)  # every other field None
REPORT = MonitorReport("2026-11-24T18:10:00+00:00", active_instances=[RUNNING, QUESTION, STRANGER],
                       completed_instances=[FINISHED, FAILED])

MODELS = [
    Message("user", "prompt", "Fix issue #7", "2026-11-24T18:05:51+00:00"),
    Message("assistant", "tool_use", "Bash: pytest -q", "2026-11-24T18:06:00+00:00", tool_name="Bash"),
    Message("user", "tool_result", "1 failed", is_error=True),  # no timestamp
    Message("system", "status", "Issue #7: run ended (lost: process 4242 is gone).", "2026-11-24T18:09:00+00:00"),
    RUNNING, QUESTION, FINISHED, FAILED, STRANGER,
    REPORT,
    MonitorReport("2026-11-24T18:10:00+00:00"),  # nothing runs
    IssueState(7, IssueStatus.RUNNING.value, "issue-7", "2026-11-24T18:05:50+00:00", session_id="s-1",
               slot=1, repo="octo/widgets", runner_pid=4200, runner_create_time=1764007550.25,
               cost_usd=0.4125, question_comment_id=123456789),
    IssueState(8, IssueStatus.PENDING.value, "issue-8", "2026-11-24T18:05:50+00:00"),
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{type(m).__name__}")
def test_round_trip_through_json(model):
    assert through_json(model) == model


def test_nested_instances_come_back_as_instances():
    report = through_json(REPORT)
    assert all(isinstance(i, ClaudeInstance) for i in report.active_instances + report.completed_instances)
    assert report.total_instances == 5 and report.active_instances[0].children == [4243, 4250]


def test_unknown_keys_are_ignored():
    assert Message.from_dict({**MODELS[0].to_dict(), "newer": 1}) == MODELS[0]
    assert ClaudeInstance.from_dict({**STRANGER.to_dict(), "gpu_percent": 9.5}) == STRANGER
    report = MonitorReport("2026-11-24T18:10:00+00:00", active_instances=[RUNNING])
    written = report.to_dict()
    assert {"total_instances", "active_count", "completed_count"} <= set(written)  # derived: not read back
    assert MonitorReport.from_dict({**written, "host": "build-1"}) == report


def test_missing_optional_fields_take_their_defaults():
    assert MonitorReport.from_dict({"timestamp": "2026-11-24T18:10:00+00:00"}) == MonitorReport(
        "2026-11-24T18:10:00+00:00")
    assert ClaudeInstance.from_dict({"issue_number": 3, "status": "pending"}) == ClaudeInstance(3, "pending")


@pytest.mark.parametrize("status", [*IssueStatus, *InstanceStatus], ids=lambda s: f"{type(s).__name__}.{s.name}")
def test_statuses_round_trip_as_their_value(status):
    written = json.dumps(status)
    assert written == f'"{status.value}"' and type(status)(json.loads(written)) is status

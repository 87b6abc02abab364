"""The agent layer through real subprocesses of the stand-in CLI (tests/bin/claude).

Recorded real CLI output (tests/fixtures/claude/) is replayed by the stand-in, so every recorded
ending goes through launch, tailing and classification; the other scenarios run the stand-in's
own model of the CLI: real git commits, real transcripts, real signals, real grandchildren.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest

from claude_standin import BRANCH, FIXTURES, ISSUE_NUMBER, STANDIN, alive, git, make_repo, replay, scenario
from lib.claude_processor import (ALWAYS_DISALLOWED_TOOLS, SANDBOXED_TOOLS, ClaudeLaunchError, ClaudeProcessor,
                                  new_session_id, write_prompt_file)
from lib.config import Config
from lib.outcomes import classify
from lib.sandbox import CLAUDE_SETTINGS_PATH
from lib.processes import SESSION_MARKER_VAR, end_session_processes, terminate_tree
from lib.prompts import build_prompt
from lib.transcripts import find_transcript, project_dir_name, summarize_stream

PROJECT = Path(__file__).resolve().parent.parent
REPO = "octo/widgets"
GITHUB_TOKEN = "ghp_standinGitHubToken0123456789abcdefXYZ"
TELEGRAM_TOKEN = "123456789:AAstandinTelegramToken_0123456789abc"
SLACK_TOKEN = "xoxb-1111-2222-standinSlackTokenABCDEF"
QUESTION_SESSION = "d4e36535-7fb3-4ea9-a3c8-4018f155a1be"  # stream-question.jsonl and stream-resumed.jsonl
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def make_config(tmp_path: Path, sandbox=None, **claude) -> Config:
    settings = {"executable": str(STANDIN), "check_interval": 0.05, "timeout_seconds": 60,
                "kill_grace_seconds": 0.5, "result_grace_seconds": 0.3}
    settings.update(claude)
    data = {
        "github": {"repo": REPO, "base_repo_path": str(tmp_path / "slots"), "token": GITHUB_TOKEN},
        "telegram": {"bot_token": TELEGRAM_TOKEN, "chat_id": "42"},
        "slack": {"bot_token": SLACK_TOKEN, "channel_id": "C123"},
        "claude": settings,
        "log_dir": str(tmp_path / "logs"),
        "sandbox": sandbox or {},
    }
    return Config.from_dict(data, folder=tmp_path)


def make_processor(tmp_path: Path, standin, **claude) -> ClaudeProcessor:
    return ClaudeProcessor(make_config(tmp_path, **claude), env=standin.env)


def issue(title: str = "Fix the widget", body: str = "The widget is broken.", number: int = ISSUE_NUMBER) -> dict:
    return {"number": number, "title": title, "body": body,
            "html_url": f"https://github.com/{REPO}/issues/{number}", "user": {"login": "alice"}}


def stream_paths(tmp_path: Path, attempt: int = 1):
    folder = tmp_path / "logs" / f"issue-{ISSUE_NUMBER}"
    return folder / f"{attempt}.stream.jsonl", folder / f"{attempt}.stderr.log"


def run_agent(processor: ClaudeProcessor, repo: Path, tmp_path: Path, prompt: str, *, session_id=None,
              resume=False, **callbacks):
    stream, stderr = stream_paths(tmp_path)
    return processor.run(prompt, cwd=repo, session_id=session_id or new_session_id(), stream_path=stream,
                         stderr_path=stderr, resume=resume, **callbacks)


def verdict(outcome) -> str:
    """An outcome's status, or "session_missing" for a --resume that found no session."""
    return "session_missing" if outcome.session_missing else outcome.status.value


def fix_prompt(*markers: str) -> str:
    return f"Fix issue #{ISSUE_NUMBER}. {' '.join(markers)}"


def processes_in(folder: Path) -> list:
    """Live processes working in `folder`: whatever this test started and left behind."""
    found = []
    for process in psutil.process_iter(["cwd", "status"]):
        cwd = process.info["cwd"]
        if cwd and process.info["status"] != psutil.STATUS_ZOMBIE and Path(cwd).is_relative_to(folder):
            found.append(process)
    return found


# ------------------------------------------------------------------------------------------------
# Every recorded ending, replayed by the stand-in through launch, tailing and classification
# ------------------------------------------------------------------------------------------------

RECORDED = [
    # fixture, exit code, status, limit, words in the reason
    ("stream-success.jsonl", 0, "completed", None, None),
    ("stream-resumed.jsonl", 0, "completed", None, None),
    ("stream-error-401.jsonl", 1, "failed", None, "API error 401: Invalid API key · Fix external API key"),
    ("stream-error-500.jsonl", 1, "failed", None, "API error 500: API Error: 500 Internal server error."),
    ("stream-error-529-overloaded.jsonl", 1, "waiting", None, "API error 529: API Error: 529 Overloaded."),
    ("stream-error-max-turns.jsonl", 1, "failed", "max_turns", "reached the max_turns limit (1)"),
    ("stream-error-max-budget.jsonl", 1, "failed", "max_budget", "reached the max_budget_usd limit ($0.001)"),
    ("stream-error-resume-missing.jsonl", 1, "session_missing", None,
     "No conversation found with session ID: 00000000-0000-4000-8000-000000000000"),
    ("stream-permission-denied.jsonl", 0, "needs_input", None, None),
    ("stream-sigterm-during-tool.jsonl", 143, "failed", None, "Claude Code exited with code 143 without a result"),
    ("stream-sigint-during-api.jsonl", 0, "failed", None, "Claude Code exited with code 0 without a result"),
    ("stream-sigint-during-tool.jsonl", 0, "failed", None,
     "Claude Code stopped with an error during execution: [ede_diagnostic]"),
]


@pytest.mark.parametrize("fixture, exit_code, status, limit, reason", RECORDED, ids=[r[0] for r in RECORDED])
def test_recorded_endings_are_classified_by_the_stream(tmp_path, claude_standin, slot_repo, fixture, exit_code,
                                                       status, limit, reason):
    processor = make_processor(tmp_path, claude_standin)
    run = run_agent(processor, slot_repo, tmp_path, replay(fixture, exit_code))

    assert run.exit_code == exit_code
    assert verdict(run.outcome) == status
    assert run.outcome.limit == limit
    if reason is None:
        assert run.outcome.reason is None
    else:
        assert run.outcome.reason.startswith(reason)
    assert run.killed_by is None
    recorded = [json.loads(line) for line in (FIXTURES / fixture).read_text().splitlines()]
    if recorded[-1]["type"] == "result":
        assert run.result == recorded[-1]
        assert run.outcome.cost_usd == recorded[-1]["total_cost_usd"]
        assert run.outcome.num_turns == recorded[-1]["num_turns"]
        assert run.session_id == recorded[-1]["session_id"]
    else:
        assert run.result is None


def test_recorded_permission_denials_become_a_question_naming_the_tools(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin)
    run = run_agent(processor, slot_repo, tmp_path, replay("stream-permission-denied.jsonl", 0))

    assert run.outcome.status == "needs_input"
    assert [d["tool_name"] for d in run.outcome.permission_denials] == ["Write", "Bash"]
    assert "- Write: /home/user/work/myproject_0/fix_issue_7.txt" in run.outcome.question
    assert "- Bash: git add -A && git commit" in run.outcome.question
    assert "claude.permission_mode" in run.outcome.question
    assert run.outcome.summary == "Done: added fix_issue_7.txt and committed it (fixes #7)."


def test_recorded_question_needs_input_only_when_nothing_changed(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin)
    asked = []

    def has_changes():
        asked.append(True)
        return False

    run = run_agent(processor, slot_repo, tmp_path, replay("stream-question.jsonl", 0), has_changes=has_changes)
    assert run.outcome.status == "needs_input"
    assert run.outcome.question == ("Before I change anything: should the fix for issue #7 go into the v1 API"
                                    " or the v2 API?")
    assert asked == [True]

    run = run_agent(processor, slot_repo, tmp_path, replay("stream-question.jsonl", 0), has_changes=lambda: True)
    assert run.outcome.status == "completed"


def test_recorded_success_does_not_ask_whether_anything_changed(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin)

    def has_changes():
        raise AssertionError("a final text without a question needs no git check")

    run = run_agent(processor, slot_repo, tmp_path, replay("stream-success.jsonl", 0), has_changes=has_changes)
    assert run.outcome.status == "completed"
    assert run.outcome.summary == "Done: added fix_issue_7.txt and committed it (fixes #7)."
    assert run.message_count == 5  # two blocks of one message count once; the prompt is not in the stream


# ------------------------------------------------------------------------------------------------
# Scenarios of the stand-in
# ------------------------------------------------------------------------------------------------


def test_success_commits_on_the_branch_and_records_the_session_early(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin)
    session_id = new_session_id()
    seen = {}

    def on_started(agent):
        seen["agent"] = agent

    def on_session_id(value):
        seen.setdefault("session_ids", []).append(value)
        seen["stream_had_result"] = '"type":"result"' in stream_paths(tmp_path)[0].read_text()

    run = run_agent(processor, slot_repo, tmp_path, fix_prompt(), session_id=session_id,
                    on_started=on_started, on_session_id=on_session_id)

    assert run.outcome.status == "completed", run.outcome
    assert run.outcome.summary == "Done: added fix_issue_7.txt and committed it (fixes #7)."
    assert run.outcome.cost_usd == pytest.approx(0.015)
    assert run.outcome.num_turns == 3
    assert run.exit_code == 0
    assert seen["session_ids"] == [session_id]
    assert run.session_id == session_id
    assert seen["agent"].pid == run.pid and seen["agent"].create_time
    assert git(slot_repo, "log", "-1", "--format=%s") == "Fix #7: add fix_issue_7.txt"
    assert git(slot_repo, "rev-parse", "--abbrev-ref", "HEAD") == BRANCH
    assert git(slot_repo, "status", "--porcelain") == ""
    assert run.message_count == 5
    assert run.last_activity and run.last_text == run.outcome.summary
    [call] = claude_standin.invocations()
    assert call["cwd"] == str(slot_repo) and call["session_id"] == session_id and not call["resume"]
    assert call["sid"] == call["pid"]  # its own session, so its group can be signalled as one
    transcript = find_transcript(session_id, [str(slot_repo)], claude_standin.config_dir)
    assert transcript is not None and transcript.parent.name == project_dir_name(str(slot_repo))


def test_session_id_is_reported_while_claude_still_runs(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin)
    agents, reported = [], []

    def on_session_id(value):
        reported.append((value, agents[0].popen.poll()))

    run = run_agent(processor, slot_repo, tmp_path, fix_prompt(scenario("hang")), on_started=agents.append,
                    on_session_id=on_session_id, should_stop=lambda: bool(reported) and "enough")

    assert reported == [(run.session_id, None)]  # None: the process had not exited yet
    assert run.outcome.status == "cancelled" and run.outcome.reason == "enough"


def test_question_then_resume_continues_the_session_and_reports_cumulative_cost(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin)
    session_id = new_session_id()
    first = run_agent(processor, slot_repo, tmp_path, fix_prompt(scenario("question")), session_id=session_id)

    assert first.outcome.status == "needs_input"
    assert first.outcome.question == "Should the fix go into the v1 API or the v2 API?"
    assert first.outcome.cost_usd == pytest.approx(0.01)
    assert git(slot_repo, "log", "--format=%s") == "Initial commit"

    second = run_agent(processor, slot_repo, tmp_path, "Put it in v2", session_id=session_id, resume=True)

    assert second.outcome.status == "completed", second.outcome
    assert second.session_id == session_id
    assert second.outcome.cost_usd == pytest.approx(0.025)  # the CLI's cumulative figure, not a sum of runs
    assert second.outcome.num_turns == 3
    assert second.message_count == first.message_count + 5  # the log holds both invocations
    assert [c["resume"] for c in claude_standin.invocations()] == [False, True]
    reply = claude_standin.invocations()[1]
    assert reply["prompt"] == "Put it in v2" and reply["prompt_source"] == "stdin"  # the reply came on stdin
    assert reply["argv"][0] == "-p" and not any("Put it in v2" in arg for arg in reply["argv"])
    folder = stream_paths(tmp_path)[0].parent
    assert first.prompt_path == folder / "1.prompt-1.txt" and second.prompt_path == folder / "1.prompt-2.txt"
    assert second.prompt_path.read_text(encoding="utf-8") == "Put it in v2"
    assert first.prompt_path.read_text(encoding="utf-8") == fix_prompt(scenario("question"))  # kept, not overwritten

    summary = summarize_stream(stream_paths(tmp_path)[0])
    assert summary.invocations == 2
    assert summary.result == second.result
    assert summary.session_id == session_id
    assert classify(summary.result).status == "completed"


def test_question_without_marker_needs_input_when_the_runner_finds_no_change(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin)
    run = run_agent(processor, slot_repo, tmp_path, fix_prompt(scenario("question-plain")),
                    has_changes=lambda: git(slot_repo, "rev-list", "--count", "main..HEAD") != "0")

    assert run.outcome.status == "needs_input"
    assert run.outcome.question.endswith("the v1 API or the v2 API?")


def test_resume_of_an_unknown_session_is_session_missing(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin)
    run = run_agent(processor, slot_repo, tmp_path, "Put it in v2", session_id=new_session_id(), resume=True)

    assert verdict(run.outcome) == "session_missing"
    assert run.exit_code == 1
    assert "No conversation found with session ID" in run.outcome.reason


@pytest.mark.parametrize("name, status, reason", [
    ("api-error-500", "failed", "API error 500: API Error: 500 Internal server error."),
    ("auth-401", "failed", "API error 401: Invalid API key · Fix external API key"),
    ("overloaded-529", "waiting", "API error 529: "),
])
def test_api_errors(tmp_path, claude_standin, slot_repo, name, status, reason):
    run = run_agent(make_processor(tmp_path, claude_standin), slot_repo, tmp_path, fix_prompt(scenario(name)))

    assert run.exit_code == 1
    assert run.outcome.status == status
    assert run.outcome.reason.startswith(reason)
    assert run.outcome.reset_at is None


def test_usage_limit_is_requeued_until_the_reset(tmp_path, claude_standin, slot_repo):
    run = run_agent(make_processor(tmp_path, claude_standin), slot_repo, tmp_path,
                    fix_prompt(scenario("usage-limit", "You've hit your limit · resets 3:30pm (UTC)")))

    assert run.outcome.status == "waiting"
    assert run.outcome.reason == "usage limit: You've hit your limit · resets 3:30pm (UTC)"
    reset = run.outcome.reset_at
    assert reset.tzinfo is not None and (reset.hour, reset.minute) == (15, 30)
    assert timedelta(0) < reset - datetime.now(timezone.utc) <= timedelta(days=1)


def test_max_turns_from_config(tmp_path, claude_standin, slot_repo):
    run = run_agent(make_processor(tmp_path, claude_standin, max_turns=2), slot_repo, tmp_path,
                    fix_prompt(scenario("max-turns")))

    assert run.outcome.status == "failed" and run.outcome.limit == "max_turns"
    assert run.outcome.reason == "reached the max_turns limit (2)"
    assert run.outcome.num_turns == 3


def test_max_budget_from_config(tmp_path, claude_standin, slot_repo):
    run = run_agent(make_processor(tmp_path, claude_standin, max_budget_usd=0.004), slot_repo, tmp_path, fix_prompt())

    assert run.outcome.status == "failed" and run.outcome.limit == "max_budget"
    assert run.outcome.reason == "reached the max_budget_usd limit ($0.004)"
    assert git(slot_repo, "log", "--format=%s") == "Initial commit"


@pytest.mark.parametrize("mode, status", [("default", "needs_input"), ("bypassPermissions", "completed")])
def test_permission_mode_decides_over_denials(tmp_path, claude_standin, slot_repo, mode, status):
    run = run_agent(make_processor(tmp_path, claude_standin, permission_mode=mode), slot_repo, tmp_path,
                    fix_prompt(scenario("permission-denied")))

    assert run.outcome.status == status
    if status == "needs_input":
        assert [d["tool_name"] for d in run.outcome.permission_denials] == ["Write", "Bash"]
        assert "- Write: " in run.outcome.question and "fix_issue_7.txt" in run.outcome.question


def test_crash_without_result_fails_in_words(tmp_path, claude_standin, slot_repo):
    run = run_agent(make_processor(tmp_path, claude_standin), slot_repo, tmp_path, fix_prompt(scenario("crash")))

    assert run.outcome.status == "failed"
    assert run.outcome.reason == ("Claude Code exited with code 1 without a result:"
                                  " Error: the stand-in crashed on purpose")
    assert run.outcome.summary == "Let me look."
    assert run.result is None


def test_garbage_lines_are_skipped(tmp_path, claude_standin, slot_repo):
    run = run_agent(make_processor(tmp_path, claude_standin), slot_repo, tmp_path, fix_prompt(scenario("garbage")))

    assert run.outcome.status == "completed"
    assert run.message_count == 5
    assert b"\xff\xfe binary" in stream_paths(tmp_path)[0].read_bytes()


def test_a_ten_megabyte_line_is_survived(tmp_path, claude_standin, slot_repo):
    run = run_agent(make_processor(tmp_path, claude_standin), slot_repo, tmp_path, fix_prompt(scenario("huge-line")))

    assert run.outcome.status == "completed"
    assert run.message_count == 6  # the huge line is one message
    assert stream_paths(tmp_path)[0].stat().st_size > 10 * 1024 * 1024
    assert summarize_stream(stream_paths(tmp_path)[0]).result == run.result


@pytest.mark.slow  # waits out a real timeout
def test_slow_output_reports_progress_and_is_not_idle(tmp_path, claude_standin, slot_repo):
    progress = []
    run = run_agent(make_processor(tmp_path, claude_standin, idle_timeout_seconds=3), slot_repo, tmp_path,
                    fix_prompt(scenario("slow", "1")), on_progress=lambda count, when: progress.append(count))

    assert run.outcome.status == "completed"
    assert progress and progress == sorted(progress)


# ------------------------------------------------------------------------------------------------
# Limits and the whole-tree kill
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # waits out a real timeout
def test_timeout_ends_claude_and_its_sigterm_ignoring_grandchild(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin, timeout_seconds=1)
    started = time.monotonic()
    run = run_agent(processor, slot_repo, tmp_path, fix_prompt(scenario("grandchild")))

    assert time.monotonic() - started < 30
    assert run.outcome.status == "failed" and run.outcome.limit == "timeout"
    assert run.outcome.reason == "timed out after 1 s (claude.timeout_seconds)"
    assert run.killed_by == "timeout"
    assert run.exit_code == 143  # it took the SIGTERM like the real CLI
    grandchild = claude_standin.grandchild_pid()
    assert not alive(grandchild)
    assert not alive(run.pid)
    assert processes_in(tmp_path) == []


def test_leftover_background_process_is_ended_after_a_normal_exit(tmp_path, claude_standin, slot_repo):
    run = run_agent(make_processor(tmp_path, claude_standin), slot_repo, tmp_path,
                    fix_prompt(scenario("grandchild", "finish")))

    assert run.outcome.status == "completed"
    assert run.killed_by is None
    assert not alive(claude_standin.grandchild_pid())
    assert processes_in(tmp_path) == []


def test_hang_after_result_ends_promptly_and_counts_as_completed(tmp_path, claude_standin, slot_repo):
    started = time.monotonic()
    run = run_agent(make_processor(tmp_path, claude_standin), slot_repo, tmp_path,
                    fix_prompt(scenario("hang-after-result")))

    assert time.monotonic() - started < 30
    assert run.outcome.status == "completed"
    assert run.killed_by == "after_result"
    assert not alive(run.pid)


def test_idle_timeout(tmp_path, claude_standin, slot_repo):
    run = run_agent(make_processor(tmp_path, claude_standin, idle_timeout_seconds=0.5), slot_repo, tmp_path,
                    fix_prompt(scenario("hang")))

    assert run.outcome.status == "failed" and run.outcome.limit == "idle"
    assert run.outcome.reason == "no output for 0.5 s (claude.idle_timeout_seconds)"
    assert run.session_id and not alive(run.pid)


def test_silent_claude_is_ended_by_the_idle_limit(tmp_path, claude_standin, slot_repo):
    run = run_agent(make_processor(tmp_path, claude_standin, idle_timeout_seconds=0.5), slot_repo, tmp_path,
                    fix_prompt(scenario("silent")))

    assert run.outcome.limit == "idle"
    assert run.message_count == 0 and run.last_activity is None


def test_should_stop_cancels_with_its_reason(tmp_path, claude_standin, slot_repo):
    polls = []

    def should_stop():
        polls.append(True)
        return "the issue was closed" if len(polls) >= 3 else None

    run = run_agent(make_processor(tmp_path, claude_standin), slot_repo, tmp_path, fix_prompt(scenario("hang")),
                    should_stop=should_stop)

    assert run.outcome.status == "cancelled"
    assert run.outcome.reason == "the issue was closed"
    assert run.killed_by == "stop"
    assert len(polls) == 3 and not alive(run.pid)


def test_tick_ends_the_tree_of_a_recorded_claude_pid(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin)
    stream, stderr = stream_paths(tmp_path)
    agent = processor.start(fix_prompt(scenario("grandchild")), cwd=slot_repo, session_id=new_session_id(),
                            stream_path=stream, stderr_path=stderr)
    grandchild = claude_standin.grandchild_pid()

    terminate_tree(agent.pid, 0.5, create_time=agent.create_time)  # as a tick does, with no Popen

    assert agent.popen.wait(timeout=10) == 143
    assert not alive(grandchild)
    assert processes_in(tmp_path) == []


def test_tools_surviving_a_sigkilled_claude_are_found_by_session(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin)
    stream, stderr = stream_paths(tmp_path)
    session_id = new_session_id()
    agent = processor.start(fix_prompt(scenario("grandchild")), cwd=slot_repo, session_id=session_id,
                            stream_path=stream, stderr_path=stderr)
    grandchild = claude_standin.grandchild_pid()
    deadline = time.monotonic() + 10  # its Bash tool (which carries the marker too) has ended
    while '"tool_result"' not in stream.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, "the stand-in's Bash tool did not end"
        time.sleep(0.02)
    agent.popen.kill()
    agent.popen.wait(timeout=10)
    assert alive(grandchild)  # what the real CLI leaves behind on SIGKILL

    assert end_session_processes(session_id, 0.5) == 1

    assert not alive(grandchild)
    assert end_session_processes(session_id, 0.5) == 0


# ------------------------------------------------------------------------------------------------
# Command line and environment
# ------------------------------------------------------------------------------------------------


def test_command_line_carries_every_option_and_no_prompt(tmp_path, claude_standin):
    processor = make_processor(
        tmp_path, claude_standin, model="sonnet", max_turns=30, max_budget_usd=2.5, permission_mode="acceptEdits",
        allowed_tools=["Bash(git commit:*)", "Edit"], disallowed_tools=["WebFetch"],
        extra_args=["--append-system-prompt", "Be brief."])
    session_id = new_session_id()

    command = processor.build_command(session_id)

    assert command == [
        str(STANDIN), "-p",  # no prompt argument: -p reads the prompt from stdin
        "--allowedTools", "Bash(git commit:*)", "Edit",
        "--disallowedTools", "AskUserQuestion", "WebFetch",
        "--output-format", "stream-json", "--verbose", "--session-id", session_id,
        "--model", "sonnet", "--max-turns", "30", "--max-budget-usd", "2.5", "--permission-mode", "acceptEdits",
        "--append-system-prompt", "Be brief.",
    ]
    resumed = processor.build_command(session_id, resume=True)
    assert resumed[:3] == [str(STANDIN), "-p", "--allowedTools"]
    assert resumed[resumed.index("--resume") + 1] == session_id and "--session-id" not in resumed


def test_minimal_command_line_still_refuses_ask_user_question(tmp_path, claude_standin):
    processor = make_processor(tmp_path, claude_standin, disallowed_tools=["AskUserQuestion"])
    session_id = new_session_id()

    assert processor.build_command(session_id) == [
        str(STANDIN), "-p", "--disallowedTools", *ALWAYS_DISALLOWED_TOOLS,
        "--output-format", "stream-json", "--verbose", "--session-id", session_id]


def test_a_sandboxed_session_gets_its_settings_and_the_tools_a_scrubbed_environment_needs(tmp_path, claude_standin):
    """In a wall Claude Code runs with its own sandbox's settings; with CLAUDE_CODE_SUBPROCESS_ENV_SCRUB
    it asks for every tool not named, so the usual ones are named unless the config names its own."""
    session_id = new_session_id()
    command = make_processor(tmp_path, claude_standin).build_command(session_id, sandboxed=True)

    assert command[command.index("--settings") + 1] == CLAUDE_SETTINGS_PATH
    tools = command[command.index("--allowedTools") + 1:command.index("--disallowedTools")]
    assert tools == list(SANDBOXED_TOOLS) and "Bash" in tools
    configured = make_processor(tmp_path, claude_standin, allowed_tools=["Edit"]).build_command(session_id, sandboxed=True)
    assert configured[configured.index("--allowedTools") + 1:configured.index("--disallowedTools")] == ["Edit"]
    assert "--settings" not in make_processor(tmp_path, claude_standin).build_command(session_id)


def test_the_stand_in_reads_the_command_line_as_the_cli_would(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin, model="sonnet", max_turns=30,
                               allowed_tools=["Bash(git commit:*)", "Edit"], disallowed_tools=["WebFetch"])
    run = run_agent(processor, slot_repo, tmp_path, "- a reply that starts like an option #7")

    assert run.outcome.status == "completed", run.outcome
    [call] = claude_standin.invocations()
    # On stdin a leading "-" is just text: the prompt arrives exactly as written, nothing put in front.
    assert call["prompt"] == "- a reply that starts like an option #7"
    assert call["prompt_source"] == "stdin" and call["stdin"] == "file"
    assert call["argv"][0] == "-p" and not any("a reply" in arg for arg in call["argv"])
    first = json.loads(stream_paths(tmp_path)[0].read_text().splitlines()[0])
    assert first["model"] == "claude-sonnet-5-5" and first["session_id"] == run.session_id


def test_bad_session_id_and_missing_executable_are_launch_errors(tmp_path, claude_standin, slot_repo):
    with pytest.raises(ClaudeLaunchError, match="not a UUID"):
        make_processor(tmp_path, claude_standin).build_command("not-a-uuid")
    processor = make_processor(tmp_path, claude_standin, executable=str(tmp_path / "no-such-claude"))
    with pytest.raises(ClaudeLaunchError, match="Claude Code was not found"):
        run_agent(processor, slot_repo, tmp_path, fix_prompt())


def test_a_token_never_reaches_the_command_line(tmp_path, claude_standin):
    processor = make_processor(tmp_path, claude_standin, extra_args=["--append-system-prompt", GITHUB_TOKEN])
    with pytest.raises(ClaudeLaunchError, match="token"):
        processor.build_command(new_session_id())


def test_cli_refusal_is_reported_with_its_stderr(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin, extra_args=["--output-format", "yaml"])
    run = run_agent(processor, slot_repo, tmp_path, fix_prompt())

    assert run.outcome.status == "failed"
    assert run.outcome.reason.startswith("Claude Code exited with code 1 without a result: error: option"
                                         " '--output-format <format>' argument 'yaml' is invalid.")


def test_the_stand_in_refuses_stream_json_without_verbose(claude_standin, slot_repo):
    done = subprocess.run([str(STANDIN), "-p", "Fix issue #7", "--output-format", "stream-json"], cwd=slot_repo,
                          env=claude_standin.env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "Error: When using --print, --output-format=stream-json requires --verbose\n"


def base_env_with_tokens() -> dict:
    return {
        "GITHUB_TOKEN": GITHUB_TOKEN, "GH_TOKEN": "gho_other", "GH_ENTERPRISE_TOKEN": "ghe_1",
        "GITHUB_ENTERPRISE_TOKEN": "ghe_2", "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "MY_COPY_OF_THE_TOKEN": SLACK_TOKEN, "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {GITHUB_TOKEN}",
        "ANTHROPIC_API_KEY": "sk-ant-kept", "LANG": "C.UTF-8",
    }


def test_agent_env_has_no_tokens(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin)
    processor.env = {**claude_standin.env, **base_env_with_tokens()}

    run = run_agent(processor, slot_repo, tmp_path, fix_prompt(scenario("env-dump")))

    assert run.outcome.status == "completed"
    env = claude_standin.env_dump()
    for name in ("GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN", "TELEGRAM_BOT_TOKEN",
                 "SLACK_BOT_TOKEN", "MY_COPY_OF_THE_TOKEN", "GIT_CONFIG_VALUE_0"):
        assert name not in env
    assert not any(secret in value for value in env.values() for secret in (GITHUB_TOKEN, TELEGRAM_TOKEN, SLACK_TOKEN))
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-kept"
    assert env["TMPDIR"] == str(tmp_path / "logs" / f"issue-{ISSUE_NUMBER}" / "tmp")
    assert env[SESSION_MARKER_VAR] == run.session_id
    [call] = claude_standin.invocations()
    assert not any(GITHUB_TOKEN in arg for arg in call["argv"])


def test_inherit_tokens_keeps_them(tmp_path, claude_standin):
    config = make_config(tmp_path, inherit_tokens=True, sandbox={"mode": "off"})  # only ever unsandboxed
    processor = ClaudeProcessor(config, env=base_env_with_tokens())
    env = processor.agent_env(tmpdir=tmp_path / "tmp")

    assert env["GITHUB_TOKEN"] == GITHUB_TOKEN and env["SLACK_BOT_TOKEN"] == SLACK_TOKEN
    assert env["TMPDIR"] == str(tmp_path / "tmp")


def test_shell_syntax_in_the_issue_reaches_only_the_prompt(tmp_path, claude_standin, slot_repo):
    marker = tmp_path / "pwned"
    title = f"$(touch {marker}) `touch {marker}` ; touch {marker} && echo '"
    prompt = build_prompt(repo=REPO, issue=issue(title=title, body=f"{fix_prompt()} $(touch {marker})"),
                          comments=[], branch=BRANCH)

    run = run_agent(make_processor(tmp_path, claude_standin), slot_repo, tmp_path, prompt)

    assert run.outcome.status == "completed"
    assert not marker.exists()
    [call] = claude_standin.invocations()
    assert call["prompt"] == prompt
    assert title in call["prompt"]


def test_a_torn_last_line_does_not_swallow_the_next_invocation(tmp_path, claude_standin, slot_repo):
    stream, _ = stream_paths(tmp_path)
    stream.parent.mkdir(parents=True)
    stream.write_bytes((FIXTURES / "stream-success.jsonl").read_bytes() + b'{"type":"assistant","mess')

    run = run_agent(make_processor(tmp_path, claude_standin), slot_repo, tmp_path, fix_prompt())

    assert run.outcome.status == "completed"
    assert summarize_stream(stream).result == run.result


def test_transcript_folder_of_a_long_path_matches_the_monitor(tmp_path, claude_standin):
    repo = make_repo(tmp_path / ("very_long.folder name-" * 10) / "My.Proj_1")
    run = run_agent(make_processor(tmp_path, claude_standin), repo, tmp_path, fix_prompt())

    transcript = claude_standin.transcript(run.session_id)
    assert len(project_dir_name(str(repo))) > 200
    assert transcript.parent.name == project_dir_name(str(repo))
    kinds = [json.loads(line)["type"] for line in transcript.read_text().splitlines()]
    assert kinds.count("user") == 3 and kinds.count("assistant") == 4 and kinds[-1] == "cost-state"


# ------------------------------------------------------------------------------------------------
# The prompt goes through stdin, from a file in the log folder
# ------------------------------------------------------------------------------------------------

LONG_BODY = "日" * 64_000  # inside GitHub's 65,536 characters, 192,000 bytes: past any argv element


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_body_of_64000_three_byte_characters_reaches_claude_whole_through_stdin(tmp_path, claude_standin,
                                                                                  slot_repo):
    prompt = build_prompt(repo=REPO, issue=issue(body=LONG_BODY), comments=[], branch=BRANCH)
    assert len(prompt.encode("utf-8")) > 192_000  # the old 120,000-byte argument limit refused this

    run = run_agent(make_processor(tmp_path, claude_standin), slot_repo, tmp_path, prompt)

    assert run.outcome.status == "completed", run.outcome
    [call] = claude_standin.invocations()
    assert call["prompt"] == prompt and LONG_BODY in call["prompt"]
    assert call["prompt_source"] == "stdin" and call["stdin"] == "file"
    assert not any("日" in arg for arg in call["argv"]) and len(" ".join(call["argv"])) < 2_000
    folder = stream_paths(tmp_path)[0].parent
    assert run.prompt_path == folder / "1.prompt-1.txt"
    assert run.prompt_path.read_bytes() == prompt.encode("utf-8")
    assert mode_of(run.prompt_path) == 0o600
    assert git(slot_repo, "log", "-1", "--format=%s") == "Fix #7: add fix_issue_7.txt"


def test_the_issue_text_is_not_in_the_process_list(tmp_path, claude_standin, slot_repo):
    secret_looking = "issue-text-only-the-agent-should-read-4711"
    processor = make_processor(tmp_path, claude_standin)
    stream, stderr = stream_paths(tmp_path)
    agent = processor.start(fix_prompt(scenario("hang"), secret_looking, LONG_BODY), cwd=slot_repo,
                            session_id=new_session_id(), stream_path=stream, stderr_path=stderr)
    try:
        deadline = time.monotonic() + 10
        while not claude_standin.invocations() and time.monotonic() < deadline:
            time.sleep(0.02)
        cmdline = psutil.Process(agent.pid).cmdline()  # what `ps` shows every local user
        assert "-p" in cmdline and "--session-id" in cmdline
        assert not any(secret_looking in arg or "日" in arg or "Fix issue" in arg for arg in cmdline)
        [call] = claude_standin.invocations()
        assert secret_looking in call["prompt"]  # yet the agent has it
    finally:
        terminate_tree(agent.popen, 0.5)


def test_each_invocation_has_its_own_private_prompt_file(tmp_path):
    stream = tmp_path / "logs" / "issue-7" / "2.stream.jsonl"
    stream.parent.mkdir(parents=True)
    (stream.parent / "2.prompt-1.txt").write_text("an earlier invocation's prompt")
    old_umask = os.umask(0)  # even a permissive umask gives a private file
    try:
        second = write_prompt_file(stream, "- leading dash\n日本語 😀")
        third = write_prompt_file(stream, "")
    finally:
        os.umask(old_umask)

    assert second == stream.parent / "2.prompt-2.txt" and third == stream.parent / "2.prompt-3.txt"
    assert second.read_text(encoding="utf-8") == "- leading dash\n日本語 😀" and third.read_bytes() == b""
    assert mode_of(second) == mode_of(third) == 0o600
    assert (stream.parent / "2.prompt-1.txt").read_text() == "an earlier invocation's prompt"
    assert write_prompt_file(tmp_path / "other.jsonl", "x") == tmp_path / "other.prompt-1.txt"


def test_the_size_of_a_prompt_is_never_a_launch_error(tmp_path, claude_standin, slot_repo):
    processor = make_processor(tmp_path, claude_standin, executable=str(tmp_path / "no-such-claude"))
    with pytest.raises(ClaudeLaunchError, match="Claude Code was not found"):
        run_agent(processor, slot_repo, tmp_path, "x" * 500_000)  # size alone is never the error


def test_the_stand_in_takes_its_prompt_from_stdin_like_the_cli(claude_standin, slot_repo):
    base = [str(STANDIN), "-p", "--output-format", "stream-json", "--verbose"]

    def standin(*extra, **kwargs):
        return subprocess.run(base + list(extra), cwd=slot_repo, env=claude_standin.env, capture_output=True,
                              text=True, timeout=30, **kwargs)

    refused = standin(stdin=subprocess.DEVNULL)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == ("Error: Input must be provided either through stdin or as a prompt argument"
                              " when using --print\n")
    assert standin(input="   \n").returncode == 1  # blank is no prompt either

    piped = standin(input="Fix issue #7 from a pipe")
    both = standin("Fix issue #7", input="and the log from stdin")

    assert piped.returncode == 0 and both.returncode == 0, piped.stderr + both.stderr
    first, second = [(call["prompt"], call["prompt_source"]) for call in claude_standin.invocations()]
    assert first == ("Fix issue #7 from a pipe", "stdin")
    assert second == ("Fix issue #7\nand the log from stdin", "argv+stdin")  # stdin added after a newline
    assert json.loads(piped.stdout.splitlines()[-1])["subtype"] == "success"


@pytest.mark.slow  # waits out a real timeout
def test_the_stand_in_gives_up_on_a_silent_pipe_after_three_seconds(claude_standin, slot_repo):
    read_end, write_end = os.pipe()
    try:
        started = time.monotonic()
        done = subprocess.run([str(STANDIN), "-p", "--output-format", "stream-json", "--verbose"], cwd=slot_repo,
                              env=claude_standin.env, stdin=read_end, capture_output=True, text=True, timeout=30)
    finally:
        os.close(read_end)
        os.close(write_end)

    assert time.monotonic() - started >= 3
    assert done.returncode == 1
    assert done.stderr.startswith("Warning: no stdin data received in 3s, proceeding without it\n")
    assert "Input must be provided either through stdin or as a prompt argument" in done.stderr

"""Questions, answers, limits, usage limits and cancel, end to end through real ticks and runners."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from claude_standin import alive, scenario
from git_fixtures import commit_to
from world import MAINTAINER

READY, WORKING, COMPLETED, FAILED, NEEDS_INPUT = (
    "ready-for-claude", "claude-working", "claude-completed", "claude-failed", "claude-needs-input")


def texts(api):
    return [m["text"] for m in api.messages]


def test_a_question_waits_for_a_maintainer_and_the_same_session_resumes(world, telegram_api):
    world.chat(telegram=telegram_api)
    number = world.add_issue("Pick a colour", "Which colour? " + scenario("question"))

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "needs_input" and entry["question"]
    [question] = world.github.comments(number)
    assert entry["question_comment_id"] == question["id"]
    assert entry["question"][:40] in question["body"].replace("\n> ", " ")
    assert world.labels(number) == [NEEDS_INPUT, WORKING]
    assert any(t.startswith("⏳") for t in texts(telegram_api))
    session = entry["session_id"]

    # A reply from someone without a trusted role changes nothing.
    world.github.set_role("passer-by", "read")
    world.github.add_comment(number, "Use red! " + scenario("crash"), user="passer-by")
    world.tick()
    assert world.entry(number)["status"] == "needs_input" and len(world.standin.invocations()) == 1

    world.github.add_comment(number, "Use blue, please.", user=MAINTAINER)
    world.github.set_role("co-maintainer", "write")
    world.github.add_comment(number, "And make it bold.", user="co-maintainer")
    resumed = world.tick()

    assert "1 resumed" in resumed.stdout, resumed.stdout
    first, second = world.standin.invocations()
    assert second["resume"] and second["session_id"] == session == first["session_id"]
    assert "Use blue, please." in second["prompt"] and "And make it bold." in second["prompt"]
    assert "Use red" not in second["prompt"]
    entry = world.entry(number)
    assert entry["status"] == "completed" and entry["session_id"] == session
    assert world.labels(number) == [COMPLETED]
    [pull] = world.github.pulls()
    assert f"Closes #{number}" in pull["body"] and entry["pr_url"] == pull["html_url"]
    kinds = [t.split(" ", 1)[0] for t in texts(telegram_api)]
    assert kinds == ["🚀", "⏳", "▶️", "✅"], texts(telegram_api)


def test_a_resume_whose_session_is_gone_starts_a_fresh_one_with_the_whole_thread(world):
    number = world.add_issue("Pick an API", "Which API? " + scenario("ask-once"))
    world.tick()
    asked = world.entry(number)
    assert asked["status"] == "needs_input"
    for transcript in (world.log_dir / f"issue-{number}" / "claude").rglob("*.jsonl"):
        transcript.unlink()  # Claude Code's own history of the session (the sandboxed session's) is gone
    world.github.add_comment(number, "ANSWER: the v2 API", user=MAINTAINER)

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "completed" and entry["session_id"] != asked["session_id"], entry
    first, resumed, fresh = world.standin.invocations()
    assert resumed["resume"] and resumed["session_id"] == asked["session_id"]
    assert not fresh["resume"] and fresh["session_id"] == entry["session_id"]
    assert "Which API?" in fresh["prompt"] and "ANSWER: the v2 API" in fresh["prompt"]
    assert world.labels(number) == [COMPLETED]


def test_a_rerun_that_only_asks_is_a_question_though_its_branch_holds_earlier_work(world):
    number = world.add_issue("Two steps")
    world.tick()
    assert world.entry(number)["status"] == "completed"
    world.github.add_comment(number, "Now the docs too. " + scenario("question-plain"), user=MAINTAINER)
    world.github.add_label_event(number, READY, MAINTAINER)

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "needs_input" and entry["attempt"] == 2, entry
    assert world.labels(number) == [NEEDS_INPUT, WORKING]


def test_an_unanswered_question_expires_pushes_the_work_and_frees_the_slot(world):
    number = world.add_issue("Ask", scenario("question"))
    world.tick()
    world.write_config(claude={"input_wait_hours": 0.0002})  # 0.72 s
    time.sleep(1)

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "failed" and "no answer came within" in entry["error"]
    assert world.labels(number) == [FAILED]
    assert "no answer came within" in world.comments(number)[-1]
    other = world.add_issue("Next")
    world.tick()
    assert world.entry(other)["slot"] == 0 and world.entry(other)["status"] == "completed"


def test_a_permission_denial_becomes_a_question_that_names_the_tool(world):
    world.write_config(claude={"allowed_tools": ["Read"]})  # Write is not among them
    number = world.add_issue("Write it", scenario("permission-denied"))

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "needs_input"
    assert "not allowed to use these tools" in entry["question"] and "Write" in entry["question"]
    assert "- Write:" in world.comments(number)[0].replace("> ", "")


@pytest.mark.parametrize("marker, expect_until", [
    (scenario("overloaded-529"), None),
    (scenario("usage-limit", "You've hit your limit · resets 3pm (UTC)"), 15),
])
def test_usage_limits_and_outages_requeue_the_issue_and_pause_launches(world, telegram_api, marker, expect_until):
    world.chat(telegram=telegram_api)
    number = world.add_issue("Limited", marker)
    before = datetime.now(timezone.utc)

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "waiting" and entry["requeues"] == 1
    until = datetime.fromisoformat(entry["not_before"])
    if expect_until is None:
        assert before + timedelta(minutes=14) < until < before + timedelta(minutes=16)
    else:
        assert until.hour == expect_until and until.minute == 0 and until > before
    assert world.state()["_meta"]["paused_until"] == entry["not_before"]
    assert world.labels(number) == [READY]
    assert [t[0] for t in texts(telegram_api)].count("⏸") == 1

    other = world.add_issue("Also waits")
    paused = world.tick()
    assert "2 queued" in paused.stdout and len(world.standin.invocations()) == 1
    assert world.entry(other) == {}


def test_a_pause_holds_resumes_and_a_queued_issue_closed_meanwhile_is_given_up(world):
    from lib.state_manager import StateManager

    asking = world.add_issue("Ask", scenario("question"))
    world.tick()
    limited = world.add_issue("Limited", scenario("usage-limit"))
    world.tick()
    assert world.entry(limited)["status"] == "waiting" and world.state()["_meta"]["paused_until"]

    world.github.add_comment(asking, "Use the v2 API.", user=MAINTAINER)
    world.github.close_issue(limited, actor=MAINTAINER)
    held = world.tick()

    assert world.entry(asking)["status"] == "needs_input" and len(world.standin.invocations()) == 2
    assert "a trusted reply waits until launches resume" in held.stdout, held.stdout
    withdrawn = world.entry(limited)
    assert withdrawn["status"] == "cancelled" and withdrawn["error"] == "withdrawn while queued: the issue was closed"

    with StateManager(world.state_file).transaction() as state:  # the usage limit has reset
        state.meta["paused_until"] = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    world.tick()

    assert world.entry(asking)["status"] == "completed" and world.standin.invocations()[-1]["resume"]
    assert world.entry(limited)["status"] == "cancelled" and len(world.standin.invocations()) == 3


def test_a_crash_without_a_result_is_retried_and_continues_the_saved_work(world):
    number = world.add_issue("Flaky", scenario("crash-once"))

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "completed" and entry["retries"] == 1 and entry["attempt"] == 2, entry
    # The crashed attempt's file was saved (committed and pushed) and the retry found it on the branch.
    assert world.origin_file(f"issue-{number}", f"partial_issue_{number}.txt") == "half done\n"
    assert len(world.standin.invocations()) == 2 and world.labels(number) == [COMPLETED]


def test_a_lost_run_during_a_usage_limit_pause_waits_for_the_reset_instead_of_retrying(world):
    from lib.state_manager import StateManager

    number = world.add_issue("Hangs", scenario("hang"))
    world.tick(env={"ORCHESTRATOR_FAULT": "claude-running"})  # the runner dies; its Claude hangs on
    reset = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)
    with StateManager(world.state_file).transaction() as state:  # another issue hit the usage limit
        state.meta["paused_until"] = reset.isoformat()

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "waiting" and entry["not_before"] == reset.isoformat(), entry
    assert "launches are paused" in entry["error"]
    assert len(world.standin.invocations()) == 1 and world.labels(number) == [READY]
    assert world.processes() == []


def test_a_crash_that_repeats_fails_after_max_retries(world):
    world.write_config(claude={"max_retries": 2})
    number = world.add_issue("Broken", scenario("crash"))

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "failed" and entry["retries"] == 2 and "without a result" in entry["error"]
    assert len(world.standin.invocations()) == 3 and world.labels(number) == [FAILED]


def test_closing_the_issue_mid_run_ends_the_agent_and_its_children_within_one_tick(world, slack_api):
    world.chat(slack=slack_api)
    number = world.add_issue("Long job", scenario("grandchild"))
    world.tick(wait=False)
    world.wait_for(lambda: world.entry(number).get("claude_pid"), what="the agent")
    grandchild = world.standin.grandchild_pid()
    world.github.close_issue(number, actor=MAINTAINER)

    tick = world.tick()

    assert "1 cancelled" in tick.stdout, tick.stdout
    entry = world.entry(number)
    assert entry["status"] == "cancelled" and entry["error"] == "the issue was closed"
    assert grandchild and not alive(grandchild) and not alive(entry["claude_pid"] or 0)
    assert world.processes() == [] and world.leftovers() == []
    assert "Stopped: the issue was closed" in world.comments(number)[-1]
    assert COMPLETED not in world.labels(number) and FAILED not in world.labels(number)
    [stopped] = [m for m in slack_api.messages if m["text"].startswith("⏹️")]
    assert "the issue was closed" in stopped["rendered"] and f"#{number}" in stopped["rendered"]
    assert not any(m["text"].startswith("❌") for m in slack_api.messages)


def test_closing_the_issue_during_a_long_setup_ends_it_within_one_tick(world):
    commit_to(world.origin, "trunk", {"setup.sh": "sleep 120 &\necho installing\nwait\n"}, "A slow setup")
    number = world.add_issue("Slow setup")
    world.tick(wait=False)
    setup_log = world.log_dir / f"issue-{number}" / "1.setup.log"
    world.wait_for(lambda: setup_log.exists() and "installing" in setup_log.read_text(), what="setup.sh")
    assert [process.info["name"] for process in world.leftovers()].count("sleep") == 1
    world.github.close_issue(number, actor=MAINTAINER)

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "cancelled" and entry["error"] == "the issue was closed", entry
    assert world.standin.invocations() == [] and world.processes() == []
    assert world.leftovers() == []  # what setup.sh started ended with it


def test_taking_the_working_label_off_stops_the_agent_and_pushes_the_work(world):
    number = world.add_issue("Slow job", scenario("slow", "30"))
    world.tick(wait=False)
    world.wait_for(lambda: world.entry(number).get("claude_pid"), what="the agent")
    slot = world.slots / "widgets_0"
    (slot / "notes.txt").write_text("work in progress\n")  # what the agent wrote so far
    world.github.add_label_event(number, WORKING, MAINTAINER, event="unlabeled")

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "cancelled" and "label was removed" in entry["error"]
    assert world.origin_file(f"issue-{number}", "notes.txt") == "work in progress\n"
    assert world.labels(number) == []


@pytest.mark.parametrize("settings, marker, words", [
    ({"max_turns": 1}, scenario("max-turns"), "reached the max_turns limit (1)"),
    ({"max_budget_usd": 0.001}, scenario("max-budget"), "reached the max_budget_usd limit"),
    ({"idle_timeout_seconds": 1}, scenario("silent"), "no output for 1 s (claude.idle_timeout_seconds)"),
    ({"timeout_seconds": 1}, scenario("hang"), "timed out after 1 s (claude.timeout_seconds)"),
])
def test_each_limit_ends_a_run_with_its_own_words(world, slack_api, settings, marker, words):
    world.chat(slack=slack_api)
    world.write_config(claude=settings)
    number = world.add_issue("Limited", marker)

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "failed" and words in entry["error"]
    assert words in world.comments(number)[-1]
    assert any(words in m["rendered"] for m in slack_api.messages if m["text"].startswith("❌"))

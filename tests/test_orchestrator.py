"""The orchestration loop end to end: real ticks, real detached runners, real git, the stand-in
claude, the GitHub emulator. Each test drives `run_orchestrator.py` as cron would."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from chat_standins import SLACK_TOKEN, TELEGRAM_TOKEN, closed_port
from claude_standin import alive, scenario
from git_fixtures import commit_to
from github_emulator import REPO, TOKEN
from world import MAINTAINER, PROJECT

READY, WORKING, COMPLETED, FAILED = "ready-for-claude", "claude-working", "claude-completed", "claude-failed"


def test_label_to_pull_request(world):
    number = world.add_issue("Add a greeting", "Please add a greeting.", labels=(READY, "bug"))

    tick = world.tick()

    assert tick.returncode == 0, tick.stdout + tick.stderr
    assert "1 launched" in tick.stdout
    entry = world.entry(number)
    assert entry["status"] == "completed", entry
    [invocation] = world.standin.invocations()
    assert entry["session_id"] == invocation["session_id"] and not invocation["resume"]
    assert entry["cost_usd"] > 0 and entry["num_turns"] >= 1 and entry["slot"] == 0
    assert invocation["cwd"] == str(world.slots / "widgets_0")
    # The branch is on origin, made from trunk (the default branch), with the agent's commit.
    assert world.origin_file(f"issue-{number}", f"fix_issue_{number}.txt") is not None
    assert world.origin_file(f"issue-{number}", "README.md") == world.origin_file("trunk", "README.md")
    [pull] = world.github.pulls()
    assert pull["draft"] is True and pull["base"]["ref"] == "trunk" and pull["head"]["ref"] == f"issue-{number}"
    assert f"Closes #{number}" in pull["body"] and "Add a greeting" in pull["title"]
    assert entry["pr_url"] == pull["html_url"]
    [comment] = world.comments(number)
    assert "finished" in comment and pull["html_url"] in comment and entry["session_id"] in comment
    assert world.labels(number) == ["bug", COMPLETED]


def test_a_second_tick_changes_nothing(world):
    number = world.add_issue()
    assert world.tick().returncode == 0
    requests_before = len(world.github.requests)

    again = world.tick()

    assert again.returncode == 0 and "0 launched" in again.stdout
    assert len(world.standin.invocations()) == 1
    assert len(world.comments(number)) == 1
    writes = [r for r in world.github.requests[requests_before:] if r.method != "GET"]
    assert writes == []


def test_five_ticks_at_once_launch_each_issue_exactly_once(world):
    numbers = [world.add_issue(f"Issue {i}") for i in range(3)]
    ticks = [world.start_tick() for _ in range(5)]
    outputs = [t.communicate(timeout=60)[0] for t in ticks]

    assert all(t.returncode == 0 for t in ticks), outputs
    assert sum("Another tick is running" in o for o in outputs) + \
        sum("launched" in o for o in outputs) == 5
    world.tick()  # waits for the runners
    launched = sorted(int(inv["cwd"].rsplit("_", 1)[1]) for inv in world.standin.invocations())
    assert launched == [0, 1, 2]
    prompts = " ".join(inv["prompt"] for inv in world.standin.invocations())
    for number in numbers:
        assert prompts.count(f"issue #{number} ") == 1
        assert world.entry(number)["status"] == "completed"


def test_max_concurrent_is_never_exceeded(world):
    world.write_config(github={"max_concurrent": 2})
    numbers = [world.add_issue(f"Slow {i}", scenario("slow", "1.5")) for i in range(4)]

    first = world.tick(wait=False)
    assert "2 launched" in first.stdout and "2 queued" in first.stdout, first.stdout
    most = 0
    deadline = time.monotonic() + 60
    while not all(world.entry(n).get("status") == "completed" for n in numbers):
        assert time.monotonic() < deadline, world.state()
        agents = [p for p in world.processes() if "claude" in " ".join((p.info["cmdline"] or [])[:2])]
        most = max(most, len(agents))
        active = [e for k, e in world.state().items() if not k.startswith("_") and e["status"] in
                  ("pending", "preparing", "running", "needs_input")]
        assert len(active) <= 2
        assert len({e["slot"] for e in active}) == len(active)
        world.tick(wait=False)
        time.sleep(0.2)
    assert most <= 2
    assert sorted({e["slot"] for k, e in world.state().items() if not k.startswith("_")}) == [0, 1]


def test_kill_9_of_a_runner_fails_the_issue_on_the_next_tick_and_frees_the_slot(world):
    world.write_config(claude={"max_retries": 0})
    number = world.add_issue("Hangs", scenario("hang"))
    world.tick(wait=False)
    entry = world.wait_for(lambda: world.entry(number).get("claude_pid") and world.entry(number), what="the agent")
    claude_pid = entry["claude_pid"]

    os.kill(entry["runner_pid"], signal.SIGKILL)
    world.wait_for(lambda: not alive(entry["runner_pid"]), what="the runner to die")
    tick = world.tick()

    assert tick.returncode == 0, tick.stdout + tick.stderr
    entry = world.entry(number)
    assert entry["status"] == "failed" and "runner was lost" in entry["error"]
    assert not alive(claude_pid)
    assert world.labels(number) == [FAILED]
    assert "could not finish" in world.comments(number)[-1]


def test_a_tool_left_by_a_claude_killed_with_its_runner_is_ended_by_the_next_tick(world):
    """kill -9 of the runner and of Claude leaves Claude's tool running in a session of its own,
    reparented away from both: the tick finds it by the run marker it inherited and ends it. (Without
    the sandbox: a sandbox ends whole with its agent, test_walls.)"""
    world.write_config(claude={"max_retries": 0}, sandbox={"mode": "off"})
    pidfile = world.root / "grandchild.pid"
    number = world.add_issue("Leaves a tool", scenario("grandchild"))
    world.tick(wait=False, env={"CLAUDE_STANDIN_PIDFILE": str(pidfile)})
    entry = world.wait_for(lambda: pidfile.exists() and world.entry(number).get("claude_pid") and world.entry(number),
                           what="the agent and its tool")
    tool = int(pidfile.read_text())

    os.kill(entry["runner_pid"], signal.SIGKILL)
    os.kill(entry["claude_pid"], signal.SIGKILL)
    world.wait_for(lambda: not alive(entry["runner_pid"]) and not alive(entry["claude_pid"]), what="both to die")
    assert alive(tool)
    world.tick()

    assert world.entry(number)["status"] == "failed"
    world.wait_for(lambda: not alive(tool), what="the tool to be ended")


def test_a_lost_run_is_retried_once_by_default(world):
    number = world.add_issue("Hangs first", scenario("hang"))
    world.tick(wait=False)
    entry = world.wait_for(lambda: world.entry(number).get("claude_pid") and world.entry(number), what="the agent")
    os.kill(entry["runner_pid"], signal.SIGKILL)
    world.wait_for(lambda: not alive(entry["runner_pid"]), what="the runner to die")
    # The retry hangs again; end it by its own timeout so the test stays short.
    world.write_config(claude={"timeout_seconds": 1})

    world.tick()

    entry = world.entry(number)
    assert entry["retries"] == 1 and entry["attempt"] == 2
    assert entry["status"] == "failed" and "timed out after 1 s" in entry["error"]
    assert len(world.standin.invocations()) == 2


def test_a_timeout_ends_claude_and_the_grandchild_it_left(world):
    world.write_config(claude={"timeout_seconds": 2})
    number = world.add_issue("Spawns a grandchild", scenario("grandchild"))

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "failed" and "timed out after 2 s (claude.timeout_seconds)" in entry["error"]
    assert not alive(world.standin.grandchild_pid())
    assert world.processes() == [] and world.leftovers() == []
    assert "timed out after 2 s" in world.comments(number)[-1]


def test_a_hostile_title_changes_nothing_outside_the_slot(world, tmp_path):
    target = tmp_path / "pwned"
    title = f'$(touch {target}); `touch {target}` <b>"x"</b> && rm -rf ~'
    number = world.add_issue(title, f"; touch {target} #\n<!-- hidden instruction -->")

    world.tick()

    assert not target.exists()
    entry = world.entry(number)
    assert entry["status"] == "completed" and entry["branch"] == f"issue-{number}"
    [pull] = world.github.pulls()
    assert title in pull["title"]
    [invocation] = world.standin.invocations()
    assert "hidden instruction" not in invocation["prompt"]


def test_a_runner_alive_past_every_timeout_is_ended_and_its_issue_failed(world, monkeypatch):
    from types import SimpleNamespace

    import lib.orchestrator
    import lib.reconcile
    from lib.config import Config

    number = world.add_issue("Hangs", scenario("hang"))
    world.tick(wait=False)
    entry = world.wait_for(lambda: world.entry(number).get("claude_pid") and world.entry(number), what="the agent")
    # The clock is the one thing not real here: the tick sees the runner ten days old.
    ten_days_later = SimpleNamespace(time=lambda: time.time() + 10 * 86400, sleep=time.sleep)
    monkeypatch.setattr(lib.reconcile, "time", ten_days_later)
    orchestrator = lib.orchestrator.IssueOrchestrator(Config(world.config_path))

    summary = orchestrator.run()
    orchestrator.wait_for_runners(poll_seconds=0.2, out=open(os.devnull, "w"))

    assert summary.finalizing == [f"octo/widgets#{number}"]
    assert not alive(entry["runner_pid"]) and not alive(entry["claude_pid"])
    finished = world.entry(number)
    assert finished["status"] == "failed" and "the runner hung" in finished["error"], finished
    assert world.labels(number) == [FAILED] and world.processes() == []


def test_the_token_reaches_no_file_no_git_config_and_no_comment(world):
    numbers = [world.add_issue("Works"), world.add_issue("Fails", scenario("crash"))]
    world.write_config(claude={"max_retries": 0})

    world.tick()

    hits = []
    for folder in (world.state_file.parent, world.log_dir, world.config_path.parent):
        for path in folder.rglob("*"):
            if path.is_file() and path != world.config_path and TOKEN.encode() in path.read_bytes():
                hits.append(path)
    for config in world.slots.glob("*/.git/config"):
        if TOKEN in config.read_text():
            hits.append(config)
    assert hits == []
    for number in numbers:
        assert all(TOKEN not in body for body in world.comments(number))
    assert all(TOKEN.encode() not in r.body for r in world.github.requests)


def test_a_held_lock_means_another_tick_runs(world):
    world.add_issue()
    lock = world.config_path.parent / "state" / "orchestrator.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        tick = world.tick(wait=False)
    assert tick.returncode == 0
    assert "Another tick is running" in tick.stdout
    assert world.standin.invocations() == []


def test_dry_run_changes_nothing(world):
    number = world.add_issue()

    tick = world.tick("--dry-run", wait=False)

    assert tick.returncode == 0, tick.stderr
    assert "would claim issue octo/widgets#1" in tick.stdout
    assert not world.state_file.exists() and not world.slots.exists()
    assert world.labels(number) == [READY]
    assert [r for r in world.github.requests if r.method != "GET"] == []


def test_an_untrusted_label_is_skipped_and_said_once(world):
    world.github.set_role("drive-by", "read")
    number = world.add_issue(labeled_by="drive-by")

    first, second = world.tick(), world.tick()

    assert "1 skipped" in first.stdout and world.standin.invocations() == []
    assert world.log_text().count("applied by drive-by") == 1
    assert world.labels(number) == [READY]
    assert "1 skipped" in second.stdout
    assert list(world.state()["_meta"]["untrusted"]) == [f"{REPO}#{number}"]

    # A maintainer vouches for it by applying the label anew: it is looked at again and processed.
    time.sleep(1.1)  # GitHub's updated_at has whole seconds; a human is slower than that anyway
    world.github.add_label_event(number, READY, MAINTAINER, event="unlabeled")
    world.github.add_label_event(number, READY, MAINTAINER)
    third = world.tick()
    assert "1 launched" in third.stdout and world.entry(number)["status"] == "completed"
    world.tick()
    assert world.state()["_meta"]["untrusted"] == {}  # no verdict is kept on an issue no longer queued


def test_a_finished_issue_labeled_again_continues_its_branch(world):
    number = world.add_issue()
    world.tick()
    first_session = world.entry(number)["session_id"]
    first_tip = origin_sha(world, f"issue-{number}")
    world.github.add_label_event(number, READY, MAINTAINER)

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "completed" and entry["attempt"] == 2 and entry["session_id"] != first_session
    assert len(world.github.pulls()) == 1  # the open pull request of the branch is reused
    second = world.standin.invocations()[1]
    assert second["cwd"].endswith("widgets_0")
    assert world.labels(number) == [COMPLETED]
    # The second attempt built on the first: its pushed branch still holds the first attempt's commit.
    subprocess.run(["git", "merge-base", "--is-ancestor", first_tip, f"refs/heads/issue-{number}"],
                   cwd=world.origin, check=True)


def test_what_preparing_the_slot_found_is_told_in_the_outcome_comment(world):
    commit_to(world.origin, "trunk", {"setup.sh": "echo generated > generated.txt\n"}, "A setup that writes a file")
    number = world.add_issue()

    world.tick()

    assert world.entry(number)["status"] == "completed"
    comment = world.comments(number)[-1]
    assert "Notes from preparing the slot:\n- setup.sh left 1 uncommitted change(s)" in comment, comment


def test_commits_the_agent_made_off_its_branch_reach_the_pull_request(world):
    number = world.add_issue("Wanders off", scenario("detach"))

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "completed" and entry["pr_url"], entry
    assert world.origin_file(f"issue-{number}", f"fix_issue_{number}.txt") == f"Fixed issue #{number}\n"
    assert f"a detached HEAD; issue-{number} was moved forward" in world.comments(number)[-1]


def test_ready_put_back_during_a_run_starts_a_new_attempt_after_it(world):
    number = world.add_issue("Slow", scenario("slow", "2"))
    world.tick(wait=False)
    world.wait_for(lambda: world.entry(number).get("claude_pid"), what="the agent")
    world.github.add_label_event(number, READY, MAINTAINER)  # "and once more, please"

    world.wait_for(lambda: world.entry(number).get("status") == "completed", what="the first attempt")
    assert world.labels(number) == [COMPLETED, READY]
    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "completed" and entry["attempt"] == 2
    assert len(world.standin.invocations()) == 2 and world.labels(number) == [COMPLETED]


def origin_sha(world, branch: str) -> str:
    return subprocess.run(["git", "rev-parse", f"refs/heads/{branch}"], cwd=world.origin, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_wrong_config_is_exit_2_with_one_line_per_mistake(world):
    world.write_config(github={"max_concurrent": 0, "repo": "not a repo"}, claude={"timeout_seconds": -1})

    tick = world.tick(wait=False)

    assert tick.returncode == 2
    lines = tick.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("config error: ") for line in lines), tick.stderr
    assert "Traceback" not in tick.stderr + tick.stdout


def test_a_rejected_token_is_exit_1_with_one_sentence(world):
    world.write_config(github={"token": "ghp_notTheRightOne000000000000000000000"})
    world.add_issue()

    tick = world.tick(wait=False)

    assert tick.returncode == 1
    assert "GitHub rejected the token (401)" in tick.stdout
    assert "Traceback" not in tick.stdout + tick.stderr


def test_an_exhausted_rate_limit_ends_the_tick_cleanly(world):
    world.add_issue()
    world.github.rate_remaining = 0

    tick = world.tick(wait=False)

    assert tick.returncode == 0, tick.stdout
    assert tick.stdout.count("rate limited until") == 1, tick.stdout  # one line says it
    assert world.standin.invocations() == []


def test_notifiers_that_refuse_or_hang_do_not_hold_up_the_work(world, silent_server):
    world.write_config(
        telegram={"bot_token": TELEGRAM_TOKEN, "chat_id": "1", "api_base_url": f"http://127.0.0.1:{closed_port()}/bot"},
        slack={"bot_token": SLACK_TOKEN, "channel_id": "C1", "api_base_url": f"http://127.0.0.1:{silent_server.port}/api/"})
    number = world.add_issue()

    tick = world.tick()

    assert tick.returncode == 0, tick.stdout + tick.stderr
    assert world.entry(number)["status"] == "completed" and world.labels(number) == [COMPLETED]
    log = world.log_text()
    assert "Telegram" in log and "Slack: no answer within" in log
    assert "Traceback" not in log and TELEGRAM_TOKEN not in log and SLACK_TOKEN not in log


def test_every_event_reaches_telegram_and_slack_with_its_fields(world, telegram_api, slack_api):
    world.chat(telegram=telegram_api, slack=slack_api)
    title = "Fix <script>alert(1)</script> & *_[x] 🎉"
    number = world.add_issue(title, "x" * 5000)

    world.tick()

    started, completed = telegram_api.messages
    assert started["plain_text"].startswith("🚀") and completed["plain_text"].startswith("✅")
    for message in (started, completed):
        assert f"{REPO}#{number}" in message["plain_text"] and title in message["plain_text"]
        assert "issue-1" in message["plain_text"] and "slot 0" in message["plain_text"].lower()
    entry = world.entry(number)
    assert entry["pr_url"] in completed["plain_text"] and "$" in completed["plain_text"]
    slack_started, slack_completed = slack_api.messages
    assert slack_completed["text"].startswith("✅") and entry["pr_url"] in slack_completed["rendered"]
    assert slack_api.messages[0]["problems"] == [] and slack_completed["problems"] == []


def test_questions_resumes_errors_and_pauses_reach_the_chats_with_their_fields(world, telegram_api, slack_api):
    world.chat(telegram=telegram_api, slack=slack_api)
    world.write_config(github={"max_concurrent": 3})
    asking = world.add_issue("Ask me", scenario("question"))
    failing = world.add_issue("Break me", scenario("api-error-500"))

    world.tick()
    world.github.add_comment(asking, "Use the v2 API.", user=MAINTAINER)
    world.tick()
    limited = world.add_issue("Limit me", scenario("usage-limit"))  # last: a pause holds resumes too
    world.tick()

    def message(emoji, number=None):
        for chat in (telegram_api.messages, slack_api.messages):
            [found] = [m for m in chat if (m.get("plain_text") or m["text"]).startswith(emoji)
                       and (number is None or f"{REPO}#{number}" in (m.get("plain_text") or m["rendered"]))]
            yield found.get("plain_text") or found["rendered"]

    for number, title, slot in ((asking, "Ask me", 0), (failing, "Break me", 1)):
        for emoji in ("⏳", "▶️", "✅") if number == asking else ("❌",):
            for text in message(emoji, number):
                assert title in text and f"issue-{number}" in text and re.search(rf"slot\W+{slot}\b", text, re.I), text
    for text in message("⏳", asking):
        assert "v1 API or the v2 API" in text  # the question itself
    for text in message("❌", failing):
        assert "API Error: 500" in text and "Started Claude Code" in text  # the reason, the log's last lines
    for text in message("⏸️"):
        assert re.search(r"no new launches until \d{4}-\d\d-\d\dT", text), text
    assert world.entry(limited)["status"] == "waiting"


def test_the_monitor_shows_a_real_run_and_its_conversation(world):
    number = world.add_issue("Add a greeting")
    world.tick()

    def monitor(*args):
        done = subprocess.run([sys.executable, str(PROJECT / "claude_monitor.py"), "--config", str(world.config_path),
                               "--format", "json", *args], env=world.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    status = monitor("status", "--issue", str(number))
    entry = world.entry(number)
    assert status["status"] == "completed" and status["pr_url"] == entry["pr_url"]
    assert status["session_id"] == entry["session_id"] and status["cost_usd"] == entry["cost_usd"]
    history = monitor("history", "--issue", str(number))
    kinds = {m["kind"] for m in history["messages"]}
    assert {"prompt", "text", "tool_use"} <= kinds
    assert any(f"issue #{number}" in m["text"] for m in history["messages"] if m["kind"] == "prompt")


@pytest.mark.parametrize("entry_point", [["issue_orchestrator.py"], ["-m", "lib.orchestrator"]])
def test_the_legacy_entry_point_and_the_module_run_the_same_tick(world, entry_point):
    number = world.add_issue()
    script = [str(PROJECT / entry_point[0])] if entry_point[0].endswith(".py") else entry_point

    tick = subprocess.run([sys.executable, *script, "--config", str(world.config_path), "--wait"], cwd=PROJECT,
                          env=world.env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    assert tick.returncode == 0, tick.stdout + tick.stderr
    assert "Tick done: 1 launched" in tick.stdout
    assert world.entry(number)["status"] == "completed" and world.labels(number) == [COMPLETED]


def test_check_says_for_each_item_ok_or_what_to_fix(world, telegram_api, slack_api):
    world.chat(telegram=telegram_api, slack=slack_api)

    good = world.tick("--check", "--notify-test", wait=False)

    assert good.returncode == 0, good.stdout + good.stderr
    for item in ("config", "git", "claude", "GitHub token", "repository", "base_repo_path", "state folder",
                 "log_dir", "state file", "Telegram", "Slack"):
        assert f"  ok  {item}: " in good.stdout, (item, good.stdout)
    # the first tick makes them
    assert f"warn  labels: {REPO}: missing ready-for-claude, claude-working" in good.stdout
    assert "ok  base_repo_path: " + str(world.slots) + " will be created" in good.stdout
    assert good.stdout.rstrip().endswith("All checks passed.")
    assert len(telegram_api.messages) == 1 and len(slack_api.messages) == 1
    assert world.github.labels() == {} and not world.state_file.exists()  # --check changes nothing

    world.write_config(telegram={"chat_id": "-100999"}, slack={"channel_id": "C0NOPE"},
                       claude={"executable": "no-such-claude"})
    bad = world.tick("--check", "--notify-test", wait=False)

    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL  Telegram: chat not found" in bad.stdout
    assert "FAIL  Slack: channel_not_found" in bad.stdout
    assert "FAIL  claude: 'no-such-claude' not found or not executable; cron runs with a short PATH" in bad.stdout
    assert bad.stdout.rstrip().endswith("3 check(s) failed.")
    assert "Traceback" not in bad.stdout + bad.stderr

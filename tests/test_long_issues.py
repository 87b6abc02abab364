"""Long issues end to end (real ticks, runners and the stand-in CLI): the prompt goes to Claude Code
on stdin from a private file in the issue's log folder, so an issue body up to GitHub's limit
arrives whole, a long thread is cut by bytes with a note, and size never fails a run."""

from __future__ import annotations

import stat

from claude_standin import scenario
from world import MAINTAINER

COMPLETED, NEEDS_INPUT = "claude-completed", "claude-needs-input"
LONG_BODY = "日" * 64_000  # 64,000 characters (GitHub allows 65,536), 192,000 bytes of UTF-8


def issue_folder(world, number):
    return world.log_dir / f"issue-{number}"


def test_an_issue_of_64000_three_byte_characters_runs_to_completed(world):
    number = world.add_issue("長い課題", LONG_BODY)

    tick = world.tick()

    assert tick.returncode == 0, tick.stdout + tick.stderr
    entry = world.entry(number)
    assert entry["status"] == "completed", entry
    assert world.labels(number) == [COMPLETED]
    [call] = world.standin.invocations()
    assert LONG_BODY in call["prompt"] and "長い課題" in call["prompt"] and "cut:" not in call["prompt"]
    assert call["prompt_source"] == "stdin" and call["stdin"] == "file"
    assert not any("日" in arg or "長い課題" in arg for arg in call["argv"])  # nothing of the issue in `ps`
    prompt_file = issue_folder(world, number) / "1.prompt-1.txt"
    assert prompt_file.read_text(encoding="utf-8") == call["prompt"]
    assert stat.S_IMODE(prompt_file.stat().st_mode) == 0o600
    assert world.origin_file(f"issue-{number}", f"fix_issue_{number}.txt") is not None
    assert not any("bytes" in comment for comment in world.comments(number))


def test_a_comment_thread_far_over_the_budget_is_cut_by_bytes_and_the_run_completes(world):
    number = world.add_issue("Fix the parser", "The parser breaks on the logs below.")
    for i in range(30):
        world.github.add_comment(number, f"log {i}: " + "語" * 6_000, user=MAINTAINER)  # 18 KB each
    world.github.add_comment(number, "the newest: " + "誤" * 100_000, user=MAINTAINER)  # 300 KB alone

    tick = world.tick()

    assert tick.returncode == 0, tick.stdout + tick.stderr
    assert world.entry(number)["status"] == "completed", world.entry(number)
    [call] = world.standin.invocations()
    prompt = call["prompt"]
    assert call["prompt_source"] == "stdin"
    assert "The parser breaks on the logs below." in prompt and "the newest: 誤" in prompt
    assert "[... comment cut: " in prompt and " more bytes not shown]" in prompt
    assert "older comments not shown]" in prompt and "log 0: " not in prompt
    assert len(prompt.encode("utf-8")) < 60_000  # 31 comments of 840 KB made a prompt of a few dozen KB
    assert world.labels(number) == [COMPLETED]


def test_a_long_reply_resumes_the_session_through_stdin(world):
    number = world.add_issue("Pick an API", "Which API? " + scenario("question"))
    world.tick()
    assert world.entry(number)["status"] == "needs_input"

    world.github.add_comment(number, "Use the v2 API. Here is the log: " + "日" * 30_000, user=MAINTAINER)
    resumed = world.tick()

    assert "1 resumed" in resumed.stdout, resumed.stdout + resumed.stderr
    first, second = world.standin.invocations()
    assert second["resume"] and second["session_id"] == first["session_id"]
    assert second["prompt_source"] == "stdin" and "Use the v2 API. Here is the log: 日" in second["prompt"]
    assert "[... reply cut: " in second["prompt"]
    assert not any("v2 API" in arg or "日" in arg for arg in second["argv"])
    folder = issue_folder(world, number)
    assert (folder / "1.prompt-1.txt").read_text(encoding="utf-8") == first["prompt"]
    assert (folder / "1.prompt-2.txt").read_text(encoding="utf-8") == second["prompt"]
    assert world.entry(number)["status"] == "completed"
    assert world.labels(number) == [COMPLETED]

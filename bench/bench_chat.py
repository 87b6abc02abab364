#!/usr/bin/env python3
"""What reading answers from Telegram and Slack costs a tick: wall time and requests.

    ./venv/bin/python bench/bench_chat.py [--questions 10] [--runs 5]

Starts the GitHub emulator and both chat stand-ins of the test suite on 127.0.0.1, and runs the
tick's chat reading (lib/chat_inbox.py, in this process) in four cases, `--runs` times each:
no question open; `--questions` open questions with nothing new in the chats; the same with every
question answered (half on Telegram, half on Slack); and Telegram not answering at all (the read is
bounded by notification_timeout_seconds, 2 s here). Prints the median wall time and the requests of
one read. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))

from chat_desk import BOB, Desk  # noqa: E402
from chat_standins import SilentServer, SlackStandIn, TelegramStandIn, telegram_user  # noqa: E402
from github_emulator import REPO, TOKEN, GitHubEmulator  # noqa: E402
from lib.models import IssueStatus  # noqa: E402
from lib.state_manager import issue_key  # noqa: E402

logging.disable(logging.WARNING)  # the silent case warns once a read: the figures say it

ALICE = telegram_user(111, "Alice", "alice")


def one_case(questions: int, case: str) -> tuple:
    """(seconds, chat requests, GitHub requests) of one read, in a fresh installation."""
    with tempfile.TemporaryDirectory() as tmp, GitHubEmulator() as github, TelegramStandIn() as telegram, \
            SlackStandIn() as slack, SilentServer() as silent:
        github.tokens.add(TOKEN)
        github.add_repo(REPO)
        desk = Desk(Path(tmp), github, telegram, slack)
        asked = [desk.ask(f"Question {i}") for i in range(questions)]
        if case == "none open":
            for entry in asked:
                desk.state.update(issue_key(entry), status=IssueStatus.RUNNING)
        if case == "all answered":
            for i, entry in enumerate(asked):
                if i % 2:
                    slack.user_reply(desk.message_of(entry, "slack"), BOB, f"Answer {i}")
                else:
                    telegram.user_message(ALICE, f"Answer {i}", reply_to=int(desk.message_of(entry, "telegram")))
        if case == "Telegram silent":
            desk.reload(telegram={"api_base_url": f"http://127.0.0.1:{silent.port}/bot"})
        chat_before = len(telegram.requests) + len(slack.requests)
        github_before = len(github.requests)
        started = time.perf_counter()
        desk.read()
        took = time.perf_counter() - started
        return took, len(telegram.requests) + len(slack.requests) - chat_before, len(github.requests) - github_before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.questions} questions; median of {args.runs} reads each")
    for case in ("none open", "nothing new", "all answered", "Telegram silent"):
        results = [one_case(args.questions, case) for _ in range(args.runs)]
        seconds = statistics.median(r[0] for r in results)
        print(f"  {case:16} {seconds * 1000:8.0f} ms   chat requests {results[0][1]:3}   GitHub requests"
              f" {results[0][2]:3}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

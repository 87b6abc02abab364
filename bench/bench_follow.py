#!/usr/bin/env python3
"""What a tick costs while pull requests are followed: wall time, requests, rate-limit points.

    ./venv/bin/python bench/bench_follow.py [--pulls 1,20,100] [--runs 4] [--move-base]

For each count in `--pulls`, builds the test suite's world (the GitHub emulator on 127.0.0.1, a
bare origin, a config) with that many open pull requests, each the pushed branch of a finished
issue whose state entry follows it, with a passing check on its head, and nothing new on any of
them. Then runs `run_orchestrator.py` as a real process `--runs` times and prints, per tick, its wall
time, its requests and the rate-limit points they cost (GitHub charges every authenticated answer
except a 304 to a conditional request). The first tick learns the ETags and asks each pull request
once; the second reads the mergeability GitHub computed meanwhile; later ones are idle. With
`--move-base`, the base branch then moves on (no conflict) and three more ticks show what that
costs. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))

from idle_ticks import measure_idle_ticks  # noqa: E402
from git_fixtures import commit_to  # noqa: E402
from github_emulator import TOKEN, GitHubEmulator  # noqa: E402
from world import World  # noqa: E402


def bench(pulls: int, runs: int, move_base: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp, GitHubEmulator() as github:
        github.tokens.add(TOKEN)
        world = World(Path(tmp), github)
        world.follow_pulls(pulls)
        print(f"\n{pulls} followed pull request(s), nothing new on them")
        code = measure_idle_ticks(world.config_path, github, runs)
        if code or not move_base:
            return code
        commit_to(world.origin, "trunk", {"NEWS.md": "news\n"}, "The base moves on")
        print(f"{pulls} followed pull request(s), the base moved on (no conflict)")
        return measure_idle_ticks(world.config_path, github, 3, what="ticks after the base moved")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", default="1,20,100", help="comma-separated counts of followed pull requests")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--move-base", action="store_true", help="then move the base branch on, and tick 3 times")
    args = parser.parse_args()
    for count in (int(value) for value in args.pulls.split(",")):
        code = bench(count, args.runs, args.move_base)
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""What an idle tick costs while pull requests are followed: wall time, requests, rate-limit points.

    ./venv/bin/python bench/bench_follow.py [--pulls 20] [--runs 5]

Starts the GitHub emulator of the test suite on 127.0.0.1 with `--pulls` open pull requests, each the
finished work of an issue whose state entry follows it, and nothing new on any of them. Then runs
`run_orchestrator.py` as a real process `--runs` times and prints, per tick, its wall time, its
requests and the rate-limit points they cost (GitHub charges every authenticated answer except a
304 to a conditional request). The first tick learns the ETags; later ones should cost at most 3
points. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))

from idle_ticks import measure_idle_ticks  # noqa: E402
from github_emulator import REPO, TOKEN, GitHubEmulator  # noqa: E402
from lib.models import IssueState, ProcessStatus, utc_now_iso  # noqa: E402
from lib.state_manager import StateManager  # noqa: E402


def build(root: Path, github: GitHubEmulator, pulls: int) -> Path:
    github.tokens.add(TOKEN)
    github.add_repo(REPO, default_branch="trunk", clone_url=str(root / "origin.git"))
    github.set_role("maintainer", "maintain")
    config = root / "config.json"
    config.write_text(json.dumps({
        "github": {"token": TOKEN, "repo": REPO, "base_repo_path": str(root / "slots"), "api_url": github.url},
        "state_file": "processing-state.json", "log_dir": "logs"}))
    config.chmod(0o600)
    state = StateManager(root / "processing-state.json", default_repo=REPO)
    for index in range(pulls):
        number = github.add_issue(f"Done issue {index}", "finished", labels=("claude-completed",))
        pull = github.add_issue(f"Done issue {index} (#{number})", f"Closes #{number}", is_pull_request=True)
        state.put(IssueState(issue_number=number, status=ProcessStatus.COMPLETED, branch=f"issue-{number}",
                             start_time=utc_now_iso(), end_time=utc_now_iso(), agent_index=0, repo=REPO,
                             pr_number=pull, pr_url=f"https://github.com/{REPO}/pull/{pull}", following=True,
                             session_id="d4e36535-7fb3-4ea9-a3c8-4018f155a1be"))
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, GitHubEmulator() as github:
        config = build(Path(tmp), github, args.pulls)
        print(f"{args.pulls} followed pull requests, nothing new on them")
        return measure_idle_ticks(config, github, args.runs)


if __name__ == "__main__":
    raise SystemExit(main())

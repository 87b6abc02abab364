#!/usr/bin/env python3
"""How long a cron tick takes when every slot is busy and the queue is long.

    ./venv/bin/python bench/bench_tick.py [--queued 500] [--busy 8] [--runs 5]

Starts the GitHub emulator of the test suite on 127.0.0.1 with `--queued` issues labeled
`ready-for-claude` by a maintainer and `--busy` issues labeled `claude-working` whose runners are
alive (`sleep` processes recorded in the state file), so that `max_concurrent` (= `--busy`) slots
are all taken. Then runs `run_orchestrator.py` as a real process `--runs` times and prints, per
tick, the wall time, the peak RSS of the tick process, the HTTP requests it made and the rate-limit
points they cost: GitHub charges a point for every authenticated answer except a 304 to a
conditional request. The first tick pages through the queue and asks for each busy issue; later
ticks ask conditionally (the poll's pages and the busy issues alike) and are answered 304, so an
unchanged tick should cost no point however many slots are busy. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))

from github_emulator import REPO, TOKEN, GitHubEmulator  # noqa: E402
from lib.models import IssueState, IssueStatus, utc_now_iso  # noqa: E402
from lib.state_manager import StateManager  # noqa: E402

import psutil  # noqa: E402

# Runs one command and reports its wall time and the peak RSS of that command alone.
MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
print(json.dumps({"rc": done.returncode, "wall": time.perf_counter() - started,
                  "output": done.stdout.decode(errors="replace")[-600:],
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def build(root: Path, github: GitHubEmulator, queued: int, busy: int) -> tuple:
    """Config, state and issues for a full house; returns (config path, the sleeping runners)."""
    github.tokens.add(TOKEN)
    github.add_repo(REPO, default_branch="trunk", clone_url=str(root / "origin.git"))
    github.set_role("maintainer", "maintain")
    config = root / "config.json"
    config.write_text(json.dumps({
        "github": {"token": TOKEN, "repo": REPO, "base_repo_path": str(root / "slots"),
                   "max_concurrent": busy, "api_url": github.url},
        "state_file": "processing-state.json", "log_dir": "logs"}))
    config.chmod(0o600)
    runners = []
    state = StateManager(root / "processing-state.json")
    for index in range(busy):
        number = github.add_issue(f"Busy issue {index}", "work in progress", labels=("claude-working",),
                                  labeled_by="maintainer")
        runner = subprocess.Popen(["sleep", "3600"])
        runners.append(runner)
        state.put(IssueState(issue_number=number, status=IssueStatus.RUNNING.value, branch=f"issue-{number}",
                             start_time=utc_now_iso(), slot=index, repo=REPO, runner_pid=runner.pid,
                             runner_create_time=psutil.Process(runner.pid).create_time()))
    for index in range(queued):
        github.add_issue(f"Queued issue {index}", "please do it", labels=("ready-for-claude",),
                         labeled_by="maintainer")
    return config, runners


def tick(config: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, str(PROJECT / "run_orchestrator.py"),
                           "--config", str(config)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=500)
    parser.add_argument("--busy", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, GitHubEmulator() as github:
        config, runners = build(Path(tmp), github, args.queued, args.busy)
        try:
            print(f"{args.busy} busy slots (max_concurrent {args.busy}), {args.queued} queued issues")
            walls = []
            for run in range(1, args.runs + 1):
                before = len(github.requests)
                figures = tick(config)
                if figures["rc"] != 0:
                    print(f"tick {run} failed (exit {figures['rc']}):\n{figures['output']}")
                    return 1
                requests = github.requests[before:]
                not_modified = sum(1 for r in requests if r.status == 304)
                points = sum(r.points for r in requests)
                walls.append(figures["wall"])
                print(f"tick {run}: {figures['wall']:.3f} s wall, {figures['maxrss_kb'] / 1024:.1f} MB peak RSS,"
                      f" {len(requests)} requests ({not_modified} answered 304), {points} rate-limit points")
            launched = [n for n, entry in StateManager(config.parent / "processing-state.json").load().items()
                        if entry.status != IssueStatus.RUNNING.value]
            print(f"median {statistics.median(walls):.3f} s, max {max(walls):.3f} s;"
                  f" entries launched beyond the busy slots: {len(launched)}")
        finally:
            for runner in runners:
                runner.kill()
                runner.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""How claude_monitor.py copes with a long session: wall time and peak memory on a ~300 MB transcript.

    ./venv/bin/python bench/bench_monitor.py [--megabytes 300]

Builds a throwaway orchestrator folder in a temp dir whose one running issue has a transcript made
of the recorded sample session repeated, then runs the CLI (`status`, `history --limit 20`,
`monitor`) as subprocesses. Each run goes through a small wrapper process so that its peak RSS
(`getrusage(RUSAGE_CHILDREN).ru_maxrss`) is its own. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))  # run as a script from anywhere

from lib.transcripts import project_dir_name  # noqa: E402

SAMPLE = PROJECT / "tests" / "fixtures" / "claude" / "session-history.jsonl"
SESSION = "d4e36535-7fb3-4ea9-a3c8-4018f155a1be"
ISSUE = 7

# Runs one command and reports its wall time and the peak RSS of that command alone.
MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
wall = time.perf_counter() - started
print(json.dumps({"rc": done.returncode, "wall": wall, "stdout_bytes": len(done.stdout),
                  "stderr": done.stderr.decode()[-300:],
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def build(root: Path, megabytes: int) -> Path:
    """An orchestrator folder with a running issue whose transcript is about `megabytes` MB."""
    slot = root / "clones" / "myproject_0"
    slot.mkdir(parents=True)
    claude_dir = root / "claude-config"
    (root / "config.json").write_text(json.dumps({"github": {
        "token": "ghp_bench", "repo": "owner/myproject", "base_repo_path": str(root / "clones")}}))
    (root / "config.json").chmod(0o600)
    (root / "processing-state.json").write_text(json.dumps({"_schema": 1, str(ISSUE): {
        "issue_number": ISSUE, "status": "running", "branch": f"issue-{ISSUE}",
        "start_time": "2026-11-24T18:05:59+00:00", "session_id": SESSION, "slot": 0}}))
    cycle = (SAMPLE.read_text().replace("/home/user/work/myproject_0", str(slot))
             .replace("/home/user/.claude", str(claude_dir)).encode())
    transcript = claude_dir / "projects" / project_dir_name(str(slot)) / f"{SESSION}.jsonl"
    transcript.parent.mkdir(parents=True)
    chunk = cycle * max(1, (8 * 1024 * 1024) // len(cycle))
    with open(transcript, "wb") as handle:
        while handle.tell() < megabytes * 1024 * 1024:
            handle.write(chunk)
    return transcript


def measure(args, env) -> dict:
    command = [sys.executable, str(PROJECT / "claude_monitor.py"), *args]
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=1000)
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=300, help="transcript size (default 300)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as temp:
        root = Path(temp)
        started = time.perf_counter()
        transcript = build(root, args.megabytes)
        size = transcript.stat().st_size
        print(f"transcript: {size / 1048576:.0f} MB, {sum(1 for _ in open(transcript, 'rb'))} lines,"
              f" written in {time.perf_counter() - started:.1f}s")
        env = {**os.environ, "CLAUDE_CONFIG_DIR": str(root / "claude-config")}
        env.pop("ORCHESTRATOR_CONFIG", None)
        config = ["--config", str(root / "config.json")]
        runs = [
            ("--help (interpreter + imports)", ["--help"]),
            (f"status --issue {ISSUE}", ["status", "--issue", str(ISSUE), *config]),
            (f"history --issue {ISSUE} --limit 20", ["history", "--issue", str(ISSUE), "--limit", "20", *config]),
            ("monitor", ["monitor", *config]),
        ]
        print(f"{'command':<40} {'wall':>8} {'peak RSS':>10}")
        for label, cli_args in runs:
            result = measure(cli_args, env)
            if result["rc"] != 0:
                print(f"{label}: exit {result['rc']}: {result['stderr']}", file=sys.stderr)
                return 1
            print(f"{label:<40} {result['wall']:>7.2f}s {result['maxrss_kb'] / 1024:>7.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What pruning costs: the daily prune, its dry run and --check's disk lines over many issue folders.

    ./venv/bin/python bench/bench_retention.py [--issues 2000] [--files 8] [--runs 3]

Builds a throwaway install with `--issues` finished issues, half of them 60 days old, each with a
log folder of `--files` files (a 64 KB stream log, prompts, stderr, an agent's tmp/ with files) and a
session transcript, plus 8 issues in use (running, needs_input, followed) as old as the oldest.
Prints the time of: --check's disk lines, a dry run, the prune itself, a prune that finds nothing
left to delete (what the daily walk costs), and the tick's check that no prune is due (what every
other tick pays). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from lib.config import Config  # noqa: E402
from lib.models import IssueState  # noqa: E402
from lib.retention import DAY, Pruner, prune_if_due, usage_lines  # noqa: E402
from lib.state_manager import StateStore  # noqa: E402
from lib.transcripts import project_dir_name  # noqa: E402

IN_USE = {"running": 3, "needs_input": 3, "completed": 2}  # "completed" ones are followed


def build(root: Path, issues: int, files: int) -> tuple:
    config_path = root / "config.json"
    config_path.write_text(json.dumps({"github": {"token": "ghp_bench0123456789", "repo": "acme/api",
                                                  "base_repo_path": str(root / "slots"), "max_concurrent": 8}}))
    config_path.chmod(0o600)
    config = Config(config_path, env={})
    claude_dir = root / "claude"
    projects = [claude_dir / "projects" / project_dir_name(os.path.realpath(config.repositories[0].slot_path(i)))
                for i in range(8)]
    store = StateStore.for_config(config)
    now = time.time()
    busy = [status for status, count in IN_USE.items() for _ in range(count)]
    with store.transaction() as state:
        for number in range(1, issues + len(busy) + 1):
            status = busy[number - issues - 1] if number > issues else "completed"
            session = f"00000000-0000-4000-8000-{number:012d}"
            state.add(IssueState(issue_number=number, status=status, branch=f"issue-{number}", repo="acme/api",
                                 start_time="2026-01-01T00:00:00+00:00", session_id=session,
                                 following=number > issues and status == "completed"))
            old = number % 2 == 0 or number > issues
            when = now - (60 if old else 5) * DAY
            folder = config.issue_dir("acme/api", number)
            (folder / "tmp").mkdir(parents=True)
            (folder / "1.stream.jsonl").write_bytes(b"x" * 65536)
            for i in range(files - 2):
                (folder / ("tmp" if i % 2 else ".") / f"file-{i}.log").write_text("a log line\n" * 20)
            for path in [*folder.rglob("*"), folder]:
                os.utime(path, (when, when))
            transcript = projects[number % 8] / f"{session}.jsonl"
            transcript.parent.mkdir(parents=True, exist_ok=True)
            transcript.write_bytes(b"y" * 16384)
            os.utime(transcript, (when, when))
    return config, store, claude_dir


def timed(function, runs: int = 1) -> tuple:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issues", type=int, default=2000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="runs of the steps that delete nothing (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        config, store, claude_dir = build(Path(tmp), args.issues, args.files)
        os.environ["CLAUDE_CONFIG_DIR"] = str(claude_dir)  # where --check and the tick look
        print(f"{args.issues} finished issues (half 60 days old) and {sum(IN_USE.values())} in use, {args.files}"
              f" files per log folder, built in {time.perf_counter() - started:.1f} s")
        seconds, lines = timed(lambda: usage_lines(config, store), args.runs)
        print(f"--check disk lines: {seconds:.3f} s  ({lines[0][2]}; {lines[1][2]})")
        pruner = lambda: Pruner(config, store, claude_config_dir=claude_dir)  # noqa: E731
        seconds, report = timed(lambda: pruner().prune(dry_run=True), args.runs)
        print(f"dry run:            {seconds:.3f} s  ({report.summary()}; {len(report.kept)} kept in use)")
        seconds, report = timed(lambda: pruner().prune())
        print(f"prune:              {seconds:.3f} s  ({report.summary()})")
        seconds, report = timed(lambda: pruner().prune(), args.runs)
        print(f"prune, nothing old: {seconds:.3f} s  ({report.summary()})")
        seconds, due = timed(lambda: prune_if_due(config, store), args.runs)
        print(f"tick, not due:      {seconds * 1000:.2f} ms  (pruned: {due is not None})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

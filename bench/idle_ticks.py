"""Shared by the idle-tick benchmarks: run ticks as real processes and report each one's cost."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def measure_idle_ticks(config: Path, github, runs: int, what: str = "idle ticks after the first") -> int:
    """Run `runs` ticks; print each one's wall time, requests and rate-limit points (GitHub charges every
    authenticated answer except a 304 to a conditional request), then the median of `what` (the ticks
    after the first). Returns an exit code."""
    walls = []
    for run in range(1, runs + 1):
        before = len(github.requests)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(PROJECT / "run_orchestrator.py"), "--config", str(config)],
                              capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(f"tick {run} failed (exit {done.returncode}):\n{done.stdout[-800:]}{done.stderr[-800:]}")
            return 1
        requests = github.requests[before:]
        points = sum(1 for r in requests if r.status != 304)
        walls.append(wall)
        print(f"tick {run}: {wall:.3f} s wall, {len(requests)} requests, {points} rate-limit points")
    later = walls[1:] or walls
    print(f"{what}: median {statistics.median(later):.3f} s, max {max(later):.3f} s")
    return 0

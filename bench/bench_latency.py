#!/usr/bin/env python3
"""Claim-to-agent-start latency: local mode with and without the agent sandbox, and Celery mode, in one run.

    ./venv/bin/python bench/bench_latency.py [--runs 5] [--modes local,local-unsandboxed,celery]

For each mode it builds the test suite's world (GitHub emulator on 127.0.0.1, a bare origin, the
stand-in `claude`; for celery also a real redis-server and one worker), then `--runs` times: opens an
issue, runs one tick as a real process, and measures from the tick's claim (the moment the emulator
receives its `claude-working` label request, which follows the state entry's write) to the start of
the agent (a wrapper around the stand-in notes the time it was exec'd). Each run waits for the issue
to finish before the next, so every run starts from an idle install; the first run of each mode also
makes the repository's object store. `local` and `celery` start the agent in its sandbox (the
default); `local-unsandboxed` is `local` with `"sandbox": {"mode": "off"}`, so the two show what the
sandbox adds to an agent's start. Needs redis-server for the celery mode. Not part of the suite.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
sys.path.insert(0, str(PROJECT / "tests"))

from claude_standin import STANDIN  # noqa: E402
from github_emulator import TOKEN, GitHubEmulator  # noqa: E402
from redis_fixtures import CeleryWorld, RedisServer  # noqa: E402
from world import World  # noqa: E402

WRAPPER = """#!/usr/bin/env python3
import os, sys, time
with open(os.path.join({starts!r}, f"{{time.time_ns()}}-{{os.getpid()}}"), "w") as handle:
    handle.write(repr(time.time()))
os.execv({standin!r}, [{standin!r}, *sys.argv[1:]])
"""


def finished(world: World, cw, number: int) -> bool:
    if cw is not None:
        entry = cw.entries().get(number)
        return entry is not None and entry.is_finished
    return world.entry(number).get("status") in ("completed", "failed", "cancelled")


def measure(mode: str, runs: int, root: Path) -> list:
    github = GitHubEmulator().start()
    github.tokens.add(TOKEN)
    world = World(root, github)
    starts = root / "agent-starts"
    starts.mkdir()
    wrapper = root / "claude-wrapper"
    wrapper.write_text(WRAPPER.format(starts=str(starts), standin=str(STANDIN)))
    wrapper.chmod(0o755)
    world.write_config(claude={"executable": str(wrapper)})
    if mode.endswith("-unsandboxed"):
        world.write_config(sandbox={"mode": "off"})
    else:  # the wrapper is read inside the sandbox, and notes its start where the sandbox may write
        sandbox = world.settings["sandbox"]
        world.write_config(sandbox={"read_only_paths": [*sandbox["read_only_paths"], str(wrapper)],
                                    "writable_paths": [*sandbox["writable_paths"], str(starts)]})
    redis = cw = None
    try:
        if mode.startswith("celery"):
            redis = RedisServer(root / "redis").start()
            cw = CeleryWorld(world, redis)
            cw.start_worker("host-a")
        latencies = []
        for run in range(runs):
            number = world.add_issue(title=f"Bench {run}")
            before = len(github.requests)
            tick = world.tick(wait=False)
            if tick.returncode != 0:
                raise SystemExit(f"{mode}: the tick failed:\n{tick.stdout[-800:]}{tick.stderr[-800:]}")
            world.wait_for(lambda: len(list(starts.iterdir())) > run, timeout=120, what="the agent to start")
            started = max(float(path.read_text()) for path in starts.iterdir())
            claimed = next(r.at for r in github.requests[before:]
                           if r.method == "POST" and r.path.endswith(f"/issues/{number}/labels"))
            latencies.append(started - claimed)
            print(f"{mode} run {run + 1}: claim to agent start {started - claimed:.3f} s", flush=True)
            world.wait_for(lambda: finished(world, cw, number), timeout=120, what="the run to finish")
        return latencies
    finally:
        if cw is not None:
            cw.cleanup()
        if redis is not None:
            redis.stop(kill=True)
        world.cleanup()
        github.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--modes", default="local,local-unsandboxed,celery")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if "celery" in modes and shutil.which("redis-server") is None:
        print("the celery mode needs redis-server (apt-get install redis-server)")
        return 1
    results = {}
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix=f"bench-latency-{mode}-") as folder:
            results[mode] = measure(mode, args.runs, Path(folder))
        time.sleep(0.5)
    for mode, latencies in results.items():
        later = latencies[1:] or latencies
        print(f"{mode}: first {latencies[0]:.3f} s (makes the object store); later runs median "
              f"{statistics.median(later):.3f} s, min {min(later):.3f} s, max {max(later):.3f} s")
    if "local" in results and "local-unsandboxed" in results:
        added = [statistics.median(results[m][1:] or results[m]) for m in ("local", "local-unsandboxed")]
        print(f"the sandbox adds {added[0] - added[1]:.3f} s to an agent's start (median against median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

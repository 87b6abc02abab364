#!/usr/bin/env python3
"""What an idle tick over many repositories costs: wall time, and rate-limit points.

    ./venv/bin/python bench/bench_idle_repos.py [--repos 10] [--runs 5]

Starts the GitHub emulator of the test suite on 127.0.0.1 with `--repos` repositories and nothing
labeled `ready-for-claude`, and a config listing them all. Then runs `run_orchestrator.py` as a real
process `--runs` times and prints, per tick, its wall time and its requests; GitHub charges a point
for every authenticated answer except a 304 to a conditional request, so the points are the answers
that were not 304. The first tick creates the labels and learns the ETags; later ticks should cost
nothing. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "tests"))

from idle_ticks import measure_idle_ticks  # noqa: E402
from github_emulator import TOKEN, GitHubEmulator  # noqa: E402


def build(root: Path, github: GitHubEmulator, repos: int) -> Path:
    github.tokens.add(TOKEN)
    names = [f"acme/service-{i}" for i in range(repos)]
    for name in names:
        github.add_repo(name, default_branch="trunk", clone_url=str(root / f"{name.replace('/', '-')}.git"))
    config = root / "config.json"
    config.write_text(json.dumps({
        "github": {"token": TOKEN, "base_repo_path": str(root / "slots"), "api_url": github.url},
        "repositories": [{"repo": name} for name in names],
        "state_file": "processing-state.json", "log_dir": "logs"}))
    config.chmod(0o600)
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, GitHubEmulator() as github:
        config = build(Path(tmp), github, args.repos)
        print(f"{args.repos} repositories, nothing queued")
        return measure_idle_ticks(config, github, args.runs)


if __name__ == "__main__":
    raise SystemExit(main())

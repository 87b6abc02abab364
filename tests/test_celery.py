"""The Celery mode end to end: a real redis-server (password, append-only file), two real Celery
workers standing for two hosts with their own slot folders and slot counts, real ticks, the stand-in
`claude`, the GitHub emulator. Each issue runs once, never more agents than the caps allow, a lost
worker's issue is taken over, a restart of Redis loses nothing, a broker that is down is one line."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from claude_standin import scenario
from github_emulator import TOKEN
from redis_fixtures import PASSWORD

pytestmark = pytest.mark.slow


def drive(cw, done, *, timeout=120, watch=None, every=0.5):
    """Tick every `every` seconds (as cron would, faster) until `done(entries)`; `watch()` runs
    between ticks (to sample what runs). Returns the entries."""
    deadline = time.monotonic() + timeout
    while True:
        tick = cw.world.tick(wait=False)
        assert tick.returncode == 0, tick.stdout + tick.stderr
        end = time.monotonic() + every
        while time.monotonic() < end:
            if watch:
                watch()
            time.sleep(0.05)
        entries = cw.entries()
        if done(entries):
            return entries
        if time.monotonic() > deadline:
            raise AssertionError(f"not done in {timeout} s: {[(n, e.status.value, e.host) for n, e in entries.items()]}"
                                 f"\n{cw.world.log_text()[-4000:]}\n{cw.worker_logs()[-4000:]}")


def all_finished(count):
    return lambda entries: len(entries) == count and all(e.is_finished for e in entries.values())


class Sampler:
    """The live agents at each moment, by pid; `most()` and `doubled()` read them against the
    stand-in's invocation log (which prompt each pid had)."""

    def __init__(self, cw):
        self.cw = cw
        self.samples = []

    def __call__(self):
        self.samples.append({agent.pid for agent in self.cw.agents()})

    def most(self) -> int:
        return max(map(len, self.samples), default=0)

    def doubled(self, titles) -> list:
        """Titles that had two agents at one moment."""
        prompt_of = {inv["pid"]: inv["prompt"] for inv in self.cw.world.standin.invocations()}
        found = []
        for sample in self.samples:
            per_title = Counter(t for pid in sample for t in titles if t in prompt_of.get(pid, ""))
            found += [t for t, n in per_title.items() if n > 1]
        return found


def test_six_issues_on_two_hosts_run_once_each_within_the_global_cap(celery_world):
    cw = celery_world
    cw.world.write_config(max_agents=3)
    for host in cw.HOSTS:
        cw.start_worker(host)
    numbers = [cw.world.add_issue(title=f"Task {i}", body=f"Work {i}. {scenario('slow', '2')}") for i in range(6)]
    sampler = Sampler(cw)
    entries = drive(cw, all_finished(6), watch=sampler)

    assert {e.status.value for e in entries.values()} == {"completed"}
    assert {e.host for e in entries.values()} == set(cw.HOSTS), "both hosts ran some"
    assert 0 < sampler.most() <= 3
    assert sampler.doubled([f"Task {i}" for i in range(6)]) == []
    prompts = [inv["prompt"] for inv in cw.world.standin.invocations()]
    for i in range(6):
        assert sum(f"Task {i}" in p for p in prompts) == 1, f"Task {i} ran once"
    assert len(cw.world.github.pulls()) == 6
    for number in numbers:
        assert cw.world.labels(number) == ["claude-completed"]

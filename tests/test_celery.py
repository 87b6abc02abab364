"""The Celery mode end to end: a real redis-server (password, append-only file), two real Celery
workers standing for two hosts with their own slot folders and slot counts, real ticks, the stand-in
`claude`, the GitHub emulator. Each issue runs once, never more agents than the caps allow, a lost
worker's issue is taken over, a restart of Redis loses nothing, a broker that is down is one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from claude_standin import alive, scenario
from github_emulator import TOKEN
from redis_fixtures import PASSWORD
from world import MAINTAINER, PROJECT, REPO

pytestmark = pytest.mark.slow


def drive(cw, done, *, timeout=120, watch=None, every=1.0):
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


def is_running(number):
    return lambda entries: number in entries and entries[number].status.value == "running"


class Sampler:
    """The live agents at each moment, by pid; `most()` and `doubled()` read them against the
    stand-in's invocation log (which prompt each pid had)."""

    def __init__(self, cw):
        self.cw = cw
        self.samples = []

    def __call__(self):
        self.samples.append(set(self.cw.agents()))

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
    cw.start_workers()
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


def test_a_worker_killed_mid_run_takes_its_agent_along_and_another_host_finishes_the_issue(celery_world):
    cw = celery_world
    cw.start_workers()
    number = cw.world.add_issue(title="Long task", body=f"Work. {scenario('slow', '8')}")
    sampler = Sampler(cw)
    running = drive(cw, lambda entries: number in entries and entries[number].status.value == "running"
                    and entries[number].host, watch=sampler)
    lost_host = running[number].host
    cw.world.wait_for(lambda: cw.agents(), what="the agent")
    cw.kill_worker(lost_host)
    # The kernel ends the agent with its runner: no agent of the lost host runs on beside a retry.
    cw.world.wait_for(lambda: not cw.agents(), timeout=10, what="the lost host's agent to end")

    entries = drive(cw, all_finished(1), watch=sampler)
    entry = entries[number]
    assert entry.status.value == "completed", entry.error
    assert entry.host != lost_host
    assert sampler.doubled(["Long task"]) == []
    assert len(cw.world.github.pulls()) == 1
    assert f"host {lost_host} is gone" in cw.world.log_text() + cw.worker_logs()

    # The lost host's worker comes back: a run it no longer owns is not its own to touch.
    cw.start_worker(lost_host)
    assert cw.entries()[number].status.value == "completed"


@pytest.mark.parametrize("kill", [False, True], ids=["shutdown", "kill-9"])
def test_a_restart_of_redis_while_agents_run_loses_nothing(celery_world, kill):
    cw = celery_world
    cw.start_workers()
    numbers = [cw.world.add_issue(title=f"Task {i}", body=f"Work {i}. {scenario('slow', '4')}") for i in range(3)]
    drive(cw, lambda entries: sum(e.status.value == "running" for e in entries.values()) >= 2)
    cw.redis.restart(kill=kill)
    entries = drive(cw, all_finished(3), timeout=150)
    assert {e.status.value for e in entries.values()} == {"completed"}, [e.error for e in entries.values()]
    assert len(cw.world.github.pulls()) == 3
    prompts = [inv["prompt"] for inv in cw.world.standin.invocations()]
    assert all(sum(f"Task {i}" in p for p in prompts) == 1 for i in range(3))
    assert all(cw.world.labels(n) == ["claude-completed"] for n in numbers)


def test_a_broker_that_is_down_is_one_line_and_no_half_claim(celery_world):
    cw = celery_world
    number = cw.world.add_issue()
    dead = f"redis://:{PASSWORD}@127.0.0.1:{cw.redis.port + 1 if cw.redis.port < 65535 else 1}/0"
    cw.world.write_config(executor={"broker_url": dead, "state_url": cw.redis.url})
    tick = cw.world.tick(wait=False)
    lines = [line for line in (tick.stdout + tick.stderr).splitlines() if "ERROR" in line]
    assert tick.returncode == 1
    assert len(lines) == 1 and "Cannot reach the Celery broker at redis://:***@127.0.0.1" in lines[0], lines
    assert PASSWORD not in tick.stdout + tick.stderr + cw.world.log_text()
    assert cw.entries() == {}
    assert cw.world.labels(number) == ["ready-for-claude"]

    cw.redis.stop(kill=True)  # the state's Redis down too: that is said first
    tick = cw.world.tick(wait=False)
    assert tick.returncode == 1
    assert "Cannot use the shared state at redis://:***@127.0.0.1" in tick.stdout + tick.stderr
    assert "Traceback" not in tick.stdout + tick.stderr


def test_many_ticks_at_once_claim_each_issue_once(celery_world):
    cw = celery_world
    cw.start_workers()
    for i in range(4):
        cw.world.add_issue(title=f"Task {i}", body=f"Work {i}. {scenario('slow', '1')}")
    ticks = [cw.world.start_tick() for _ in range(8)]
    for tick in ticks:
        tick.communicate(timeout=60)
        assert tick.returncode == 0
    entries = drive(cw, all_finished(4))
    assert all(e.attempt == 1 and e.status.value == "completed" for e in entries.values())
    prompts = [inv["prompt"] for inv in cw.world.standin.invocations()]
    assert all(sum(f"Task {i}" in p for p in prompts) == 1 for i in range(4))


def test_no_token_in_redis_nor_in_the_task_messages(celery_world):
    cw = celery_world
    cw.start_worker("host-a")
    cw.world.add_issue(title="Task done", body=f"Work. {scenario('slow', '1')}")
    drive(cw, all_finished(1))
    cw.kill_worker("host-a")  # what is left is read as it lies
    cw.world.add_issue(title="Task queued", body="Waits in the queue.")
    assert cw.world.tick(wait=False).returncode == 0  # its task sits in the queue, unread
    secrets = [TOKEN, PASSWORD]
    found = []
    for key in cw.redis.cli("--scan").splitlines():
        kind = cw.redis.cli("TYPE", key)
        dump = {"string": ("GET",), "hash": ("HGETALL",), "list": ("LRANGE", "0", "-1"),
                "set": ("SMEMBERS",), "zset": ("ZRANGE", "0", "-1")}[kind]
        value = cw.redis.cli(dump[0], key, *dump[1:])
        found += [(key, secret) for secret in secrets if secret in key + value]
    assert found == []
    queued = cw.redis.cli("LRANGE", "orch-test", "0", "-1")
    assert "orchestrator.run_issue" in queued  # the task message was looked at, not an empty queue
    assert PASSWORD not in cw.world.log_text() + cw.worker_logs()


def test_the_monitor_reads_the_shared_state_and_names_the_host_of_a_run(celery_world):
    cw = celery_world
    cw.start_worker("host-b")
    number = cw.world.add_issue(title="Task seen", body=f"Work. {scenario('slow', '1')}")
    drive(cw, all_finished(1))
    monitor = [sys.executable, str(PROJECT / "claude_monitor.py"), "--config", str(cw.world.config_path)]
    here = {**cw.world.env, "ORCHESTRATOR_HOST": "tick-host"}
    report = json.loads(subprocess.run(monitor + ["--format", "json"], env=here, capture_output=True, text=True,
                                       timeout=60, check=True).stdout)
    (instance,) = report["completed_instances"]
    assert instance["issue_number"] == number and instance["host"] == "host-b" and instance["status"] == "completed"
    history = subprocess.run(monitor + ["history", "--issue", str(number)], env=here, capture_output=True,
                             text=True, timeout=60)
    assert history.returncode == 1  # nothing to show here, and why
    assert f"Issue {REPO}#1: its conversation is on host host-b, where it runs" in history.stderr
    on_b = subprocess.run(monitor + ["history", "--issue", str(number)], capture_output=True, text=True, timeout=60,
                          env={**cw.world.env, "ORCHESTRATOR_HOST": "host-b"})
    assert f"Conversation of issue {REPO}#1" in on_b.stdout


def test_an_answer_resumes_the_session_on_the_host_that_holds_it(celery_world):
    cw = celery_world
    cw.start_workers()
    number = cw.world.add_issue(title="Pick an API", body=f"Which API? {scenario('ask-once')}")
    asked = drive(cw, lambda entries: number in entries and entries[number].status.value == "needs_input")[number]
    cw.world.github.add_comment(number, "ANSWER: the v2 API", user=MAINTAINER)
    entry = drive(cw, all_finished(1))[number]
    assert entry.status.value == "completed" and entry.host == asked.host
    first, resumed = cw.world.standin.invocations()
    assert resumed["resume"] and resumed["session_id"] == asked.session_id and resumed["cwd"] == first["cwd"]
    assert f"slots-{asked.host}" in resumed["cwd"]


def test_an_answer_to_a_host_that_is_gone_starts_a_new_session_elsewhere_with_the_whole_thread(celery_world):
    cw = celery_world
    cw.start_workers()
    number = cw.world.add_issue(title="Pick an API", body=f"Which API? {scenario('ask-once')}")
    asked = drive(cw, lambda entries: number in entries and entries[number].status.value == "needs_input")[number]
    cw.kill_worker(asked.host)
    cw.world.github.add_comment(number, "ANSWER: the v2 API", user=MAINTAINER)
    entry = drive(cw, all_finished(1))[number]
    assert entry.status.value == "completed" and entry.host != asked.host
    first, fresh = cw.world.standin.invocations()
    assert not fresh["resume"] and fresh["session_id"] != asked.session_id
    assert "Which API?" in fresh["prompt"] and "ANSWER: the v2 API" in fresh["prompt"]
    assert f"slots-{entry.host}" in fresh["cwd"]


def test_closing_the_issue_stops_its_agent_on_the_worker_host(celery_world):
    cw = celery_world
    cw.start_worker("host-b")
    number = cw.world.add_issue(title="Endless", body=f"Work. {scenario('hang')}")
    drive(cw, is_running(number))
    cw.world.wait_for(lambda: cw.agents(), what="the agent")
    cw.world.github.close_issue(number, actor=MAINTAINER)
    entry = drive(cw, all_finished(1))[number]
    assert entry.status.value == "cancelled" and "closed" in entry.error
    assert not cw.agents()


def test_a_worker_that_starts_ends_what_a_killed_worker_of_its_host_left(celery_world):
    """Without the sandbox (a sandbox ends whole with its agent, test_walls)."""
    cw = celery_world
    cw.world.write_config(sandbox={"mode": "off"})
    cw.start_worker("host-a")
    number = cw.world.add_issue(title="Leaves a tool", body=f"Work. {scenario('grandchild')}")
    drive(cw, is_running(number))
    tool = cw.world.standin.grandchild_pid()
    cw.kill_worker("host-a")
    cw.world.wait_for(lambda: not cw.agents(), timeout=10, what="the agent to die with its runner")
    assert alive(tool), "the tool ignores SIGTERM and sits in a session of its own: it outlived them"
    cw.start_worker("host-a")
    cw.world.wait_for(lambda: not alive(tool), timeout=30, what="the restarted worker to end the tool")
    assert "which no runner of this host owns" in cw.worker_logs()


def test_a_worker_of_another_installation_on_this_machine_leaves_our_agents_alone(celery_world):
    """Two installations (each its own queue and state) on one machine may both call it host-a."""
    cw = celery_world
    cw.start_worker("host-a")
    number = cw.world.add_issue(title="Long task", body=f"Work. {scenario('slow', '5')}")
    drive(cw, is_running(number))
    cw.world.wait_for(lambda: cw.agents(), what="the agent")
    settings = json.loads(cw.world.config_path.read_text())
    settings["executor"]["queue"] = "another-installation"
    other = cw.world.config_path.with_name("other.json")
    other.write_text(json.dumps(settings))
    cw.start_worker("host-a", config=other)
    assert "no runner of this host owns" not in cw.worker_log("host-a-other")
    entry = drive(cw, all_finished(1))[number]
    assert entry.status.value == "completed", entry.error


def test_costs_and_the_dashboard_count_the_runs_of_every_host(celery_world):
    cw = celery_world
    cw.start_workers()
    for i in range(2):
        cw.world.add_issue(title=f"Task {i}", body=f"Work {i}. {scenario('slow', '3')}")
    from lib.claude_monitor import ClaudeMonitor
    from lib.config import Config
    from lib.dashboard import DashboardData

    data = DashboardData(ClaudeMonitor(Config(cw.world.config_path, env={"ORCHESTRATOR_HOST": "tick-host"}),
                                       cpu_interval=0))
    running = drive(cw, lambda entries: any(e.status.value == "running" for e in entries.values()))
    slots = data.overview()["slots"]
    assert {(s["host"], s["slot"]) for s in slots} <= {(e.host, e.slot) for e in running.values()}
    assert any(s["run"]["status"] == "running" for s in slots) and all(s["host"] in cw.HOSTS for s in slots)
    entries = drive(cw, all_finished(2))
    assert {e.host for e in entries.values()} <= set(cw.HOSTS)
    costs = subprocess.run([sys.executable, str(PROJECT / "claude_monitor.py"), "--config", str(cw.world.config_path),
                            "costs", "--by", "issue", "--format", "json"], env={**cw.world.env, "ORCHESTRATOR_HOST":
                                                                                    "tick-host"},
                           capture_output=True, text=True, timeout=60)
    assert costs.returncode == 0, costs.stderr
    report = json.loads(costs.stdout)
    # Seen twice under heavy load with 3-4 invocations: the report and the logs say which run was extra.
    assert report["total"]["invocations"] == 2 and report["total"]["outcomes"] == {"completed": 2}, (
        f"{report}\n{cw.world.log_text()[-4000:]}\n{cw.worker_logs()[-6000:]}")
    assert report["total"]["cost_usd"] > 0
    assert not (cw.world.config_path.parent / "state" / "run-history.jsonl").exists()  # it is in Redis

    overview = json.loads(json.dumps(data.overview()))
    assert "Task 0" in json.dumps(overview) and "Task 1" in json.dumps(overview)


def test_check_reports_the_shared_state_the_broker_and_the_workers(celery_world):
    cw = celery_world
    check = cw.world.tick("--check", wait=False)
    assert "  ok  shared state: redis://:***@127.0.0.1" in check.stdout, check.stdout
    assert "  ok  broker: redis://:***@127.0.0.1" in check.stdout
    assert "warn  workers: none beats yet" in check.stdout
    cw.start_worker("host-a")
    assert "  ok  workers: host-a (2 slots)" in cw.world.tick("--check", wait=False).stdout
    dead = cw.redis.url.replace(str(cw.redis.port), str(cw.redis.port + 1))
    cw.world.write_config(executor={"broker_url": dead, "state_url": cw.redis.url})
    check = cw.world.tick("--check", wait=False)
    assert check.returncode == 1 and "FAIL  broker: Cannot reach the Celery broker at redis://:***@" in check.stdout
    assert PASSWORD not in check.stdout + check.stderr


def test_a_tick_killed_between_claim_and_dispatch_is_finished_by_the_next(celery_world):
    cw = celery_world
    cw.start_worker("host-a")
    number = cw.world.add_issue(title="Claimed", body=f"Work. {scenario('slow', '1')}")
    crashed = cw.world.tick(wait=False, env={"ORCHESTRATOR_FAULT": "after-claim"})
    assert crashed.returncode != 0
    claimed = cw.entries()[number]  # its dispatch id came with the claim; no task was sent, none taken
    assert claimed.dispatch_id and not cw.store().sent(claimed.dispatch_id) and claimed.host is None
    entry = drive(cw, all_finished(1))[number]
    assert entry.status.value == "completed" and entry.attempt == 1
    assert len(cw.world.standin.invocations()) == 1
    assert "claimed but its runner never started" in cw.world.log_text()


def test_a_worker_whose_host_cannot_wall_agents_in_takes_no_task(celery_world, tmp_path):
    """Fail closed on every host: without bwrap the worker does not start; it says why in one line."""
    from test_sandbox import path_without_bubblewrap

    cw = celery_world
    done = subprocess.run([sys.executable, str(PROJECT / "run_orchestrator.py"), "--config", str(cw.world.config_path),
                           "--worker", "--host", "host-a"], cwd=cw.world.root,
                          env={**cw.world.env, "PATH": path_without_bubblewrap(cw.world, tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    said = [line for line in (done.stdout + done.stderr).splitlines() if "cannot run agents" in line]
    assert len(said) == 1 and "bwrap" in said[0] and "apt-get install bubblewrap socat" in said[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert cw.redis.cli("KEYS", "*worker:host-a*") == ""  # it never beat: the tick sends it nothing

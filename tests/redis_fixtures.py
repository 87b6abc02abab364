"""A real `redis-server` on a free loopback port, with a password and append-only persistence, and
Celery workers of the orchestrator standing for hosts. Fixtures: `redis_server`, `celery_world`.

redis-server comes from the distribution (.ci/run installs it when it is missing).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from claude_standin import live_standins
from world import PROJECT, World

PASSWORD = "redis-secret-7d1f"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server; `restart(kill=True)` is a crash (SIGKILL), else a clean SHUTDOWN."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.process: Optional[subprocess.Popen] = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--requirepass", PASSWORD, "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--protected-mode", "yes", "--logfile", str(self.folder / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while self.cli("PING") != "PONG":
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis-server did not start: " + (self.folder / "redis.log").read_text()[-2000:])
            time.sleep(0.02)
        return self

    def cli(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a", PASSWORD, *args],
                              capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        return done.stdout.strip()

    def stop(self, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.cli("SHUTDOWN")
        self.process.wait(timeout=20)

    def restart(self, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()


@pytest.fixture
def redis_server(tmp_path: Path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop(kill=True)


class CeleryWorld:
    """A World in the Celery mode: the tick here, and workers for hosts `host-a` (2 slots) and
    `host-b` (2 slots), each with its own slot folder, all on one Redis."""

    HOSTS = {"host-a": 2, "host-b": 2}

    def __init__(self, world: World, redis: RedisServer):
        self.world, self.redis = world, redis
        self.workers: Dict[str, subprocess.Popen] = {}
        world.write_config(executor={
            "type": "celery", "broker_url": redis.url, "queue": "orch-test", "heartbeat_seconds": 0.5,
            "lost_after_seconds": 4, "connect_timeout_seconds": 2,
            "hosts": {host: {"base_repo_path": str(world.root / f"slots-{host}"), "slots": slots}
                      for host, slots in self.HOSTS.items()}})

    def start_worker(self, host: str, config: Optional[Path] = None) -> subprocess.Popen:
        """A worker for `host`, of this world's config or of another installation's `config` (then it is
        known, and logs, as `<host>-<config's stem>`)."""
        name = host if config is None else f"{host}-{config.stem}"
        log = open(self.world.root / f"worker-{name}.log", "ab")
        worker = subprocess.Popen(
            [sys.executable, str(PROJECT / "run_orchestrator.py"), "--config", str(config or self.world.config_path),
             "--worker", "--host", host], cwd=self.world.root, env=self.world.env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.workers[name] = worker
        self.world.wait_for(lambda: self.worker_ready(name), timeout=60, what=f"the worker {name}")
        return worker

    def start_workers(self) -> None:
        for host in self.HOSTS:
            self.start_worker(host)

    def worker_log(self, name: str) -> str:
        return (self.world.root / f"worker-{name}.log").read_text(errors="replace")

    def worker_ready(self, name: str) -> bool:
        text = self.worker_log(name)
        if self.workers[name].poll() is not None:
            raise AssertionError(f"the worker {name} exited:\n{text[-3000:]}")
        return "ready." in text

    def kill_worker(self, host: str) -> None:
        """kill -9 of the worker's whole process group: the worker, its pool and their runners."""
        os.killpg(self.workers[host].pid, signal.SIGKILL)
        self.workers[host].wait(timeout=10)

    def store(self):
        from lib.config import Config
        from lib.state_manager import StateStore

        return StateStore.for_config(Config(self.world.config_path, env={}))

    def entries(self):
        return {key[1]: entry for key, entry in self.store().load().items()}

    def agents(self) -> List[int]:
        """Pids of the live stand-in agents of this world, wherever their slot is."""
        return live_standins(under=self.world.root)

    def worker_logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.world.root.glob("worker-*.log")))

    def cleanup(self) -> None:
        for worker in self.workers.values():
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)


@pytest.fixture
def celery_world(world, redis_server):
    cw = CeleryWorld(world, redis_server)
    try:
        yield cw
    finally:
        cw.cleanup()

"""The shared state of the Celery mode against a real redis-server: the same transactions as the file
store (no lost update under concurrent writers, a stalled writer writes nothing), heartbeats that
expire by Redis's clock, and errors as one sentence with the password masked."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from lib.config import Config
from lib.models import IssueState, IssueStatus, StateError, StateUnreachable
from lib.state_manager import RedisStateStore, StateStore, masked_url
from redis_fixtures import PASSWORD


def entry(number: int, **fields) -> IssueState:
    return IssueState(issue_number=number, status=fields.pop("status", IssueStatus.RUNNING),
                      branch=f"issue-{number}", start_time="2026-12-01T10:00:00+00:00", repo="octo/widgets", **fields)


def _count_up(url: str, times: int) -> None:
    store = RedisStateStore(url, namespace="race")
    for _ in range(times):
        with store.transaction() as state:
            state.meta["count"] = state.meta.get("count", 0) + 1
            number = state.meta["count"]
            state.add(entry(number))


def test_concurrent_writers_lose_no_update(redis_server):
    workers = [multiprocessing.Process(target=_count_up, args=(redis_server.url, 30)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    state = RedisStateStore(redis_server.url, namespace="race").load_state()
    assert state.meta["count"] == 120
    assert sorted(key[1] for key in state.issues) == list(range(1, 121))


def test_a_writer_that_outlived_its_lock_writes_nothing(redis_server, monkeypatch):
    store = RedisStateStore(redis_server.url, namespace="stall")
    store.put(entry(1))
    with pytest.raises(StateError, match="outlived its lock"):
        with store.transaction() as state:
            state.issues[("octo/widgets", 1)].error = "stale write"
            redis_server.cli("DEL", "orchestrator:stall:lock")  # the lock expired meanwhile...
            other = RedisStateStore(redis_server.url, namespace="stall")
            other.update(("octo/widgets", 1), error="the newer write")  # ...and another writer took it
    assert store.get(("octo/widgets", 1)).error == "the newer write"


def test_entries_round_trip_and_the_conveniences_match_the_file_store(redis_server):
    store = RedisStateStore(redis_server.url, namespace="rt", default_repo="octo/widgets")
    store.put(entry(3, host="host-a", slot=1))
    assert store.update(3, status="needs_input").status == IssueStatus.NEEDS_INPUT
    assert store.get(3).host == "host-a" and store.get(4) is None
    with store.transaction() as state:
        del state.issues[("octo/widgets", 3)]
    assert store.load() == {}
    with pytest.raises(KeyError):
        store.update(3, error="x")


def test_heartbeats_expire_by_redis_clock(redis_server):
    store = RedisStateStore(redis_server.url, namespace="hb")
    key = ("octo/widgets", 5)
    store.beat(key, "host-a", ttl_seconds=0.3)
    assert store.beating(key) == "host-a"
    store.worker_beat("host-a", 2, ttl_seconds=0.3)
    assert store.live_workers() == {"host-a": 2}
    time.sleep(0.5)
    assert store.beating(key) is None and store.live_workers() == {}
    store.beat(key, "host-b", ttl_seconds=5)
    store.end_beat(key, "host-a")  # not its beat to end
    assert store.beating(key) == "host-b"


def test_a_corrupt_entry_is_one_sentence(redis_server):
    redis_server.cli("HSET", "orchestrator:bad:issues", "octo/widgets#1", "{not json")
    with pytest.raises(StateError, match=r"corrupt entry 'octo/widgets#1'"):
        RedisStateStore(redis_server.url, namespace="bad").load_state()


def test_redis_down_or_a_wrong_password_is_one_sentence_without_the_password(redis_server):
    wrong = redis_server.url.replace(PASSWORD, "not-the-password")
    with pytest.raises(StateUnreachable) as raised:
        RedisStateStore(wrong, connect_timeout=1).verify()
    assert "not-the-password" not in str(raised.value) and "redis://:***@127.0.0.1" in str(raised.value)
    redis_server.stop(kill=True)
    with pytest.raises(StateUnreachable, match=r"Cannot use the shared state at redis://:\*\*\*@127.0.0.1:\d+/0"):
        RedisStateStore(redis_server.url, connect_timeout=1).load_state()
    assert StateUnreachable("x").exit_code == 1


def test_masked_url():
    assert masked_url("rediss://user:p%40ss@host:6380/2") == "rediss://user:***@host:6380/2"
    assert masked_url("redis://host:6379/0") == "redis://host:6379/0"


def test_the_config_chooses_the_store_and_the_host(tmp_path, redis_server):
    settings = {"github": {"token": "t", "repo": "octo/widgets", "base_repo_path": str(tmp_path / "slots")},
                "executor": {"type": "celery", "broker_url": redis_server.url, "slots": 3,
                             "hosts": {"box-2": {"base_repo_path": str(tmp_path / "box2"), "slots": 5}}}}
    config = Config.from_dict(settings, tmp_path)
    assert isinstance(StateStore.for_config(config), RedisStateStore)
    assert config.executor.slots == 3 and PASSWORD in config.secrets
    assert config.executor.visibility_timeout_seconds > config.claude.timeout_seconds
    on_box2 = Config.from_dict(settings, tmp_path, env={"ORCHESTRATOR_HOST": "box-2"})
    assert on_box2.executor.host == "box-2" and on_box2.executor.slots == 5
    assert on_box2.repositories[0].slot_path(0) == tmp_path / "box2" / "widgets_0"
    assert on_box2.executor.host_queue("box-2") == "claude-orchestrator.host.box-2"


def test_the_run_history_in_redis_is_bounded_and_read_from_its_end(redis_server):
    from datetime import datetime, timedelta, timezone

    from lib.ledger import RedisRunHistory

    store = RedisStateStore(redis_server.url, namespace="ledger")
    history = RedisRunHistory(store, max_records=5)
    history.CHUNK = 2  # several chunks, read backwards
    for number in range(8):
        history.append({"type": "invocation", "issue": number, "cost_usd": 0.01})
    assert [r["issue"] for r in history.read()] == [3, 4, 5, 6, 7]
    assert history.read(datetime.now(timezone.utc) + timedelta(minutes=1)) == []
    redis_server.cli("RPUSH", "orchestrator:ledger:history", "{torn")
    assert [r["issue"] for r in history.read(datetime.now(timezone.utc) - timedelta(minutes=1))] == [3, 4, 5, 6, 7]

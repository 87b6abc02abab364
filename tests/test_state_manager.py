"""The state store under real concurrency and with damaged files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.files import atomic_write
from lib.models import IssueState, IssueStatus, StateError
from lib.state_manager import FINISHED_KEPT, SCHEMA_VERSION, StateManager

PROJECT = Path(__file__).resolve().parent.parent

# Each worker increments its own counter and a shared one 50 times, each a full read-modify-write.
WORKER = """
import sys
from lib.models import IssueState
from lib.state_manager import StateManager
manager = StateManager(sys.argv[1])
worker = int(sys.argv[2])
for _ in range(50):
    with manager.transaction() as state:
        shared = state.issues.setdefault((None, 1), IssueState(1, "running", "issue-1", "t", num_turns=0))
        shared.num_turns += 1
        own = state.issues.setdefault((None, 100 + worker), IssueState(100 + worker, "running", "b", "t",
                                                                       num_turns=0))
        own.num_turns += 1
"""


def entry(number, status="running", **extra):
    return IssueState(number, status, f"issue-{number}", "2024-01-15T10:30:00", **extra)


def test_eight_processes_lose_no_update(tmp_path):
    path = tmp_path / "processing-state.json"
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(i)], cwd=PROJECT)
        for i in range(8)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0] * 8
    issues = {number: entry for (_, number), entry in StateManager(path).load().items()}
    assert issues[1].num_turns == 400
    assert {n: issues[n].num_turns for n in range(100, 108)} == {n: 50 for n in range(100, 108)}
    assert not list(tmp_path.glob(".*.tmp")), "a temp file was left behind"


def test_file_has_the_seed_readme_shape_with_slot_for_its_agent_index(tmp_path):
    manager = StateManager(tmp_path / "s.json")
    manager.put(entry(123, session_id="abc123", slot=0))
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["_schema"] == SCHEMA_VERSION
    seed_fields = {"issue_number": 123, "status": "running", "branch": "issue-123",
                   "start_time": "2024-01-15T10:30:00", "session_id": "abc123", "slot": 0}
    assert seed_fields.items() <= data["123"].items()
    assert oct((tmp_path / "s.json").stat().st_mode & 0o777) == "0o600"


def test_the_file_stays_indented_json_byte_for_byte_through_changes_by_two_stores(tmp_path):
    """The writer encodes again only what changed: the text must be what json.dumps(indent=2) writes."""
    path = tmp_path / "s.json"
    first, second = StateManager(path), StateManager(path)
    first.put(entry(1, title="Ünïcode \"quoted\"\nnewline", checks=[{"name": "tests", "passed": True}]))
    first.put(entry(2))
    with second.transaction() as state:  # another process's change, unseen by the first store
        state.meta["paused_until"] = "2024-01-01T15:00:00+00:00"
        state.issues[(None, 2)].invocations.append({"kind": "run", "cost_usd": 0.5})
    for store, changes in ((first, {"num_turns": 3}), (first, {"follow_marks": {"review": 7}}), (second, {})):
        store.update(1, **changes)
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
    issues = {number: entry for (_, number), entry in StateManager(path).load().items()}
    assert issues[1].follow_marks == {"review": 7} and issues[1].num_turns == 3
    assert issues[2].invocations == [{"kind": "run", "cost_usd": 0.5}]


def test_seed_format_without_schema_key_is_read_and_its_agent_index_becomes_slot(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"7": {"issue_number": 7, "status": "completed", "branch": "issue-7",
                                      "start_time": "2024-01-15T10:30:00", "session_id": None,
                                      "agent_index": 1}}))
    manager = StateManager(path)
    assert manager.get(7).status == "completed" and manager.get(7).slot == 1
    manager.update(7, title="written by this version")
    written = json.loads(path.read_text())["7"]
    assert written["slot"] == 1 and "agent_index" not in written


def test_update_and_exception_leaves_file_unchanged(tmp_path):
    manager = StateManager(tmp_path / "s.json")
    manager.put(entry(5))
    assert manager.update(5, status=IssueStatus.FAILED.value, error="boom").error == "boom"
    before = (tmp_path / "s.json").read_bytes()
    with pytest.raises(RuntimeError):
        with manager.transaction() as state:
            state.issues[(None, 5)].status = "completed"
            raise RuntimeError("interrupted")
    assert (tmp_path / "s.json").read_bytes() == before
    with pytest.raises(AttributeError):
        manager.update(5, no_such_field=1)
    with pytest.raises(KeyError):
        manager.update(6, status="failed")


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b'{"1": {"issue_number": 1, "status": "runn', "Unterminated string"),
    (b"not json at all", "Expecting value"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"_schema": "x"}', "unknown schema version"),
    (b'{"5": "oops"}', "is not an object"),
    (b'{"5": {"status": "running"}}', "missing"),
    (b"\xff\xfe garbage", "codec"),
])
def test_corrupt_state_is_moved_aside_never_deleted(tmp_path, content, reason):
    path = tmp_path / "processing-state.json"
    path.write_bytes(content)
    manager = StateManager(path)
    with pytest.raises(StateError) as raised:
        manager.load()  # a reader reports it and moves nothing
    assert path.read_bytes() == content
    with pytest.raises(StateError) as raised:
        with manager.transaction():
            pass
    message = str(raised.value)
    assert "corrupt" in message and reason in message and "\n" not in message
    kept = list(tmp_path.glob("processing-state.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == content
    assert not path.exists()
    with manager.transaction() as state:  # the next run starts from an empty state
        assert state.issues == {}


def test_newer_schema_is_refused_and_kept_in_place(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"_schema": SCHEMA_VERSION + 1}))
    with pytest.raises(StateError, match="newer version"):
        with StateManager(path).transaction():
            pass
    assert path.exists() and not list(tmp_path.glob("*.corrupt-*"))


def test_history_is_bounded_and_active_entries_are_kept(tmp_path):
    manager = StateManager(tmp_path / "s.json")
    with manager.transaction() as state:
        for n in range(1, FINISHED_KEPT + 21):
            state.add(entry(n, "completed", end_time=f"2024-01-01T00:{n // 60:02d}:{n % 60:02d}"))
        state.add(entry(9999, "running", slot=0))
    issues = {number for _, number in manager.load()}
    assert len(issues) == FINISHED_KEPT + 1
    assert 9999 in issues and 1 not in issues and 20 not in issues and 21 in issues


def test_free_slot_skips_busy_ones(tmp_path):
    manager = StateManager(tmp_path / "s.json")
    with manager.transaction() as state:
        state.add(entry(1, "running", slot=0))
        state.add(entry(2, "completed", slot=1))
        state.add(entry(3, "needs_input", slot=2))
    state = manager.load_state()
    assert state.used_slots() == {0, 2}
    assert state.free_slot(None, limit=3) == 1
    assert state.free_slot(None, limit=1) is None
    assert state.free_slot(None) == 1  # unbounded (a Celery worker's own slots): the lowest free one


def test_meta_round_trips(tmp_path):
    manager = StateManager(tmp_path / "s.json")
    with manager.transaction() as state:
        state.meta["paused_until"] = "2024-01-01T15:00:00+00:00"
    assert manager.load_state().meta == {"paused_until": "2024-01-01T15:00:00+00:00"}
    assert list(manager.load()) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "f.json"
    atomic_write(target, "one")
    atomic_write(target, b"two", mode=0o640)
    assert target.read_text() == "two"
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["f.json"]

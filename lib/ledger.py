"""The run history: one compact line per finished Claude invocation and per finished run, append-only.

The state file keeps what runs now and is rewritten on every change; what a run cost is wanted for
weeks, so it is written here once and never rewritten. `RunHistory` is the interface the runner
writes through and `costs` (and the spend ceiling, and the dashboard) read through; `FileRunHistory`
keeps it in `run-history.jsonl` beside the state file; in the Celery mode `RedisRunHistory` keeps the
same lines in a Redis list beside the shared state, so every host's runs are counted.

Lines (JSON, one object each, oldest first; `at` is stamped under the lock, so the file is in time order):

    {"at": "2026-11-30T10:00:00+00:00", "type": "invocation", "repo": "acme/api", "issue": 7, "attempt": 1,
     "kind": "run", "session_id": "...", "session_cost_usd": 0.02, "cost_usd": 0.02, "num_turns": 3,
     "duration_seconds": 41.5}
    {"at": "...", "type": "outcome", "repo": "acme/api", "issue": 7, "attempt": 1, "status": "completed",
     "pr_url": "https://github.com/acme/api/pull/12", "duration_seconds": 52.0}

`session_cost_usd` is the CLI's figure, the session's running total; `cost_usd` is this invocation's own
share of it (null when the CLI gave none: unknown, never zero).

Bounded by size: when an append would take the file past MAX_BYTES it becomes `run-history.jsonl.1`
(replacing the one before), so at most twice MAX_BYTES are kept and at least MAX_BYTES of the newest
lines. A line is about 300 bytes: a busy install (200 runs a day, 4 invocations each) writes about
300 KB a day, so the history reaches back about two months of that, and further on a quieter one.
The Redis list keeps the newest MAX_RECORDS lines (about 30 MB): some four months of that install.
Bounded by age too: `drop_before` (lib.retention, `retention.history_days`) drops the records older
than a time, from the file (rewritten under the lock) or the list (one Lua script, so no append is lost).
"""

from __future__ import annotations

import itertools
import json
import os
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from lib.files import atomic_write, exclusive_lock, iter_lines_reversed
from lib.models import parse_iso
from lib.state_manager import REDIS_RESTART_SECONDS, RedisStateStore, StateStore

#: The file is rotated when an append would take it past this size.
MAX_BYTES = 16 * 1024 * 1024
HISTORY_FILE_NAME = "run-history.jsonl"
#: The Redis list keeps this many of the newest records.
MAX_RECORDS = 100_000

Record = Dict[str, Any]


class RunHistory(ABC):
    """Where finished invocations and runs are recorded, oldest first."""

    @abstractmethod
    def append(self, record: Record) -> None:
        """Add one record; its `at` is set to now. Safe with many writers at once."""

    @abstractmethod
    def read(self, since: Optional[datetime] = None) -> List[Record]:
        """The records whose `at` is `since` or later (all when None), oldest first."""

    @abstractmethod
    def drop_before(self, cutoff: datetime, *, dry_run: bool = False) -> Tuple[int, int]:
        """Drop the records older than `cutoff` (and lines that are no record before them): (records,
        bytes) dropped, or that would be with `dry_run`."""

    @staticmethod
    def for_config(config, store: Optional[StateStore] = None) -> "RunHistory":
        """The config's history; in the Celery mode beside the shared state of `store` (its Redis
        connection and its patience), else of a store of its own."""
        if config.executor.celery:
            return RedisRunHistory(store or StateStore.for_config(config, patience=REDIS_RESTART_SECONDS))
        return FileRunHistory(config.state_file.parent / HISTORY_FILE_NAME)


def own_cost(total: Optional[float], spent: Dict[str, Any],
             session_id: Optional[str]) -> Tuple[Optional[float], Dict[str, Any]]:
    """(what an invocation added to its session's cost, the session's total to remember for the next
    one): the CLI reports `total` as the session's running total; `spent` is what was remembered
    after the session's last invocation. None and `spent` unchanged when the CLI gave no figure."""
    if total is None:
        return None, spent
    before = spent.get("cost_usd", 0.0) if spent.get("session_id") == session_id else 0.0
    # A total below the one before is not a running total (the CLI counted afresh): all its own.
    return round(total - before if total >= before else total, 6), {"session_id": session_id, "cost_usd": total}


def _stamped(record: Record) -> str:
    stamped = {"at": None, **record}
    stamped["at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")  # now, whatever `record` said
    return json.dumps(stamped, ensure_ascii=False, separators=(",", ":"))


class FileRunHistory(RunHistory):
    """`run-history.jsonl` and its one rotated predecessor `run-history.jsonl.1`."""

    def __init__(self, path: os.PathLike, max_bytes: int = MAX_BYTES):
        self.path = Path(path)
        self.rotated = self.path.with_name(self.path.name + ".1")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.max_bytes = max_bytes

    def append(self, record: Record) -> None:
        with exclusive_lock(self.lock_path):
            line = (_stamped(record) + "\n").encode("utf-8")
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes:
                os.replace(self.path, self.rotated)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)  # one write of one line: a reader never sees half of it
            finally:
                os.close(fd)

    def read(self, since: Optional[datetime] = None) -> List[Record]:
        """Read from the end backwards, so that a recent `since` costs only the recent lines."""
        return _back_to(itertools.chain.from_iterable(
            iter_lines_reversed(path, budget=2 * self.max_bytes) for path in (self.path, self.rotated)
            if path.is_file()), since)


    def drop_before(self, cutoff: datetime, *, dry_run: bool = False) -> Tuple[int, int]:
        records = dropped = 0
        if not self.path.is_file() and not self.rotated.is_file():
            return records, dropped
        with exclusive_lock(self.lock_path):
            for path in (self.rotated, self.path):  # oldest first
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                offset, count = _first_kept(data, cutoff)
                records, dropped = records + count, dropped + offset
                if not dry_run and offset == len(data):
                    path.unlink()
                elif not dry_run and offset:
                    atomic_write(path, data[offset:])
                if offset < len(data):
                    break  # the file is in time order: the rest is newer still
        return records, dropped


def _first_kept(data: bytes, cutoff: datetime) -> Tuple[int, int]:
    """(where the first record at or after `cutoff` starts, else len(data); the records before it)."""
    offset = count = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        end = len(data) if end < 0 else end + 1
        record, at = _parse(data[offset:end])
        if at is not None and at >= cutoff:
            break
        count += record is not None
        offset = end
    return offset, count


#: Drops (ARGV[2] "0") or counts the records of list KEYS[1] before the first whose `at` is ARGV[1] or
#: later: `at` is always UTC ISO to the second, so its text sorts as its time. Returns {records, bytes}.
_DROP_BEFORE = """
local n, size, start = 0, 0, 0
while true do
  local chunk = redis.call('LRANGE', KEYS[1], start, start + 999)
  if #chunk == 0 then break end
  for _, line in ipairs(chunk) do
    local ok, record = pcall(cjson.decode, line)
    if ok and type(record) == 'table' and type(record['at']) == 'string' and record['at'] >= ARGV[1] then
      if ARGV[2] == '0' and n > 0 then redis.call('LTRIM', KEYS[1], n, -1) end
      return {n, size}
    end
    n = n + 1
    size = size + #line
  end
  start = start + 1000
end
if ARGV[2] == '0' and n > 0 then redis.call('DEL', KEYS[1]) end
return {n, size}
"""


class RedisRunHistory(RunHistory):
    """The Celery mode's history: a list `orchestrator:<queue>:history` in the shared state's Redis,
    appended by the runners of every host (RPUSH, then LTRIM to the newest `max_records`)."""

    CHUNK = 2000

    def __init__(self, store: RedisStateStore, max_records: int = MAX_RECORDS):
        self.store, self.max_records = store, max_records
        self.key = store.name("history")
        self.path = f"{store.where} {self.key}"  # how messages name it

    def append(self, record: Record) -> None:
        with self.store.reachable():
            pipe = self.store.client.pipeline(transaction=True)
            pipe.rpush(self.key, _stamped(record))
            pipe.ltrim(self.key, -self.max_records, -1)
            pipe.execute()

    def read(self, since: Optional[datetime] = None) -> List[Record]:
        """From the end backwards, a chunk at a time, until a record older than `since`."""
        with self.store.reachable():
            return _back_to(self._newest_first(), since)

    def drop_before(self, cutoff: datetime, *, dry_run: bool = False) -> Tuple[int, int]:
        at = cutoff.astimezone(timezone.utc).isoformat(timespec="seconds")
        with self.store.reachable():
            records, dropped = self.store.client.eval(_DROP_BEFORE, 1, self.key, at, "1" if dry_run else "0")
        return int(records), int(dropped)

    def _newest_first(self) -> Iterator[str]:
        end = -1
        while True:
            chunk = self.store.client.lrange(self.key, end - self.CHUNK + 1, end)
            yield from reversed(chunk)
            if len(chunk) < self.CHUNK:
                return
            end -= self.CHUNK


def _back_to(lines: Iterable, since: Optional[datetime]) -> List[Record]:
    """The records of `lines` (newest first) back to the first older than `since`, oldest first."""
    found: List[Record] = []
    for line in lines:
        record, at = _parse(line)
        if record is None:
            continue
        if since is not None and at < since:
            break
        found.append(record)
    return found[::-1]


def _parse(line: bytes) -> Tuple[Optional[Record], Optional[datetime]]:
    """(the record, its `at`), or (None, None) for a line that is not one (a write a full disk cut short)."""
    try:
        record = json.loads(line)
        at = parse_iso(record["at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None
    return (record, at) if at is not None else (None, None)

"""processing-state.json: what runs where, shared safely by a tick and many runners.

Every read-modify-write holds an exclusive flock on a lock file beside the state, and every
write is temp file + fsync + os.replace + fsync of the folder: a reader sees the old file or
the new one, never half of one, and no concurrent update is lost.

A run is (repository, issue number), an IssueKey. With one repository the file keeps the seed's shape,
keyed by issue number; with several its keys are `owner/name#N`. Each entry carries its `repo`, and
a file of either shape is read by either: the first write after a second repository is configured
rewrites the keys, under the lock, and running issues carry on.

In the Celery mode the state lives in Redis (`RedisStateStore`), behind the same interface and with
the same promise: a transaction holds a lock key, and its write is one Lua script that applies only
while that lock is still its own, so no update is lost even when a writer stalls past the lock's
expiry. Heartbeats live there too, as keys that expire: their age is judged by Redis's clock.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ContextManager, Dict, Iterator, List, Optional, Set, Tuple, Union

from lib.files import atomic_write, exclusive_lock
from lib.lifecycle import check_transition
from lib.models import (IssueState, IssueStatus, StateError, StateUnreachable, UsageError, issue_ref, parse_iso,
                        utc_now_iso)

SCHEMA_VERSION = 1
#: Finished entries kept as history; older ones are dropped on write.
FINISHED_KEPT = 500

log = logging.getLogger(__name__)

#: (repository "owner/name", issue number): what identifies a run.
IssueKey = Tuple[Optional[str], int]


def issue_key(entry: IssueState) -> IssueKey:
    return entry.repo, entry.issue_number


def key_text(key: IssueKey) -> str:
    """`owner/name#N`, as people write it: the issue's one display name (`issue_ref`), from its key."""
    return issue_ref(*key)


def parse_key(text: Union[int, str]) -> IssueKey:
    """`N`, `#N` or `owner/name#N` -> (repo or None, N); UsageError for anything else."""
    repo, _, number = str(text).strip().rpartition("#")
    if not number.isdigit() or int(number) < 1 or (repo and "/" not in repo):
        raise UsageError(f"{text!r} names no issue: give a number, or owner/name#N.")
    return repo or None, int(number)


@dataclass
class State:
    """The whole state file: issues by IssueKey, plus orchestrator-wide `meta` (e.g. a pause)."""

    issues: Dict[IssueKey, IssueState] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)

    def add(self, entry: IssueState) -> None:
        self.issues[issue_key(entry)] = entry

    def active(self, repo: Optional[str] = None) -> List[IssueState]:
        """Entries that own a slot: of `repo`, or of every repository."""
        return [entry for entry in self.issues.values() if entry.is_active and (repo is None or entry.repo == repo)]

    def used_slots(self, repo: Optional[str] = None, host: Optional[str] = None) -> Set[int]:
        """Slot indexes held, of `repo` (else every repository), on `host` (else anywhere)."""
        return {entry.slot for entry in self.active(repo)
                if entry.slot is not None and (host is None or entry.host == host)}

    def asking(self) -> List[IssueState]:
        """The entries with an open question (a tick reads the chats only while there is one)."""
        return [entry for entry in self.issues.values()
                if entry.status == IssueStatus.NEEDS_INPUT and entry.question_comment_id is not None]

    def paused_until(self) -> Optional[datetime]:
        """The end of a usage-limit pause of every launch and resume, while one is on; else None."""
        until = parse_iso(self.meta.get("paused_until"))
        return until if until and until > datetime.now(timezone.utc) else None

    def free_slot(self, repo: Optional[str], *, limit: Optional[int] = None, host: Optional[str] = None) -> Optional[int]:
        """The one rule for a slot: the lowest index of `repo` (on `host`) that no active issue holds,
        below `limit`; None when all of those are busy."""
        used = self.used_slots(repo, host)
        return next((i for i in range(limit if limit is not None else len(used) + 1) if i not in used), None)


class StateStore(ABC):
    """What every state store offers; a store implements `transaction`, `verify` and `load_state`."""

    default_repo: Optional[str] = None

    @classmethod
    def for_config(cls, config, *, patience: float = 0) -> "StateStore":
        """The config's store: processing-state.json, or Redis in the Celery mode. `patience`: how long
        a Redis call is retried while Redis restarts (a runner waits; a tick says so at once)."""
        repo = config.repositories[0].repo
        if config.executor.celery:
            return RedisStateStore(config.executor.state_url, namespace=config.executor.queue, default_repo=repo,
                                   connect_timeout=config.executor.connect_timeout_seconds, patience=patience)
        return StateManager(config.state_file, default_repo=repo, qualified_keys=config.multi_repo)

    def key(self, issue: Union[int, IssueKey]) -> IssueKey:
        """An IssueKey from an IssueKey or an issue number (of the default repository)."""
        return issue if isinstance(issue, tuple) else (self.default_repo, int(issue))

    @abstractmethod
    def transaction(self) -> ContextManager[State]:
        """Exclusive read-modify-write: change the yielded State; it is written when the block ends
        without an exception (an exception leaves the state as it was)."""

    @abstractmethod
    def verify(self) -> State:
        """A tick's first read, under the lock: a clear StateError when the state is unusable."""

    @abstractmethod
    def load_state(self) -> State:
        """A consistent snapshot without the lock (for readers such as the monitor)."""

    def load(self) -> Dict[IssueKey, IssueState]:
        return self.load_state().issues

    def get(self, issue: Union[int, IssueKey]) -> Optional[IssueState]:
        return self.load().get(self.key(issue))

    def put(self, entry: IssueState) -> None:
        with self.transaction() as state:
            entry.updated_at = utc_now_iso()
            entry.repo = entry.repo or self.default_repo
            state.issues[issue_key(entry)] = entry

    def update(self, issue: Union[int, IssueKey], **changes: Any) -> IssueState:
        """Set fields of one entry under the lock and return the updated entry."""
        with self.transaction() as state:
            entry = state.issues.get(self.key(issue))
            if entry is None:
                raise KeyError(issue)
            for name, value in changes.items():
                if not hasattr(entry, name):
                    raise AttributeError(f"IssueState has no field {name!r}")
                setattr(entry, name, IssueStatus(value) if name == "status" else value)
            entry.updated_at = utc_now_iso()
            return entry

    @staticmethod
    def _statuses(state: State) -> Dict[IssueKey, IssueStatus]:
        return {key: entry.status for key, entry in state.issues.items()}

    @staticmethod
    def _check_transitions(before: Dict[IssueKey, IssueStatus], state: State) -> None:
        """Every change of status a transaction made to an entry is one the lifecycle has (lib.lifecycle).
        (A new entry is a claim; `put` also seeds a state as it stands, in tests and migrations.)"""
        for key, entry in state.issues.items():
            if key in before:
                check_transition(before[key], entry.status, f"issue {key_text(key)}")

    @staticmethod
    def _prune_history(state: State) -> None:
        # An entry whose pull request is followed stays, however many runs finish meanwhile.
        finished = [entry for entry in state.issues.values() if entry.is_finished and not entry.following]
        if len(finished) <= FINISHED_KEPT:
            return
        finished.sort(key=lambda entry: entry.end_time or entry.start_time or "")
        for entry in finished[: len(finished) - FINISHED_KEPT]:
            del state.issues[issue_key(entry)]


class StateManager(StateStore):
    """processing-state.json. `StateManager()` uses the file in the current folder, as in the seed
    README; the orchestrator uses `StateStore.for_config(config)`, which picks this or Redis.

    `default_repo` is the repository of entries an earlier version wrote without one; with
    `qualified_keys` (several repositories) the keys written are `owner/name#N`.
    """

    def __init__(self, state_file: Union[str, Path] = "processing-state.json", *,
                 default_repo: Optional[str] = None, qualified_keys: bool = False):
        self.path = Path(state_file)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.default_repo = default_repo
        self.qualified_keys = qualified_keys
        self._written: Dict[str, Tuple[str, str]] = {}  # key -> its value's JSON, compact and indented

    # --- locking ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[State]:
        """Exclusive read-modify-write: change the yielded State; it is written when the block ends
        without an exception (an exception leaves the file as it was)."""
        with exclusive_lock(self.lock_path):
            state = self._read(move_corrupt_aside=True)
            before = self._statuses(state)
            yield state
            self._check_transitions(before, state)
            self._write(state)

    def verify(self) -> State:
        """A tick's first read: under the lock, and a corrupt file is moved aside (kept) before the
        StateError, so that the next tick starts afresh once a human has looked."""
        with exclusive_lock(self.lock_path):
            return self._read(move_corrupt_aside=True)

    # --- reading ------------------------------------------------------------------------------

    def load_state(self) -> State:
        """A consistent snapshot without taking the lock: writers replace the file atomically, so
        readers (the monitor, a read-only user) never see half a file and never need write access."""
        return self._read(move_corrupt_aside=False)

    def _read(self, move_corrupt_aside: bool) -> State:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateError(f"Cannot read the state file {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(raw.decode("utf-8")) if raw.strip() else None
            if not isinstance(data, dict):
                raise ValueError("empty" if data is None else "not a JSON object")
            version = data.get("_schema", SCHEMA_VERSION)
            if not isinstance(version, int) or version < 1:
                raise ValueError(f"unknown schema version {version!r}")
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"The state file {self.path} was written by a newer version of the orchestrator"
                    f" (schema {version}; this one reads {SCHEMA_VERSION}); nothing was changed."
                )
            issues = {}
            for key, entry in data.items():
                if key.startswith("_"):
                    continue
                if not isinstance(entry, dict):
                    raise ValueError(f"entry {key!r} is not an object")
                issue = IssueState.from_dict(entry)
                repo, _, number = key.rpartition("#")
                issue.repo = issue.repo or repo or self.default_repo
                issues[(issue.repo, int(number))] = issue
            meta = data.get("_meta") or {}
            if not isinstance(meta, dict):
                raise ValueError("_meta is not an object")
        except StateError:
            raise
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0][:200]
            if not move_corrupt_aside:
                raise StateError(f"The state file {self.path} is corrupt ({reason}).") from None
            aside = self._move_aside()
            raise StateError(
                f"The state file {self.path} is corrupt ({reason}); moved it to {aside.name} and launched"
                " nothing. GitHub labels show what was in progress: check for running agents, then run again."
            ) from None
        return State(issues=issues, meta=meta)

    def _move_aside(self) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{counter}")
            counter += 1
        os.replace(self.path, aside)
        log.error("State file %s is corrupt; kept it as %s", self.path, aside)
        return aside

    # --- writing ------------------------------------------------------------------------------

    def _write(self, state: State) -> None:
        self._prune_history(state)
        document: Dict[str, Any] = {"_schema": SCHEMA_VERSION}
        if state.meta:
            document["_meta"] = state.meta
        qualified = self.qualified_keys or len({repo for repo, _ in state.issues}) > 1
        for key in sorted(state.issues, key=lambda k: (k[0] or "", k[1])):
            document[key_text(key) if qualified else str(key[1])] = state.issues[key].to_dict()
        atomic_write(self.path, self._indented_json(document), fault_step="during-state-write")

    def _indented_json(self, document: Dict[str, Any]) -> str:
        """`json.dumps(document, indent=2)`, byte for byte, but each top-level value is encoded again only
        when it changed since this store last wrote it: Python's indenting encoder is slow, and a runner
        writes the whole file at every step while it changes one entry."""
        written: Dict[str, Tuple[str, str]] = {}
        members = []
        for name, value in document.items():
            compact = json.dumps(value, ensure_ascii=False)  # C-fast: what tells a change
            known = self._written.get(name)
            if known is None or known[0] != compact:
                known = (compact, json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  "))
            written[name] = known
            members.append(f"  {json.dumps(name, ensure_ascii=False)}: {known[1]}")
        self._written = written
        return "{\n" + ",\n".join(members) + "\n}\n"



#: The write of a Redis transaction: applied only while the caller still holds the lock (KEYS[1] is
#: its token), so a writer that stalled past the lock's expiry writes nothing instead of losing an
#: update. KEYS: lock, issues hash, meta, version. ARGV: token, n, meta JSON or "", n field/value
#: pairs to set, then the fields to delete.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3]) end
local i = 4
for _ = 1, n do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2 end
while i <= #ARGV do redis.call('HDEL', KEYS[2], ARGV[i]); i = i + 1 end
redis.call('INCR', KEYS[4])
return 1
"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
#: How long runners and workers retry a Redis that does not answer (a restart) before they give up.
REDIS_RESTART_SECONDS = 30
#: A transaction's lock expires after this long: a writer that died holding it blocks no one for longer.
LOCK_SECONDS = 30
LOCK_WAIT_SECONDS = 60


@dataclass
class Taken:
    """A dispatch taken by a runner; `adopted_from`: the gone host the run was on, else None."""

    adopted_from: Optional[str] = None


class Heartbeat(threading.Thread):
    """Calls `pulse` every `every` seconds until `stop()`: a failed pulse (Redis restarting) is a
    warning, and the next one tries again."""

    def __init__(self, name: str, pulse, every: float):
        super().__init__(name=name, daemon=True)
        self.pulse, self.every = pulse, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.pulse()
            except StateError as exc:
                log.warning("%s: %s", self.name, exc)
            self.stopped.wait(self.every)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=self.every + 5)


def masked_url(url: str) -> str:
    """A Redis URL with its password replaced by ***: how it is shown in any message."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


class RedisStateStore(StateStore):
    """The shared state of the Celery mode, in Redis under `orchestrator:<queue>:`.

    Entries are fields of one hash (keyed `owner/name#N`), the meta one JSON string. Heartbeats are
    keys that expire after `executor.lost_after_seconds`: a runner's (`hb:owner/name#N`, holding its
    host) and a worker host's (`worker:<host>`).
    """

    def __init__(self, url: str, *, namespace: str = "claude-orchestrator", default_repo: Optional[str] = None,
                 connect_timeout: float = 5, patience: float = 0):
        import redis  # deferred: the local mode never loads it
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self.where = masked_url(url)
        # patience: retry connection errors for about that long, e.g. across a restart of Redis.
        retries, waited = 0, 0.0
        while waited < patience:
            waited += min(2.0, 0.2 * 2 ** retries)
            retries += 1
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout, socket_timeout=max(connect_timeout, 5),
            retry=Retry(ExponentialBackoff(cap=2, base=0.2), retries),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            decode_responses=True)
        self.errors = (redis.exceptions.RedisError, OSError)
        self.prefix = f"orchestrator:{namespace}:"
        self.default_repo = default_repo
        self._commit = self.client.register_script(_COMMIT)
        self._release = self.client.register_script(_RELEASE)

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    @contextmanager
    def reachable(self) -> Iterator[None]:
        """Any Redis error as one StateError sentence naming the server (its password masked)."""
        try:
            yield
        except self.errors as exc:
            reason = str(exc).splitlines()[0][:200] or type(exc).__name__
            raise StateUnreachable(f"Cannot use the shared state at {self.where} (Redis): {reason}") from None

    # --- transactions ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[State]:
        token = uuid.uuid4().hex
        lock = self.name("lock")
        with self.reachable():
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while not self.client.set(lock, token, nx=True, px=LOCK_SECONDS * 1000):
                if time.monotonic() > deadline:
                    raise StateError(f"The shared state at {self.where} stayed locked for {LOCK_WAIT_SECONDS} s"
                                     " (a writer hung?); nothing was changed.")
                time.sleep(0.005)
        try:
            with self.reachable():
                raw = self.client.hgetall(self.name("issues"))
                meta_raw = self.client.get(self.name("meta")) or "{}"
            state = self._parse(raw, meta_raw)
            before = self._statuses(state)
            yield state
            self._check_transitions(before, state)
            self._prune_history(state)
            written = {key_text(key): json.dumps(entry.to_dict(), ensure_ascii=False)
                       for key, entry in state.issues.items()}
            changed = [(field_name, value) for field_name, value in written.items() if raw.get(field_name) != value]
            removed = [field_name for field_name in raw if field_name not in written]
            meta = json.dumps(state.meta, ensure_ascii=False, sort_keys=True)
            args = [token, len(changed), "" if json.loads(meta_raw) == state.meta else meta]
            for pair in changed:
                args.extend(pair)
            args.extend(removed)
            with self.reachable():
                done = self._commit(keys=[lock, self.name("issues"), self.name("meta"), self.name("version")],
                                    args=args)
            if not done:
                raise StateError(f"A write to the shared state at {self.where} outlived its lock"
                                 f" ({LOCK_SECONDS} s); nothing was written.")
        finally:
            try:
                self._release(keys=[lock], args=[token])
            except self.errors:
                pass  # it expires by itself

    def verify(self) -> State:
        with self.transaction() as state:
            return state

    def load_state(self) -> State:
        with self.reachable():
            pipe = self.client.pipeline(transaction=True)  # MULTI: the hash and the meta of one moment
            pipe.hgetall(self.name("issues"))
            pipe.get(self.name("meta"))
            raw, meta_raw = pipe.execute()
        return self._parse(raw, meta_raw or "{}")

    def get(self, issue: Union[int, IssueKey]) -> Optional[IssueState]:
        """One entry, read alone: a runner polls its own entry often, and the hash holds every run."""
        key = self.key(issue)
        with self.reachable():
            text = self.client.hget(self.name("issues"), key_text(key))
        return self._parse({key_text(key): text}, "{}").issues.get(key) if text else None

    def _parse(self, raw: Dict[str, str], meta_raw: str) -> State:
        issues = {}
        for field_name, text in raw.items():
            try:
                entry = IssueState.from_dict(json.loads(text))
                key = parse_key(field_name)
            except (ValueError, TypeError, UsageError) as exc:
                raise StateError(f"The shared state at {self.where} has a corrupt entry {field_name!r}"
                                 f" ({str(exc).splitlines()[0][:200]}); nothing was changed.") from None
            entry.repo = entry.repo or key[0] or self.default_repo
            issues[(entry.repo, key[1])] = entry
        try:
            meta = json.loads(meta_raw)
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise StateError(f"The shared state at {self.where} has a corrupt meta; nothing was changed.")
        return State(issues=issues, meta=meta)

    def take_dispatch(self, key: IssueKey, dispatch_id: Optional[str], attempt: Optional[int],
                      host: str) -> Optional["Taken"]:
        """A task's runner takes its run: only when the task's dispatch id and attempt are the entry's
        (else None: a repeated or stale delivery, or a newer claim). A run whose host is gone is taken
        over: its slot and session were that host's, so both are cleared."""
        with self.transaction() as state:
            entry = state.issues.get(key)
            if entry is None or not dispatch_id or entry.dispatch_id != dispatch_id or entry.attempt != attempt:
                return None
            entry.dispatch_id = entry.dispatched_at = entry.dispatched_to = None
            adopted_from = entry.host if entry.host not in (None, host) else None
            if adopted_from:
                entry.slot = entry.session_id = None
            entry.host, entry.updated_at = host, utc_now_iso()
        return Taken(adopted_from)

    # --- liveness: tasks sent, heartbeats ----------------------------------------------------

    def note_sent(self, dispatch_id: str, ttl_seconds: float) -> None:
        """The task of `dispatch_id` is on the broker, for the next `ttl_seconds` (its visibility timeout):
        a fact of the broker's, kept beside the state so that a claim stays one state transaction."""
        with self.reachable():
            self.client.set(self.name(f"sent:{dispatch_id}"), "1", px=int(ttl_seconds * 1000))

    def sent(self, dispatch_id: Optional[str]) -> bool:
        """Whether the task of `dispatch_id` was sent and may still be taken."""
        if not dispatch_id:
            return False
        with self.reachable():
            return bool(self.client.exists(self.name(f"sent:{dispatch_id}")))

    def beat(self, key: IssueKey, host: str, ttl_seconds: float, token: str = "") -> None:
        """The runner of `key` lives on `host`, for the next `ttl_seconds` (by Redis's clock). `token`
        tells this beat from another runner's of the same run on the same host."""
        with self.reachable():
            self.client.set(self.name(f"hb:{key_text(key)}"), f"{host} {token}", px=int(ttl_seconds * 1000))

    def end_beat(self, key: IssueKey, host: str, token: str = "") -> None:
        """End this beat, and only this one (a later runner of the run may beat now)."""
        with self.reachable():
            if self.client.get(self.name(f"hb:{key_text(key)}")) == f"{host} {token}":
                self.client.delete(self.name(f"hb:{key_text(key)}"))

    def beating(self, key: IssueKey) -> Optional[str]:
        """The host whose runner of `key` beats, or None: there is no live runner of it anywhere."""
        with self.reachable():
            value = self.client.get(self.name(f"hb:{key_text(key)}"))
        return value.split(" ", 1)[0] if value else None

    def worker_beat(self, host: str, slots: int, ttl_seconds: float) -> None:
        with self.reachable():
            self.client.set(self.name(f"worker:{host}"), json.dumps({"slots": slots}), px=int(ttl_seconds * 1000))

    def live_workers(self) -> Dict[str, int]:
        """Hosts whose worker beats, with their slot counts."""
        with self.reachable():
            names = list(self.client.scan_iter(self.name("worker:*")))
            values = self.client.mget(names) if names else []
        return {name[len(self.name("worker:")):]: json.loads(value).get("slots", 1)
                for name, value in zip(names, values) if value}

"""processing-state.json: what runs where, shared safely by a tick and many runners.

Every read-modify-write holds an exclusive flock on a lock file beside the state, and every
write is temp file + fsync + os.replace + fsync of the folder: a reader sees the old file or
the new one, never half of one, and no concurrent update is lost.

A run is (repository, issue number), a RunKey. With one repository the file keeps the seed's shape,
keyed by issue number; with several its keys are `owner/name#N`. Each entry carries its `repo`, and
a file of either shape is read by either: the first write after a second repository is configured
rewrites the keys, under the lock, and running issues carry on.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple, Union

from lib.files import atomic_write, exclusive_lock
from lib.models import IssueState, ProcessStatus, StateError, UsageError, parse_iso, utc_now_iso

SCHEMA_VERSION = 1
#: Finished entries kept as history; older ones are dropped on write.
HISTORY_LIMIT = 500

log = logging.getLogger(__name__)

#: (repository "owner/name", issue number): what identifies a run.
RunKey = Tuple[Optional[str], int]


def run_key(entry: IssueState) -> RunKey:
    return entry.repo, entry.issue_number


def key_text(key: RunKey) -> str:
    """`owner/name#N`, as people write it."""
    return f"{key[0]}#{key[1]}" if key[0] else f"#{key[1]}"


def parse_key(text: Union[int, str]) -> RunKey:
    """`N`, `#N` or `owner/name#N` -> (repo or None, N); UsageError for anything else."""
    repo, _, number = str(text).strip().rpartition("#")
    if not number.isdigit() or int(number) < 1 or (repo and "/" not in repo):
        raise UsageError(f"{text!r} names no issue: give a number, or owner/name#N.")
    return repo or None, int(number)


@dataclass
class State:
    """The whole state file: issues by RunKey, plus orchestrator-wide `meta` (e.g. a pause)."""

    issues: Dict[RunKey, IssueState] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)

    def add(self, entry: IssueState) -> None:
        self.issues[run_key(entry)] = entry

    def active(self, repo: Optional[str] = None) -> List[IssueState]:
        """Entries that own a slot: of `repo`, or of every repository."""
        return [entry for entry in self.issues.values() if entry.is_active and (repo is None or entry.repo == repo)]

    def used_slots(self, repo: Optional[str] = None) -> Set[int]:
        return {entry.agent_index for entry in self.active(repo) if entry.agent_index is not None}

    def paused_until(self) -> Optional[datetime]:
        """The end of a usage-limit pause of every launch and resume, while one is on; else None."""
        until = parse_iso(self.meta.get("paused_until"))
        return until if until and until > datetime.now(timezone.utc) else None

    def free_slot(self, max_concurrent: int, repo: Optional[str] = None) -> Optional[int]:
        """Lowest slot index of `repo` that no active issue holds, or None when all are busy."""
        used = self.used_slots(repo)
        return next((i for i in range(max_concurrent) if i not in used), None)


class StateManager:
    """`StateManager()` uses processing-state.json in the current folder, as in the seed README;
    the orchestrator uses `StateManager.for_config(config)`.

    `default_repo` is the repository of entries an earlier version wrote without one; with
    `qualified_keys` (several repositories) the keys written are `owner/name#N`.
    """

    def __init__(self, state_file: Union[str, Path] = "processing-state.json", *,
                 default_repo: Optional[str] = None, qualified_keys: bool = False):
        self.path = Path(state_file)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.default_repo = default_repo
        self.qualified_keys = qualified_keys

    @classmethod
    def for_config(cls, config) -> "StateManager":
        return cls(config.state_file, default_repo=config.repositories[0].repo, qualified_keys=config.multi_repo)

    def key(self, issue: Union[int, RunKey]) -> RunKey:
        """A RunKey from a RunKey or an issue number (of the default repository)."""
        return issue if isinstance(issue, tuple) else (self.default_repo, int(issue))

    # --- locking ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[State]:
        """Exclusive read-modify-write: change the yielded State; it is written when the block ends
        without an exception (an exception leaves the file as it was)."""
        with exclusive_lock(self.lock_path):
            state = self._read(move_corrupt_aside=True)
            yield state
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

    def load(self) -> Dict[RunKey, IssueState]:
        return self.load_state().issues

    def get(self, issue: Union[int, RunKey]) -> Optional[IssueState]:
        return self.load().get(self.key(issue))

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
        atomic_write(self.path, json.dumps(document, indent=2, ensure_ascii=False) + "\n",
                     fault_step="during-state-write")

    @staticmethod
    def _prune_history(state: State) -> None:
        # An entry whose pull request is followed stays, however many runs finish meanwhile.
        finished = [entry for entry in state.issues.values() if entry.is_finished and not entry.following]
        if len(finished) <= HISTORY_LIMIT:
            return
        finished.sort(key=lambda entry: entry.end_time or entry.start_time or "")
        for entry in finished[: len(finished) - HISTORY_LIMIT]:
            del state.issues[run_key(entry)]

    # --- conveniences -------------------------------------------------------------------------

    def put(self, entry: IssueState) -> None:
        with self.transaction() as state:
            entry.updated_at = utc_now_iso()
            entry.repo = entry.repo or self.default_repo
            state.issues[run_key(entry)] = entry

    def update(self, issue: Union[int, RunKey], **changes: Any) -> IssueState:
        """Set fields of one entry under the lock and return the updated entry."""
        with self.transaction() as state:
            entry = state.issues.get(self.key(issue))
            if entry is None:
                raise KeyError(issue)
            for name, value in changes.items():
                if not hasattr(entry, name):
                    raise AttributeError(f"IssueState has no field {name!r}")
                setattr(entry, name, ProcessStatus(value) if name == "status" else value)
            entry.updated_at = utc_now_iso()
            return entry

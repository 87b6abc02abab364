"""Retention: what the orchestrator leaves behind is deleted once older than `retention.<kind>_days`.

Kinds, where they live, and how old one is (a kind set to null is kept for ever):

| kind | what | its age |
| --- | --- | --- |
| `logs` | an issue's log folder `logs/[owner/name/]issue-<N>/` (of a configured repository) (stream logs, prompts, stderr, runner, setup and validation logs, the agent's `tmp/`) | its newest file (the folder and the files in it, not below) |
| `transcripts` | Claude Code's `<CLAUDE_CONFIG_DIR or ~/.claude>/projects/<escaped slot>/<session>.jsonl` (and its `<session>/` folder), of the slots' project folders only: the user's other projects are never looked at | the file's mtime |
| `history` | records of the run history (lib.ledger: `run-history.jsonl` and `.1`, or the Redis list) | each record's `at` |
| `backups` | `refs/orchestrator/backup/*` in each repository's object store | the time in its name |
| `damaged` | `<slot>.damaged-<time>`, `<store>.damaged-<time>`, `<state file>.corrupt-<time>` | the time in its name |
| `full_clones` | `<slot>.full-clone-<time>`: a slot of an earlier version, its branches already on backup refs | the time in its name |
| `orchestrator_log` | `orchestrator.log.<time>`: orchestrator.log is renamed so once a day when it began a day ago or more | the file's mtime |

Never touched: anything of an issue in use, i.e. whose state entry is not finished (pending, preparing,
running, validating, fixing, needs_input, waiting) or whose pull request is followed: its log folder,
its session's transcript, its branch's backup refs (and its slot: slots themselves are never pruned).
A log folder whose runner.lock a runner holds, and a set-aside folder a live process works in, are kept
too. The state is read again right before anything is deleted.

Backup refs: one whose commits are all on origin (`origin/*` or the marks of what was pushed) holds
nothing that would be lost, and goes once a day old; one with commits origin lacks may hold the only
copy of some work, and goes only once older than `backups_days`. The objects stay in the store
(nothing here runs `git gc`): a deleted ref can be brought back from its sha while the objects last.

The tick prunes at most once a day (`prune_if_due`; the state's meta remembers when, per host), and a
failure there is a warning. `claude_monitor.py prune [--dry-run]` prunes now (`prune_command`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from lib.files import exclusive_lock
from lib.git_commands import BACKUP_PREFIX, GitError
from lib.ledger import RunHistory
from lib.models import OrchestratorError, parse_iso
from lib.processes import working_in
from lib.repo_manager import RepoManager
from lib.state_manager import State, StateStore, key_text
from lib.transcripts import default_claude_config_dir, project_dir_name

log = logging.getLogger(__name__)

KINDS = ("logs", "transcripts", "history", "backups", "damaged", "full_clones", "orchestrator_log")
DAY = 86400.0
#: The tick prunes at most this often.
PRUNE_EVERY_SECONDS = DAY
#: A backup ref whose commits are all on origin goes once this old (a reader of the note naming it
#: has had a day to look).
REDUNDANT_BACKUP_SECONDS = DAY
#: orchestrator.log is rotated once its first line is this old.
ROTATE_AFTER_SECONDS = DAY
#: State meta: {host: when this host last pruned}.
META_KEY = "retention_pruned_at"
LOG_NAME = "orchestrator.log"
#: What --check counts of each kind.
UNITS = {"logs": "issue folders", "transcripts": "transcripts", "history": "files", "backups": "refs",
         "damaged": "set aside", "full_clones": "set aside", "orchestrator_log": "files"}

_ISSUE_FOLDER_RE = re.compile(r"^issue-(\d+)$")
_SESSION_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_LOCAL_STAMP_RE = re.compile(r"(\d{8}-\d{6})(?:-\d+)?(?:/|$)")  # repo_manager's and object_store's names
_UTC_STAMP_RE = re.compile(r"\.corrupt-(\d{8}T\d{6}Z)(?:-\d+)?$")  # state_manager's
_ROTATED_RE = re.compile(r"^orchestrator\.log\.(\d{8}-\d{6})$")
_LOG_LINE_TIME_RE = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ", re.MULTILINE)  # redaction.LOG_FORMAT


class InUse(Exception):
    """Raised by a removal that finds its item taken meanwhile; the text says by what."""


@dataclass
class Item:
    """One thing pruned (or that would be, or kept): a file or folder, a ref in a store, or history records."""

    kind: str
    path: str
    bytes: int = 0
    age_days: Optional[float] = None
    ref: Optional[str] = None  # backups: the ref, in the store at `path`
    records: Optional[int] = None  # history: how many records
    reason: Optional[str] = None  # kept: why

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "ref": self.ref, "records": self.records,
                "bytes": self.bytes, "age_days": None if self.age_days is None else round(self.age_days, 2),
                **({"reason": self.reason} if self.reason else {})}

    def line(self) -> str:
        age = f"{self.age_days:.0f} d" if self.age_days is not None else ""
        what = f"{self.path} {self.ref}" if self.ref else self.path
        if self.records is not None:
            what += f" ({self.records} records)"
        size = "-" if self.reason else format_bytes(self.bytes)  # a kept item is not measured
        return f"  {self.kind:<17}{age:>6} {size:>9}  {what}" + (
            f"  ({self.reason})" if self.reason else "")


@dataclass
class PruneReport:
    dry_run: bool
    removed: List[Item] = field(default_factory=list)  # or, with dry_run, what would be
    kept: List[Item] = field(default_factory=list)  # old enough, but in use
    rotated: Optional[str] = None  # orchestrator.log's new name, when it was rotated
    errors: List[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.removed)

    def to_dict(self) -> Dict[str, Any]:
        return {"dry_run": self.dry_run, "bytes": self.bytes, "removed": [i.to_dict() for i in self.removed],
                "kept": [i.to_dict() for i in self.kept], "rotated": self.rotated, "errors": list(self.errors)}

    def summary(self) -> str:
        counts = {kind: sum(item.kind == kind for item in self.removed) for kind in KINDS}
        kinds = ", ".join(f"{kind} {count}" for kind, count in counts.items() if count)
        verb = "would remove" if self.dry_run else "removed"
        return f"{verb} {len(self.removed)} item(s), {format_bytes(self.bytes)}" + (f" ({kinds})" if kinds else "")

    def to_text(self) -> str:
        lines = [("Dry run, nothing deleted: " if self.dry_run else "Pruned: ") + self.summary() + "."]
        lines += [item.line() for item in self.removed]
        if self.rotated:
            lines.append(f"{'Would rotate' if self.dry_run else 'Rotated'} {LOG_NAME} to {self.rotated}.")
        if self.kept:
            lines += [f"Kept, in use: {len(self.kept)}."] + [item.line() for item in self.kept]
        if self.errors:
            lines += [f"Could not remove {len(self.errors)}:"] + [f"  {error}" for error in self.errors]
        return "\n".join(lines)


@dataclass
class Found:
    """Something of a kind that exists: its age, who may hold it, how it goes."""

    item: Item
    age_seconds: float
    remove: Callable[[], None]
    holder: Optional[Tuple] = None  # a key of `in_use`: ("issue", repo or None, N) or ("session", id)
    busy: Callable[[], Optional[str]] = lambda: None  # why it cannot go now (a lock held, a process in it)
    measure: Optional[Path] = None  # a path whose size is the item's
    redundant: Optional[Callable[[], bool]] = None  # backups: all its commits are on origin


def format_bytes(count: int) -> str:
    """1536 -> "1.5 KB": bytes whole, larger units to one decimal, up to GB."""
    size, unit = float(count), "B"
    for larger in ("KB", "MB", "GB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"


def disk_bytes(path: Path) -> int:
    """Bytes on disk under `path` (allocated blocks), symlinks not followed; 0 when it is gone."""
    try:
        top = os.lstat(path)
    except OSError:
        return 0
    total, pending = top.st_blocks * 512, [path] if stat.S_ISDIR(top.st_mode) else []
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
        except OSError:
            continue
    return total


def remove_tree(path: Path) -> None:
    """Delete a file or folder; a folder an agent made read-only is made writable first."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    try:
        shutil.rmtree(path)
    except PermissionError:
        os.chmod(path, stat.S_IRWXU)
        for folder, names, _ in os.walk(path):
            for name in names:
                inner = os.path.join(folder, name)
                if not os.path.islink(inner):
                    os.chmod(inner, stat.S_IRWXU)
        shutil.rmtree(path)


def in_use(state: State) -> Dict[Tuple, str]:
    """What the entries in use hold: ("issue", repo, N), ("issue", None, N) (the one-repository log
    layout) and ("session", id), each with why, e.g. `acme/api#7 running`."""
    held: Dict[Tuple, str] = {}
    for key, entry in state.issues.items():
        if entry.is_finished and not entry.following:
            continue
        why = f"{key_text(key)} {'followed' if entry.is_finished else entry.status}"
        held[("issue", (entry.repo or "").casefold() or None, entry.issue_number)] = why
        held.setdefault(("issue", None, entry.issue_number), why)
        if entry.session_id:
            held[("session", entry.session_id)] = why
    return held


def _stamp_time(name: str) -> Optional[float]:
    """The time in a name that repo_manager, object_store or state_manager gave: epoch seconds, or None."""
    utc = _UTC_STAMP_RE.search(name)
    if utc:
        return datetime.strptime(utc.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    local = _LOCAL_STAMP_RE.search(name)
    if local:
        try:
            return time.mktime(time.strptime(local.group(1), "%Y%m%d-%H%M%S"))
        except ValueError:
            return None
    return None


def _mtime(path: Path) -> Optional[float]:
    try:
        return path.lstat().st_mtime
    except OSError:
        return None


class Pruner:
    """Finds what each kind holds on this host; `prune` removes what is old and not in use."""

    def __init__(self, config, store: StateStore, *, now: Optional[float] = None,
                 claude_config_dir: Optional[os.PathLike] = None):
        self.config, self.store = config, store
        self.now = time.time() if now is None else now
        self.claude_config_dir = Path(claude_config_dir) if claude_config_dir else default_claude_config_dir()

    def limit(self, kind: str) -> Optional[float]:
        """The kind's retention in seconds, or None: kept for ever."""
        days = getattr(self.config.retention, f"{kind}_days")
        return None if days is None else days * DAY

    # --- what each kind holds -----------------------------------------------------------------

    def found(self, kind: str) -> Iterator[Found]:
        return getattr(self, f"_{kind}")()

    def _logs(self) -> Iterator[Found]:
        """The folders of both layouts (`Config.issue_dir`): one repository's, and the configured
        repositories' `<owner>/<name>/` (only those: log_dir may hold anything else)."""
        log_dir = self.config.log_dir
        layouts = [(None, log_dir)] + [(r.repo, log_dir / r.owner / r.name) for r in self.config.repositories]
        for repo, parent in layouts:
            for folder in _folders(parent):
                match = _ISSUE_FOLDER_RE.match(folder.name)
                if not match:
                    continue
                times = [t for t in [_mtime(folder)] + [_mtime(p) for p in _entries(folder)] if t is not None]
                if not times:
                    continue  # gone meanwhile
                yield Found(Item("logs", str(folder)), self.now - max(times), lambda f=folder: _remove_issue_folder(f),
                            holder=("issue", repo.casefold() if repo else None, int(match.group(1))),
                            busy=lambda f=folder: _runner_lock_held(f), measure=folder)

    def project_folders(self) -> List[Path]:
        """Claude Code's project folders of every slot of every repository (those configured, and
        those there are), not of the user's other projects."""
        folders = {}
        for repository in self.config.repositories:
            pattern = re.compile(rf"^{re.escape(repository.name)}_\d+$")
            slots = {repository.slot_path(i) for i in range(repository.max_concurrent)}
            slots |= {path for path in _folders(repository.base_repo_path) if pattern.match(path.name)}
            for slot in slots:
                folders[self.claude_config_dir / "projects" / project_dir_name(os.path.realpath(slot))] = None
        return list(folders)

    def _transcripts(self) -> Iterator[Found]:
        for folder in self.project_folders():
            for path in _entries(folder):
                if path.suffix != ".jsonl" or not _SESSION_RE.match(path.stem) or not path.is_file():
                    continue
                mtime = _mtime(path)
                if mtime is None:
                    continue
                yield Found(Item("transcripts", str(path)), self.now - mtime, lambda p=path: _remove_transcript(p),
                            holder=("session", path.stem), measure=path)

    def _history(self) -> Iterator[Found]:
        """One Found for the records older than the kind's limit (it has no age of its own)."""
        limit = self.limit("history")
        if limit is None:
            return
        history = RunHistory.for_config(self.config, self.store)
        cutoff = datetime.fromtimestamp(self.now - limit, timezone.utc)
        records, dropped = history.drop_before(cutoff, dry_run=True)
        if records:
            yield Found(Item("history", str(history.path), bytes=dropped, records=records), limit + 1,
                        lambda: history.drop_before(cutoff) and None)

    def _backups(self) -> Iterator[Found]:
        for repository in self.config.repositories:
            manager = RepoManager(self.config, repository)
            store = manager.store_path
            if not store.is_dir():
                continue
            listing = manager.git(["for-each-ref", "--format=%(refname)", BACKUP_PREFIX], store).stdout.split()
            for ref in listing:
                made = _stamp_time(ref[len(BACKUP_PREFIX):])
                if made is None:
                    continue  # not named by the orchestrator: never guessed at
                branch = re.search(r"(?:^|/)issue-(\d+)(?:-|$)", ref[len(BACKUP_PREFIX):])
                yield Found(Item("backups", str(store), ref=ref), self.now - made,
                            lambda m=manager, s=store, r=ref: m.git(["update-ref", "-d", r], s) and None,
                            holder=("issue", repository.repo.casefold(), int(branch.group(1))) if branch else None,
                            redundant=lambda m=manager, s=store, r=ref: _on_origin(m, s, r))

    def _set_aside(self, kind: str, paths: List[Path]) -> Iterator[Found]:
        for path in paths:
            made = _stamp_time(path.name) or _mtime(path)
            if made is not None:
                yield Found(Item(kind, str(path)), self.now - made, lambda p=path: remove_tree(p),
                            busy=lambda p=path: "a process works in it" if p.is_dir() and working_in(p) else None,
                            measure=path)

    def _damaged(self) -> Iterator[Found]:
        state = Path(self.config.state_file)
        paths = _matching(state.parent, rf"{re.escape(state.name)}\.corrupt-")
        for repository in self.config.repositories:
            name = re.escape(repository.name)
            paths += _matching(repository.base_repo_path, rf"({name}_\d+|{name}\.store\.git)\.damaged-")
        return self._set_aside("damaged", paths)

    def _full_clones(self) -> Iterator[Found]:
        paths = [path for repository in self.config.repositories for path in
                 _matching(repository.base_repo_path, rf"{re.escape(repository.name)}_\d+\.full-clone-")]
        return self._set_aside("full_clones", paths)

    def _orchestrator_log(self) -> Iterator[Found]:
        for path in _entries(self.config.folder):
            mtime = _mtime(path) if _ROTATED_RE.match(path.name) else None
            if mtime is not None:
                yield Found(Item("orchestrator_log", str(path)), self.now - mtime, lambda p=path: p.unlink(),
                            measure=path)

    # --- pruning ------------------------------------------------------------------------------

    def due(self, found: Found, limit: float) -> bool:
        if found.age_seconds > limit:
            return True
        return bool(found.redundant and found.age_seconds > REDUNDANT_BACKUP_SECONDS and found.redundant())

    def prune(self, *, dry_run: bool = False) -> PruneReport:
        report = PruneReport(dry_run=dry_run)
        self.store.load_state()  # a state it cannot read: a StateError, and nothing is pruned
        if not dry_run:
            self._remember()
        candidates: List[Found] = []
        for kind in KINDS:
            limit = self.limit(kind)
            if limit is None:
                continue
            try:
                found = sorted(self.found(kind), key=lambda one: (one.item.path, one.item.ref or ""))
                candidates += [one for one in found if self.due(one, limit)]
            except (OrchestratorError, OSError) as exc:
                report.errors.append(f"{kind}: {exc}")
        try:
            report.rotated = self._rotate_log(dry_run) if self.limit("orchestrator_log") is not None else None
        except OSError as exc:
            report.errors.append(f"orchestrator_log {LOG_NAME}: {exc}")
        held = in_use(self.store.load_state())  # read again now: a claim may have come meanwhile
        for found in candidates:
            item = found.item
            item.age_days = None if item.kind == "history" else found.age_seconds / DAY
            try:
                item.reason = (held.get(found.holder) if found.holder else None) or found.busy()
                if item.reason:
                    report.kept.append(item)
                    continue
                item.bytes = disk_bytes(found.measure) if found.measure is not None else item.bytes
                if not dry_run:
                    found.remove()
            except InUse as exc:
                item.reason = str(exc)
                report.kept.append(item)
                continue
            except (OrchestratorError, OSError) as exc:
                report.errors.append(f"{item.kind} {item.ref or item.path}: {exc}")
                continue
            report.removed.append(item)
        return report

    def _remember(self) -> None:
        """Note in the state's meta that this host pruned now (before it does: a prune that fails is
        not tried again at every tick)."""
        with self.store.transaction() as state:
            if not isinstance(state.meta.get(META_KEY), dict):
                state.meta[META_KEY] = {}
            state.meta[META_KEY][self.config.executor.host] = datetime.fromtimestamp(
                self.now, timezone.utc).replace(microsecond=0).isoformat()

    def _rotate_log(self, dry_run: bool) -> Optional[str]:
        """orchestrator.log becomes orchestrator.log.<time> once its first line is a day old, so the
        kind's files are a day each (a WatchedFileHandler, and cron's `>>` at the next tick, open a
        new one)."""
        path = self.config.folder / LOG_NAME
        try:
            with open(path, "rb") as handle:
                head = handle.read(65536)
            mtime = path.stat().st_mtime
        except OSError:
            return None
        first = _LOG_LINE_TIME_RE.search(head)
        began = time.mktime(time.strptime(first.group(1).decode(), "%Y-%m-%d %H:%M:%S")) if first else mtime
        if not head or self.now - began < ROTATE_AFTER_SECONDS:
            return None
        target = path.with_name(f"{LOG_NAME}.{time.strftime('%Y%m%d-%H%M%S', time.localtime(self.now))}")
        if target.exists():
            return None
        if not dry_run:
            os.rename(path, target)
        return target.name

    # --- disk used, for --check ---------------------------------------------------------------

    def usage(self, kind: str) -> Tuple[int, int]:
        """(items, bytes on disk) of a kind on this host; history: (files or lists, bytes)."""
        if kind == "history":  # the file mode's (the Redis list's bytes are Redis's, not this disk's)
            history = RunHistory.for_config(self.config, self.store)
            files = [p for p in (history.path, history.rotated) if p.is_file()]
            return len(files), sum(disk_bytes(p) for p in files)
        paths = [found.measure for found in self.found(kind)]
        if kind == "orchestrator_log" and (self.config.folder / LOG_NAME).is_file():
            paths.append(self.config.folder / LOG_NAME)
        return len(paths), sum(disk_bytes(path) for path in paths if path is not None)


def _matching(folder: Path, pattern: str) -> List[Path]:
    """The entries of `folder` whose name starts with the regular expression `pattern`."""
    return [path for path in _entries(folder) if re.match(pattern, path.name)]


def _folders(path: Path) -> List[Path]:
    return [p for p in _entries(path) if p.is_dir() and not p.is_symlink()]


def _entries(path: Path) -> List[Path]:
    try:
        with os.scandir(path) as entries:
            return [Path(entry.path) for entry in entries]
    except OSError:
        return []


def _runner_lock_held(folder: Path) -> Optional[str]:
    lock = folder / "runner.lock"
    if not lock.exists():
        return None
    with exclusive_lock(lock, wait=False) as free:
        return None if free else "a runner holds its runner.lock"


def _remove_issue_folder(folder: Path) -> None:
    """Delete the folder while holding its runner.lock, so that no runner starts in it meanwhile."""
    lock = folder / "runner.lock"
    if not lock.exists():
        remove_tree(folder)
        return
    with exclusive_lock(lock, wait=False) as free:
        if not free:
            raise InUse("a runner holds its runner.lock")
        remove_tree(folder)


def _remove_transcript(path: Path) -> None:
    """The transcript and the folder of the same session beside it (subagents, tool results)."""
    path.unlink(missing_ok=True)
    remove_tree(path.with_suffix(""))


def _on_origin(manager: RepoManager, store: Path, ref: str) -> bool:
    """Every commit of `ref` is on origin, as far as the store knows."""
    try:
        return manager.git.unpushed(store, ref) == 0
    except GitError:
        return False


def prune(config, store: Optional[StateStore] = None, *, dry_run: bool = False, now: Optional[float] = None,
          claude_config_dir: Optional[os.PathLike] = None) -> PruneReport:
    """Remove what is older than its retention and not in use, on this host (see the module docstring)."""
    return Pruner(config, store or StateStore.for_config(config), now=now,
                  claude_config_dir=claude_config_dir).prune(dry_run=dry_run)


def prune_command(config, *, dry_run: bool = False, claude_config_dir: Optional[os.PathLike] = None) -> PruneReport:
    """`claude_monitor.py prune`: under the tick's lock (no claim comes meanwhile); a dry run needs none."""
    if dry_run:
        return prune(config, dry_run=True, claude_config_dir=claude_config_dir)
    with exclusive_lock(config.lock_file, wait=False) as acquired:
        if not acquired:
            raise OrchestratorError(f"A tick is running ({config.lock_file} is held); nothing was pruned. Try again"
                                    " in a minute.")
        return prune(config, claude_config_dir=claude_config_dir)


def last_pruned(state: State, host: str) -> Optional[datetime]:
    when = state.meta.get(META_KEY)
    try:
        return parse_iso(when.get(host)) if isinstance(when, dict) else None
    except ValueError:
        return None


def prune_if_due(config, store: StateStore, *, now: Optional[float] = None) -> Optional[PruneReport]:
    """The tick's: prune when this host last did a day ago or more. Never raises: a failure is a warning."""
    now = time.time() if now is None else now
    try:
        last = last_pruned(store.load_state(), config.executor.host)
        if last is not None and now - last.timestamp() < PRUNE_EVERY_SECONDS:
            return None
        report = prune(config, store, now=now)
    except Exception as exc:  # a bug included: pruning never fails a tick
        log.warning("Retention: the prune failed: %s", exc, exc_info=not isinstance(exc, (OrchestratorError, OSError)))
        return None
    if report.removed or report.rotated:
        log.info("Retention: %s%s", report.summary(), f"; {LOG_NAME} rotated" if report.rotated else "")
    for error in report.errors:
        log.warning("Retention: could not remove %s", error)
    return report


def usage_lines(config, store: Optional[StateStore] = None) -> List[Tuple[str, bool, str]]:
    """(kind, measured, what it uses and how long it is kept) for each kind on this host, for --check."""
    pruner = Pruner(config, store or StateStore.for_config(config))
    lines = []
    for kind in KINDS:
        days = getattr(config.retention, f"{kind}_days")
        kept = "kept for ever" if days is None else f"kept {days:g} days"
        if kind == "history" and config.executor.celery:
            lines.append((kind, True, f"in the shared state's Redis, {kept}"))
            continue
        try:
            count, used = pruner.usage(kind)
        except (OrchestratorError, OSError) as exc:
            lines.append((kind, False, f"cannot tell ({exc}), {kept}"))
            continue
        if kind == "backups":  # a ref's objects are the store's: it frees no disk by itself
            on_origin = " (a day when origin has their commits)" if days is not None else ""
            lines.append((kind, True, f"{count} {UNITS[kind]}, {kept}{on_origin}"))
        else:
            lines.append((kind, True, f"{format_bytes(used)} in {count} {UNITS[kind]}, {kept}"))
    return lines

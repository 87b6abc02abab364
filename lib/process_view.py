"""The monitor's view of processes (psutil): the live process of a run, its facts, and the `claude`
processes working in a slot that the state file does not account for.

A recorded pid is the run's only while its create time matches too (lib/processes.live_process).
CPU is sampled over one interval shared by every process of a report: psutil's first reading of a
process is meaningless, so each needs two, and one wait serves them all.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import psutil

from lib.config import Config
from lib.conversations import ConversationSource, read_conversation
from lib.models import ClaudeInstance, IssueState, IssueStatus
from lib.processes import live_process
from lib.state_manager import IssueKey
from lib.transcripts import project_dir_name

CLAUDE_PROCESS_NAMES = frozenset({"claude", "claude.exe"})


def run_process(entry: IssueState) -> Optional[psutil.Process]:
    """The live process of an entry's run: its claude, else its runner; None when both are gone."""
    return (live_process(entry.claude_pid, entry.claude_create_time)
            or live_process(entry.runner_pid, entry.runner_create_time))


def describe_process(instance: ClaudeInstance, process: psutil.Process) -> None:
    """Fill pid, process state, memory, children and runtime (CPU comes from a shared sample)."""
    try:
        with process.oneshot():
            instance.pid = process.pid
            instance.process_state = process.status()
            instance.memory_mb = round(process.memory_info().rss / 1048576, 1)
            instance.runtime_seconds = round(max(0.0, time.time() - process.create_time()), 1)
        instance.children = [child.pid for child in process.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass


def sample_cpu(pairs: List[Tuple[ClaudeInstance, psutil.Process]], interval: float) -> None:
    """CPU percent of every process over one shared interval."""
    if not pairs:
        return
    for _, process in pairs:
        try:
            process.cpu_percent(None)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    time.sleep(interval)
    for instance, process in pairs:
        try:
            instance.cpu_percent = round(process.cpu_percent(None), 1)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def is_claude_process(name: Optional[str], cmdline: Optional[List[str]]) -> bool:
    if name in CLAUDE_PROCESS_NAMES:
        return True
    return bool(cmdline) and os.path.basename(cmdline[0]) == "claude"


def slot_of(config: Config, cwd: str, repo: Optional[str] = None) -> Optional[Tuple[str, int]]:
    """(repository, slot index) of a folder inside a slot of a configured repository (of `repo` only,
    when given), else None."""
    for repository in config.repositories:
        if repo is not None and repository.repo != repo:
            continue
        relative = os.path.relpath(cwd, os.path.realpath(repository.base_repo_path))
        found = re.match(rf"^{re.escape(repository.name)}_(\d+)$", relative.split(os.sep)[0])
        if found:
            return repository.repo, int(found.group(1))
    return None


def unknown_instances(config: Config, states: Dict[IssueKey, IssueState], claude_config_dir: Path,
                      repo: Optional[str] = None) -> List[Tuple[ClaudeInstance, psutil.Process]]:
    """`claude` processes working in a slot folder that no unfinished state entry accounts for."""
    known = {pid for entry in states.values() if not entry.is_finished
             for pid in (entry.claude_pid, entry.runner_pid) if pid}
    found = []
    for process in psutil.process_iter(["name", "cmdline", "cwd"]):
        info = process.info
        if not info.get("cwd") or not is_claude_process(info.get("name"), info.get("cmdline")):
            continue
        slot = slot_of(config, info["cwd"], repo)
        if slot is None:
            continue
        try:
            # A runner's claude is known before the runner has recorded its pid.
            if process.pid in known or any(parent.pid in known for parent in process.parents()):
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        instance = ClaudeInstance(issue_number=None, status=IssueStatus.UNKNOWN, repo=slot[0],
                                  slot=slot[1], cwd=info["cwd"])
        describe_process(instance, process)
        describe_newest_session(instance, process, claude_config_dir)
        found.append((instance, process))
    return found


def describe_newest_session(instance: ClaudeInstance, process: psutil.Process, claude_config_dir: Path) -> None:
    """An unknown process's conversation: the newest transcript of its folder written since it started."""
    folder = claude_config_dir / "projects" / project_dir_name(instance.cwd or "")
    try:
        started = process.create_time()
        transcripts = [(path.stat().st_mtime, path) for path in folder.glob("*.jsonl")]
    except (OSError, psutil.NoSuchProcess, psutil.AccessDenied):
        return
    recent = [item for item in transcripts if item[0] >= started - 1]
    if not recent:
        return
    path = max(recent)[1]
    instance.session_id = path.stem
    conversation = read_conversation(ConversationSource(path, "transcript"))
    instance.message_count = conversation.message_count or 0
    instance.last_activity = conversation.last_activity

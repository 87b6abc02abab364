"""The Claude Code process: command line, launch, watch, limits, and how it ended.

* `ClaudeProcessor.build_command` is argv from the flags in config (never run through a shell).
  The prompt is not in it: `claude -p` without a prompt argument reads the prompt from stdin, so
  its size has no argument limit (E2BIG at 128 KiB) and issue text stays out of the process
  list, which every local user can read.
* `ClaudeProcessor.start` saves the prompt (or a resume's reply) to a file of its own beside the
  stream log, `<attempt>.prompt-<n>.txt` (mode 0600), and launches `claude` in its own session with
  that file as stdin, stdout appended to the issue's stream log, stderr beside it, its own TMPDIR,
  the orchestrator's tokens taken out of its environment and a run marker put in
  (processes.SESSION_MARKER_VAR), by which every process it starts is found again. A file, not a
  pipe: the agent never depends on the runner to feed it.
* `ClaudeProcessor.watch` tails the stream log (the agent writes to the file, not to a pipe, so it
  keeps going if a runner dies), reports the session id as soon as the `init` event names it,
  enforces the wall-clock and idle limits and a stop request, ends a CLI that hangs after its
  `result`, and judges the end with `outcomes.classify`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from lib.files import tail_lines
from lib.models import OrchestratorError, utc_now_iso
from lib.outcomes import Outcome, classify, ends_with_question, needs_input_question
from lib.processes import RUN_HOST_VAR, SESSION_MARKER_VAR, end_leftovers, process_create_time, terminate_tree
from lib.redaction import redact, without_tokens
from lib.sandbox import CLAUDE_SETTINGS_PATH, Wall, launch
from lib.transcripts import StreamTracker, iter_records, read_complete_lines, read_last_line

log = logging.getLogger(__name__)

#: Nobody can answer this tool in a headless run: a question must end the run instead.
ALWAYS_DISALLOWED_TOOLS = ("AskUserQuestion",)
#: Longest pause between two reads of the stream log (check_interval may be longer).
READ_INTERVAL_SECONDS = 0.25
#: The tools a sandboxed session may use when claude.allowed_tools names none: with its environment
#: scrubbed (CLAUDE_CODE_SUBPROCESS_ENV_SCRUB) Claude Code asks for every tool not named here.
SANDBOXED_TOOLS = ("Bash", "Edit", "Write", "MultiEdit", "Read", "Glob", "Grep", "NotebookEdit", "TodoWrite", "Task",
                   "WebFetch", "WebSearch")


class ClaudeLaunchError(OrchestratorError):
    """Claude Code could not be started (missing executable, bad command line)."""


@dataclass
class AgentProcess:
    """A launched Claude Code process and where its output goes."""

    popen: subprocess.Popen
    session_id: str
    resume: bool
    stream_path: Path
    stderr_path: Path
    start_offset: int  # size of the stream log before launch: earlier invocations' lines end here
    started: float  # time.monotonic() at launch
    create_time: Optional[float]  # psutil create time, to recognise the pid later
    prompt_path: Optional[Path] = None  # the file the prompt was read from (its stdin)

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class AgentRun:
    """What watching one invocation gave."""

    session_id: Optional[str]
    pid: int
    exit_code: Optional[int]  # negative: killed by that signal
    result: Optional[Dict[str, Any]]  # this invocation's `result` event
    outcome: Outcome
    message_count: int  # user + assistant messages in the whole stream log (all invocations so far)
    last_activity: Optional[str]  # ISO UTC time the stream log last grew
    last_text: Optional[str]  # last assistant text of this invocation
    stream_path: Path
    stderr_path: Path
    killed_by: Optional[str] = None  # "timeout" | "idle" | "stop" | "after_result" | None
    prompt_path: Optional[Path] = None  # the prompt of this invocation, as Claude Code read it


def new_session_id() -> str:
    """A fresh session id; chosen before launch so it is known even if the stream never starts."""
    return str(uuid.uuid4())


def prompt_file_base(stream_path: Path) -> str:
    """`1` for the stream log `1.stream.jsonl` (the attempt), else the log's stem."""
    name, suffix = stream_path.name, ".stream.jsonl"
    return name[:-len(suffix)] if name.endswith(suffix) and name != suffix else stream_path.stem


def write_prompt_file(stream_path: Path, prompt: str) -> Path:
    """Save `prompt` beside the stream log as `<attempt>.prompt-<n>.txt`, n the first unused number,
    so every invocation of an attempt (the first, each resume) keeps its own; mode 0600 (issue text,
    not for other local users), created exclusively so no file is ever overwritten."""
    data = prompt.encode("utf-8", "replace")  # a lone surrogate (prompts.py drops them) would not encode
    base = prompt_file_base(stream_path)
    number = 1
    while True:
        path = stream_path.parent / f"{base}.prompt-{number}.txt"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except FileExistsError:
            number += 1
            continue
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        return path


class ClaudeProcessor:
    """Launches Claude Code on a slot and watches it to the end.

    `settings` are a repository's Claude settings (default: the config's `claude` section); `env` is
    the environment the agent's is made from (default: this process's).
    """

    # notifier and repo_manager are accepted for the seed README's `ClaudeProcessor(config, notifier,
    # repo_manager)`; the runner, not the process, notifies and prepares the slot.
    def __init__(self, config, notifier=None, repo_manager=None, *, settings=None,
                 env: Optional[Mapping[str, str]] = None):
        self.config = config
        self.settings = settings or config.claude
        self.env = env

    # --- command line and environment -----------------------------------------------------------

    def build_command(self, session_id: str, *, resume: bool = False, sandboxed: bool = False) -> List[str]:
        """argv for one invocation: a new session with `session_id`, or `--resume` of it. Never run
        through a shell. The prompt is not an argument: `-p` without one makes Claude Code read it
        from stdin, and start() gives it the prompt file. `sandboxed`: in a wall, with the settings
        the wall shows and, unless configured, the tools a scrubbed session needs named."""
        try:
            uuid.UUID(session_id)
        except (TypeError, ValueError, AttributeError):
            raise ClaudeLaunchError(f"Session id {session_id!r} is not a UUID, which Claude Code requires.") from None
        settings = self.settings
        # No prompt argument: -p reads it from stdin, whatever its size or its first character.
        command = [str(settings.executable), "-p"]
        # The variadic tool lists come before a known option, so they never swallow a later argument.
        tools = settings.allowed_tools or (SANDBOXED_TOOLS if sandboxed else ())
        if tools:
            command += ["--allowedTools", *tools]
        disallowed = list(ALWAYS_DISALLOWED_TOOLS) + [t for t in settings.disallowed_tools
                                                      if t not in ALWAYS_DISALLOWED_TOOLS]
        command += ["--disallowedTools", *disallowed]
        command += ["--output-format", "stream-json", "--verbose"]
        command += ["--resume", session_id] if resume else ["--session-id", session_id]
        if settings.model:
            command += ["--model", str(settings.model)]
        if settings.max_turns is not None:
            command += ["--max-turns", str(settings.max_turns)]
        if settings.max_budget_usd is not None:
            command += ["--max-budget-usd", f"{settings.max_budget_usd:g}"]
        if settings.permission_mode:
            command += ["--permission-mode", str(settings.permission_mode)]
        if settings.append_system_prompt:
            command += ["--append-system-prompt", settings.append_system_prompt]
        if sandboxed:
            command += ["--settings", CLAUDE_SETTINGS_PATH]
        command += [str(arg) for arg in settings.extra_args]
        if any(redact(arg) != arg for arg in command):
            raise ClaudeLaunchError("The Claude Code command line would hold a configured token"
                                    " (in claude.extra_args or claude.append_system_prompt); it was not started.")
        return command

    def agent_env(self, tmpdir: Optional[Path] = None) -> Dict[str, str]:
        """The agent's environment: the processor's without the orchestrator's tokens, unless
        claude.inherit_tokens; TMPDIR set to `tmpdir`."""
        base_env = self.env if self.env is not None else os.environ
        env = dict(base_env) if self.settings.inherit_tokens else without_tokens(base_env)
        if tmpdir is not None:
            env["TMPDIR"] = str(tmpdir)
        return env

    # --- launch ----------------------------------------------------------------------------------

    def start(self, prompt: str, *, cwd: Union[str, os.PathLike], session_id: str,
              stream_path: Union[str, os.PathLike], stderr_path: Union[str, os.PathLike], resume: bool = False,
              tmpdir: Optional[Path] = None, wall: Optional[Wall] = None) -> AgentProcess:
        """Launch Claude Code in `cwd` and return at once, inside `wall` when given (lib.walls). The
        prompt (on a resume: the reply) is saved to a new file beside the stream log and is the
        process's stdin; stdout is appended to `stream_path`; TMPDIR is `tmpdir`, by default a `tmp`
        folder beside the stream log (in a wall: its /tmp)."""
        stream_path, stderr_path = Path(stream_path), Path(stderr_path)
        command = self.build_command(session_id, resume=resume, sandboxed=wall is not None)
        if wall is not None:  # run by its real path: the folder a link of it lies in may be hidden
            command[0] = os.path.realpath(shutil.which(command[0]) or command[0])
            if not os.path.isfile(command[0]):  # said here: inside the wall it would be bubblewrap's words
                raise ClaudeLaunchError(f"Claude Code was not found: {self.settings.executable!r} (install it,"
                                        " or set claude.executable).")
            if not os.access(command[0], os.X_OK):
                raise ClaudeLaunchError(f"Claude Code cannot be run: {command[0]!r} is not executable.")
        stream_path.parent.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tmpdir) if tmpdir is not None else stream_path.parent / "tmp"
        tmpdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = self.agent_env(tmpdir=tmpdir)
        env[SESSION_MARKER_VAR] = session_id
        if self.config.executor.celery:
            env[RUN_HOST_VAR] = self.config.executor.host_marker
        prompt_path = write_prompt_file(stream_path, prompt)
        with open(prompt_path, "rb") as prompt_in, open(stream_path, "ab+") as out, open(stderr_path, "ab") as err:
            out.seek(0, os.SEEK_END)
            if out.tell():
                out.seek(-1, os.SEEK_END)
                if out.read(1) != b"\n":  # a killed writer's torn line must not swallow the new init
                    out.write(b"\n")
            start_offset = out.tell()
            try:
                # In the Celery mode the agent dies with its runner: see spawn.start.
                popen = launch(command, wall=wall, cwd=cwd, env=env, stdin=prompt_in, stdout=out, stderr=err,
                               die_with_parent=self.config.executor.celery)
            except FileNotFoundError:
                raise ClaudeLaunchError(f"Claude Code was not found: {command[0]!r} (install it, or set"
                                        f" claude.executable).") from None
            except PermissionError:
                raise ClaudeLaunchError(f"Claude Code cannot be run: {command[0]!r} is not executable.") from None
        log.info("Started Claude Code (pid %s, session %s%s) in %s%s", popen.pid, session_id,
                 ", resumed" if resume else "", cwd, "" if wall is not None else ", without a sandbox")
        return AgentProcess(popen=popen, session_id=session_id, resume=resume, stream_path=stream_path,
                            stderr_path=stderr_path, start_offset=start_offset, started=time.monotonic(),
                            create_time=process_create_time(popen.pid), prompt_path=prompt_path)

    # --- watch -----------------------------------------------------------------------------------

    def watch(self, agent: AgentProcess, *, on_session_id: Optional[Callable[[str], Any]] = None,
              on_progress: Optional[Callable[[int, str], Any]] = None,
              should_stop: Optional[Callable[[], Union[bool, str, None]]] = None,
              has_changes: Optional[Callable[[], bool]] = None) -> AgentRun:
        """Follow the agent until it ends, enforcing the limits, and judge how it ended.

        on_session_id(session_id): once, as soon as the `init` event names the session.
        on_progress(message_count, last_activity): at most every check_interval, when new output came.
        should_stop(): polled every check_interval; truthy ends the run as cancelled (a string is the reason).
        has_changes(): asked only when a successful run ends with a question, to tell a question
        (nothing changed) from a summary that happens to end with "?".
        """
        watcher = _Watcher(self, agent, on_session_id, on_progress, should_stop)
        with open(agent.stream_path, "rb") as handle:
            watcher.follow(handle)
        if watcher.killed_by is None:
            left = end_leftovers(agent.pid, agent.session_id, self.settings.kill_grace_seconds)
            if left:
                log.warning("Claude Code (pid %s) left %d process(es) running; ended them", agent.pid, left)
        return self._judge(agent, watcher, has_changes)

    def _judge(self, agent: AgentProcess, watcher: "_Watcher", has_changes: Optional[Callable[[], bool]]) -> AgentRun:
        tracker, popen = watcher.tracker, agent.popen
        result = tracker.result
        text = result.get("result") if result and isinstance(result.get("result"), str) else None
        no_changes = False
        if (has_changes is not None and result is not None and result.get("subtype") == "success"
                and result.get("is_error") is False and ends_with_question(text) and not needs_input_question(text)):
            no_changes = not has_changes()
        outcome = classify(result, exit_code=popen.returncode, killed_by=watcher.killed_by,
                           stop_reason=watcher.stop_reason, settings=self.settings, no_changes=no_changes,
                           last_text=tracker.last_text,
                           stderr_tail=None if result else self._stderr_tail(agent.stderr_path))
        outcome.duration_seconds = round(time.monotonic() - agent.started, 3)
        log.info("Claude Code (pid %s) ended: exit %s, %s%s", popen.pid, popen.returncode, outcome.status,
                 f" ({outcome.reason})" if outcome.reason else "")
        return AgentRun(session_id=tracker.session_id or agent.session_id, pid=popen.pid, exit_code=popen.returncode,
                        result=result, outcome=outcome, message_count=tracker.reader.message_count,
                        last_activity=watcher.last_activity, last_text=tracker.last_text,
                        stream_path=agent.stream_path, stderr_path=agent.stderr_path, killed_by=watcher.killed_by,
                        prompt_path=agent.prompt_path)

    def run(self, prompt: str, *, cwd: Union[str, os.PathLike], session_id: str,
            stream_path: Union[str, os.PathLike], stderr_path: Union[str, os.PathLike], resume: bool = False,
            tmpdir: Optional[Path] = None, on_started: Optional[Callable[[AgentProcess], Any]] = None,
            wall: Optional[Wall] = None, **callbacks: Any) -> AgentRun:
        """start + watch. on_started(agent) runs right after launch (record pid and create time there);
        the other callbacks are watch's."""
        agent = self.start(prompt, cwd=cwd, session_id=session_id, stream_path=stream_path,
                           stderr_path=stderr_path, resume=resume, tmpdir=tmpdir, wall=wall)
        try:
            if on_started:
                on_started(agent)
            return self.watch(agent, **callbacks)
        except BaseException:
            # Whatever went wrong here (a callback, a signal), no agent is left running unwatched.
            terminate_tree(agent.popen, self.settings.kill_grace_seconds)
            raise

    @staticmethod
    def _stderr_tail(path: Path) -> Optional[str]:
        """The last non-empty stderr line: what the CLI said when it wrote no result."""
        last = tail_lines(path, 1, budget=64 * 1024)
        return last[0].strip()[:300] if last else None


class _Watcher:
    """One invocation followed to its end: reads the stream log as it grows, calls back, and decides
    whether to end the process (limits, a stop request, a CLI hanging after its result)."""

    def __init__(self, processor: ClaudeProcessor, agent: AgentProcess, on_session_id, on_progress, should_stop):
        self.settings = processor.settings
        self.agent = agent
        self.on_session_id, self.on_progress, self.should_stop = on_session_id, on_progress, should_stop
        self.tracker = StreamTracker()
        self.killed_by: Optional[str] = None
        self.stop_reason: Optional[str] = None
        self.last_activity: Optional[str] = None
        self._announced = False
        self._size = agent.start_offset
        self._last_output = self._next_check = time.monotonic()
        self._result_at: Optional[float] = None
        self._reported_count = -1

    def follow(self, handle) -> None:
        self._skip_earlier_invocations(handle)
        popen = self.agent.popen
        interval = float(self.settings.check_interval)
        while True:
            now = self._read(handle)
            if popen.poll() is not None:
                break
            if now >= self._next_check:
                self._next_check = now + interval
                self._check_in()
            if self.killed_by is None:
                self.killed_by = self._limit_reached(now)
            if self.killed_by:
                if self.killed_by != "after_result":
                    log.warning("Ending Claude Code (pid %s): %s", popen.pid, self.stop_reason or self.killed_by)
                terminate_tree(popen, self.settings.kill_grace_seconds)
                break
            wait = min(READ_INTERVAL_SECONDS, interval, max(0.01, self._next_check - now))
            if self._result_at is not None:
                wait = min(wait, max(0.01, self.settings.result_grace_seconds - (now - self._result_at)))
            try:
                popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        read_complete_lines(handle, self.tracker)
        read_last_line(handle, self.tracker)
        if os.fstat(handle.fileno()).st_size != self._size:
            self.last_activity = utc_now_iso()
        self.tracker.finish()

    def _skip_earlier_invocations(self, handle) -> None:
        """Earlier invocations of this attempt count as messages but are not judged."""
        if not self.agent.start_offset:
            return
        for record, offset in iter_records(handle):
            if record is not None:
                self.tracker.feed(record)
            if offset >= self.agent.start_offset:
                break
        handle.seek(self.agent.start_offset)
        self.tracker.start_invocation()
        self.tracker.session_id = None

    def _read(self, handle) -> float:
        """Take in what the agent wrote since the last read; returns the time of this read."""
        read_complete_lines(handle, self.tracker)
        now = time.monotonic()
        new_size = os.fstat(handle.fileno()).st_size
        if new_size != self._size:
            self._size, self._last_output, self.last_activity = new_size, now, utc_now_iso()
        if self.tracker.session_id and not self._announced:
            self._announced = True
            if self.on_session_id:
                self.on_session_id(self.tracker.session_id)
        return now

    def _check_in(self) -> None:
        """Every check_interval: report progress, and ask whether a stop was requested."""
        count = self.tracker.reader.message_count
        if self.on_progress and count != self._reported_count and self.last_activity:
            self._reported_count = count
            self.on_progress(count, self.last_activity)
        if self.should_stop and self.tracker.result is None and self.killed_by is None:
            wanted = self.should_stop()
            if wanted:
                self.killed_by = "stop"
                self.stop_reason = wanted if isinstance(wanted, str) else None

    def _limit_reached(self, now: float) -> Optional[str]:
        settings = self.settings
        if self.tracker.result is not None:
            if self._result_at is None:
                self._result_at = now
            if now - self._result_at >= settings.result_grace_seconds:
                log.info("Claude Code (pid %s) did not exit %g s after its result; ending it",
                         self.agent.pid, settings.result_grace_seconds)
                return "after_result"
            return None
        if now - self.agent.started >= float(settings.timeout_seconds):
            return "timeout"
        if settings.idle_timeout_seconds and now - self._last_output >= float(settings.idle_timeout_seconds):
            return "idle"
        return None


if __name__ == "__main__":
    # `python -m lib.claude_processor run|resume|finalize ...` was the runner's command before it had
    # a module of its own; runners started so (and crontabs or scripts that say it) keep working.
    import sys

    from lib.runner import main

    sys.exit(main(prog="python -m lib.claude_processor"))

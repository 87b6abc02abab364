"""The repository's own checks, run by the orchestrator before work is called done.

The commands come from the orchestrator's config only (`validate`, globally or per repository),
never from the issue or from a file the agent can edit on its branch. Each runs in the slot, in a
session of its own and in the agent's sandbox (they run the repository's code, as untrusted as the
agent), with the token-free environment setup.sh gets plus the run marker (so a tick that finds the
runner dead finds and ends a check too), within its timeout (its whole tree is ended at it), its
output appended to `<attempt>.validate-<round>.log`.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from lib.files import tail_lines
from lib.processes import terminate_tree
from lib.prompts import clean_issue_text
from lib.sandbox import Wall, launch
from lib.settings import CHECK_TIMEOUT_SECONDS

#: What a fix prompt and a report quote of a failing check's output.
TAIL_LINES = 40
TAIL_CHARS = 4000
POLL_SECONDS = 0.2
#: Paths that hold tests, by the conventions of the common test runners.
TEST_PATH_PARTS = ("test", "tests", "spec", "specs", "__tests__")


@dataclass
class CheckResult:
    name: str
    passed: bool
    duration_seconds: float
    reason: Optional[str] = None  # why it failed: "exit status 1", "timed out after 900 s", ...
    tail: str = ""  # the end of its output, hidden characters stripped

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def run_validation(checks: Sequence[Mapping[str, Any]], *, cwd: Path, log_path: Path, env: Mapping[str, str],
                   grace_seconds: float, should_stop: Optional[Callable[[], Optional[str]]] = None,
                   wall: Optional[Wall] = None) -> List[CheckResult]:
    """Run every check in order (all of them, so a report names each failure), in `wall` when given;
    stops early only when `should_stop()` names a reason."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for check in checks:
        results.append(_run_one(check, cwd, log_path, env, grace_seconds, should_stop, wall))
        if should_stop and should_stop():
            break
    return results


def _run_one(check: Mapping[str, Any], cwd: Path, log_path: Path, env: Mapping[str, str], grace_seconds: float,
             should_stop: Optional[Callable[[], Optional[str]]], wall: Optional[Wall]) -> CheckResult:
    name, command = str(check["name"]), str(check["run"])
    timeout = float(check.get("timeout_seconds") or CHECK_TIMEOUT_SECONDS)
    with open(log_path, "ab") as out:
        offset = out.tell()
        out.write(f"--- {name}: {command}\n".encode())
        out.flush()
        started = time.monotonic()
        try:
            process = launch(["bash", "-c", command], wall=wall, cwd=cwd, env=env, stdout=out)
        except OSError as exc:
            return CheckResult(name, False, 0.0, f"could not start ({exc.strerror})")
        reason = _wait(process, started + timeout, timeout, grace_seconds, should_stop)
        duration = round(time.monotonic() - started, 1)
    if reason is None and process.returncode != 0:
        reason = f"exit status {process.returncode}"
    tail = _output_tail(log_path, offset) if reason else ""
    return CheckResult(name, reason is None, duration, reason, tail)


def _wait(process: subprocess.Popen, deadline: float, timeout: float, grace_seconds: float,
          should_stop: Optional[Callable[[], Optional[str]]]) -> Optional[str]:
    """None when the check ended by itself; else why it was ended (its whole tree with it)."""
    while True:
        try:
            process.wait(timeout=max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
            return None
        except subprocess.TimeoutExpired:
            stop = should_stop() if should_stop else None
            if stop or time.monotonic() >= deadline:
                terminate_tree(process, grace_seconds)
                return f"stopped: {stop}" if stop else f"timed out after {timeout:g} s"


def _output_tail(log_path: Path, offset: int) -> str:
    """The last lines this check wrote, as text a prompt and a comment may quote."""
    lines = tail_lines(log_path, TAIL_LINES, budget=TAIL_CHARS * 4)
    text = clean_issue_text("\n".join(lines))
    return text[-TAIL_CHARS:]


def fix_prompt(failed: Sequence[Mapping[str, Any]], commands: Mapping[str, str], round_number: int,
               max_rounds: int) -> str:
    """What the same session is told when checks fail: each command, how it failed, its output's end."""
    parts = [f"The repository's checks failed on your work (fix round {round_number} of {max_rounds}). Fix the"
             " cause in the code, not by weakening or skipping the checks or the tests, commit on the same"
             " branch, and end with a short summary."]
    for result in failed:
        parts += ["", f"Check {result['name']!r}: `{commands.get(result['name'], '?')}` failed: {result['reason']}.",
                  "The end of its output:", "```", result.get("tail") or "(no output)", "```"]
    parts += ["", "If you cannot go on without an answer from a person, end your final message with one line:",
              "NEEDS_INPUT: <your question>"]
    return "\n".join(parts)


def is_test_file(path: str) -> bool:
    parts = path.split("/")
    name = parts[-1]
    return (any(part in TEST_PATH_PARTS for part in parts[:-1]) or name.startswith("test_")
            or any(marker in name for marker in ("_test.", ".test.", ".spec.", "_spec.")))

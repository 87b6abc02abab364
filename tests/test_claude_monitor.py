"""The monitor against real files, real processes and the real CLI.

Transcripts and stream logs come from the recorded CLI output in tests/fixtures/claude/, with the
sample's placeholder paths rewritten to this test's slot folders. A stand-in `claude` is a real
Python process started with argv[0] "claude" in a slot folder.
"""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from claude_standin import FIXTURES
from lib.claude_monitor import STATUS_FULL_SCAN_BYTES, ClaudeMonitor
from lib.files import iter_lines_reversed
from lib.transcripts import MAX_LINE_BYTES, find_transcript, java_string_hash, project_dir_name, to_base36
from lib.config import Config
from lib.models import ConfigError, IssueState, OrchestratorError
from lib.state_manager import StateManager

PROJECT = Path(__file__).resolve().parent.parent
QUESTION_SESSION = "d4e36535-7fb3-4ea9-a3c8-4018f155a1be"  # session-history.jsonl, stream-question/-resumed
SUCCESS_SESSION = "abc67ae7-98d5-458d-8c1f-4458803a447f"  # stream-success.jsonl
REPORT_KEYS = {"timestamp", "total_instances", "active_count", "completed_count",
               "active_instances", "completed_instances"}


# --- the folder-name rule, written independently of lib/claude_monitor.py -----------------------


def expected_project_folder(path: str) -> str:
    """Claude Code's rule as the samples README states it (ASCII paths)."""
    name = re.sub(r"[^A-Za-z0-9]", "-", path)
    if len(name) <= 200:
        return name
    total = 0
    for position, char in enumerate(reversed(path)):
        total += ord(char) * pow(31, position, 2 ** 32)
    total %= 2 ** 32
    signed = total - 2 ** 32 if total >= 2 ** 31 else total
    return f"{name[:200]}-{base36_reference(abs(signed))}"


def base36_reference(number: int) -> str:
    digit = "0123456789abcdefghijklmnopqrstuvwxyz"[number % 36]
    return (base36_reference(number // 36) if number >= 36 else "") + digit


# --- an orchestrator folder with slots, a state file, logs and a Claude config dir ---------------


class Setup:
    def __init__(self, root: Path, base_repo_path: Path = None, repo: str = "owner/my.project"):
        self.root = root
        self.folder = root / "orch"
        self.folder.mkdir(parents=True)
        self.claude_dir = root / "claude-config"
        self.base = base_repo_path or root / "work.dir_x" / "clones"
        self.config_file = self.folder / "config.json"
        self.config_file.write_text(json.dumps({"github": {
            "token": "ghp_test123456", "repo": repo, "base_repo_path": str(self.base), "max_concurrent": 2}}))
        self.config_file.chmod(0o600)
        self.config = Config(self.config_file, env={})
        self.state = StateManager(self.config.state_file)
        self.env = {**os.environ, "CLAUDE_CONFIG_DIR": str(self.claude_dir)}
        self.env.pop("ORCHESTRATOR_CONFIG", None)

    def slot(self, index: int) -> Path:
        path = self.config.get_repo_path(index)
        path.mkdir(parents=True, exist_ok=True)
        return Path(os.path.realpath(path))

    def fixture(self, name: str, slot: Path) -> str:
        """A sample with its placeholder paths rewritten to this setup's slot and config dir."""
        return ((FIXTURES / name).read_text()
                .replace("/home/user/work/myproject_0", str(slot))
                .replace("/home/user/.claude", str(self.claude_dir))
                .replace("-home-user-work-myproject-0", expected_project_folder(str(slot))))

    def transcript(self, text: str, session_id: str, slot: Path) -> Path:
        path = self.claude_dir / "projects" / expected_project_folder(str(slot)) / f"{session_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def stream_log(self, number: int, text: str, attempt: int = 1) -> Path:
        path = self.config.log_dir / f"issue-{number}" / f"{attempt}.stream.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def put(self, number: int, status: str, **fields) -> None:
        fields.setdefault("start_time", "2026-11-24T18:05:50+00:00")
        self.state.put(IssueState(number, status, f"issue-{number}", **fields))

    def monitor(self, output_format: str = "text") -> ClaudeMonitor:
        return ClaudeMonitor(self.folder, output_format, claude_config_dir=self.claude_dir, cpu_interval=0.05)

    def cli(self, *args, env=None, timeout=60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "claude_monitor.py", *args], cwd=PROJECT, env=env or self.env,
                              capture_output=True, text=True, timeout=timeout)

    def cli_json(self, *args):
        done = self.cli(*args, "--config", str(self.config_file))
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def setup(tmp_path):
    return Setup(tmp_path)


@pytest.fixture
def processes():
    """Start stand-in processes; every one still running at the end is killed with its group."""
    started = []

    def start(cwd: Path, code: str = "import time; time.sleep(60)", argv0: str = "claude"):
        process = subprocess.Popen([argv0, "-c", code], executable=sys.executable, cwd=cwd,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=10)


def created(process: subprocess.Popen) -> float:
    return psutil.Process(process.pid).create_time()


def steps(messages):
    return [(m.role, m.kind, m.tool_name, m.text) for m in messages]


# --- where transcripts are ------------------------------------------------------------------------


def test_folder_name_known_vectors():
    assert project_dir_name("/tmp/we ird/a_b.c-d/My.Proj_1") == "-tmp-we-ird-a-b-c-d-My-Proj-1"
    assert project_dir_name("/home/user/work/myproject_0") == "-home-user-work-myproject-0"
    assert project_dir_name("/srv/a+b@c~d/ü") == "-srv-a-b-c-d--"
    # The CLI's regex works on UTF-16 code units: a character outside the BMP becomes two dashes.
    assert project_dir_name("/x/\U0001F600") == "-x---"


def test_java_string_hash_and_base36():
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322  # Java's "hello".hashCode()
    assert java_string_hash("Hello World") == -862545276  # overflows: signed 32 bits
    assert java_string_hash("/\U0001F600") == (47 * 31 + 0xD83D) * 31 + 0xDE00  # UTF-16 surrogates
    for value in (0, 35, 36, 2 ** 31, 123456789):
        assert to_base36(value) == base36_reference(value) and int(to_base36(value), 36) == value


def test_long_slot_path_uses_the_hashed_folder_name(tmp_path):
    deep = tmp_path / ("deep_" + "a" * 60) / ("level." + "b" * 60) / ("more-" + "c" * 60)
    setup = Setup(tmp_path, base_repo_path=deep)
    slot = setup.slot(0)
    assert len(str(slot)) > 200
    expected = expected_project_folder(str(slot))
    assert len(expected) > 201 and expected[200] == "-"
    assert project_dir_name(str(slot)) == expected

    setup.transcript(setup.fixture("session-history.jsonl", slot), QUESTION_SESSION, slot)
    decoy = setup.claude_dir / "projects" / "-decoy" / f"{QUESTION_SESSION}.jsonl"
    decoy.parent.mkdir(parents=True)
    decoy.write_text("")
    assert find_transcript(QUESTION_SESSION, [str(slot)], setup.claude_dir) == \
        setup.claude_dir / "projects" / expected / f"{QUESTION_SESSION}.jsonl"

    setup.put(7, "completed", session_id=QUESTION_SESSION, slot=0)
    history = setup.monitor().history(7)
    assert history.source.kind == "transcript" and history.message_count == 10


def test_transcript_of_a_resumed_session_from_another_folder_is_found(setup):
    """--resume appends to the original file, wherever it was started: any project folder will do."""
    slot = setup.slot(1)
    elsewhere = setup.claude_dir / "projects" / "-somewhere-else"
    elsewhere.mkdir(parents=True)
    (elsewhere / f"{QUESTION_SESSION}.jsonl").write_text(setup.fixture("session-history.jsonl", slot))
    setup.put(7, "completed", session_id=QUESTION_SESSION, slot=1)
    assert setup.monitor().history(7).source.path == elsewhere / f"{QUESTION_SESSION}.jsonl"


def test_symlinked_base_path_is_resolved_to_the_physical_cwd(tmp_path):
    real = tmp_path / "real_disk"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    setup = Setup(tmp_path, base_repo_path=tmp_path / "link")
    physical = setup.slot(0)
    assert str(physical).startswith(str(real))
    path = setup.transcript(setup.fixture("session-history.jsonl", physical), QUESTION_SESSION, physical)
    setup.put(7, "completed", session_id=QUESTION_SESSION, slot=0)
    assert setup.monitor().history(7).source.path == path


def test_agent_config_dir_is_taken_from_the_stream_log(setup):
    """The runner's CLAUDE_CONFIG_DIR may differ from this shell's: init's memory_paths tells the folder."""
    slot = setup.slot(0)
    other = setup.root / "agent-claude-dir"
    text = setup.fixture("stream-success.jsonl", slot).replace(str(setup.claude_dir), str(other))
    setup.stream_log(8, text)
    transcript = other / "projects" / expected_project_folder(str(slot)) / f"{SUCCESS_SESSION}.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_text(setup.fixture("session-history.jsonl", slot).replace(QUESTION_SESSION, SUCCESS_SESSION))
    setup.put(8, "completed", slot=0)  # no session id recorded: the log's init has it
    history = setup.monitor().history(8)
    assert (history.session_id, history.source.path) == (SUCCESS_SESSION, transcript)


# --- conversations ------------------------------------------------------------------------------


def test_resumed_session_history_spans_both_invocations(setup):
    slot = setup.slot(0)
    lines = setup.fixture("session-history.jsonl", slot).splitlines(keepends=True)
    # A subagent's line (isSidechain) is not part of the conversation.
    sidechain = json.loads(next(line for line in lines if '"type":"assistant"' in line))
    sidechain.update(isSidechain=True, uuid="side-1")
    sidechain["message"].update(id="msg_side", content=[{"type": "text", "text": "SUBAGENT TEXT"}])
    lines.insert(5, json.dumps(sidechain) + "\n")
    setup.transcript("".join(lines), QUESTION_SESSION, slot)
    setup.put(7, "completed", session_id=QUESTION_SESSION, slot=0)

    history = setup.monitor().history(7)
    assert history.message_count == 10
    assert steps(history.messages) == [
        ("user", "prompt", None, "Fix issue #7"),
        ("assistant", "tool_use", "Bash", "ls -a"),
        ("user", "tool_result", None, ".\n..\n.git\nREADME.md"),
        ("assistant", "text", None,
         "Before I change anything: should the fix for issue #7 go into the v1 API or the v2 API?"),
        ("user", "prompt", None, "Put it in the v2 API."),
        ("assistant", "tool_use", "Write", f"{slot}/v2_fix.txt"),
        ("user", "tool_result", None, f"File created successfully at: {slot}/v2_fix.txt (file state is"
                                      " current in your context — no need to Read it back)"),
        ("assistant", "tool_use", "Bash",
         "git add -A && git commit -q -m 'Fix #7 in v2 API' && git log --oneline -1"),
        ("user", "tool_result", None, "f8c8239 Fix #7 in v2 API"),
        ("assistant", "text", None, "Done: fixed issue #7 in the v2 API as you asked, and committed it."),
    ]
    assert history.messages[0].timestamp == "2026-11-24T18:05:59.891Z"
    assert history.messages[-1].timestamp == "2026-11-24T18:06:01.565Z"


def test_plain_run_falls_back_to_the_stream_log_and_merges_blocks_of_one_message(setup):
    slot = setup.slot(0)
    setup.stream_log(8, setup.fixture("stream-success.jsonl", slot))
    setup.put(8, "completed", session_id=SUCCESS_SESSION, slot=0)  # its transcript is gone
    monitor = setup.monitor()
    history = monitor.history(8)
    assert history.source.kind == "stream_log"
    # Text and Write share one message id: 5 messages, 6 steps.
    assert history.message_count == 5
    assert [(m.kind, m.tool_name) for m in history.messages] == [
        ("text", None), ("tool_use", "Write"), ("tool_result", None), ("tool_use", "Bash"),
        ("tool_result", None), ("text", None)]
    assert monitor.get_conversation_history(issue_number=8) == history.messages
    instance = monitor.monitor_all().completed_instances[0]
    assert (instance.message_count, instance.cost_usd, instance.num_turns) == (5, 0.015, 3)
    assert instance.last_activity == "2026-11-24T18:05:55.815Z"


def test_resumed_attempt_stream_log_holds_both_invocations(setup):
    slot = setup.slot(0)
    log = setup.fixture("stream-question.jsonl", slot) + setup.fixture("stream-resumed.jsonl", slot)
    setup.stream_log(7, log)
    setup.put(7, "completed", session_id=QUESTION_SESSION, slot=0)
    monitor = setup.monitor()
    texts = [m.text for m in monitor.history(7).messages if m.kind == "text"]
    assert texts == ["Before I change anything: should the fix for issue #7 go into the v1 API or the v2 API?",
                     "Done: fixed issue #7 in the v2 API as you asked, and committed it."]
    # The cost of the session is the last result's (cumulative), not a sum.
    assert monitor.get_status(7).instance.cost_usd == 0.025


def test_interrupted_runs(setup):
    slot = setup.slot(0)
    setup.stream_log(9, setup.fixture("stream-sigint-during-tool.jsonl", slot))
    setup.stream_log(10, setup.fixture("stream-sigint-during-api.jsonl", slot))
    setup.put(9, "failed", slot=0, error="interrupted")
    setup.put(10, "failed", slot=0)
    monitor = setup.monitor()
    during_tool = monitor.history(9).messages
    assert [(m.kind, m.tool_name) for m in during_tool] == [
        ("tool_use", "Bash"), ("tool_result", None), ("prompt", None), ("error", None)]
    assert during_tool[2].text == "[Request interrupted by user for tool use]"
    assert during_tool[3].is_error and "error_during_execution" in during_tool[3].text
    during_api = monitor.history(10)
    assert steps(during_api.messages) == [("user", "prompt", None, "[Request interrupted by user]")]
    assert during_api.session_id == "fd549ffc-f85b-463d-b32b-eabfb6c8336c"


def test_failed_run_shows_why(setup):
    slot = setup.slot(0)
    setup.stream_log(11, setup.fixture("stream-error-max-turns.jsonl", slot))
    setup.put(11, "failed", slot=0)
    last = setup.monitor().history(11).messages[-1]
    assert (last.kind, last.is_error) == ("error", True)
    assert last.text == "run ended with an error (error_max_turns): Reached maximum number of turns (1)"


def test_history_limit_and_full(setup):
    slot = setup.slot(0)
    lines = setup.fixture("session-history.jsonl", slot).splitlines(keepends=True)
    long_output = "\n".join(f"line {i} " + "x" * 50 for i in range(40))
    for index, line in enumerate(lines):
        if "f8c8239 Fix #7 in v2 API" in line and '"type":"user"' in line:
            lines[index] = line.replace("f8c8239 Fix #7 in v2 API", long_output.replace("\n", "\\n"), 1)
    setup.transcript("".join(lines), QUESTION_SESSION, slot)
    setup.put(7, "completed", session_id=QUESTION_SESSION, slot=0)
    monitor = setup.monitor()

    last_three = monitor.history(7, limit=3)
    assert last_three.truncated and len(last_three.messages) == 3 and last_three.message_count == 10
    cut = last_three.messages[1]
    assert cut.kind == "tool_result" and cut.text.startswith("line 0 ") and "more chars]" in cut.text
    assert len(cut.text) < 500 and "line 39" not in cut.text
    assert monitor.history(7, limit=3, full=True).messages[1].text == long_output
    assert len(monitor.history(7, limit=0).messages) == 10 and not monitor.history(7, limit=0).truncated


def test_oversize_line_counts_as_one_message_shown_as_a_placeholder(setup):
    slot = setup.slot(0)
    lines = setup.fixture("session-history.jsonl", slot).splitlines(keepends=True)
    huge = json.loads(next(line for line in lines if '"tool_result"' in line))
    huge["message"]["content"][0]["content"] = "y" * (MAX_LINE_BYTES + 100)
    huge["toolUseResult"] = {"stdout": "y" * 1000}
    at = next(i for i, line in enumerate(lines) if '"tool_result"' in line)
    lines[at] = json.dumps(huge) + "\n"
    setup.transcript("".join(lines), QUESTION_SESSION, slot)
    setup.put(7, "completed", session_id=QUESTION_SESSION, slot=0)
    history = setup.monitor().history(7)
    assert history.message_count == 10
    placeholder = history.messages[2]
    assert placeholder.role == "user" and re.fullmatch(r"\[entry of 4\.0 MB not shown\]", placeholder.text)
    assert placeholder.timestamp == "2026-11-24T18:06:00.034Z"
    assert history.messages[3].text.startswith("Before I change anything")


def test_lines_read_backwards(tmp_path):
    path = tmp_path / "f.jsonl"
    lines = [f"line-{i}-" + "z" * (i * 7 % 23) for i in range(200)]
    path.write_bytes(("\n".join(lines) + "\n" + '{"torn": ').encode())
    assert list(iter_lines_reversed(path, block=16)) == [line.encode() for line in reversed(lines)]
    some = list(iter_lines_reversed(path, budget=100, block=16))
    assert 0 < len(some) < 20 and some[0] == lines[-1].encode()
    path.write_bytes(b"x" * 100)  # one line still being written
    assert list(iter_lines_reversed(path, block=16)) == []
    path.write_bytes(b"first\n" + b"y" * 100 + b"\n")
    assert list(iter_lines_reversed(path, block=16)) == [b"y" * 100, b"first"]


def test_status_of_a_large_file_reads_only_its_end(setup):
    slot = setup.slot(0)
    lines = setup.fixture("session-history.jsonl", slot).splitlines(keepends=True)
    first, second = lines[:20], lines[20:]
    block = "".join(first)
    text = block * (STATUS_FULL_SCAN_BYTES // len(block.encode()) + 1) + "".join(second)
    setup.transcript(text, QUESTION_SESSION, slot)
    setup.put(7, "completed", session_id=QUESTION_SESSION, slot=0)
    status = setup.monitor().get_status(7)
    assert status.instance.message_count is None  # not counted: that would read the whole file
    assert status.instance.last_activity == "2026-11-24T18:06:01.565Z"
    assert [m.text for m in status.recent_messages][-1].startswith("Done: fixed issue #7")
    assert len(status.recent_messages) == 5

    setup.put(7, "completed", session_id=QUESTION_SESSION, slot=0, message_count=1234,
              last_activity="2026-11-24T18:06:01.565Z")
    assert setup.monitor().get_status(7).instance.message_count == 1234

    # history --limit reads the end of a large file too (over 16 MB): the last entries, the count unknown.
    setup.transcript(block * (4 * STATUS_FULL_SCAN_BYTES // len(block.encode()) + 1) + "".join(second),
                     QUESTION_SESSION, slot)
    history = setup.monitor().history(7, limit=3)
    assert history.message_count is None and history.truncated and len(history.messages) == 3
    assert history.messages[-1].text.startswith("Done: fixed issue #7")
    assert "earlier entries left out, not counted; the last 3 entries follow" in setup.monitor().render(history)
    whole = setup.monitor().history(7, limit=0)  # --limit 0: every entry, counted
    assert whole.message_count > 5000 and not whole.truncated


# --- processes ----------------------------------------------------------------------------------


def test_running_agent_is_seen_with_its_pid_then_lost_when_it_ends(setup, processes):
    slot = setup.slot(0)
    setup.transcript(setup.fixture("session-history.jsonl", slot), QUESTION_SESSION, slot)
    # Started as "claude", Python cannot tell its own sys.executable: name it for the tool child.
    agent = processes(slot, "import subprocess, time\n"
                            f"subprocess.Popen([{sys.executable!r}, '-c', 'import time; time.sleep(60)'])\n"
                            "time.sleep(60)")
    setup.put(7, "running", session_id=QUESTION_SESSION, slot=0, claude_pid=agent.pid,
              claude_create_time=created(agent))
    deadline = time.time() + 10
    while not psutil.Process(agent.pid).children() and time.time() < deadline:
        time.sleep(0.05)

    [instance] = setup.monitor().get_active_instances()
    assert (instance.issue_number, instance.pid, instance.status) == (7, agent.pid, "running")
    assert instance.process_state in ("sleeping", "running", "disk-sleep")  # the kernel's word: busy disks say D
    assert instance.memory_mb > 0 and instance.cpu_percent is not None and instance.runtime_seconds >= 0
    assert len(instance.children) == 1
    assert (instance.message_count, instance.cwd) == (10, str(setup.config.get_repo_path(0)))

    text = setup.cli("monitor", "--config", str(setup.config_file)).stdout
    assert f"    PID: {agent.pid}\n    Status: running\n" in text

    stop(agent)
    [instance] = setup.cli_json("--format", "json")["active_instances"]
    assert (instance["issue_number"], instance["status"], instance["pid"]) == (7, "lost", agent.pid)
    assert instance["process_state"] is None and instance["children"] == []


def test_reused_pid_is_lost(setup):
    """Our own pid is alive, but it is not the process the state recorded (another create time)."""
    setup.put(5, "running", slot=0, runner_pid=os.getpid(),
              runner_create_time=psutil.Process().create_time() - 1000)
    [instance] = setup.monitor().get_active_instances()
    assert instance.status == "lost"


def test_parked_and_pending_runs_are_not_lost(setup):
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait(timeout=30)
    # The agent that asked has exited, as it should: the run waits for a human, it is not lost.
    setup.put(3, "needs_input", slot=0, question="v1 or v2?", claude_pid=ended.pid, claude_create_time=1.0)
    setup.put(4, "waiting", not_before="2026-11-25T00:00:00+00:00")
    setup.put(6, "pending")  # claimed; its runner has no pid yet
    instances = setup.monitor().get_active_instances()
    assert {i.issue_number: (i.status, i.pid) for i in instances} == {
        3: ("needs_input", None), 4: ("waiting", None), 6: ("pending", None)}
    assert "    Question: v1 or v2?" in setup.cli("--config", str(setup.config_file)).stdout


def test_unknown_claude_in_a_slot_folder_is_reported(setup, processes):
    subfolder = setup.slot(1) / "sub.dir"
    subfolder.mkdir()
    stray = processes(subfolder)
    outside = processes(setup.root)  # a claude elsewhere is none of our business
    not_claude = processes(setup.slot(1), argv0="python-helper")
    known = processes(setup.slot(0))
    setup.put(7, "running", slot=0, claude_pid=known.pid, claude_create_time=created(known))

    instances = setup.monitor().get_active_instances()
    assert [(i.issue_number, i.status, i.pid) for i in instances] == [
        (7, "running", known.pid), (None, "unknown", stray.pid)]
    assert instances[1].slot == 1 and instances[1].cwd == str(subfolder)
    assert outside.pid not in {i.pid for i in instances} and not_claude.pid not in {i.pid for i in instances}

    stop(stray)
    assert [i.pid for i in setup.monitor().get_active_instances()] == [known.pid]


# --- the seed README's API and formats ---------------------------------------------------------


def completed_and_running(setup, processes):
    slot = setup.slot(0)
    setup.transcript(setup.fixture("session-history.jsonl", slot), QUESTION_SESSION, slot)
    setup.put(7, "completed", session_id=QUESTION_SESSION, slot=0, end_time="2026-11-24T18:06:02+00:00",
              cost_usd=0.025, num_turns=4, pr_url="https://github.com/owner/my.project/pull/12")
    setup.stream_log(8, setup.fixture("stream-success.jsonl", setup.slot(1)))
    agent = processes(setup.slot(1))
    setup.put(8, "running", session_id=SUCCESS_SESSION, slot=1, claude_pid=agent.pid,
              claude_create_time=created(agent))
    return agent


def test_seed_api_and_text_report(setup, processes):
    agent = completed_and_running(setup, processes)
    # As the seed README calls it, plus where this test's Claude keeps its transcripts.
    monitor = ClaudeMonitor(str(setup.folder), output_format="text", claude_config_dir=setup.claude_dir)
    assert [i.issue_number for i in monitor.get_active_instances()] == [8]
    assert [m.text for m in monitor.get_conversation_history(issue_number=7)][0] == "Fix issue #7"

    text = monitor.monitor_all().to_text()
    lines = text.splitlines()
    assert lines[:3] == ["Claude Code Instance Monitor Report", lines[1], "=" * 60]
    assert re.fullmatch(r"Generated: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", lines[1])
    assert lines[3:11] == ["Total Instances: 2", "Active: 1", "Completed: 1", "", "ACTIVE INSTANCES:", "-" * 40,
                           "  Issue #8:", f"    PID: {agent.pid}"]
    assert lines[11] == "    Status: running"
    assert re.fullmatch(r"    Runtime: \d+\.\ds", lines[12])
    assert lines[13] == "    Messages: 5"
    assert re.fullmatch(r"    Last Activity: (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d", lines[14])
    completed = lines[lines.index("COMPLETED INSTANCES:"):]
    assert completed[:5] == ["COMPLETED INSTANCES:", "-" * 40, "  Issue #7:", "    Status: completed",
                             "    Runtime: 12.0s"]
    assert "    Messages: 10" in completed and "    PR: https://github.com/owner/my.project/pull/12" in completed
    assert "    Cost: $0.0250" in completed


def test_a_followed_pull_request_shows_its_upkeep(setup):
    setup.put(7, "completed", end_time="2026-11-24T18:06:02+00:00", pr_number=12, following=True,
              pr_url="https://github.com/owner/my.project/pull/12",
              upkeep={"base": "trunk", "base_sha": "a" * 40, "mergeable": False, "behind_by": 3,
                      "conflict_base": "a" * 40, "conflict_rounds": 2, "asked_human": "a" * 40})
    setup.put(6, "completed", end_time="2026-11-24T18:05:02+00:00", pr_number=11, following=True)
    setup.put(5, "merged", end_time="2026-11-24T18:04:02+00:00", pr_number=10, upkeep={"mergeable": True})

    text = setup.monitor().monitor_all().to_text()

    assert ("    Upkeep: PR #12, conflicts with trunk, behind trunk by 3 commit(s), conflict fixes 2 of 2 for this"
            " base commit, a human is asked") in text.splitlines()
    assert "    Upkeep: PR #11, not looked at yet" in text.splitlines() and text.count("Upkeep:") == 2
    report = setup.cli_json("monitor", "--format", "json")
    upkeep = {i["issue_number"]: i["upkeep"] for i in report["completed_instances"]}
    assert upkeep[5] is None and upkeep[6]["mergeable"] is None
    assert {key: upkeep[7][key] for key in ("pr_number", "mergeable", "behind_by", "conflict_fixes_used",
                                             "max_conflict_fixes")} == {"pr_number": 12, "mergeable": False,
                                                                        "behind_by": 3, "conflict_fixes_used": 2,
                                                                        "max_conflict_fixes": 2}


def test_config_is_found_from_a_folder_a_file_a_repo_or_a_config_object(setup, tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts" / "issue-orchestrator").mkdir(parents=True)
    (repo / "scripts" / "issue-orchestrator" / "config.json").write_text(setup.config_file.read_text())
    for path in (setup.folder, setup.config_file, repo, setup.config):
        assert ClaudeMonitor(path).config.repo_name == "my.project"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        ClaudeMonitor(empty)
    with pytest.raises(OrchestratorError, match="output format"):
        ClaudeMonitor(setup.config, output_format="xml")


# --- the command line ----------------------------------------------------------------------------


def test_format_json_before_and_after_the_command(setup, processes):
    completed_and_running(setup, processes)
    for args in (("--format", "json"), ("monitor", "--format", "json"), ("--format", "json", "monitor")):
        report = setup.cli_json(*args)
        assert REPORT_KEYS <= set(report)
    assert setup.cli_json("--format", "json")["completed_count"] == 0  # default: active work only
    report = setup.cli_json("monitor", "--format", "json")
    assert (report["total_instances"], report["active_count"], report["completed_count"]) == (2, 1, 1)
    running, done = report["active_instances"][0], report["completed_instances"][0]
    assert (running["issue_number"], running["status"], running["message_count"]) == (8, "running", 5)
    assert (done["issue_number"], done["runtime_seconds"], done["cost_usd"]) == (7, 12.0, 0.025)
    assert done["pr_url"].endswith("/pull/12") and done["pid"] is None


def test_default_shows_recent_runs_when_nothing_is_active(setup):
    slot = setup.slot(0)
    setup.transcript(setup.fixture("session-history.jsonl", slot), QUESTION_SESSION, slot)
    for number in range(1, 8):
        setup.put(number, "completed", session_id=QUESTION_SESSION, slot=0,
                  end_time=f"2026-11-24T18:1{number}:00+00:00")
    report = setup.cli_json("--format", "json")
    assert report["active_count"] == 0
    assert [i["issue_number"] for i in report["completed_instances"]] == [7, 6, 5, 4, 3]


def test_status_and_history_commands(setup, processes):
    agent = completed_and_running(setup, processes)
    config = ("--config", str(setup.config_file))
    status = setup.cli("status", "--issue", "8", *config).stdout
    assert status.startswith("  Issue #8:\n") and f"PID: {agent.pid}" in status and "Recent activity:" in status
    data = setup.cli_json("status", "--issue", "7", "--format", "json")
    assert (data["status"], data["message_count"], data["source"]) == ("completed", 10, "transcript")
    assert data["recent_messages"][-1]["text"].startswith("Done: fixed issue #7")

    history = setup.cli("history", "--issue", "7", "--limit", "2", *config)
    assert history.returncode == 0
    assert "10 messages; the last 2 entries follow" in history.stdout
    assert history.stdout.rstrip().endswith("assistant: Done: fixed issue #7 in the v2 API as you asked,"
                                            " and committed it.")
    data = setup.cli_json("history", "--issue", "7", "--format", "json", "--full")
    assert data["message_count"] == 10 and len(data["messages"]) == 10 and data["source"] == "transcript"


def test_errors_are_one_line_with_exit_codes(setup, tmp_path):
    config = ("--config", str(setup.config_file))
    missing = setup.cli("monitor", *config)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: No state file at ") and missing.stderr.count("\n") == 1

    setup.put(7, "preparing", slot=0)
    for args in (("status", "--issue", "99"), ("history", "--issue", "99"), ("follow", "--issue", "99")):
        unknown = setup.cli(*args, *config)
        assert unknown.returncode == 1, args
        assert unknown.stderr == (f"error: Issue #99 is not in the state file {setup.config.state_file}"
                                  " (known: owner/my.project#7).\n")
    nothing = setup.cli("history", "--issue", "7", *config)
    assert nothing.returncode == 1 and "no conversation found" in nothing.stderr

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"github": {"repo": "nope", "base_repo_path": "x", "max_concurrent": 0,
                                          "token": "t"}}))
    bad.chmod(0o600)  # else a warning about the readable token joins the errors
    broken = setup.cli("--config", str(bad))
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert broken.stderr.splitlines() == [
        "config error: github.repo: must be \"owner/name\", got 'nope'",
        "config error: github.max_concurrent: must be an integer >= 1, got 0"]
    usage = setup.cli("status", *config)  # --issue is required
    assert usage.returncode == 2 and "--issue" in usage.stderr


def test_config_from_environment(setup):
    setup.put(7, "completed", slot=0)
    env = {**setup.env, "ORCHESTRATOR_CONFIG": str(setup.config_file)}
    done = setup.cli("monitor", "--format", "json", env=env)
    assert done.returncode == 0 and json.loads(done.stdout)["completed_count"] == 1


class LineReader:
    """Lines of a process's stdout as they come, with a timeout per line."""

    def __init__(self, stream):
        self.lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def until(self, text: str, timeout: float = 20) -> list:
        seen = []
        deadline = time.time() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.time()))
            assert line is not None, f"output ended before {text!r}: {seen}"
            seen.append(line)
            if text in line:
                return seen


def test_follow_prints_new_activity_and_ends_with_the_run(setup, processes):
    slot = setup.slot(0)
    lines = setup.fixture("session-history.jsonl", slot).splitlines(keepends=True)
    split = next(i for i, line in enumerate(lines) if "Put it in the v2 API." in line and '"type":"user"' in line)
    transcript = setup.transcript("".join(lines[:split]), QUESTION_SESSION, slot)
    agent = processes(slot)
    setup.put(7, "running", session_id=QUESTION_SESSION, slot=0, claude_pid=agent.pid,
              claude_create_time=created(agent))

    follow = subprocess.Popen([sys.executable, "claude_monitor.py", "follow", "--issue", "7",
                               "--config", str(setup.config_file)], cwd=PROJECT, env=setup.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        output = LineReader(follow.stdout)
        backlog = output.until("Before I change anything")
        assert "user: Fix issue #7" in backlog[0]
        with open(transcript, "a") as handle:
            handle.write(lines[split])
            handle.flush()
            live = output.until("user: Put it in the v2 API.")
            handle.writelines(lines[split + 1:])
        live += output.until("Done: fixed issue #7")
        assert len(live) == 6
        stop(agent)
        setup.state.update(7, status="completed")
        rest = output.until("run ended (completed)")
        assert follow.wait(timeout=20) == 0 and follow.stderr.read() == ""
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    everything = "".join(backlog + live + rest)
    assert everything.count("user: Put it in the v2 API.") == 1 and everything.count("result: ") == 3


def test_follow_ends_when_the_agent_is_lost_and_quietly_on_ctrl_c(setup, processes):
    slot = setup.slot(0)
    setup.stream_log(8, setup.fixture("stream-success.jsonl", slot))
    agent = processes(slot)
    setup.put(8, "running", session_id=SUCCESS_SESSION, slot=0, claude_pid=agent.pid,
              claude_create_time=created(agent))
    command = [sys.executable, "claude_monitor.py", "follow", "--issue", "8", "--config", str(setup.config_file)]

    interrupted = subprocess.Popen(command, cwd=PROJECT, env=setup.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
    lost = subprocess.Popen(command + ["--format", "json"], cwd=PROJECT, env=setup.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        LineReader(interrupted.stdout).until("Done: added fix_issue_7.txt")
        interrupted.send_signal(signal.SIGINT)
        assert interrupted.wait(timeout=20) == 130 and interrupted.stderr.read() == ""

        output = LineReader(lost.stdout)
        output.until("Done: added fix_issue_7.txt")
        stop(agent)
        last = json.loads(output.until("run ended")[-1])
        assert (last["role"], last["kind"]) == ("system", "status")
        assert last["text"] == f"Issue owner/my.project#8: run ended (lost: process {agent.pid} is gone)."
        assert lost.wait(timeout=20) == 0
    finally:
        for follower in (interrupted, lost):
            if follower.poll() is None:
                follower.kill()
                follower.wait()

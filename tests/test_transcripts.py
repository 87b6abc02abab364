"""Reading the CLI's JSONL files: a stream log after the fact, line by line with flat memory."""

import json
import subprocess
import sys
from pathlib import Path

from claude_standin import FIXTURES
from lib.outcomes import classify
from lib.transcripts import summarize_stream

PROJECT = Path(__file__).resolve().parent.parent
QUESTION_SESSION = "d4e36535-7fb3-4ea9-a3c8-4018f155a1be"


def verdict(outcome) -> str:
    return "session_missing" if outcome.session_missing else outcome.status.value


def concatenate(tmp_path: Path, *fixtures: str) -> Path:
    path = tmp_path / "1.stream.jsonl"
    path.write_bytes(b"".join((FIXTURES / name).read_bytes() for name in fixtures))
    return path


def test_summarize_two_invocations_returns_the_last_result(tmp_path):
    path = concatenate(tmp_path, "stream-question.jsonl", "stream-resumed.jsonl")
    summary = summarize_stream(path)
    resumed = json.loads((FIXTURES / "stream-resumed.jsonl").read_text().splitlines()[-1])

    assert summary.invocations == 2
    assert summary.session_id == QUESTION_SESSION
    assert summary.result == resumed
    assert summary.last_text == "Done: fixed issue #7 in the v2 API as you asked, and committed it."
    assert summary.message_count == 3 + 5
    assert summary.last_activity.startswith("2026-11-24T18:06:01")
    outcome = classify(summary.result, last_text=summary.last_text)
    assert outcome.status == "completed" and outcome.cost_usd == 0.025


def test_summarize_a_last_invocation_that_never_finished(tmp_path):
    summary = summarize_stream(concatenate(tmp_path, "stream-success.jsonl", "stream-sigterm-during-tool.jsonl"))

    assert summary.invocations == 2
    assert summary.result is None
    assert classify(summary.result, last_text=summary.last_text).reason == "Claude Code ended without a result"


def test_summarize_a_failed_resume_after_a_question(tmp_path):
    summary = summarize_stream(concatenate(tmp_path, "stream-question.jsonl", "stream-error-resume-missing.jsonl"))

    assert summary.invocations == 2
    assert summary.result["subtype"] == "error_during_execution"
    assert verdict(classify(summary.result)) == "session_missing"
    assert summary.last_text is None  # the failed resume said nothing


def test_summarize_a_missing_file(tmp_path):
    summary = summarize_stream(tmp_path / "nothing.jsonl")
    assert summary.result is None and summary.invocations == 0 and summary.session_id is None


def test_summarize_stream_memory_stays_flat_on_a_huge_line(tmp_path):
    path = tmp_path / "huge.stream.jsonl"
    lines = (FIXTURES / "stream-success.jsonl").read_bytes().splitlines(keepends=True)
    with open(path, "wb") as out:
        out.write(lines[0])
        out.write(b'{"type":"assistant","message":{"id":"msg_big","content":[{"type":"text","text":"')
        for _ in range(40):
            out.write(b"y" * (1024 * 1024))
        out.write(b'"}]}}\n')
        out.writelines(lines[1:])
    code = (
        "import resource, sys\n"
        "from lib.transcripts import summarize_stream\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "summary = summarize_stream(sys.argv[1])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(after - before, summary.result['subtype'], summary.message_count)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=PROJECT, capture_output=True, text=True,
                          timeout=60, check=True)
    grown_kib, subtype, count = done.stdout.split()
    assert subtype == "success" and int(count) == 6
    assert int(grown_kib) < 30 * 1024  # a 40 MB line is read in bounded chunks

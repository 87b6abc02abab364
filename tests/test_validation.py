"""The validation gate: the repository's checks run before work is called done, and failures go
back to the same session. Unit tests of the checks runner, then real ticks (slow)."""

import json
import re
import time

import psutil
import pytest

from claude_standin import alive, scenario
from git_fixtures import commit_to
from lib.comments import pr_body
from lib.config import Config
from lib.models import ConfigError, IssueStatus
from lib.outcomes import Outcome
from lib.figures import checks_line
from lib.validation import fix_prompt, is_test_file, run_validation

READY, WORKING, COMPLETED, FAILED = "ready-for-claude", "claude-working", "claude-completed", "claude-failed"


def check(name, run, **extra):
    return {"name": name, "run": run, **extra}


# ------------------------------------------------------------------------------------------------
# The checks runner
# ------------------------------------------------------------------------------------------------


def test_each_check_runs_and_a_failure_says_how_with_the_end_of_its_output(tmp_path):
    log = tmp_path / "1.validate-0.log"
    results = run_validation([check("lint", "echo all good"),
                              check("tests", "for i in $(seq 1 100); do echo line $i; done; echo 'FAILED test_x'"
                                             " >&2; exit 3")],
                             cwd=tmp_path, log_path=log, env={"PATH": "/usr/bin:/bin"}, grace_seconds=1)

    lint, tests = results
    assert (lint.passed, lint.reason, lint.tail) == (True, None, "")
    assert (tests.passed, tests.reason) == (False, "exit status 3")
    assert tests.tail.endswith("line 100\nFAILED test_x") and "line 50" not in tests.tail
    assert "--- tests: for i in" in log.read_text()


@pytest.mark.slow  # waits out a real timeout
def test_a_hanging_check_is_ended_at_its_timeout_with_its_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    [result] = run_validation([check("slow", f"bash -c 'trap \"\" TERM; echo $$ > {pidfile}; sleep 300' & sleep 300",
                                     timeout_seconds=1)],
                              cwd=tmp_path, log_path=tmp_path / "v.log", env={"PATH": "/usr/bin:/bin"}, grace_seconds=0.5)

    assert result.passed is False and result.reason == "timed out after 1 s"
    assert time.monotonic() - started < 30
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_a_check_that_cannot_start_fails_with_a_reason(tmp_path):
    [result] = run_validation([check("tests", "true")], cwd=tmp_path / "gone", log_path=tmp_path / "v.log",
                              env={"PATH": "/usr/bin:/bin"}, grace_seconds=1)
    assert result.passed is False and result.reason.startswith("could not start")


def test_the_fix_prompt_names_the_command_its_failure_and_its_output_without_hidden_text():
    failed = [{"name": "tests", "reason": "exit status 1", "tail": "E   assert 1 == 2"}]
    prompt = fix_prompt(failed, {"tests": "./venv/bin/pytest -q"}, 1, 2)

    assert "fix round 1 of 2" in prompt and "not by weakening or skipping the checks" in prompt
    assert "Check 'tests': `./venv/bin/pytest -q` failed: exit status 1." in prompt
    assert "E   assert 1 == 2" in prompt and "NEEDS_INPUT:" in prompt


def test_the_summary_and_the_pull_request_show_each_check_and_the_tests_touched():
    checks = [{"name": "tests", "passed": True, "duration_seconds": 12.4, "reason": None, "tail": ""},
              {"name": "lint", "passed": False, "duration_seconds": 0.8, "reason": "exit status 1",
               "tail": "x.py:1: E501 <script>"}]
    assert checks_line(checks) == "✅ tests 12.4 s · ❌ lint 0.8 s"
    body = pr_body(7, Outcome(status=IssueStatus.FAILED, summary="Tried.", checks=checks), 30,
                   test_files=["tests/test_x.py"])
    assert body.startswith("⚠️ These checks still fail: lint.\n\n`lint`: exit status 1\n> x.py:1: E501 &lt;script&gt;")
    assert "Checks: ✅ tests 12.4 s · ❌ lint 0.8 s" in body and "Test files this change touches: `tests/test_x.py`" in body
    assert [name for name in ("tests/test_a.py", "src/a.py", "web/a.spec.ts", "pkg/a_test.go", "test_b.py")
            if is_test_file(name)] == ["tests/test_a.py", "web/a.spec.ts", "pkg/a_test.go", "test_b.py"]


@pytest.mark.parametrize("validate, error", [
    ([{"name": "tests"}], 'validate: [0] must be an object with a "name" and a "run" command, got {"name": "tests"}'),
    ([{"name": "a", "run": "x"}, {"name": "a", "run": "y"}], "validate: must give each check its own name, got a, a"),
    ([{"name": "a", "run": "x", "timeout": 5}], "validate: [0] has unknown keys ['timeout'] (name, run and"
                                                " timeout_seconds are known)"),
    ("pytest", 'validate: must be a list of {"name", "run"} objects, got \'pytest\''),
])
def test_a_validate_list_that_cannot_work_is_one_config_error(validate, error):
    with pytest.raises(ConfigError) as raised:
        Config.from_dict({"github": {"repo": "a/b", "base_repo_path": "/c", "token": "ghp_123456"},
                          "validate": validate}, "/tmp")
    assert raised.value.errors == [error]


def test_a_repository_may_have_checks_of_its_own():
    config = Config.from_dict({"github": {"base_repo_path": "/c", "token": "ghp_123456"},
                               "validate": [check("tests", "make test")],
                               "repositories": [{"repo": "a/b"}, {"repo": "a/c", "validate": [check("lint", "ruff .")]}]},
                              "/tmp")
    assert [r.validate for r in config.repositories] == [[check("tests", "make test")], [check("lint", "ruff .")]]
    assert config.max_fix_rounds == 2 and config.pull_request_on_failed_checks == "draft"


# ------------------------------------------------------------------------------------------------
# Real ticks
# ------------------------------------------------------------------------------------------------


def test_passing_checks_open_the_pull_request_with_each_check_listed(world):
    world.write_config(validate=[check("tests", "test -f fix_issue_1.txt"), check("lint", "true")])
    number = world.add_issue()

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "completed" and world.labels(number) == [COMPLETED]
    [pull] = world.github.pulls()
    assert re.search(r"Checks: ✅ tests \d+\.\d s · ✅ lint \d+\.\d s", pull["body"])
    assert "Test files this change touches: none" in pull["body"]
    assert re.search(r"Checks: ✅ tests \d+\.\d s · ✅ lint", world.comments(number)[-1])
    assert len(world.standin.invocations()) == 1 and entry["validation_round"] == 0


def test_a_check_failing_once_goes_back_to_the_same_session_and_then_passes(world):
    world.write_config(validate=[check("tests", "test -f checks_fix_1.txt || { echo 'MISSING: checks_fix_1.txt';"
                                                " exit 4; }")])
    number = world.add_issue()

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "completed", entry
    first, fix = world.standin.invocations()
    assert fix["resume"] and fix["session_id"] == first["session_id"]
    assert "test -f checks_fix_1.txt" in fix["prompt"] and "exit status 4" in fix["prompt"]
    assert "MISSING: checks_fix_1.txt" in fix["prompt"]
    assert [i["kind"] for i in entry["invocations"]] == ["run", "fix-1"]
    assert entry["num_turns"] == sum(i["num_turns"] for i in entry["invocations"])
    assert entry["cost_usd"] == entry["invocations"][-1]["cost_usd"]  # the CLI's total is cumulative
    assert world.origin_file(f"issue-{number}", "checks_fix_1.txt") is not None
    [pull] = world.github.pulls()
    assert "✅ tests" in pull["body"] and pull["draft"]
    logs = sorted(p.name for p in (world.log_dir / f"issue-{number}").glob("1.validate-*.log"))
    assert logs == ["1.validate-0.log", "1.validate-1.log"]
    assert "MISSING" in (world.log_dir / f"issue-{number}" / "1.validate-0.log").read_text()


def test_checks_failing_every_round_leave_a_draft_that_says_which_and_the_issue_failed(world):
    world.write_config(validate=[check("lint", "echo 'E501 line too long'; exit 1"), check("tests", "true")],
                       max_fix_rounds=1)
    number = world.add_issue()

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "failed" and world.labels(number) == [FAILED]
    assert entry["error"] == "checks still fail after 1 fix round(s): lint"
    [pull] = world.github.pulls()
    assert pull["draft"] and pull["body"].startswith("⚠️ These checks still fail: lint.")
    assert "E501 line too long" in pull["body"]
    assert world.origin_file(f"issue-{number}", "checks_fix_1.txt") is not None  # nothing lost
    comment = world.comments(number)[-1]
    assert "could not finish this issue: checks still fail after 1 fix round(s): lint" in comment
    assert "E501 line too long" in comment and len(world.standin.invocations()) == 2


def test_a_fix_round_gets_what_is_left_of_the_budget(world):
    world.write_config(validate=[check("lint", "false")], max_fix_rounds=1, claude={"max_budget_usd": 0.05})
    number = world.add_issue()

    world.tick()

    first, fix = world.standin.invocations()
    spent = world.entry(number)["invocations"][0]["cost_usd"]
    assert float(first["argv"][first["argv"].index("--max-budget-usd") + 1]) == 0.05
    assert float(fix["argv"][fix["argv"].index("--max-budget-usd") + 1]) == pytest.approx(0.05 - spent)


def test_no_pull_request_for_failing_checks_when_configured(world):
    world.write_config(validate=[check("lint", "false")], max_fix_rounds=0, pull_request={"on_failed_checks": "none"})
    number = world.add_issue()

    world.tick()

    assert world.entry(number)["status"] == "failed" and world.github.pulls() == []
    assert world.origin_file(f"issue-{number}", f"fix_issue_{number}.txt") is not None  # still pushed


def test_a_runner_killed_during_validation_is_finalized_and_leaves_no_check_behind(world):
    marker = world.standin.root / "validated-once"  # where the check's sandbox may write
    world.write_config(validate=[check("tests", f"[ -f {marker} ] || {{ touch {marker}; sleep 300; }}")])
    number = world.add_issue()
    world.tick(wait=False)
    world.wait_for(lambda: any(p.info["name"] == "sleep" for p in world.leftovers())
                   and world.entry(number).get("status") == "validating", what="the check")
    [check_pid] = [p.pid for p in world.leftovers() if p.info["name"] == "sleep"]

    psutil.Process(world.entry(number)["runner_pid"]).kill()
    world.wait_for(lambda: not alive(world.entry(number)["runner_pid"]), what="the runner to die")
    world.tick()

    world.wait_for(lambda: not alive(check_pid), timeout=10, what="the orphaned check to be ended")
    assert world.entry(number)["status"] == "completed" and world.labels(number) == [COMPLETED]
    assert len(world.standin.invocations()) == 1


def test_checks_come_from_the_orchestrators_config_never_from_the_repository(world):
    commit_to(world.origin, "trunk", {"config.json": json.dumps({"validate": []}),
                                      ".orchestrator/config.json": json.dumps({"validate": []})}, "Try to skip checks")
    world.write_config(validate=[check("tests", "exit 9")], max_fix_rounds=0)
    number = world.add_issue()

    world.tick()

    assert world.entry(number)["status"] == "failed"
    assert world.entry(number)["checks"][0]["reason"] == "exit status 9"


def test_a_question_in_a_fix_round_goes_through_the_question_flow(world):
    # The check's output reaches the fix prompt, and the stand-in takes a scenario from its prompt.
    world.write_config(validate=[check("tests", f"echo '{scenario('question')}'; test -f checks_fix_1.txt")])
    number = world.add_issue()

    world.tick()

    entry = world.entry(number)
    assert entry["status"] == "needs_input" and entry["validation_round"] == 1
    assert world.labels(number) == ["claude-needs-input", WORKING]
    assert "needs an answer" in world.comments(number)[-1]

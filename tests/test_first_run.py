"""The first five minutes: --check finds every problem at once, --init writes a working config,
--cron-line and --systemd say how to run it, operator commands, and the sharp edges (gh's host,
the requeue's order)."""

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from claude_standin import STANDIN, scenario
from github_emulator import REPO, TOKEN, GitHubEmulator
from lib.config import Config

PROJECT = Path(__file__).resolve().parent.parent
EXAMPLE = PROJECT / "config.example.json"
READY, WORKING, COMPLETED, FAILED = "ready-for-claude", "claude-working", "claude-completed", "claude-failed"


def clean_env(**extra):
    """No token anywhere, no gh: a newcomer's shell."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("GITHUB_TOKEN", "GH_TOKEN", "TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN")}
    env["PATH"] = f"{STANDIN.parent}:/usr/bin:/bin"  # the stand-in claude, git; and no gh
    env.update(extra)
    return env


def orchestrator(*args, env=None, cwd=None, input=None):
    return subprocess.run([sys.executable, str(PROJECT / "run_orchestrator.py"), *args], capture_output=True,
                          text=True, timeout=120, env=env or clean_env(), cwd=cwd or PROJECT, input=input)


@pytest.fixture
def emulator():
    with GitHubEmulator() as github:
        github.tokens.add(TOKEN)
        github.add_repo(REPO, default_branch="trunk")
        github.set_role("maintainer", "maintain")
        yield github


# ------------------------------------------------------------------------------------------------
# --check
# ------------------------------------------------------------------------------------------------


def test_check_on_the_untouched_example_names_every_placeholder_and_the_missing_token_at_once(tmp_path):
    config = tmp_path / "config.json"
    shutil.copy(EXAMPLE, config)

    done = orchestrator("--check", "--config", str(config))

    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "FAIL  config: github.repo: still the example's placeholder 'owner/repository'; set it to" \
                       " the repository to work on (owner/name)"
    assert lines[1].startswith("FAIL  config: github.base_repo_path: still the example's placeholder")
    assert "FAIL  github.token: no GitHub token: set github.token or GITHUB_TOKEN" in done.stdout
    assert "skip  GitHub: the config has mistakes (above)" in done.stdout
    assert "  ok  git: " in done.stdout and "  ok  claude: " in done.stdout  # still checked
    assert lines[-1] == "3 check(s) failed."
    assert "Traceback" not in done.stdout + done.stderr


def test_check_with_a_missing_token_runs_every_check_that_does_not_need_github(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"github": {"repo": REPO, "base_repo_path": str(tmp_path / "slots")},
                                  "claude": {"executable": str(STANDIN)}}))

    done = orchestrator("--check", "--config", str(config))

    assert done.returncode == 2
    assert done.stdout.count("FAIL") == 1 and "FAIL  github.token: no GitHub token" in done.stdout
    assert "skip  GitHub: no GitHub token (above)" in done.stdout
    for item in ("config", "git", "claude", "base_repo_path", "state folder", "log_dir", "state file"):
        assert f"  ok  {item}: " in done.stdout, item


def test_a_tick_refuses_the_examples_placeholders_in_one_line_each(tmp_path):
    config = tmp_path / "config.json"
    shutil.copy(EXAMPLE, config)

    done = orchestrator("--config", str(config), env=clean_env(GITHUB_TOKEN="ghp_x1234567"))

    assert done.returncode == 2
    assert [line.split(":")[1].strip() for line in done.stderr.splitlines()] == ["github.repo", "github.base_repo_path"]


# ------------------------------------------------------------------------------------------------
# --init
# ------------------------------------------------------------------------------------------------


def init(tmp_path, emulator, *args, env=None):
    return orchestrator("--init", "--config", str(tmp_path / "config.json"), "--api-url", emulator.url, *args,
                        env=env or clean_env(GITHUB_TOKEN=TOKEN))


def test_init_writes_a_config_that_passes_check(tmp_path, emulator):
    done = init(tmp_path, emulator, "--repo", REPO, "--base-repo-path", str(tmp_path / "slots"))

    assert done.returncode == 0, done.stdout + done.stderr
    config = tmp_path / "config.json"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    data = json.loads(config.read_text())
    assert data["github"]["repo"] == REPO and data["github"]["token"] == TOKEN
    assert f"  ok  {REPO}: the token ($GITHUB_TOKEN) can push to it" in done.stdout
    assert done.stdout.rstrip().endswith("All checks passed.")
    assert TOKEN not in done.stdout + done.stderr
    assert Config(config, env={}).repositories[0].base_repo_path == tmp_path / "slots"


def test_init_can_leave_the_token_out_and_serve_several_repositories(tmp_path, emulator):
    emulator.add_repo("acme/api", default_branch="main")

    done = init(tmp_path, emulator, "--repo", REPO, "--repo", "acme/api", "--base-repo-path", "slots",
                "--no-store-token")

    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((tmp_path / "config.json").read_text())
    assert "token" not in data["github"] and "repo" not in data["github"]
    assert [entry["repo"] for entry in data["repositories"]] == [REPO, "acme/api"]
    assert "not stored: each tick takes it from $GITHUB_TOKEN" in done.stdout


def test_init_never_overwrites_an_edited_config_but_replaces_an_untouched_copy(tmp_path, emulator):
    config = tmp_path / "config.json"
    shutil.copy(EXAMPLE, config)
    assert init(tmp_path, emulator, "--repo", REPO, "--base-repo-path", "slots").returncode == 0

    edited = config.read_text()
    again = init(tmp_path, emulator, "--repo", "someone/else", "--base-repo-path", "slots")

    assert again.returncode == 2
    assert again.stderr.strip() == f"error: {config} exists and is not the untouched example; --init --force replaces it"
    assert config.read_text() == edited
    forced = init(tmp_path, emulator, "--repo", REPO, "--base-repo-path", "other", "--force")
    assert forced.returncode == 0 and json.loads(config.read_text())["github"]["base_repo_path"].endswith("other")


@pytest.mark.parametrize("args, env, words", [
    (["--repo", "acme/missing", "--base-repo-path", "slots"], None, "acme/missing was not found"),
    (["--repo", "acme/readonly", "--base-repo-path", "slots"], None,
     "the token cannot push to acme/readonly (GitHub says permissions.push is not true)"),
    (["--repo", "not-a-repo", "--base-repo-path", "slots"], None, "--repo not-a-repo: must be \"owner/name\""),
    (["--base-repo-path", "slots"], None, "--init needs --repo OWNER/NAME and --base-repo-path DIR"),
    (["--repo", REPO, "--base-repo-path", "slots"], {}, "github.token: no GitHub token: export GITHUB_TOKEN"),
    (["--repo", REPO, "--base-repo-path", "slots", "--telegram-chat-id", "42"], None,
     "--telegram-chat-id needs $TELEGRAM_BOT_TOKEN in the environment"),
])
def test_init_says_in_a_sentence_why_it_wrote_nothing(tmp_path, emulator, args, env, words):
    emulator.add_repo("acme/readonly", push=False)
    done = init(tmp_path, emulator, *args, env=clean_env() if env == {} else None)

    assert done.returncode == 2, done.stdout + done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "config.json").exists()


def test_init_asks_on_a_terminal(tmp_path, emulator):
    """A real pseudo-terminal: the questions are asked, the answers make the config."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: run --init with the pty as its terminal
        os.execve(sys.executable, [sys.executable, str(PROJECT / "run_orchestrator.py"), "--init", "--config",
                                   str(tmp_path / "config.json"), "--api-url", emulator.url],
                  clean_env(GITHUB_TOKEN=TOKEN))
    seen = b""
    answers = [(b"Repository", f"{REPO}\n".encode()), (b"Folder", f"{tmp_path / 'slots'}\n".encode())]
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        try:
            chunk = os.read(fd, 4096) if ready else b""
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        if answers and answers[0][0] in seen:
            os.write(fd, answers.pop(0)[1])
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    assert json.loads((tmp_path / "config.json").read_text())["github"]["repo"] == REPO


# ------------------------------------------------------------------------------------------------
# --cron-line and --systemd
# ------------------------------------------------------------------------------------------------


def working_config(tmp_path, emulator) -> Path:
    config = tmp_path / "install dir" / "config.json"  # a space: the line must quote
    config.parent.mkdir()
    config.write_text(json.dumps({"github": {"token": TOKEN, "repo": REPO, "base_repo_path": str(tmp_path / "slots"),
                                             "api_url": emulator.url}, "claude": {"executable": "claude"}}))
    config.chmod(0o600)
    return config


def test_the_cron_line_run_as_cron_runs_it_makes_one_tick(tmp_path, emulator):
    config = working_config(tmp_path, emulator)
    printed = orchestrator("--cron-line", "--config", str(config))
    assert printed.returncode == 0, printed.stderr
    [line] = printed.stdout.splitlines()

    fields = line.split(None, 5)
    assert fields[:5] == ["*/5", "*", "*", "*", "*"]
    command = fields[5]
    # cron's rules: the command ends at the first unescaped %, \% is a %; it runs under /bin/sh -c with
    # an environment of only HOME, LOGNAME, SHELL and PATH=/usr/bin:/bin.
    command = command.split("%")[0] if "%" in command.replace("\\%", "") else command.replace("\\%", "%")
    cron_env = {"HOME": str(tmp_path), "LOGNAME": "root", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["/bin/sh", "-c", command], env=cron_env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    log = (config.parent / "orchestrator.log").read_text()
    assert "Tick done: 0 launched, 0 errors" in log
    assert str(STANDIN.parent) in shlex.split(command)[0]  # the PATH holds the folder claude is found in now
    assert any(r.path.startswith(f"/repos/{REPO}/issues") for r in emulator.requests)


def test_the_systemd_units_are_filled_in_for_this_install(tmp_path, emulator):
    config = working_config(tmp_path, emulator)
    printed = orchestrator("--systemd", "--config", str(config))

    assert printed.returncode == 0, printed.stderr
    service_text, timer_text = printed.stdout.split("# /etc/systemd/system/issue-orchestrator.timer\n")
    service, timer = configparser.ConfigParser(interpolation=None), configparser.ConfigParser(interpolation=None)
    service.optionxform = timer.optionxform = str
    service.read_string(service_text)
    timer.read_string(timer_text)
    assert service["Service"]["Type"] == "oneshot" and service["Service"]["KillMode"] == "process"
    exec_start = shlex.split(service["Service"]["ExecStart"])
    assert exec_start == [sys.executable, str(PROJECT / "run_orchestrator.py"), "--config", str(config)]
    assert str(STANDIN.parent) in service["Service"]["Environment"]
    assert timer["Timer"]["OnCalendar"] == "*:0/5"


# ------------------------------------------------------------------------------------------------
# Sharp edges
# ------------------------------------------------------------------------------------------------


def test_gh_is_asked_for_the_token_of_the_enterprise_host(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/gh-calls\n"
                                "[ \"$4\" = ghe.example.com ] && echo ghp_enterpriseToken123 || exit 1\n")
    (bin_dir / "gh").chmod(0o755)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"github": {"repo": REPO, "base_repo_path": "slots",
                                             "api_url": "https://ghe.example.com/api/v3"}}))
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}:{old_path}"
    try:
        loaded = Config(config, env={})
    finally:
        os.environ["PATH"] = old_path
    assert loaded.github_token == "ghp_enterpriseToken123"
    assert (tmp_path / "gh-calls").read_text() == "auth token --hostname ghe.example.com\n"


@pytest.mark.parametrize("api_url, host", [("http://127.0.0.1:8080/api/v3", "127.0.0.1:8080"),
                                            ("https://[::1]:8443/api/v3", "[::1]:8443"),
                                            ("https://api.github.com", "github.com")])
def test_gh_is_asked_for_the_host_as_it_stores_it_with_its_port(tmp_path, monkeypatch, api_url, host):
    """`gh auth login --hostname 127.0.0.1:8080` stores the host with its port: asked without, gh finds nothing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> {tmp_path}/gh-calls\n"
                                f"[ \"$4\" = '{host}' ] && echo ghp_loggedInToken456 || exit 1\n")
    (bin_dir / "gh").chmod(0o755)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"github": {"repo": REPO, "base_repo_path": "slots", "api_url": api_url}}))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    assert Config(config, env={}).github_token == "ghp_loggedInToken456"
    assert (tmp_path / "gh-calls").read_text() == f"auth token --hostname {host}\n"


def test_a_requeue_that_dies_between_its_two_writes_is_finished_by_the_next_tick(world):
    number = world.add_issue("Overloaded", scenario("overloaded-529"))

    world.tick(env={"ORCHESTRATOR_FAULT": "after-requeue-state"})

    entry = world.entry(number)
    assert entry["status"] == "waiting"  # the state first: the slot is free, the issue waits
    assert WORKING in world.labels(number)  # the runner died before the labels
    world.tick()
    assert world.labels(number) == [READY]


# ------------------------------------------------------------------------------------------------
# Operator commands
# ------------------------------------------------------------------------------------------------


def test_pause_and_unpause_launches(world):
    number = world.add_issue()

    paused = world.tick("--pause", "2h", wait=False)
    assert paused.returncode == 0 and paused.stdout.startswith("Launches paused until ")
    tick = world.tick()
    assert "1 queued" in tick.stdout and world.entry(number) == {}
    assert world.tick("--pause", wait=False).stdout.strip().startswith("Launches paused until --unpause")
    unpaused = world.tick("--unpause", wait=False)
    assert unpaused.stdout.strip() == "Launches resumed: the next tick claims what waits."
    world.tick()
    assert world.entry(number)["status"] == "completed"
    assert world.tick("--unpause", wait=False).stdout.strip() == "Launches were not paused."


def test_cancel_retry_and_free_a_slot(world):
    world.write_config(claude={"max_retries": 0})
    number = world.add_issue("Hangs", scenario("hang"))
    world.tick(wait=False)
    world.wait_for(lambda: world.entry(number).get("claude_pid"), what="its agent")

    cancelled = world.tick("--cancel", str(number), wait=False)
    assert cancelled.stdout.strip() == f"{REPO}#{number}: cancelled; its runner stops the agent and saves the work now."
    world.wait_for(lambda: world.entry(number).get("status") == "cancelled", what="the cancel")
    assert world.tick("--cancel", str(number), wait=False).stderr.strip() == \
        f"error: {REPO}#{number} is cancelled: there is nothing to cancel."

    retried = world.tick("--retry", f"{REPO}#{number}", wait=False)
    assert retried.stdout.strip() == f"{REPO}#{number}: queued again; the next tick starts attempt 2."
    assert READY in world.labels(number)
    world.tick(wait=False)
    entry = world.wait_for(lambda: world.entry(number).get("attempt") == 2 and world.entry(number).get("claude_pid")
                           and world.entry(number), what="the second attempt")

    freed = world.tick("--free-slot", "0", wait=False)
    assert freed.stdout.strip() == f"Slot 0 of {REPO} freed: {REPO}#{number} is marked failed ({FAILED})."
    assert world.entry(number)["status"] == "failed" and world.labels(number) == [FAILED]
    world.wait_for(lambda: not world.processes(), what="its processes to end")
    assert world.tick("--free-slot", "0", wait=False).stdout.strip() == f"Slot 0 of {REPO} is free already."
    assert entry["runner_pid"]

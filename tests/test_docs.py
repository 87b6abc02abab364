"""The docs say what the code does: README stays a short first read, every link leads somewhere, the
examples/ files parse, and every command and option README shows exists and runs (offline).

Commands run as real processes with this interpreter (the venv's) from the project folder, as a
user would type them; nothing here needs a network, a token or a running orchestrator.
"""

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
README = PROJECT / "README.md"
DOCS = sorted((PROJECT / "docs").glob("*.md"))
MARKDOWN = [README, *DOCS]
EXAMPLES = PROJECT / "examples"
SERVICE = EXAMPLES / "systemd" / "issue-orchestrator.service"
TIMER = EXAMPLES / "systemd" / "issue-orchestrator.timer"

README_MAX_BYTES = 18_000  # several hosts, the dashboard, the sandbox and chat answers got a section each
TIMEOUT = 30
SESSION = "abc67ae7-98d5-458d-8c1f-4458803a447f"
MONITOR_SUBCOMMANDS = ("monitor", "status", "history", "follow", "costs", "serve", "prune")
#: Other tools README shows a command of; their options are theirs, not ours.
FOREIGN_COMMANDS = ("systemctl", "journalctl", "crontab", "pytest", "git ", "gh ", "claude -p")

# ------------------------------------------------------------------------------------------------
# Reading markdown
# ------------------------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
_LINK_RE = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_OPTION_RE = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-v)(?![\w-])")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def code_blocks(text: str, *languages: str):
    """(language, body) of each fenced block whose language is one of `languages` (all when none)."""
    return [(lang.strip(), body) for lang, body in _FENCE_RE.findall(text)
            if not languages or lang.strip() in languages]


def prose(text: str) -> str:
    """`text` without fenced blocks and inline code, where a `[x](y)` is not a link."""
    return re.sub(r"`[^`\n]*`", "", _FENCE_RE.sub("", text))


def links(path: Path):
    return _LINK_RE.findall(prose(read(path)))


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target) is not None


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set:
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*#*$", _FENCE_RE.sub("", read(path)), re.M):
        slug = github_anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def sections(text: str):
    """{"## title": body} for each second-level section of `text`."""
    parts = re.split(r"^(## .+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def readme_shell_commands():
    """Every `./venv/bin/python ...` command line in README's bash blocks, as argv without comments."""
    commands = []
    for _, body in code_blocks(read(README), "bash", "sh", "console"):
        for line in body.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("./venv/bin/python"):
                commands.append(shlex.split(line, comments=True))
    return commands


# ------------------------------------------------------------------------------------------------
# Running the commands
# ------------------------------------------------------------------------------------------------


def clean_env(**extra) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "ORCHESTRATOR_CONFIG"}
    env.update(extra)
    return env


def run(argv, *, env=None) -> subprocess.CompletedProcess:
    """`argv` as README writes it (`./venv/bin/python X ...`), run with this interpreter."""
    if argv and argv[0] in ("./venv/bin/python", "python", "python3"):
        argv = [sys.executable, *argv[1:]]
    return subprocess.run(argv, cwd=PROJECT, env=env or clean_env(), capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def help_text(*argv: str) -> str:
    done = run(["./venv/bin/python", *argv, "--help"])
    assert done.returncode == 0, f"{' '.join(argv)} --help exited {done.returncode}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def orchestrator_help() -> str:
    return help_text("run_orchestrator.py")


@pytest.fixture(scope="module")
def monitor_help() -> str:
    """The monitor's --help and each subcommand's, together: an option may belong to one of them."""
    return "\n".join([help_text("claude_monitor.py")]
                     + [help_text("claude_monitor.py", command) for command in MONITOR_SUBCOMMANDS])


@pytest.fixture
def installation(tmp_path):
    """An orchestrator folder after one finished run of issue 123: config, state file, stream log.

    The state file is written in the shape docs/architecture.md documents, not through the library.
    """
    folder = tmp_path / "orchestrator"
    log = folder / "logs" / "issue-123" / "1.stream.jsonl"
    log.parent.mkdir(parents=True)
    shutil.copyfile(PROJECT / "tests" / "fixtures" / "claude" / "stream-success.jsonl", log)
    (folder / "config.json").write_text(json.dumps(
        {"github": {"repo": "owner/myproject", "base_repo_path": str(tmp_path / "clones")}}))
    (folder / "config.json").chmod(0o600)
    (folder / "processing-state.json").write_text(json.dumps({"_schema": 1, "123": {
        "issue_number": 123, "status": "completed", "branch": "issue-123",
        "start_time": "2024-01-15T10:30:00+00:00", "end_time": "2024-01-15T10:42:00+00:00",
        "session_id": SESSION, "slot": 0, "attempt": 1, "cost_usd": 0.015,
        "pr_url": "https://github.com/owner/myproject/pull/12"}}))
    (tmp_path / "claude-config").mkdir()
    return folder


# ------------------------------------------------------------------------------------------------
# README size, links, anchors
# ------------------------------------------------------------------------------------------------


def test_readme_is_at_most_18000_bytes():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move details to docs/ (limit {README_MAX_BYTES})"


def test_readme_links_every_page_in_docs():
    targets = {target.split("#")[0] for target in links(README)}
    missing = [doc.relative_to(PROJECT).as_posix() for doc in DOCS
               if doc.relative_to(PROJECT).as_posix() not in targets]
    assert DOCS and not missing, f"README.md does not link {missing}"


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: p.relative_to(PROJECT).as_posix())
def test_every_relative_link_points_to_an_existing_file(page):
    broken = []
    for target in links(page):
        if is_external(target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.name}: links to missing files: {broken}"


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: p.relative_to(PROJECT).as_posix())
def test_every_anchor_names_a_heading(page):
    broken = []
    for target in links(page):
        if is_external(target) or "#" not in target:
            continue
        path, anchor = target.split("#", 1)
        linked = (page.parent / path) if path else page
        if linked.suffix == ".md" and linked.exists() and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{page.name}: anchors that name no heading: {broken}"


def test_json_blocks_in_the_docs_parse():
    for page in MARKDOWN:
        for _, body in code_blocks(read(page), "json"):
            json.loads(body)  # a JSON example that does not parse would mislead


def test_the_monitor_json_shape_is_documented_once():
    """docs/monitor.md holds the JSON shape; every other page links to it instead of copying it."""
    holders = [page.name for page in MARKDOWN
               if any('"active_instances"' in body for _, body in code_blocks(read(page), "json"))]
    assert holders == ["monitor.md"]


# ------------------------------------------------------------------------------------------------
# examples/
# ------------------------------------------------------------------------------------------------


def crontab_lines():
    text = read(EXAMPLES / "crontab")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


_CRON_FIELD_RE = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$|^[A-Za-z]{3}(-[A-Za-z]{3})?$")
_ENV_LINE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")


def test_crontab_lines_have_five_schedule_fields_and_a_command():
    jobs = [line for line in crontab_lines() if not _ENV_LINE_RE.match(line)]
    assert jobs, "examples/crontab has no job line"
    for line in jobs:
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not 5 schedule fields and a command: {line}"
        bad = [field for field in fields[:5] if not _CRON_FIELD_RE.match(field)]
        assert not bad, f"schedule fields {bad} are not cron syntax: {line}"
        assert fields[:5] == ["*/5", "*", "*", "*", "*"]


def test_crontab_uses_absolute_paths_a_path_and_appends_to_the_log():
    lines = crontab_lines()
    paths = [line.split("=", 1)[1].strip() for line in lines if re.match(r"^PATH\s*=", line)]
    assert paths, "examples/crontab sets no PATH (cron's own is /usr/bin:/bin, without claude)"
    entries = paths[0].split(":")
    assert all(entry.startswith("/") for entry in entries)
    assert {"/usr/bin", "/bin"} <= set(entries) and len(entries) > 2  # git, and where claude lives
    for line in lines:
        if _ENV_LINE_RE.match(line):
            continue
        command = line.split(None, 5)[5]
        assert re.search(r"(^|\s)/\S+/venv/bin/python\s+/\S+/run_orchestrator\.py(\s|$)", command), command
        assert re.search(r">>\s*/\S+/orchestrator\.log\s+2>&1\s*$", command), command


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=("#", ";"),
                                       empty_lines_in_values=False)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(read(path), source=str(path))
    return parser


def test_systemd_service_is_a_oneshot_that_keeps_the_runners():
    service = unit(SERVICE)
    assert {"Unit", "Service"} <= set(service.sections())
    assert service["Unit"].get("Description")
    assert service["Service"]["Type"] == "oneshot"
    exec_start = shlex.split(service["Service"]["ExecStart"])
    assert exec_start[0].startswith("/") and exec_start[0].endswith("/venv/bin/python")
    assert exec_start[1].startswith("/") and exec_start[1].endswith("/run_orchestrator.py")
    assert service["Service"].get("KillMode") == "process", "the detached runners must outlive the tick"
    assert "PATH=" in service["Service"].get("Environment", "")


def test_systemd_timer_runs_the_service_every_5_minutes():
    timer = unit(TIMER)
    assert {"Unit", "Timer", "Install"} <= set(timer.sections())
    assert timer["Timer"].get("OnCalendar") or timer["Timer"].get("OnUnitActiveSec")
    if timer["Timer"].get("OnCalendar"):
        assert timer["Timer"]["OnCalendar"] == "*:0/5"
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert timer["Timer"].get("Unit", SERVICE.name) == SERVICE.name  # the service of the same name


def test_systemd_analyze_verifies_the_units(tmp_path):
    """`systemd-analyze verify` on a copy whose paths are this checkout's (it checks that ExecStart exists)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the INI parse above still ran")
    for path in (SERVICE, TIMER):
        text = read(path)
        text = re.sub(r"^ExecStart=.*$", f"ExecStart={sys.executable} {PROJECT / 'run_orchestrator.py'}", text, flags=re.M)
        text = re.sub(r"^WorkingDirectory=.*$", f"WorkingDirectory={PROJECT}", text, flags=re.M)
        text = re.sub(r"^User=.*\n", "", text, flags=re.M)  # the account need not exist here
        (tmp_path / path.name).write_text(text)
    done = subprocess.run([analyze, "verify", str(tmp_path / SERVICE.name), str(tmp_path / TIMER.name)],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------------------------------------
# The commands and options README shows
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry_point", [["run_orchestrator.py"], ["issue_orchestrator.py"],
                                         ["-m", "lib.orchestrator"]], ids=" ".join)
def test_every_orchestrator_entry_point_answers_help(entry_point, orchestrator_help):
    text = help_text(*entry_point)
    # The three are one command line: the same options.
    assert set(_OPTION_RE.findall(text)) == set(_OPTION_RE.findall(orchestrator_help))


@pytest.mark.parametrize("command", ["", *MONITOR_SUBCOMMANDS])
def test_the_monitor_and_each_subcommand_answer_help(command):
    help_text("claude_monitor.py", *([command] if command else []))


def test_readme_shows_the_seed_commands():
    shown = [" ".join(argv) for argv in readme_shell_commands()]
    for command in ("./venv/bin/python run_orchestrator.py", "./venv/bin/python -m lib.orchestrator",
                    "./venv/bin/python issue_orchestrator.py", "./venv/bin/python claude_monitor.py",
                    "./venv/bin/python claude_monitor.py monitor",
                    "./venv/bin/python claude_monitor.py status --issue 123",
                    "./venv/bin/python claude_monitor.py history --issue 123",
                    "./venv/bin/python claude_monitor.py --format json"):
        assert command in shown, f"README.md no longer shows `{command}`"


def test_every_script_the_readme_runs_exists():
    scripts = set()
    for _, body in code_blocks(read(README), "bash", "cron", "sh"):
        scripts |= set(re.findall(r"(?<![\w/.-])(?:\./)?([\w-]+\.(?:py|sh))\b", body))
        scripts |= set(re.findall(r"/([\w-]+\.py)\b", body))
    assert {"run_orchestrator.py", "issue_orchestrator.py", "claude_monitor.py", "setup.sh"} <= scripts
    assert all((PROJECT / script).is_file() for script in scripts), scripts


def test_every_orchestrator_command_in_readme_accepts_its_options(orchestrator_help):
    for argv in readme_shell_commands():
        if "claude_monitor.py" in argv:
            continue
        options = [arg for arg in argv if arg.startswith("-") and arg != "-m"]
        unknown = [option for option in options if option not in _OPTION_RE.findall(orchestrator_help)]
        assert not unknown, f"{' '.join(argv)}: {unknown} not in run_orchestrator.py --help"


def test_every_option_readme_mentions_is_in_that_commands_help(orchestrator_help, monitor_help):
    orchestrator = set(_OPTION_RE.findall(orchestrator_help))
    monitor = set(_OPTION_RE.findall(monitor_help))
    problems = []
    for title, body in sections(read(README)).items():
        ours = [line for line in body.splitlines() if not any(tool in line for tool in FOREIGN_COMMANDS)]
        mentioned = set(_OPTION_RE.findall("\n".join(ours)))
        if "Running the orchestrator" in title:
            known, whose = orchestrator, "run_orchestrator.py"
        elif "Monitoring" in title:
            known, whose = monitor, "claude_monitor.py"
        else:
            known, whose = orchestrator | monitor, "either command"
        problems += [f"{title}: {option} ({whose})" for option in sorted(mentioned - known)]
    # Lines that name a command: their options are that command's.
    for line in read(README).splitlines():
        if "claude_monitor.py" in line:
            problems += [f"{line.strip()}: {o}" for o in set(_OPTION_RE.findall(line)) - monitor]
        elif re.search(r"run_orchestrator\.py|issue_orchestrator\.py|lib\.orchestrator", line):
            problems += [f"{line.strip()}: {o}" for o in set(_OPTION_RE.findall(line)) - orchestrator]
    assert not problems, "README mentions options that --help does not list:\n" + "\n".join(problems)


def test_every_monitor_command_in_readme_runs_on_an_installation(installation):
    """The README's monitor lines, run as written (plus --config) against a finished run of #123."""
    env = clean_env(CLAUDE_CONFIG_DIR=str(installation.parent / "claude-config"))
    commands = [argv for argv in readme_shell_commands() if "claude_monitor.py" in argv]
    assert len(commands) >= 6
    for argv in commands:
        done = run([*argv, "--config", str(installation)], env=env)
        shown = " ".join(argv)
        assert done.returncode == 0, f"{shown}: exit {done.returncode}: {done.stderr}"
        assert done.stdout.strip(), f"{shown} printed nothing"
        if "json" in argv and "follow" not in argv:
            report = json.loads(done.stdout)
            if "status" not in argv and "history" not in argv:
                assert [i["issue_number"] for i in report["completed_instances"]] == [123]
        elif "history" in argv:
            assert "Done: added fix_issue_7.txt" in done.stdout  # the recorded conversation


def test_readme_minimal_configuration_is_valid(tmp_path):
    """The smallest config.json README shows passes validation (the token is a placeholder)."""
    from lib.config import Config

    section = sections(read(README))["## Minimal configuration"]
    (body,) = [body for _, body in code_blocks(section, "json")]
    path = tmp_path / "config.json"
    path.write_text(body)
    path.chmod(0o600)
    config = Config(path, env={})
    assert config.github_repo == "acme/widgets"
    assert config.get_repo_path(0) == Path("/srv/clones/widgets_0")


def test_readme_states_the_python_version_setup_sh_checks():
    assert "Python 3.10 or newer" in read(README)
    assert "sys.version_info < (3, 10)" in read(PROJECT / "setup.sh")


def test_the_test_commands_readme_gives_are_the_ones_ci_runs():
    readme = read(README)
    ci_command = read(PROJECT / ".ci" / "run").strip().splitlines()[-1]
    assert ci_command.startswith("./venv/bin/pytest ") and f"\n{ci_command}  " in readme
    assert './venv/bin/pytest -n 4 -m "not slow"' in readme


# ------------------------------------------------------------------------------------------------
# The Python examples of docs/library.md and docs/development.md
# ------------------------------------------------------------------------------------------------


def python_example(page: str, section: str) -> str:
    """The first python block of `## section` in docs/`page`."""
    body = sections(read(PROJECT / "docs" / page))[f"## {section}"]
    return code_blocks(body, "python")[0][1]


def run_python(code: str, env=None) -> subprocess.CompletedProcess:
    return run(["./venv/bin/python", "-c", code], env=env)


def test_library_direct_module_imports_example_runs(tmp_path):
    code = python_example("library.md", "Direct module imports")
    assert "/tmp/scratch-state.json" in code
    code = code.replace("/tmp/scratch-state.json", str(tmp_path / "scratch-state.json"))
    checks = '\nassert state.is_active\nassert scratch.get(123).status == "completed"\n'
    done = run_python(code + checks)
    assert done.returncode == 0, done.stderr


def test_library_monitor_example_runs_on_an_installation(installation):
    code = python_example("library.md", "Using the monitor programmatically")
    assert '"/srv/orchestrator"' in code
    code = code.replace('"/srv/orchestrator"', repr(str(installation)))
    checks = ('\nassert active == [] and history and history[-1].text.startswith("Done: added fix_issue_7.txt")'
              '\nassert [i["issue_number"] for i in data["completed_instances"]] == [123]\n')
    done = run_python(code + checks, env=clean_env(CLAUDE_CONFIG_DIR=str(installation.parent / "claude-config")))
    assert done.returncode == 0, done.stderr
    assert "Claude Code Instance Monitor Report" in done.stdout


def test_the_notifier_example_is_a_working_notifier():
    """development.md's WebhookNotifier: a Notifier whose failure is one sentence without its secret."""
    code = python_example("development.md", "Adding a notifier") + (
        "\nimport socket\n"
        "from lib.events import Notifier, NotifierError\n"
        "from lib.redaction import redact\n"
        "with socket.socket() as s:\n"
        "    s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]\n"  # closed once the block ends
        "url = f'http://127.0.0.1:{port}/hooks/s3cr3t-t0ken'\n"
        "notifier = WebhookNotifier(url, timeout=2)\n"
        "assert isinstance(notifier, Notifier)\n"
        "try:\n"
        "    notifier.send_test('owner/name')\n"
        "    raise SystemExit('no NotifierError')\n"
        "except NotifierError as exc:\n"
        "    assert str(exc).startswith('Webhook: ') and 's3cr3t' not in str(exc), exc\n"
        "assert redact(url) == '***'\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------------------------
# docs/configuration.md against lib/config.py
# ------------------------------------------------------------------------------------------------


def configuration_row(section, key: str) -> str:
    """The table row of docs/configuration.md documenting `section.key` (section None: top level)."""
    text = read(PROJECT / "docs" / "configuration.md")
    pages = sections(text)
    candidates = []
    if section is not None:
        candidates += [line for line in text.splitlines() if line.startswith(f"| `{section}.{key}` |")]
        own = next((body for title, body in pages.items() if title.startswith(f"## `{section}`")), "")
        candidates += [line for line in own.splitlines() if line.startswith(f"| `{key}` |")]
    else:
        candidates += [line for line in pages.get("## Other keys", "").splitlines()
                       if line.startswith(f"| `{key}` |")]
    return candidates[0] if candidates else ""


def documented_default(default) -> str:
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, (list, dict)):
        return json.dumps(default)
    return str(default)


def test_configuration_reference_lists_every_key_with_its_default():
    from lib import config_schema

    keys = [(section, key, default) for section, table in config_schema.SCHEMA.items()
            for key, (_, default) in table.items()]
    keys += [(None, key, default) for key, (_, default) in config_schema.TOP_LEVEL.items()]
    problems = []
    for section, key, default in keys:
        name = f"{section}.{key}" if section else key
        row = configuration_row(section, key)
        if not row:
            problems.append(f"{name}: not in docs/configuration.md")
        elif default is not None and documented_default(default) not in row:
            problems.append(f"{name}: default {documented_default(default)} not in its row: {row}")
    for _, _, variables in config_schema.ENV_OVERRIDES:
        problems += [f"{name}: environment override not documented" for name in variables
                     if f"`{name}`" not in read(PROJECT / "docs" / "configuration.md")]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("bench", sorted(path.name for path in (PROJECT / "bench").glob("bench_*.py")))
def test_each_benchmark_development_md_shows_answers_help(bench):
    """A bench is run by hand, rarely: its imports of lib must not rot unseen."""
    done = subprocess.run([sys.executable, str(PROJECT / "bench" / bench), "--help"], cwd=PROJECT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert bench in (PROJECT / "docs" / "development.md").read_text(encoding="utf-8")


def test_the_monitor_benchmark_runs_on_a_small_transcript():
    """Its sample is a fixture: a moved fixture must not leave it failing unseen."""
    done = subprocess.run([sys.executable, str(PROJECT / "bench" / "bench_monitor.py"), "--megabytes", "1"],
                          cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "history --issue 7 --limit 20" in done.stdout


def test_development_md_lists_every_test_module():
    """The listing is how a newcomer finds where a behaviour is tested: a new file goes in it."""
    listing = read(PROJECT / "docs" / "development.md")
    missing = [path.name for path in sorted((PROJECT / "tests").glob("*.py")) if f"── {path.name} " not in listing]
    assert not missing, f"docs/development.md's test listing lacks {missing}"

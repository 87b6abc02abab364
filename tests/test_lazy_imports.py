"""`import lib` is free: no third-party package loads until a name that needs it is used.

Each check runs in a fresh interpreter, since this test process has long imported everything.
"""

import json
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
THIRD_PARTY = ("telegram", "slack_sdk", "psutil", "requests", "httpx", "celery", "kombu", "redis")


def python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_lib_loads_no_third_party_package():
    loaded = python(f"import lib, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in {THIRD_PARTY!r}))")
    assert loaded == "[]"


def test_a_tick_loads_no_chat_library_until_it_notifies_nor_celery_in_the_local_mode():
    loaded = python("import lib, sys, lib.cli; lib.Config, lib.IssueOrchestrator;"
                    " print(sorted(m for m in sys.modules if m.split('.')[0] in"
                    " ('telegram', 'slack_sdk', 'celery', 'kombu', 'redis')))")
    assert loaded == "[]"


def test_every_exported_name_loads_on_first_use():
    report = json.loads(python(
        "import importlib, json, sys, lib\n"
        "submodules_at_import = sorted(m for m in sys.modules if m.startswith('lib.'))\n"
        "wrong = [name for name, module in lib._EXPORTS.items()\n"
        "         if getattr(lib, name) is not getattr(importlib.import_module('lib.' + module), name)]\n"
        "try:\n"
        "    lib.NoSuchName\n"
        "    missing = 'no error'\n"
        "except AttributeError as exc:\n"
        "    missing = str(exc)\n"
        "print(json.dumps({'submodules_at_import': submodules_at_import, 'exports': sorted(lib._EXPORTS),\n"
        "                  'all': lib.__all__, 'dir': dir(lib), 'wrong': wrong, 'missing': missing}))\n"
    ))
    assert report["submodules_at_import"] == []
    expected = {"Config", "IssueOrchestrator", "ClaudeMonitor", "ClaudeProcessor", "MonitorReport"}
    assert expected <= set(report["exports"])
    assert report["all"] == report["exports"] and set(report["exports"]) <= set(report["dir"])
    assert report["wrong"] == []
    assert report["missing"] == "module 'lib' has no attribute 'NoSuchName'"


#: What `import lib.cli` (a cron tick) may load of the library: what a tick runs, not the runner, the
#: monitor, the dashboard, Celery, the chats, the checks or the setup commands.
TICK_MODULES_AT_MOST = 24


def test_a_tick_loads_what_it_uses_and_none_of_the_runner_the_monitor_or_celery():
    loaded = json.loads(python("import json, sys, lib.cli\n"
                               "print(json.dumps(sorted(m for m in sys.modules if m.startswith('lib.'))))"))
    assert len(loaded) <= TICK_MODULES_AT_MOST, loaded
    for module in ("runner", "run_steps", "claude_processor", "sandbox", "repo_manager", "claude_monitor", "dashboard",
                   "celery_app", "chat_inbox", "checks", "install", "operations", "retention", "telegram_notifier"):
        assert f"lib.{module}" not in loaded, module


def test_the_monitor_loads_its_text_rendering_only_for_text_and_never_the_dashboard():
    loaded = json.loads(python(
        "import json, sys\n"
        "from lib.claude_monitor import ClaudeMonitor\n"
        "from lib.config import Config\n"
        "from lib.models import Message\n"
        "config = Config.from_dict({'github': {'repo': 'o/n', 'base_repo_path': 'slots'}}, '.', require_token=False)\n"
        "message = Message('assistant', 'text', 'Done.', '2026-11-24T18:10:00+00:00')\n"
        "ClaudeMonitor(config, output_format='json').render(message)\n"
        "as_json = sorted(m for m in sys.modules if m in ('lib.monitor_text', 'lib.dashboard'))\n"
        "text = ClaudeMonitor(config, output_format='text').render(message)\n"
        "print(json.dumps([as_json, sorted(m for m in sys.modules if m in ('lib.monitor_text', 'lib.dashboard')),"
        " text]))\n"
    ))
    assert loaded[0] == [] and loaded[1] == ["lib.monitor_text"]
    assert loaded[2].endswith("] assistant: Done.")

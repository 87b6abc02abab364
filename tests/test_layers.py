"""Imports point down only: every module of lib/ imports only modules listed below it in LAYERS.

The order is docs/architecture.md's (and DESIGN's): a module may use what sits under it, never what
sits over it, so there is no import cycle and a change ripples one way. Every import is read from
the source (AST), at the top of a module and inside functions alike. The one exception is a
module's `if __name__ == "__main__":` block: it is a script, not part of the module.
"""

import ast
import sys
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parent.parent / "lib"

#: Top first. Modules on one line are side by side: neither may import the other.
LAYERS = [
    ["cli"],
    ["install"],
    ["orchestrator"],
    ["claims"],
    ["reconcile"],
    ["tick"],
    ["chat_inbox"],
    ["operations"],
    ["checks"],
    ["dashboard"],
    ["claude_monitor"],
    ["monitor_text", "process_view"],
    ["conversations"],
    ["executors"],
    ["celery_app"],
    ["runner_command"],
    ["runner"],
    ["run_endings"],
    ["run_steps"],
    ["publish"],
    ["run_context"],
    ["pull_watch", "branch_merge"],
    ["follow_up", "answers"],
    ["comments"],
    ["notifications"],
    ["telegram_notifier", "slack_notifier"],
    ["events"],
    ["walls", "validation", "claude_processor"],
    ["outcomes"],
    ["prompts"],
    ["retention"],
    ["repo_manager"],
    ["slot_preparation"],
    ["object_store", "store_view"],
    ["git_commands"],
    ["github_client"],
    ["github_connection"],
    ["github_errors", "github_poll_cache"],
    ["transcripts"],
    ["costs"],
    ["ledger"],
    ["state_manager", "routing", "labels", "pull_upkeep"],
    ["config", "sandbox"],
    ["config_schema"],
    ["settings", "schema", "sandbox_launcher"],
    ["processes"],
    ["spawn"],
    ["files"],
    ["redaction", "figures"],
    ["models", "egress"],
    ["lifecycle"],
]
LEVEL = {name: len(LAYERS) - depth for depth, names in enumerate(LAYERS) for name in names}
#: Not in the order: the package's lazy `__init__` names what it exports, and imports it on demand.
PACKAGE = "__init__"


def lib_modules():
    return sorted(path.stem for path in LIB.glob("*.py"))


def is_main_block(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def imported_lib_modules(tree: ast.Module):
    """(line, lib module) for every import of a lib module, skipping `if __name__ == "__main__"` blocks."""
    found = []
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if is_main_block(node):
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[1]) for alias in node.names
                      if alias.name.startswith("lib.")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "lib":  # `from lib import processes`
                found += [(node.lineno, alias.name) for alias in node.names]
            elif node.module.startswith("lib."):
                found.append((node.lineno, node.module.split(".")[1]))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
            # importlib.import_module("lib.x") with a literal name
            if node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("lib."):
                found.append((node.lineno, node.args[0].value.split(".")[1]))
        pending.extend(ast.iter_child_nodes(node))
    return found


def test_every_module_has_a_place_in_the_order():
    assert sorted(set(lib_modules()) - {PACKAGE}) == sorted(LEVEL), "add the new module to LAYERS"


@pytest.mark.parametrize("module", [m for m in lib_modules() if m != PACKAGE])
def test_imports_point_down(module):
    tree = ast.parse((LIB / f"{module}.py").read_text(encoding="utf-8"))
    upward = [f"line {line}: lib.{target} (level {LEVEL.get(target)}) is not below lib.{module} (level "
              f"{LEVEL[module]})" for line, target in imported_lib_modules(tree)
              if target != module and LEVEL.get(target, 0) >= LEVEL[module]]
    assert not upward, "\n".join(upward)


def test_the_notifier_table_points_down():
    """The dispatcher imports notifier modules by name from its table: those point down too."""
    from lib.notifications import NOTIFIERS

    for module, _ in NOTIFIERS.values():
        name = module.split(".")[1]
        assert LEVEL[name] < LEVEL["notifications"], module


@pytest.mark.parametrize("module", ["models", "lifecycle", "egress", "spawn"])
def test_the_bottom_needs_only_the_standard_library(module):
    """What everything imports (and what the sandbox launcher imports) stays cheap to import."""
    tree = ast.parse((LIB / f"{module}.py").read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    third_party = {name for name in names if name.split(".")[0] not in sys.stdlib_module_names and name != "lib.lifecycle"}
    assert not third_party, third_party


def test_the_rule_sees_an_upward_import_inside_a_function():
    """The checker itself: an import hidden in a function counts, a __main__ block does not."""
    source = ("def later():\n    from lib.orchestrator import main\n"
              "if __name__ == '__main__':\n    from lib.runner import main\n")
    assert imported_lib_modules(ast.parse(source)) == [(2, "orchestrator")]


#: A module over this many lines holds more than one concern; a class over CLASS_LINES, more than one job.
MODULE_LINES, CLASS_LINES = 600, 350


@pytest.mark.parametrize("module", [m for m in lib_modules() if m != PACKAGE])
def test_modules_and_classes_stay_small(module):
    source = (LIB / f"{module}.py").read_text(encoding="utf-8")
    assert source.count("\n") <= MODULE_LINES, f"lib/{module}.py has {source.count(chr(10))} lines: split its concerns"
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= CLASS_LINES, f"lib/{module}.py: class {node.name} has {lines} lines: split its jobs"


#: What may be used in one module only, so that there is one copy of it: the call -> its home.
ONE_HOME = {
    "subprocess.Popen": "spawn",  # every subprocess starts in spawn.start
    "subprocess.run": "processes",
    "subprocess.check_output": "processes",
    "fcntl.flock": "files",  # the one exclusive lock
    "tempfile.mkstemp": "files",  # the one atomic write
    "os.killpg": "processes",
}


@pytest.mark.parametrize("call, home", ONE_HOME.items())
def test_each_helper_has_one_home(call, home):
    module_name, attribute = call.split(".")
    users = []
    for path in sorted(LIB.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            function = node.func if isinstance(node, ast.Call) else None  # a call, not a type annotation
            if (isinstance(function, ast.Attribute) and function.attr == attribute
                    and isinstance(function.value, ast.Name) and function.value.id == module_name):
                users.append(path.stem)
    assert set(users) <= {home}, f"{call} outside lib/{home}.py: {sorted(set(users) - {home})}"

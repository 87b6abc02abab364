"""Several repositories in one install: the config, the state's keys, the routing labels (fast), and
real ticks over several repositories with origins of their own (slow, through `world`)."""

import json
import os
from pathlib import Path

import pytest

from claude_standin import scenario
from github_emulator import REPO
from lib.config import Config
from lib.models import ConfigError, IssueState, IssueStatus
from lib.routing import model_choice, queue_order, rank
from lib.state_manager import StateManager
from world import MAINTAINER

PROJECT = Path(__file__).resolve().parent.parent
TOKEN = "ghp_repositoriesTest0123456789"
READY, WORKING, COMPLETED = "ready-for-claude", "claude-working", "claude-completed"


def config_of(data, folder="/srv/install"):
    return Config.from_dict(data, folder, {"GITHUB_TOKEN": TOKEN})


def errors_of(data):
    with pytest.raises(ConfigError) as raised:
        config_of(data)
    return raised.value


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


def test_the_seed_form_is_a_list_of_one():
    config = config_of({"github": {"repo": "octo/widgets", "base_repo_path": "slots", "max_concurrent": 2,
                                   "base_branch": "main"}, "claude": {"model": "opus"}})

    [repository] = config.repositories
    assert (repository.repo, repository.max_concurrent, repository.base_branch) == ("octo/widgets", 2, "main")
    assert repository.slot_path(1) == Path("/srv/install/slots/widgets_1") == config.get_repo_path(1)
    assert repository.claude.model == "opus" and config.max_agents == 2 and not config.multi_repo
    assert config.issue_dir("octo/widgets", 5) == Path("/srv/install/logs/issue-5")


def test_a_repositories_list_takes_what_an_entry_leaves_out_from_github():
    config = config_of({
        "github": {"base_repo_path": "/clones", "max_concurrent": 2},
        "claude": {"model": "sonnet", "timeout_seconds": 600, "check_interval": 1},
        "repositories": [
            {"repo": "acme/api"},
            {"repo": "acme/web", "max_concurrent": 4, "base_branch": "develop", "setup_command": "make setup",
             "clone_url": "/git/web.git",
             "claude": {"model": "opus", "max_turns": 30, "append_system_prompt": "Use the style guide."}},
        ]})

    api, web = config.repositories
    assert (api.base_repo_path, api.max_concurrent, api.claude.model, api.claude.timeout_seconds) == (
        Path("/clones"), 2, "sonnet", 600)
    assert (web.max_concurrent, web.base_branch, web.setup_command, web.clone_url) == (
        4, "develop", "make setup", "/git/web.git")
    assert (web.claude.model, web.claude.max_turns, web.claude.timeout_seconds, web.claude.check_interval) == (
        "opus", 30, 600, 1)
    assert web.claude.append_system_prompt == "Use the style guide."
    assert config.max_agents == 6 and config.multi_repo
    assert config.repository("ACME/Web") is web  # GitHub's names know no case
    assert config.issue_dir("acme/web", 5) == Path("/srv/install/logs/acme/web/issue-5")
    assert config.github_repo == "acme/api"  # the seed's attribute names the first repository


def test_every_mistake_in_the_list_is_one_line_with_its_path():
    raised = errors_of({
        "github": {"base_repo_path": "/clones"},
        "repositories": [
            {"repo": "acme/api", "max_concurrent": 0},
            {"repo": "not a repo"},
            {"max_concurrent": 2},
            "acme/web",
            {"repo": "acme/docs", "claude": {"max_turns": -1, "executable": "/bin/x"}, "colour": "red"},
        ]})

    assert raised.errors == [
        "repositories[0].max_concurrent: must be an integer >= 1, got 0",
        "repositories[1].repo: must be \"owner/name\", got 'not a repo'",
        "repositories[2].repo: is required",
        "repositories[3]: must be an object with at least \"repo\", got 'acme/web'",
        "repositories[4].claude.max_turns: must be an integer >= 1, got -1",
    ]
    assert "repositories[4].colour: unknown key, ignored (a typo?)" in raised.warnings
    assert any(w.startswith("repositories[4].claude.executable: not a per-repository setting") for w in raised.warnings)


@pytest.mark.parametrize("data, error", [
    ({"github": {"repo": "a/b", "base_repo_path": "/c"}, "repositories": [{"repo": "a/d"}]},
     "github.repo: give either github.repo or a repositories list, not both"),
    ({"github": {}, "repositories": [{"repo": "a/b"}]},
     "repositories[0].base_repo_path: is required (or set github.base_repo_path)"),
    ({"github": {"base_repo_path": "/c"}, "repositories": []},
     "repositories: must be a non-empty list of objects, got a list"),
    ({"github": {"base_repo_path": "/c"}, "repositories": [{"repo": "a/b"}, {"repo": "A/B"}]},
     "repositories[1].repo: A/B is listed twice (first at repositories[0])"),
    ({"github": {"base_repo_path": "/c"}, "repositories": [{"repo": "a/api"}, {"repo": "b/api"}]},
     "repositories[1].base_repo_path: the slots of b/api would be those of a/api (/c/api_<i>); give one of"
     " them its own base_repo_path"),
    ({"github": {"base_repo_path": "/c"}, "repositories": [{"repo": "a/b"}], "max_agents": 0},
     "max_agents: must be an integer >= 1, got 0"),
])
def test_lists_that_cannot_work_are_refused_in_a_sentence(data, error):
    assert errors_of(data).errors == [error]


def test_two_repositories_of_one_name_in_their_own_folders_are_fine():
    config = config_of({"github": {"base_repo_path": "/c"},
                        "repositories": [{"repo": "a/api"}, {"repo": "b/api", "base_repo_path": "/c/b"}]})
    assert [r.slot_path(0) for r in config.repositories] == [Path("/c/api_0"), Path("/c/b/api_0")]


def test_the_multi_repository_example_is_a_valid_config():
    data = json.loads((PROJECT / "examples" / "config.multi.json").read_text())
    config = config_of(data)
    assert len(config.repositories) == 3 and config.max_agents == 5


# ------------------------------------------------------------------------------------------------
# State: the seed's shape with one repository, owner/name#N keys with several
# ------------------------------------------------------------------------------------------------


def entry(number, repo, status=IssueStatus.RUNNING, **fields):
    return IssueState(number, status, f"issue-{number}", "2026-12-01T10:00:00", repo=repo, slot=0, **fields)


def test_one_repository_keeps_the_seed_shape_and_an_old_file_reads_as_it_was(tmp_path):
    path = tmp_path / "processing-state.json"
    path.write_text(json.dumps({"7": {"issue_number": 7, "status": "running", "branch": "issue-7",
                                      "start_time": "2024-01-01T00:00:00", "slot": 0}}))
    manager = StateManager(path, default_repo="octo/widgets")

    assert manager.get(7).repo == "octo/widgets"  # an entry older than the repo field
    manager.update(7, num_turns=3)
    data = json.loads(path.read_text())
    assert set(data) == {"_schema", "7"} and data["7"]["repo"] == "octo/widgets"


def test_with_a_second_repository_the_keys_are_rewritten_once_and_running_work_goes_on(tmp_path):
    path = tmp_path / "processing-state.json"
    StateManager(path, default_repo="acme/api").put(entry(5, "acme/api", claude_pid=4242))
    manager = StateManager(path, default_repo="acme/api", qualified_keys=True)

    with manager.transaction() as state:
        state.add(entry(5, "acme/web", status=IssueStatus.PENDING))

    data = json.loads(path.read_text())
    assert set(data) == {"_schema", "acme/api#5", "acme/web#5"}
    assert data["acme/api#5"]["claude_pid"] == 4242 and data["acme/api#5"]["status"] == "running"
    assert manager.get(("acme/web", 5)).status == IssueStatus.PENDING
    assert manager.get(5).claude_pid == 4242  # a bare number is the first repository's
    state = manager.load_state()
    assert state.free_slot("acme/api", limit=1) is None and state.free_slot("acme/web", limit=1) is None
    assert len(state.active()) == 2 and [e.repo for e in state.active("acme/web")] == ["acme/web"]


# ------------------------------------------------------------------------------------------------
# Routing labels (pure)
# ------------------------------------------------------------------------------------------------


def issue(number, created, *labels):
    return {"number": number, "created_at": created, "labels": [{"name": name} for name in labels]}


def test_priority_orders_before_age_across_repositories_and_counts_only_when_trusted():
    labels = config_of({"github": {"repo": "a/b", "base_repo_path": "/c"}}).labels
    old, new, urgent = issue(1, "2026-01-01T00:00:00Z"), issue(2, "2026-02-01T00:00:00Z"), \
        issue(3, "2026-03-01T00:00:00Z", "priority:high")
    lazy = issue(4, "2025-01-01T00:00:00Z", "priority:low")
    trusted = {"priority:high", "priority:low"}
    ranked = queue_order([("b/x", new, rank(new, labels, trusted)), ("a/y", old, rank(old, labels, trusted)),
                          ("a/y", urgent, rank(urgent, labels, trusted)), ("b/x", lazy, rank(lazy, labels, trusted))])
    assert [i["number"] for _, i, _ in ranked] == [3, 1, 2, 4]
    assert rank(urgent, labels, trusted=set()) == 0  # a triage user's label does not jump the queue


@pytest.mark.parametrize("label, model, refused", [
    ("claude-model:opus", "opus", None),
    ("claude-model:claude-sonnet-5-5", "claude-sonnet-5-5", None),
    ("claude-model:$(x)", None, "claude-model:$(x)"),
    ("claude-model:--dangerously-skip-permissions", None, "claude-model:--dangerously-skip-permissions"),
    ("claude-model:", None, "claude-model:"),
])
def test_a_model_label_passes_on_only_a_plain_name(label, model, refused):
    labels = config_of({"github": {"repo": "a/b", "base_repo_path": "/c"}}).labels
    choice = model_choice(issue(1, "x", label), labels, trusted={label})
    assert (choice.model, choice.refused) == (model, refused)
    assert model_choice(issue(1, "x", label), labels, trusted=set()).model is None  # untrusted: ignored


# ------------------------------------------------------------------------------------------------
# Real ticks over several repositories
# ------------------------------------------------------------------------------------------------


def test_one_tick_serves_three_repositories_within_their_caps_and_each_pr_lands_at_home(world):
    world.write_config(github={"max_concurrent": 1})
    world.add_repository("acme/api", max_concurrent=2)
    world.add_repository("acme/web")
    numbers = {REPO: [world.add_issue("Widgets 1"), world.add_issue("Widgets 2")],
               "acme/api": [world.add_issue("Api 1", repo="acme/api"), world.add_issue("Api 2", repo="acme/api"),
                            world.add_issue("Api 3", repo="acme/api")],
               "acme/web": [world.add_issue("Web 1", repo="acme/web")]}

    first = world.tick()

    assert first.returncode == 0, first.stdout + first.stderr
    assert "Tick done: 4 launched, 2 queued, 0 errors" in first.stdout
    for repo, launched in ((REPO, [1]), ("acme/api", [1, 2]), ("acme/web", [1])):
        for number in launched:
            assert world.entry(number, repo)["status"] == "completed", (repo, number)
            assert world.origin_file(f"issue-{number}", f"fix_issue_{number}.txt", repo) is not None
        assert sorted(p["head"]["ref"] for p in world.github.pulls(repo)) == [f"issue-{n}" for n in launched]
    second = world.tick()
    assert "Tick done: 2 launched, 0 errors" in second.stdout
    assert all(world.entry(n, repo)["status"] == "completed" for repo, ns in numbers.items() for n in ns)
    assert (world.log_dir / "acme" / "api" / "issue-3" / "1.stream.jsonl").exists()


def test_the_same_number_in_two_repositories_is_two_independent_issues(world):
    world.add_repository("acme/api")
    world.add_issue("Widgets first")
    world.add_issue("Api first", scenario("question"), repo="acme/api")

    world.tick()

    widgets, api = world.entry(1, REPO), world.entry(1, "acme/api")
    assert widgets["status"] == "completed" and api["status"] == "needs_input"
    assert widgets["slot"] == api["slot"] == 0  # each repository has its own slots
    assert widgets["log_path"] != api["log_path"]
    assert world.labels(1) == [COMPLETED] and world.labels(1, "acme/api") == ["claude-needs-input", WORKING]
    assert len(world.github.pulls()) == 1 and world.github.pulls("acme/api") == []
    assert "needs an answer" in world.comments(1, "acme/api")[-1]
    assert all("needs an answer" not in c for c in world.comments(1))
    assert (world.slots / "widgets_0").is_dir() and (world.slots / "api_0").is_dir()


def test_a_repository_that_fails_is_one_line_and_the_others_go_on(world):
    world.add_repository("acme/api")
    world.settings["repositories"].append({"repo": "acme/gone"})  # GitHub answers 404 for it
    world.write_config()
    number = world.add_issue("Api", repo="acme/api")
    world.github.fail_next(4, status=500, path="/repos/octo/widgets/issues")  # the first poll and its retries

    tick = world.tick()

    assert tick.returncode == 1, tick.stdout
    errors = [line for line in tick.stdout.splitlines() if " ERROR " in line]
    assert len(errors) == 2, errors
    assert any("acme/gone: could not poll: acme/gone not found, or the token cannot see it" in line for line in errors)
    assert any("octo/widgets: could not poll" in line and "500" in line for line in errors)
    assert "Tick done: 1 launched, 2 errors" in tick.stdout
    assert world.entry(number, "acme/api")["status"] == "completed"
    assert "Traceback" not in tick.stdout + tick.stderr


def test_an_old_single_repository_install_upgrades_with_its_running_issue(world):
    number = world.add_issue("Hangs a while", scenario("slow", "2"))
    world.tick(wait=False)
    world.wait_for(lambda: world.entry(number).get("claude_pid"), what="its agent")
    assert "1" in world.state()  # the seed's shape

    world.add_repository("acme/api")  # a second repository, while the first one's issue runs
    other = world.add_issue("Api", repo="acme/api")
    world.tick()
    world.tick()

    state = world.state()
    assert set(state) >= {f"{REPO}#{number}", f"acme/api#{other}"} and "1" not in state
    assert world.entry(number, REPO)["status"] == "completed"
    assert world.entry(other, "acme/api")["status"] == "completed"
    assert len(world.standin.invocations()) == 2


def test_routing_labels_choose_the_model_refuse_a_hostile_one_and_reorder_the_queue(world):
    world.write_config(github={"max_concurrent": 1})
    world.github.set_role("triager", "triage")
    plain = world.add_issue("Plain, oldest")
    urgent = world.add_issue("Urgent", labels=(READY, "priority:high", "claude-model:opus"))
    sneaky = world.add_issue("Sneaky", labels=(READY, "claude-model:$(touch /tmp/x)"))
    world.github.add_label_event(plain, "priority:high", "triager")  # untrusted: no jump

    world.tick()

    assert world.entry(urgent)["status"] == "completed" and world.entry(plain) == {}
    [call] = world.standin.invocations()
    assert call["argv"][call["argv"].index("--model") + 1] == "opus"
    assert "the priority:high label is ignored: triager applied it" in world.log_text()
    world.tick()
    assert world.entry(plain)["status"] == "completed"
    assert "--model" not in world.standin.invocations()[1]["argv"]

    third, fourth = world.tick(), world.tick()  # a free slot: now the hostile label is looked at
    assert "1 skipped" in third.stdout and "1 skipped" in fourth.stdout
    assert world.entry(sneaky) == {} and world.labels(sneaky) == sorted([READY, "claude-model:$(touch /tmp/x)"])
    [warning] = [c for c in world.comments(sneaky) if "does not name one model" in c]  # said once
    assert "claude-model:$(touch /tmp/x)" in warning
    assert len(world.standin.invocations()) == 2
    assert not os.path.exists("/tmp/x")


def test_the_monitor_names_each_runs_repository_and_tells_equal_numbers_apart(world):
    world.add_repository("acme/api")
    world.add_issue("Widgets")
    world.add_issue("Api", repo="acme/api")
    world.tick()

    def monitor(*args):
        import subprocess
        import sys
        return subprocess.run([sys.executable, str(PROJECT / "claude_monitor.py"), *args, "--config",
                               str(world.config_path)], capture_output=True, text=True, timeout=60)

    report = json.loads(monitor("monitor", "--format", "json").stdout)
    assert sorted(i["repo"] for i in report["completed_instances"]) == ["acme/api", REPO]
    only = json.loads(monitor("monitor", "--format", "json", "--repo", "acme/api").stdout)
    assert [i["repo"] for i in only["completed_instances"]] == ["acme/api"]
    ambiguous = monitor("status", "--issue", "1")
    assert ambiguous.returncode == 2 and "is in 2 repositories" in ambiguous.stderr
    assert "owner/name" not in ambiguous.stdout
    one = monitor("status", "--issue", "acme/api#1", "--format", "json")
    assert one.returncode == 0 and json.loads(one.stdout)["repo"] == "acme/api"
    by_flag = monitor("history", "--issue", "1", "--repo", REPO, "--format", "json")
    assert by_flag.returncode == 0 and json.loads(by_flag.stdout)["repo"] == REPO
    assert "Repository: acme/api" in monitor("status", "--issue", "acme/api#1").stdout
    assert MAINTAINER  # the world's labeler, trusted in every repository


def test_max_agents_caps_the_machine_across_repositories(world):
    world.add_repository("acme/api")
    world.add_repository("acme/web")
    world.write_config(max_agents=2)
    for repo in (REPO, "acme/api", "acme/web"):
        world.add_issue(f"In {repo}", repo=repo if repo != REPO else None)

    tick = world.tick()

    assert "Tick done: 2 launched, 1 queued, 0 errors" in tick.stdout, tick.stdout
    statuses = sorted(world.entry(1, repo).get("status", "queued") for repo in (REPO, "acme/api", "acme/web"))
    assert statuses == ["completed", "completed", "queued"]


def test_check_names_the_repository_in_each_line(world):
    world.add_repository("acme/api")
    world.settings["repositories"].append({"repo": "acme/gone"})
    world.write_config()

    check = world.tick("--check", wait=False)

    assert check.returncode == 1, check.stdout
    assert f"  ok  repository: {REPO} reachable (default branch trunk)" in check.stdout
    assert "  ok  repository: acme/api reachable (default branch trunk)" in check.stdout
    assert "FAIL  GitHub: acme/gone: acme/gone not found, or the token cannot see it" in check.stdout
    assert check.stdout.count("GitHub token") == 1

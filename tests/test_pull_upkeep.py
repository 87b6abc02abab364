"""Keeping the agent's pull requests mergeable, and following them for almost nothing: conflicts with
a base that moved on are merged (never rebased, never force-pushed) and resolved by the same session,
within a bound; update-branch; what following costs in requests. Real ticks, real git, the stand-in
claude, the GitHub emulator computing mergeability from the origin."""

from claude_standin import scenario
from git_fixtures import commit_to, git, ref_history
from world import opened_pull

WORKING, COMPLETED, FAILED = "claude-working", "claude-completed", "claude-failed"


def assert_only_fast_forwards(world, branch):
    """Origin's reflog of `branch`: each update builds on the one before (no force-push, no rebase)."""
    history = ref_history(world.origin, branch)
    assert history, f"origin has no reflog for {branch}"
    for old, new in history:
        if set(old) != {"0"}:
            assert git(world.origin, "merge-base", "--is-ancestor", old, new) == "", (old, new)
    assert [old for old, _ in history[1:]] == [new for _, new in history[:-1]]  # one chain, nothing dropped


def requests_of(world, tick_args=()):
    """The requests one tick (with its runners) made."""
    before = len(world.github.requests)
    tick = world.tick(*tick_args)
    assert tick.returncode == 0, tick.stdout + tick.stderr
    return tick, world.github.requests[before:]


def conflicting_base(world, number, text):
    """trunk adds the file the agent's pull request adds, with other text: an add/add conflict."""
    return commit_to(world.origin, "trunk", {f"fix_issue_{number}.txt": text}, "Another greeting on trunk")


def test_a_conflict_with_the_base_is_merged_and_resolved_by_the_same_session_then_checked_and_pushed(world):
    world.write_config(validate=[{"name": "no-markers", "run": "! grep -rn '^<<<<<<<' --include=*.txt ."}])
    number, pull, session = opened_pull(world)
    head = world.github.pull(pull)["head"]["sha"]
    tip = conflicting_base(world, number, f"Hello from trunk {scenario('resolve-conflicts')}\n")

    world.tick()  # the base moved: GitHub starts computing mergeability (null)
    assert world.entry(number)["upkeep"]["mergeable"] is None
    tick = world.tick()  # conflicts: a follow-up merges the base, the session resolves, checks, push

    assert "1 followed up" in tick.stdout, tick.stdout
    follow = world.standin.invocations()[-1]
    assert follow["resume"] and follow["session_id"] == session
    prompt = follow["prompt"]
    assert "stopped on conflicts in 1 file(s)" in prompt
    assert f"[1] fix_issue_{number}.txt: both sides added it" in prompt
    assert "<<<<<<<" in prompt and "Hello from trunk" in prompt and f"Fixed issue #{number}" in prompt  # both sides
    assert "Another greeting on trunk" in prompt  # the base's commits the branch lacks
    merged = world.github.pull(pull)["head"]["sha"]
    parents = git(world.origin, "rev-list", "--parents", "-n", "1", merged).split()[1:]
    assert parents == [head, tip]  # a merge commit of the base into the branch, the branch first
    text = world.origin_file(f"issue-{number}", f"fix_issue_{number}.txt")
    assert "<<<<<<<" not in text and "Hello from trunk" in text and f"Fixed issue #{number}" in text
    entry = world.entry(number)
    assert entry["status"] == "completed" and entry["following"] and entry["checks"][0]["passed"]
    assert entry["upkeep"]["conflict_rounds"] == 1 and entry["upkeep"]["conflict_base"] == tip
    summary = world.comments(pull)[-1]
    assert summary.startswith("🔁 Claude Code worked on merging `trunk` into this branch.")
    assert f"Merged `trunk` at {tip[:12]} (a merge commit, never a rebase or a force-push); conflicts resolved by" \
           f" Claude Code in 1 file(s): `fix_issue_{number}.txt`." in summary and "Checks: " in summary
    assert world.labels(number) == [COMPLETED]
    assert_only_fast_forwards(world, f"issue-{number}")

    world.tick()
    world.tick()  # GitHub computed it again: mergeable, and nothing more to do
    upkeep = world.entry(number)["upkeep"]
    assert upkeep["mergeable"] is True and upkeep["behind_by"] == 0
    assert len(world.standin.invocations()) == 2


def test_a_conflict_the_session_cannot_resolve_is_tried_max_conflict_fixes_times_then_a_human_is_asked(world):
    number, pull, _ = opened_pull(world)
    branch = f"issue-{number}"
    pushed = git(world.origin, "rev-parse", f"refs/heads/{branch}")
    tip = conflicting_base(world, number, "Hello from trunk\n")  # the agent's answer: commit everything, markers too

    for _ in range(4):
        world.tick()

    follow_ups = world.standin.invocations()[1:]
    assert len(follow_ups) == 2 and all("stopped on conflicts" in call["prompt"] for call in follow_ups)
    assert git(world.origin, "rev-parse", f"refs/heads/{branch}") == pushed  # no marker ever reached origin
    assert ref_history(world.origin, branch)[-1][1] == pushed
    failures = [c for c in world.comments(pull) if c.startswith("❌ Claude Code could not finish merging `trunk`")]
    assert len(failures) == 2 and "conflict markers are left in fix_issue_" in failures[0]
    assert f"Merging `trunk` at {tip[:12]} into this branch met conflicts in 1 file(s)" in failures[0]
    assert "the attempt is kept on refs/orchestrator/backup/" in failures[0]
    asked = [c for c in world.comments(pull) if "follow_up.max_conflict_fixes" in c]
    assert len(asked) == 1 and asked[0].startswith("⚠️ This pull request conflicts with `trunk`")
    entry = world.entry(number)
    assert entry["following"] and entry["upkeep"]["conflict_rounds"] == 2 and world.labels(number) == [FAILED]

    said = len(world.comments(pull))
    world.tick()  # left alone until something changes: no run, no second comment
    assert len(world.standin.invocations()) == 3 and len(world.comments(pull)) == said

    commit_to(world.origin, "trunk", {"NEWS.md": "more\n"}, "The base moves on")  # something changed: a new try
    world.tick()
    world.tick()
    assert len(world.standin.invocations()) == 4
    assert_only_fast_forwards(world, branch)


def test_a_base_that_moved_cleanly_is_only_shown_unless_update_branch_is_always(world):
    number, pull, _ = opened_pull(world)
    commit_to(world.origin, "trunk", {"NEWS.md": "news\n"}, "News on trunk")
    world.tick()
    world.tick()
    upkeep = world.entry(number)["upkeep"]
    assert upkeep["mergeable"] is True and upkeep["behind_by"] == 1  # behind, clean: on_conflict leaves it

    world.write_config(follow_up={"update_branch": "always"})
    head = world.github.pull(pull)["head"]["sha"]
    before = len(world.github.requests)
    dry = world.tick("--dry-run", wait=False)
    assert "would bring its pull request up to date with trunk" in dry.stdout + dry.stderr
    assert not [r for r in world.github.requests[before:] if r.method != "GET"]  # --dry-run changes nothing
    _, asked = requests_of(world)
    puts = [(r.path, r.status, r.json()) for r in asked if r.method == "PUT"]
    assert puts == [(f"/repos/octo/widgets/pulls/{pull}/update-branch", 202, {"expected_head_sha": head})]
    updated = world.github.pull(pull)["head"]["sha"]
    assert git(world.origin, "rev-list", "--parents", "-n", "1", updated).split()[1] == head
    assert world.origin_file(f"issue-{number}", "NEWS.md") == "news\n"
    assert len(world.standin.invocations()) == 1  # GitHub merged it: no agent
    assert_only_fast_forwards(world, f"issue-{number}")
    world.tick()
    world.tick()
    assert world.entry(number)["upkeep"]["behind_by"] == 0


def test_update_branch_never_merges_nothing_even_a_conflict(world):
    world.write_config(follow_up={"update_branch": "never"})
    number, pull, _ = opened_pull(world)
    conflicting_base(world, number, "Hello from trunk\n")
    world.tick()
    world.tick()
    world.tick()
    upkeep = world.entry(number)["upkeep"]
    assert upkeep["mergeable"] is False and len(world.standin.invocations()) == 1


def test_a_merged_pull_request_costs_no_request_after_the_tick_that_notices_it(world):
    number, pull, _ = opened_pull(world)
    world.tick()
    head = world.github.pull(pull)["head"]["sha"]
    world.github.merge_pull(pull)

    _, noticing = requests_of(world)
    assert world.entry(number)["status"] == "merged" and not world.entry(number)["following"]
    assert not [r.path for r in noticing if f"/pulls/{pull}" in r.path or head in r.path]  # the listing said it

    _, after = requests_of(world)
    assert [r.path.split("?")[0] for r in after] == ["/repos/octo/widgets/issues"]  # the poll, nothing more


def test_twenty_idle_followed_pull_requests_cost_three_requests_a_tick_and_no_point(world):
    world.follow_pulls(20)
    world.tick()  # learns every answer's ETag
    world.tick()  # GitHub computed mergeability for each

    _, idle = requests_of(world)

    assert len(idle) <= 3 and all(r.status == 304 and r.points == 0 for r in idle), \
        [(r.path, r.status) for r in idle]
    assert [r.path.split("?")[0] for r in idle] == ["/repos/octo/widgets/issues", "/repos/octo/widgets/pulls",
                                                    "/repos/octo/widgets/git/ref/heads/trunk"]


def test_only_the_pull_request_that_changed_is_asked_about(world):
    pulls = world.follow_pulls(5)
    world.tick()
    world.tick()
    world.github.add_comment(pulls[2], "Nice.", user="drive-by")  # untrusted: a change, and no work

    _, asked = requests_of(world)

    about = {path for path in (r.path.split("?")[0] for r in asked) if "/pulls/" in path or "/issues/" in path}
    assert about == {f"/repos/octo/widgets/issues/{pulls[2]}/comments", f"/repos/octo/widgets/pulls/{pulls[2]}/reviews",
                     f"/repos/octo/widgets/pulls/{pulls[2]}/comments"}, about


def test_a_failing_check_on_an_idle_pull_request_is_seen_while_its_checks_run(world):
    number, pull, _ = opened_pull(world)
    head = world.github.pull(pull)["head"]["sha"]
    run = world.github.add_check_run(head, "tests", None, status="in_progress")
    world.tick()
    world.tick()
    assert len(world.standin.invocations()) == 1
    world.github.complete_check_run(run, "failure", title="1 failed")  # changes nothing on the pull request

    world.tick()

    assert "Check 'tests': failure: 1 failed" in world.standin.invocations()[-1]["prompt"]
    assert world.entry(number)["ci_fixes"] == 1

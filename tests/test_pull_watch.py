"""The survey of followed pull requests against the GitHub emulator, through the real client: how deep
the listing is read, what one changed pull request costs, and what a busy repository costs. The
tick's own handling of what is found is in test_pull_upkeep.py (real ticks)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from github_emulator import REPO
from lib.models import IssueState, IssueStatus
from lib.pull_upkeep import upkeep_view
from lib.pull_watch import look_at_each
from lib.settings import FollowUp
from test_github_client import client  # noqa: F401 (a fixture: the client, with a poll cache)

SETTINGS = FollowUp()


def followed(emulator, count):
    """`count` open pull requests whose checks passed, each followed by a finished entry (none looked at yet)."""
    entries = []
    for index in range(count):
        number = emulator.add_issue(f"Issue {index}", labels=("claude-completed",))
        pull = emulator.add_pull(f"issue-{number}", f"Fix #{number}", f"Closes #{number}")
        emulator.add_check_run(f"issue-{number}", "tests", "success")
        entries.append(IssueState(number, IssueStatus.COMPLETED, f"issue-{number}", "2026-01-01T00:00:00+00:00",
                                  repo=REPO, pr_number=pull, following=True))
    return entries


def tick(client, entries, now=None):
    """One tick's look at `entries` (their changes stored, as the tick does), as if at `now`; {PR number: news}."""
    found = {}
    for entry, news in look_at_each(entries, lambda repo: client, lambda repo: lambda login: login == "maintainer",
                                    SETTINGS, now=now):
        assert not isinstance(news, str), news
        for name, value in news.changes.items():
            setattr(entry, name, value)
        found[entry.pr_number] = news
    return found


def asked(emulator, mark):
    """(path, status) of each request since `mark`."""
    return [(r.path.split("?")[0], r.status) for r in emulator.requests[mark:]]


@pytest.mark.slow
def test_deep_followed_pull_requests_in_a_busy_repository_cost_one_request_when_nothing_changed(github_emulator,
                                                                                                   client):
    mine = followed(github_emulator, 5)
    time.sleep(1.1)  # GitHub's stamps are in seconds: the others are newer
    for index in range(150):
        github_emulator.add_pull(f"other-{index}", f"Other {index}", user="someone")
    mark = len(github_emulator.requests)
    tick(client, mine)  # read as deep as they are: the second page
    tick(client, mine)  # mergeability computed
    tick(client, mine)  # the first page's oldest changed a moment ago: it proves nothing yet, the second is read
    assert [path for path, _ in asked(github_emulator, mark)[-3:]] == [
        "/repos/octo/widgets/pulls", f"/repositories/{client.get_repository()['id']}/pulls",
        "/repos/octo/widgets/git/ref/heads/trunk"]
    later = datetime.now(timezone.utc) + timedelta(hours=1)  # the clock, the one thing faked
    tick(client, mine, now=later)

    mark = len(github_emulator.requests)
    tick(client, mine, now=later)
    assert asked(github_emulator, mark) == [("/repos/octo/widgets/pulls", 304),
                                            ("/repos/octo/widgets/git/ref/heads/trunk", 304)]

    time.sleep(1.1)  # a second after the others, as any later change
    github_emulator.add_comment(mine[3].pr_number, "Looks fine.", user="someone")  # untrusted: nothing to do
    mark = len(github_emulator.requests)
    news = tick(client, mine, now=later)
    paths = asked(github_emulator, mark)
    next_page = f"/repositories/{client.get_repository()['id']}/pulls"  # GitHub's links name the repository's id
    assert paths[:2] == [("/repos/octo/widgets/pulls", 200), (next_page, 200)]  # the second page: the rest
    number = mine[3].pr_number
    assert {path for path, _ in paths[2:]} == {
        "/repos/octo/widgets/git/ref/heads/trunk", f"/repos/octo/widgets/pulls/{number}/reviews",
        f"/repos/octo/widgets/pulls/{number}/comments", f"/repos/octo/widgets/issues/{number}/comments",
        f"/repos/octo/widgets/commits/{mine[3].upkeep['head_sha']}/check-runs",
        f"/repos/octo/widgets/commits/{mine[3].upkeep['head_sha']}/status"}
    assert not any(n.work for n in news.values())

    mark = len(github_emulator.requests)
    tick(client, mine, now=later)  # the others are known against this first page now
    assert [path for path, _ in asked(github_emulator, mark)] == ["/repos/octo/widgets/pulls",
                                                                  "/repos/octo/widgets/git/ref/heads/trunk"]


def test_a_merged_and_a_closed_pull_request_are_ended_by_the_listing_alone(github_emulator, client):
    mine = followed(github_emulator, 3)
    tick(client, mine)
    github_emulator.merge_pull(mine[0].pr_number)
    github_emulator.close_pull(mine[1].pr_number)

    mark = len(github_emulator.requests)
    news = tick(client, mine)

    assert news[mine[0].pr_number].ended == IssueStatus.MERGED
    assert news[mine[1].pr_number].ended == IssueStatus.CLOSED
    assert not any(f"/pulls/{entry.pr_number}" in path or f"/issues/{entry.pr_number}" in path
                   for path, _ in asked(github_emulator, mark) for entry in mine[:2])


def test_a_trusted_comment_is_work_and_the_upkeep_reads_as_one_line(github_emulator, client):
    [entry] = followed(github_emulator, 1)
    assert upkeep_view(entry, SETTINGS)["summary"] == f"PR #{entry.pr_number}, not looked at yet"
    tick(client, [entry])
    assert upkeep_view(entry, SETTINGS)["summary"] == f"PR #{entry.pr_number}, mergeable: GitHub is computing it"
    tick(client, [entry])
    assert upkeep_view(entry, SETTINGS)["summary"] == f"PR #{entry.pr_number}, mergeable, up to date with trunk"

    github_emulator.add_comment(entry.pr_number, "Please rename it.", user="maintainer")
    news = tick(client, [entry])[entry.pr_number]
    assert news.work["kind"] == "review" and news.work["comments"][0]["body"] == "Please rename it."

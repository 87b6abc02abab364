"""GitHubClient against the GitHub emulator: real HTTP on loopback, through real requests/urllib3."""

from __future__ import annotations

import json
import logging
import socket
import stat
import time
from datetime import datetime, timedelta, timezone

import pytest

from github_emulator import REPO, TOKEN
from lib.github_client import (COMMENT_MARKER, Trust, GitHubAuthError, GitHubClient, GitHubError, GitHubNotFoundError,
                               RateLimitError)

READY = "ready-for-claude"


@pytest.fixture
def client(github_emulator, tmp_path):
    # No backoff between retries: the tests count retries, not wait for them.
    with GitHubClient(TOKEN, REPO, github_emulator.url, poll_cache_file=tmp_path / "poll-cache.json",
                      timeout=(2, 2), backoff_factor=0) as github:
        yield github


def new_requests(emulator, mark):
    return emulator.requests[mark:]


# ------------------------------------------------------------------------------------------------
# Polling
# ------------------------------------------------------------------------------------------------


def test_poll_returns_labeled_issues_oldest_first_and_costs_nothing_when_unchanged(github_emulator, client):
    expected = []
    for i in range(250):
        is_pr = i % 12 == 5 and i < 240  # 20 pull requests spread over all three pages
        number = github_emulator.add_issue(f"Item {i}", labels=[READY, "bug"] if i % 3 else [READY],
                                           is_pull_request=is_pr)
        if not is_pr:
            expected.append(number)
    github_emulator.add_issue("Unlabeled", labels=["bug"])
    closed = github_emulator.add_issue("Closed", labels=[READY])
    github_emulator.close_issue(closed)
    assert len(expected) == 230

    mark = len(github_emulator.requests)
    issues = client.list_issues_with_label(READY)
    assert [issue["number"] for issue in issues] == expected
    assert all("pull_request" not in issue for issue in issues)
    assert [r.status for r in new_requests(github_emulator, mark)] == [200, 200, 200]
    assert not client.last_poll_was_cached

    remaining = github_emulator.rate_remaining
    mark = len(github_emulator.requests)
    assert client.list_issues_with_label(READY) == issues
    assert [r.status for r in new_requests(github_emulator, mark)] == [304, 304, 304]
    assert github_emulator.rate_remaining == remaining
    assert client.rate_limit_remaining == remaining
    assert client.last_poll_was_cached

    newest = github_emulator.add_issue("Newest", labels=[READY])
    mark = len(github_emulator.requests)
    issues = client.list_issues_with_label(READY)
    assert [issue["number"] for issue in issues] == expected + [newest]
    assert [r.status for r in new_requests(github_emulator, mark)] == [304, 304, 200]
    assert not client.last_poll_was_cached


def test_poll_sees_a_new_page_behind_a_full_last_page(github_emulator, client):
    # 100 issues fill page 1 exactly; the 101st starts page 2 without changing page 1's body.
    for i in range(100):
        github_emulator.add_issue(f"Item {i}", labels=[READY])
    assert len(client.list_issues_with_label(READY)) == 100
    github_emulator.add_issue("One more", labels=[READY])
    assert len(client.list_issues_with_label(READY)) == 101


def test_poll_cache_is_private_and_survives_a_new_client(github_emulator, client, tmp_path):
    for i in range(3):
        github_emulator.add_issue(f"Item {i}", labels=[READY])
    first = client.list_issues_with_label(READY)
    cache_file = tmp_path / "poll-cache.json"
    assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poll-cache.json"]  # no temp file left

    with GitHubClient(TOKEN, REPO, github_emulator.url, poll_cache_file=cache_file) as later:
        mark = len(github_emulator.requests)
        assert later.list_issues_with_label(READY) == first
        assert later.last_poll_was_cached
    [request] = new_requests(github_emulator, mark)
    assert request.status == 304 and request.headers["if-none-match"]


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "polls": {"u": {"u": {"etag": "x"}}}}'])
def test_unreadable_poll_cache_is_rebuilt(github_emulator, client, tmp_path, caplog, content):
    github_emulator.add_issue("Item", labels=[READY])
    (tmp_path / "poll-cache.json").write_text(content)
    assert [i["title"] for i in client.list_issues_with_label(READY)] == ["Item"]
    assert "unreadable GitHub poll cache" in caplog.text
    assert client.list_issues_with_label(READY) and client.last_poll_was_cached


def test_an_unchanged_full_last_page_costs_nothing(github_emulator, client):
    # 200 issues fill two pages exactly: the page after the last is asked for too, to see it grow.
    for i in range(200):
        github_emulator.add_issue(f"Item {i}", labels=[READY])
    mark = len(github_emulator.requests)
    assert len(client.list_issues_with_label(READY)) == 200
    assert [r.status for r in new_requests(github_emulator, mark)] == [200, 200, 200]

    mark = len(github_emulator.requests)
    assert len(client.list_issues_with_label(READY)) == 200
    assert [(r.status, r.points) for r in new_requests(github_emulator, mark)] == [(304, 0)] * 3
    assert client.last_poll_was_cached

    github_emulator.add_issue("One more", labels=[READY])
    assert [i["title"] for i in client.list_issues_with_label(READY)][-1] == "One more"
    assert not client.last_poll_was_cached
    mark = len(github_emulator.requests)
    assert len(client.list_issues_with_label(READY)) == 201
    assert sum(r.points for r in new_requests(github_emulator, mark)) == 0


def test_polled_issues_are_the_callers_to_change(github_emulator, client):
    github_emulator.add_issue("Item", labels=[READY])
    client.list_issues_with_label(READY)[0]["title"] = "changed by the caller"
    assert client.list_issues_with_label(READY)[0]["title"] == "Item"
    assert client.last_poll_was_cached


# ------------------------------------------------------------------------------------------------
# One issue, asked for conditionally
# ------------------------------------------------------------------------------------------------


def issue_requests(emulator, mark, number, repo=REPO):
    return [r for r in new_requests(emulator, mark) if r.path == f"/repos/{repo}/issues/{number}"]


@pytest.mark.parametrize("weak", [False, True], ids=["strong", "weak"])
def test_an_unchanged_issue_is_a_304_answered_from_the_cache(github_emulator, client, tmp_path, weak):
    github_emulator.weak_etags = weak
    number = github_emulator.add_issue("Issue", "text", labels=["claude-working"])
    mark = len(github_emulator.requests)
    first = client.get_issue_cached(number)
    assert first == github_emulator.issue(number)
    again = client.get_issue_cached(number)
    assert again == first
    [fetch, check] = issue_requests(github_emulator, mark, number)
    assert "if-none-match" not in fetch.headers and fetch.status == 200 and fetch.points == 1
    assert check.headers["if-none-match"].startswith('W/"' if weak else '"')
    assert check.status == 304 and check.points == 0

    assert github_emulator.points_used == 1
    again["labels"].clear()  # the caller's copy: the cache keeps its own
    assert client.get_issue_cached(number) == first
    with GitHubClient(TOKEN, REPO, github_emulator.url, poll_cache_file=tmp_path / "poll-cache.json") as later:
        mark = len(github_emulator.requests)
        assert later.get_issue_cached(number) == first
    assert [r.status for r in new_requests(github_emulator, mark)] == [304]


def test_a_changed_issue_is_fetched_anew(github_emulator, client):
    number = github_emulator.add_issue("Issue", labels=["claude-working"])
    client.get_issue_cached(number)
    changes = [
        (lambda: github_emulator.add_label_event(number, "claude-working", "maintainer", event="unlabeled"),
         lambda issue: issue["labels"] == []),
        (lambda: github_emulator.add_comment(number, "An answer", user="maintainer"),
         lambda issue: issue["comments"] == 1),
        (lambda: github_emulator.close_issue(number), lambda issue: issue["state"] == "closed"),
    ]
    for change, seen in changes:
        change()
        mark = len(github_emulator.requests)
        issue = client.get_issue_cached(number)
        assert seen(issue), issue
        assert client.get_issue_cached(number) == issue
        [fetch, check] = new_requests(github_emulator, mark)
        assert fetch.status == 200 and fetch.headers["if-none-match"]  # the old ETag no longer matches
        assert check.status == 304 and check.headers["if-none-match"] != fetch.headers["if-none-match"]


def test_get_issue_stays_a_plain_get(github_emulator, client):
    number = github_emulator.add_issue("Issue")
    client.get_issue_cached(number)
    mark = len(github_emulator.requests)
    client.get_issue(number)
    [request] = new_requests(github_emulator, mark)
    assert "if-none-match" not in request.headers and request.status == 200


def test_without_a_poll_cache_the_issue_is_a_plain_get(github_emulator):
    number = github_emulator.add_issue("Issue")
    with GitHubClient(TOKEN, REPO, github_emulator.url) as github:
        assert github.get_issue_cached(number)["title"] == "Issue"
        assert github.get_issue_cached(number)["title"] == "Issue"
    assert [("if-none-match" in r.headers, r.status) for r in github_emulator.requests] == [(False, 200)] * 2


def test_a_missing_issue_is_not_found_conditionally_too(github_emulator, client):
    with pytest.raises(GitHubNotFoundError, match=r"^Issue #99 not found in octo/widgets"):
        client.get_issue_cached(99)


def test_unchanged_issues_do_not_rewrite_the_cache_file(github_emulator, client, tmp_path):
    numbers = [github_emulator.add_issue(f"Issue {i}") for i in range(3)]
    for number in numbers:
        client.get_issue_cached(number)
    cache_file = tmp_path / "poll-cache.json"
    before = cache_file.stat()
    for number in numbers:
        client.get_issue_cached(number)
    after = cache_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert stat.S_IMODE(after.st_mode) == 0o600


def test_two_repositories_sharing_one_cache_file_keep_each_others_entries(github_emulator, tmp_path):
    other = "octo/gadgets"
    github_emulator.add_repo(other)
    widget = github_emulator.add_issue("Widget", labels=[READY])
    gadget = github_emulator.add_issue("Gadget", labels=[READY], repo=other)
    cache_file = tmp_path / "poll-cache.json"
    with GitHubClient(TOKEN, REPO, github_emulator.url, poll_cache_file=cache_file) as widgets, \
            GitHubClient(TOKEN, other, github_emulator.url, poll_cache_file=cache_file) as gadgets:
        # Interleaved as a tick does it: each client read the file before the other wrote it.
        widgets.get_issue_cached(widget)
        gadgets.get_issue_cached(gadget)
        github_emulator.add_label_event(widget, "bug", "maintainer")
        widgets.get_issue_cached(widget)  # a change: written over the file the other client wrote
        gadgets.list_issues_with_label(READY)
        widgets.list_issues_with_label(READY)
    with GitHubClient(TOKEN, REPO, github_emulator.url, poll_cache_file=cache_file) as widgets, \
            GitHubClient(TOKEN, other, github_emulator.url, poll_cache_file=cache_file) as gadgets:
        mark = len(github_emulator.requests)
        assert widgets.get_issue_cached(widget)["labels"][-1]["name"] == "bug"
        assert gadgets.get_issue_cached(gadget)["title"] == "Gadget"
        assert [i["title"] for i in widgets.list_issues_with_label(READY)] == ["Widget"]
        assert [i["title"] for i in gadgets.list_issues_with_label(READY)] == ["Gadget"]
    assert [r.status for r in new_requests(github_emulator, mark)] == [304, 304, 304, 304]


def test_the_issue_cache_is_bounded(github_emulator, client, tmp_path, monkeypatch):
    from lib import github_client
    monkeypatch.setattr(github_client, "ISSUE_CACHE_MAX", 3)
    numbers = [github_emulator.add_issue(f"Issue {i}") for i in range(5)]
    for number in numbers:
        client.get_issue_cached(number)
    cache_file = tmp_path / "poll-cache.json"
    cached = json.loads(cache_file.read_text())["issues"]
    assert sorted(cached) == [f"{github_emulator.url}/repos/{REPO}/issues/{n}" for n in numbers[2:]]

    # An issue nobody asked about for a day is dropped at the next write.
    data = json.loads(cache_file.read_text())
    stale = f"{github_emulator.url}/repos/{REPO}/issues/{numbers[2]}"
    data["issues"][stale]["used"] -= github_client.ISSUE_CACHE_IDLE + 60
    cache_file.write_text(json.dumps(data))
    client.get_issue_cached(numbers[0])
    cached = json.loads(cache_file.read_text())["issues"]
    assert stale not in cached and len(cached) == 3


def test_an_issue_asked_about_keeps_its_place(github_emulator, client, tmp_path, monkeypatch):
    from lib import github_client
    number = github_emulator.add_issue("Issue")
    client.get_issue_cached(number)
    cache_file = tmp_path / "poll-cache.json"
    data = json.loads(cache_file.read_text())
    [key] = data["issues"]
    data["issues"][key]["used"] -= github_client.ISSUE_CACHE_TOUCH + 1
    cache_file.write_text(json.dumps(data))
    mark = len(github_emulator.requests)
    client.get_issue_cached(number)
    assert [r.status for r in new_requests(github_emulator, mark)] == [304]
    assert json.loads(cache_file.read_text())["issues"][key]["used"] >= time.time() - 60


@pytest.mark.parametrize("content", [
    "{not json", '[]', '{"version": 1, "polls": {}, "issues": []}',
    '{"version": 1, "polls": {}, "issues": {"u": {"etag": "x"}}}',
    '{"version": 1, "polls": {}, "issues": {"u": {"etag": null, "issue": {}, "used": 0}}}'])
def test_an_unreadable_issue_cache_is_ignored_with_one_warning(github_emulator, client, tmp_path, caplog,
                                                               content):
    number = github_emulator.add_issue("Issue", labels=[READY])
    (tmp_path / "poll-cache.json").write_text(content)
    mark = len(github_emulator.requests)
    assert client.get_issue_cached(number)["title"] == "Issue"
    assert client.get_issue_cached(number)["title"] == "Issue"
    assert client.list_issues_with_label(READY)
    assert [r.status for r in new_requests(github_emulator, mark)] == [200, 304, 200]
    assert caplog.text.count("unreadable GitHub poll cache") == 1
    assert client.list_issues_with_label(READY) and client.last_poll_was_cached


def test_an_unwritable_cache_warns_once_and_the_answers_still_come(github_emulator, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    numbers = [github_emulator.add_issue(f"Issue {i}") for i in range(3)]
    with GitHubClient(TOKEN, REPO, github_emulator.url, poll_cache_file=blocker / "poll-cache.json") as github:
        assert [github.get_issue_cached(n)["title"] for n in numbers] == ["Issue 0", "Issue 1", "Issue 2"]
    assert caplog.text.count("Could not write the GitHub poll cache") == 1


# ------------------------------------------------------------------------------------------------
# Transient failures
# ------------------------------------------------------------------------------------------------


def test_three_502s_are_retried_quietly(github_emulator, client, caplog):
    caplog.set_level(logging.DEBUG)
    github_emulator.fail_next(3, status=502, method="GET")
    mark = len(github_emulator.requests)
    assert client.get_repository()["default_branch"] == "trunk"
    assert [r.status for r in new_requests(github_emulator, mark)] == [502, 502, 502, 200]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_persistent_5xx_is_one_clear_error(github_emulator, client):
    github_emulator.fail_next(10, status=503)
    with pytest.raises(GitHubError) as caught:
        client.get_repository()
    assert str(caught.value) == "GitHub answered 503 Service Unavailable for GET /repos/octo/widgets (tried 4 times)"
    assert caught.value.status == 503


def test_a_post_is_not_sent_twice(github_emulator, client):
    number = github_emulator.add_issue("Issue")
    github_emulator.drop_next(method="POST")
    with pytest.raises(GitHubError, match="connection closed without an answer"):
        client.create_comment(number, "Hello")
    github_emulator.fail_next(status=502, method="POST")
    with pytest.raises(GitHubError, match=r"^GitHub answered 502 Bad Gateway for POST /repos/octo/widgets/issues/1/"
                                          r"comments$"):
        client.create_comment(number, "Hello")
    assert [r.method for r in github_emulator.requests] == ["POST", "POST"]


def test_dropped_connection_is_retried(github_emulator, client):
    number = github_emulator.add_issue("Issue")
    github_emulator.drop_next(method="GET")
    mark = len(github_emulator.requests)
    assert client.get_issue(number)["title"] == "Issue"
    assert [r.status for r in new_requests(github_emulator, mark)] == [None, 200]


def test_slow_answer_fails_in_bounded_time(github_emulator):
    github_emulator.slow_next(5, count=3)
    with GitHubClient(TOKEN, REPO, github_emulator.url, timeout=(1, 0.2), retries=2, backoff_factor=0) as github:
        started = time.monotonic()
        with pytest.raises(GitHubError) as caught:
            github.get_repository()
    assert time.monotonic() - started < 2
    assert str(caught.value) == f"Could not reach GitHub at {github_emulator.url}: no answer within 0.2 s"
    assert len(github_emulator.requests) == 3


def test_unreachable_host_is_one_clear_error():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with GitHubClient(TOKEN, REPO, f"http://127.0.0.1:{port}", retries=1, backoff_factor=0) as github:
        with pytest.raises(GitHubError) as caught:
            github.get_repository()
    assert str(caught.value) == f"Could not reach GitHub at http://127.0.0.1:{port}: connection refused"
    assert caught.value.status is None


# ------------------------------------------------------------------------------------------------
# Rate limits
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 429])
def test_exhausted_rate_limit(github_emulator, client, status):
    reset = int(time.time()) + 1800
    github_emulator.rate_remaining, github_emulator.rate_reset = 0, reset
    github_emulator.rate_limit_status = status
    with pytest.raises(RateLimitError) as caught:
        client.list_issues_with_label(READY)
    reset_at = datetime.fromtimestamp(reset, timezone.utc)
    assert caught.value.reset_at == reset_at and caught.value.status == status
    assert str(caught.value) == f"GitHub rate limit exhausted; rate limited until {reset_at:%H:%M} UTC"
    assert client.rate_limit_remaining == 0
    assert len(github_emulator.requests) == 1  # not retried


def test_secondary_rate_limit(github_emulator, client):
    github_emulator.secondary_limit_next(retry_after=120)
    with pytest.raises(RateLimitError, match="^GitHub secondary rate limit hit; rate limited until") as caught:
        client.create_comment(github_emulator.add_issue("Issue"), "Hi")
    expected = datetime.now(timezone.utc) + timedelta(seconds=120)
    assert abs((caught.value.reset_at - expected).total_seconds()) < 5
    assert len(github_emulator.requests) == 1


# ------------------------------------------------------------------------------------------------
# Authentication, permissions, secrecy
# ------------------------------------------------------------------------------------------------


def test_rejected_token(github_emulator):
    with GitHubClient("ghp_wrong", REPO, github_emulator.url) as github:
        with pytest.raises(GitHubAuthError) as caught:
            github.get_authenticated_user()
    assert str(caught.value) == "GitHub rejected the token (401)" and caught.value.status == 401


def test_unknown_repository(github_emulator):
    with GitHubClient(TOKEN, "octo/missing", github_emulator.url) as github:
        with pytest.raises(GitHubNotFoundError, match="^octo/missing not found, or the token cannot see it$"):
            github.get_repository()


def test_missing_issue(github_emulator, client):
    with pytest.raises(GitHubNotFoundError, match=r"^Issue #99 not found in octo/widgets"):
        client.get_issue(99)
    with pytest.raises(GitHubNotFoundError, match=r"^Issue #99 not found in octo/widgets"):
        client.remove_label(99, READY)


def test_permission_refusal_names_githubs_reason(github_emulator, client):
    github_emulator.fail_next(status=403, method="POST", message="Resource not accessible by personal access token")
    with pytest.raises(GitHubError) as caught:
        client.add_labels(github_emulator.add_issue("Issue"), [READY])
    assert str(caught.value) == ("GitHub refused POST /repos/octo/widgets/issues/1/labels (403):"
                                 " Resource not accessible by personal access token")
    assert not isinstance(caught.value, RateLimitError)


def test_token_stays_in_the_authorization_header(github_emulator, client, caplog):
    caplog.set_level(logging.DEBUG)
    number = github_emulator.add_issue("Issue", labels=[READY])
    errors = []
    client.get_authenticated_user()
    client.list_issues_with_label(READY)
    client.create_comment(number, "Working on it")
    github_emulator.fail_next(4, status=502)
    with pytest.raises(GitHubError) as caught:
        client.get_repository()
    errors.append(caught.value)
    with pytest.raises(GitHubNotFoundError) as caught:
        client.get_issue(404)
    errors.append(caught.value)
    github_emulator.drop_next(4, method="GET")
    with pytest.raises(GitHubError) as caught:
        client.get_issue(number)
    errors.append(caught.value)
    github_emulator.tokens.clear()
    with pytest.raises(GitHubAuthError) as caught:
        client.get_repository()
    errors.append(caught.value)

    assert errors and all(TOKEN not in f"{e!s} {e!r} {e.__cause__!s}" for e in errors)
    assert caplog.records and all(TOKEN not in record.getMessage() for record in caplog.records)
    for request in github_emulator.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in request.path and TOKEN.encode() not in request.body
        assert all(TOKEN not in value for name, value in request.headers.items() if name != "authorization")
        assert request.headers["accept"] == "application/vnd.github+json"
        assert request.headers["x-github-api-version"] == "2022-11-28"
        assert request.headers["user-agent"] == "issue-orchestrator"


# ------------------------------------------------------------------------------------------------
# Labels, comments, pull requests, people
# ------------------------------------------------------------------------------------------------


def test_add_and_remove_labels(github_emulator, client):
    number = github_emulator.add_issue("Issue", labels=[READY])
    names = [label["name"] for label in client.add_labels(number, ["area/ui", "v1.2", "needs input"])]
    assert names == [READY, "area/ui", "v1.2", "needs input"]
    mark = len(github_emulator.requests)
    client.remove_label(number, "area/ui")
    client.remove_label(number, READY)
    client.remove_label(number, "v1.2")
    assert new_requests(github_emulator, mark)[0].path.endswith("/issues/1/labels/area%2Fui")
    assert github_emulator.issue_labels(number) == ["needs input"]
    client.remove_label(number, "area/ui")  # absent: quietly done


def test_ensure_labels_creates_only_missing_ones(github_emulator, client):
    github_emulator.add_issue("Issue", labels=[READY, "Claude-Working"])
    specs = {READY: ("0e8a16", "Queued"), "claude-working": ("fbca04", "Working"),
             "claude-completed": ("#1d76db", "Finished"), "claude/failed": ("d93f0b", "Could not finish")}
    assert client.ensure_labels(specs) == ["claude-completed", "claude/failed"]
    labels = github_emulator.labels()
    assert labels["claude-completed"]["color"] == "1d76db"
    assert labels["claude/failed"]["description"] == "Could not finish"
    mark = len(github_emulator.requests)
    assert client.ensure_labels(specs) == []
    assert [r.method for r in new_requests(github_emulator, mark)] == ["GET"]


def test_comments(github_emulator, client):
    number = github_emulator.add_issue("Issue")
    for i in range(150):
        github_emulator.add_comment(number, f"Comment {i}", user="bob")
    comment = client.create_comment(number, "I have a question")
    assert comment["id"] and comment["html_url"].endswith(f"#issuecomment-{comment['id']}")
    assert comment["user"]["login"] == "orchestrator-bot"
    mark = len(github_emulator.requests)
    comments = client.list_comments(number)
    assert len(new_requests(github_emulator, mark)) == 2  # two pages
    assert [c["body"] for c in comments] == [f"Comment {i}" for i in range(150)] + ["I have a question"]
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert client.list_comments(number, since=future) == []
    assert len(client.list_comments(number, since="2000-01-01T00:00:00Z")) == 151


def test_create_pull_request_and_find_it_again(github_emulator, client):
    pull = client.create_pull_request("issue-5", "trunk", "Fix #5", "Closes #5")
    assert pull["draft"] is True and pull["state"] == "open"
    assert pull["head"]["ref"] == "issue-5" and pull["base"]["ref"] == "trunk"
    assert pull["html_url"].endswith(f"/pull/{pull['number']}")

    again = client.create_pull_request("issue-5", "trunk", "Fix #5", "Closes #5", draft=False)
    assert again["number"] == pull["number"]
    assert len(github_emulator.pulls()) == 1
    assert client.find_open_pull_request("octo:issue-5")["number"] == pull["number"]
    assert client.find_open_pull_request("issue-6") is None

    with pytest.raises(GitHubError, match="^GitHub answered 422 for POST /repos/octo/widgets/pulls: Validation Failed"):
        client.create_pull_request("issue-7", "trunk", "", "")


def test_draft_pull_request_falls_back_to_a_ready_one_where_drafts_are_not_available(github_emulator, tmp_path):
    github_emulator.add_repo("octo/private", private=True, drafts=False)
    client = GitHubClient(TOKEN, "octo/private", github_emulator.url, retries=0)
    pull = client.create_pull_request("issue-5", "trunk", "Fix #5", "Closes #5", draft=True)
    assert pull["draft"] is False
    assert len(github_emulator.pulls("octo/private")) == 1


def test_trust_asks_each_role_once_and_never_counts_our_own_comments(github_emulator, client):
    number = github_emulator.add_issue("Question")
    github_emulator.set_role("maintainer", "maintain")
    github_emulator.set_role("reader", "read")
    ours = client.create_comment(number, "A question\n\n" + COMMENT_MARKER + " question:1:0 -->")
    github_emulator.add_comment(number, "drive-by", user="reader")
    github_emulator.add_comment(number, "the answer", user="maintainer")
    github_emulator.add_comment(number, "more", user="friend")
    trust = Trust(client, ["admin", "maintain", "write"], ["friend"])
    assert [c["body"] for c in trust.human_comments(number)] == ["the answer", "more"]
    mark = len(github_emulator.requests)
    assert [c["body"] for c in trust.human_comments(number, after_id=ours["id"])] == ["the answer", "more"]
    assert [r.path.split("?")[0] for r in new_requests(github_emulator, mark)] == [f"/repos/{REPO}/issues/{number}/comments"]
    assert not trust(None) and not trust("")


def test_last_labeler(github_emulator, client):
    number = github_emulator.add_issue("Issue", labels=[READY], labeled_by="mallory")
    for _ in range(60):  # events beyond the first page
        github_emulator.add_label_event(number, "bug", "someone")
        github_emulator.add_label_event(number, "bug", "someone", event="unlabeled")
    github_emulator.add_label_event(number, READY, "mallory", event="unlabeled")
    github_emulator.add_label_event(number, READY, "maintainer")
    assert client.last_labeler(number, READY) == "maintainer"
    assert client.last_labeler(number, "claude-failed") is None


def test_user_role(github_emulator, client):
    github_emulator.set_role("mia", "maintain")  # the legacy permission field says "write"
    github_emulator.set_role("tom", "triage")
    assert client.user_role("mia") == "maintain"
    assert client.user_role("tom") == "triage"
    assert client.user_role("stranger") == "none"


def test_authenticated_user_and_rate_limit_remaining(github_emulator, client):
    assert client.rate_limit_remaining is None
    assert client.get_authenticated_user()["login"] == "orchestrator-bot"
    assert client.rate_limit_remaining == github_emulator.rate_remaining


def test_enterprise_api_url(github_emulator):
    with GitHubClient(TOKEN, REPO) as default:
        assert default.api_url == "https://api.github.com"
    for i in range(120):
        github_emulator.add_issue(f"Item {i}", labels=[READY])
    with GitHubClient(TOKEN, REPO, github_emulator.url + "/api/v3/", backoff_factor=0) as github:
        assert github.get_repository()["full_name"] == REPO
        assert len(github.list_issues_with_label(READY)) == 120
        github.add_labels(1, ["v2.0/beta"])
        github.remove_label(1, "v2.0/beta")
    assert len(github_emulator.requests) == 5
    assert all(r.path.startswith("/api/v3/") and r.status == 200 for r in github_emulator.requests)


def test_pages_stay_on_the_configured_host(github_emulator):
    # The emulator's Link headers name 127.0.0.1; a client configured with another name for the
    # same server keeps its token (and its paging) on that name.
    for i in range(150):
        github_emulator.add_issue(f"Item {i}", labels=[READY])
    port = github_emulator.url.rsplit(":", 1)[1]
    with GitHubClient(TOKEN, REPO, f"http://localhost:{port}", backoff_factor=0) as github:
        assert len(github.list_issues_with_label(READY)) == 150
    assert [r.headers["host"] for r in github_emulator.requests] == [f"localhost:{port}"] * 2

"""GitHubClient against the GitHub emulator: real HTTP on loopback, through real requests/urllib3."""

from __future__ import annotations

import json
import logging
import socket
import stat
import time
from datetime import datetime, timedelta, timezone

import pytest

from git_fixtures import commit_to, git, read_file
from github_emulator import REPO, TOKEN
from lib import github_poll_cache
from lib.github_client import COMMENT_MARKER, GitHubClient, Trust
from lib.github_errors import GitHubAuthError, GitHubError, GitHubNotFoundError, RateLimitError

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


@pytest.mark.parametrize("content", ["{not json", '{"version": 2, "gets": {"u": {"etag": "x"}}}'])
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
    monkeypatch.setattr(github_poll_cache, "GET_CACHE_MAX", 3)
    numbers = [github_emulator.add_issue(f"Issue {i}") for i in range(5)]
    for number in numbers:
        client.get_issue_cached(number)
    cache_file = tmp_path / "poll-cache.json"
    cached = json.loads(cache_file.read_text())["gets"]
    assert sorted(cached) == [f"{github_emulator.url}/repos/{REPO}/issues/{n}" for n in numbers[2:]]

    # An issue nobody asked about for a day is dropped at the next write.
    data = json.loads(cache_file.read_text())
    stale = f"{github_emulator.url}/repos/{REPO}/issues/{numbers[2]}"
    data["gets"][stale]["used"] -= github_poll_cache.GET_CACHE_IDLE + 60
    cache_file.write_text(json.dumps(data))
    client.get_issue_cached(numbers[0])
    cached = json.loads(cache_file.read_text())["gets"]
    assert stale not in cached and len(cached) == 3


def test_an_issue_asked_about_keeps_its_place(github_emulator, client, tmp_path, monkeypatch):
    number = github_emulator.add_issue("Issue")
    client.get_issue_cached(number)
    cache_file = tmp_path / "poll-cache.json"
    data = json.loads(cache_file.read_text())
    [key] = data["gets"]
    data["gets"][key]["used"] -= github_poll_cache.GET_CACHE_TOUCH + 1
    cache_file.write_text(json.dumps(data))
    mark = len(github_emulator.requests)
    client.get_issue_cached(number)
    assert [r.status for r in new_requests(github_emulator, mark)] == [304]
    assert json.loads(cache_file.read_text())["gets"][key]["used"] >= time.time() - 60


@pytest.mark.parametrize("content", [
    "{not json", '[]', '{"version": 2, "gets": []}', '{"version": 2}',
    '{"version": 2, "gets": {"u": {"etag": "x"}}}',
    '{"version": 2, "gets": {"u": {"etag": null, "json": {}, "used": 0}}}',
    '{"version": 2, "gets": {"u": {"etag": "x", "json": "text", "used": 0}}}',
    '{"version": 2, "gets": {"u": {"etag": "x", "json": [], "used": 0, "next": 7}}}'])
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


# ------------------------------------------------------------------------------------------------
# Pull requests: reviews, review comments, checks, statuses
# ------------------------------------------------------------------------------------------------

LOCAL = "octo/gizmos"  # a repository whose clone_url is a local bare origin: real shas


@pytest.fixture
def local(github_emulator, tmp_path, origin_repo):
    """(client, origin) for LOCAL, with an `issue-5` branch pushed and a pull request from it."""
    github_emulator.add_repo(LOCAL, default_branch="trunk", clone_url=str(origin_repo))
    commit_to(origin_repo, "issue-5", {"hello.py": "print('hello')\nname = 'world'\nprint(name)\n"}, "Add hello")
    with GitHubClient(TOKEN, LOCAL, github_emulator.url, poll_cache_file=tmp_path / "poll-cache.json",
                      timeout=(2, 2), backoff_factor=0) as github:
        yield github, origin_repo


def open_pull(github, body="Closes #1"):
    return github.create_pull_request("issue-5", "trunk", "Say hello", body)


def statuses(emulator, mark):
    return [(r.status, r.points) for r in new_requests(emulator, mark)]


def test_get_pull_has_githubs_fields_and_the_real_head_sha(github_emulator, local, origin_repo):
    github, _ = local
    number = github_emulator.add_issue("Say hello", repo=LOCAL)
    created = open_pull(github, body=f"Closes #{number}")
    pull = github.get_pull(created["number"])
    head = git(origin_repo, "rev-parse", "refs/heads/issue-5")
    assert pull["number"] == created["number"] and pull["state"] == "open" and pull["merged"] is False
    assert pull["merged_at"] is None and pull["draft"] is True and pull["user"]["login"] == "orchestrator-bot"
    assert pull["head"]["ref"] == "issue-5" and pull["head"]["sha"] == head
    assert pull["base"]["ref"] == "trunk" and pull["base"]["sha"] == git(origin_repo, "rev-parse", "refs/heads/trunk")
    assert pull["html_url"] == f"https://github.com/{LOCAL}/pull/{pull['number']}"
    assert pull["updated_at"] == pull["created_at"]
    assert (pull["commits"], pull["additions"], pull["deletions"], pull["changed_files"]) == (1, 3, 0, 1)
    # The list answers "simple" pull requests, which have no merged (as on GitHub).
    listed = github.find_open_pull_request("issue-5")
    assert listed["head"]["sha"] == head and "merged" not in listed and "merged_at" in listed
    assert github_emulator.pull(pull["number"], repo=LOCAL) == pull

    with pytest.raises(GitHubNotFoundError, match=rf"^Pull request #{number} not found in {LOCAL}"):
        github.get_pull(number)  # an issue, not a pull request: 404 as on GitHub
    with pytest.raises(GitHubNotFoundError, match=r"^Pull request #99 not found"):
        github.list_reviews(99)


def test_head_sha_follows_a_push_to_the_origin(github_emulator, local, origin_repo):
    github, _ = local
    number = open_pull(github)["number"]
    first = github.get_pull(number, cached=True)
    mark = len(github_emulator.requests)
    assert github.get_pull(number, cached=True) == first
    assert statuses(github_emulator, mark) == [(304, 0)]

    pushed = commit_to(origin_repo, "issue-5", {"hello.py": "print('hi')\n"}, "Shorter")
    mark = len(github_emulator.requests)
    pull = github.get_pull(number, cached=True)
    assert pull["head"]["sha"] == pushed != first["head"]["sha"]
    assert pull["updated_at"] > first["updated_at"] and pull["commits"] == 2  # a push updates it, as on GitHub
    assert pull["mergeable"] is None and pull["mergeable_state"] == "unknown"  # computed lazily after a push
    pull = github.get_pull(number, cached=True)
    assert pull["mergeable"] is True and pull["mergeable_state"] == "draft"
    assert github.get_pull(number, cached=True) == pull
    assert statuses(github_emulator, mark) == [(200, 1), (200, 1), (304, 0)]
    assert github.list_check_runs("issue-5") == []  # a branch names its head commit


def test_a_pull_request_without_a_local_origin_has_made_up_shas(github_emulator, client):
    pull = client.create_pull_request("issue-5", "trunk", "Fix", "Closes #1")
    sha = client.get_pull(pull["number"])["head"]["sha"]
    assert len(sha) == 40 and sha == pull["head"]["sha"]
    github_emulator.add_check_run(sha, "tests", "success")
    assert [run["name"] for run in client.list_check_runs("issue-5")] == ["tests"]


def test_reviews_and_review_comments_every_page(github_emulator, local):
    github, _ = local
    number = open_pull(github)["number"]
    head = github.get_pull(number)["head"]["sha"]
    states = ["APPROVED", "CHANGES_REQUESTED", "COMMENTED"]
    ids = [github_emulator.add_review(number, f"reviewer{i % 3}", states[i % 3], body=f"Review {i}",
                                      comments=[{"path": "hello.py", "line": 2, "body": f"Line 2, take {i}"}],
                                      repo=LOCAL)
           for i in range(150)]
    github_emulator.add_review(number, "shy", "PENDING", comments=[{"path": "hello.py", "line": 1, "body": "draft"}],
                               repo=LOCAL)  # not submitted: only its author sees it
    mark = len(github_emulator.requests)
    reviews = github.list_reviews(number)
    assert len(new_requests(github_emulator, mark)) == 2  # two pages of 100
    assert [r["id"] for r in reviews] == ids  # oldest first
    first = reviews[0]
    assert first["user"]["login"] == "reviewer0" and first["state"] == "APPROVED" and first["body"] == "Review 0"
    assert first["commit_id"] == head and first["submitted_at"]
    assert first["html_url"] == f"https://github.com/{LOCAL}/pull/{number}#pullrequestreview-{first['id']}"
    assert {r["state"] for r in reviews} == set(states)

    mark = len(github_emulator.requests)
    comments = github.list_review_comments(number)
    assert len(new_requests(github_emulator, mark)) == 2
    assert [c["body"] for c in comments] == [f"Line 2, take {i}" for i in range(150)]
    comment = comments[0]
    assert comment["pull_request_review_id"] == ids[0] and comment["user"]["login"] == "reviewer0"
    assert (comment["path"], comment["line"], comment["original_line"], comment["side"]) == ("hello.py", 2, 2, "RIGHT")
    assert comment["diff_hunk"].startswith("@@ -1,1 +1,2 @@") and "+name = 'world'" in comment["diff_hunk"]
    assert comment["commit_id"] == head and comment["created_at"]
    assert comment["html_url"] == f"https://github.com/{LOCAL}/pull/{number}#discussion_r{comment['id']}"
    assert all("in_reply_to_id" not in c for c in comments)  # top-level comments have none, as on GitHub
    assert github.get_pull(number)["review_comments"] == 150


def test_reply_to_a_review_comment(github_emulator, local):
    github, _ = local
    number = open_pull(github)["number"]
    github_emulator.add_review(number, "maintainer", "CHANGES_REQUESTED", "A few things",
                               comments=[{"path": "hello.py", "line": 2, "body": "Call it greeting"},
                                         {"path": "hello.py", "line": 3, "body": "And print it twice"}], repo=LOCAL)
    top, other = github.list_review_comments(number)
    reply = github.reply_to_review_comment(number, top["id"], "Renamed in the next commit")
    assert reply["in_reply_to_id"] == top["id"] and reply["body"] == "Renamed in the next commit"
    assert reply["user"]["login"] == "orchestrator-bot" and reply["id"] not in (top["id"], other["id"])
    assert (reply["path"], reply["line"], reply["diff_hunk"]) == (top["path"], top["line"], top["diff_hunk"])
    [created] = [r for r in github_emulator.requests if r.path.endswith("/replies")]
    assert created.status == 201 and created.json() == {"body": "Renamed in the next commit"}
    assert github_emulator.review_comment_replies(number, repo=LOCAL) == [reply]
    assert [c["id"] for c in github.list_review_comments(number)] == [top["id"], other["id"], reply["id"]]
    # As on GitHub, a reply is a review of its own: COMMENTED, with no body.
    bot_review = github.list_reviews(number)[-1]
    assert (bot_review["id"], bot_review["state"], bot_review["body"]) == (reply["pull_request_review_id"],
                                                                          "COMMENTED", "")
    human = github_emulator.add_review_comment_reply(number, reply["id"], "Thanks", user="maintainer", repo=LOCAL)
    assert github.list_review_comments(number)[-1]["in_reply_to_id"] == top["id"]  # the thread's first comment

    # GitHub has no replies to replies (404), nor replies to another pull request's comments.
    mark = len(github_emulator.requests)
    for comment_id in (reply["id"], human, 999999):
        with pytest.raises(GitHubNotFoundError, match=rf"^Review comment {comment_id} is not the first comment"):
            github.reply_to_review_comment(number, comment_id, "again")
    second = github.create_pull_request("issue-6", "trunk", "Another", "")["number"]
    with pytest.raises(GitHubNotFoundError):
        github.reply_to_review_comment(second, top["id"], "wrong pull request")
    assert [r.status for r in new_requests(github_emulator, mark)] == [404, 404, 404, 201, 404]
    with pytest.raises(GitHubError, match="422"):
        github.reply_to_review_comment(number, other["id"], "")


def test_check_runs_the_latest_of_each_every_page(github_emulator, local, origin_repo):
    github, _ = local
    sha = git(origin_repo, "rev-parse", "refs/heads/issue-5")
    for i in range(150):
        github_emulator.add_check_run(sha, f"check {i:03}", "success", title=f"Check {i}", summary="fine", repo=LOCAL)
    github_emulator.add_check_run(sha, "check 007", "failure", title="1 test failed", summary="tests/test_x.py failed",
                                  annotations=[{"path": "hello.py", "start_line": 2, "message": "NameError"}],
                                  repo=LOCAL)  # a re-run: the latest counts
    queued = github_emulator.add_check_run(sha, "lint", None, status="queued", repo=LOCAL)
    github_emulator.add_check_run(git(origin_repo, "rev-parse", "refs/heads/trunk"), "elsewhere", "failure", repo=LOCAL)

    mark = len(github_emulator.requests)
    runs = github.list_check_runs(sha)
    assert len(new_requests(github_emulator, mark)) == 2
    assert len(runs) == 151 and len({run["id"] for run in runs}) == 151
    assert all(run["head_sha"] == sha for run in runs)
    [rerun] = [run for run in runs if run["name"] == "check 007"]
    assert (rerun["status"], rerun["conclusion"]) == ("completed", "failure")
    assert rerun["output"]["title"] == "1 test failed" and rerun["output"]["summary"] == "tests/test_x.py failed"
    assert rerun["output"]["annotations_count"] == 1 and rerun["output"]["text"] is None
    assert rerun["html_url"] == f"https://github.com/{LOCAL}/runs/{rerun['id']}"
    assert rerun["started_at"] and rerun["completed_at"]
    [lint] = [run for run in runs if run["name"] == "lint"]
    assert (lint["id"], lint["status"], lint["conclusion"], lint["completed_at"]) == (queued, "queued", None, None)
    assert lint["output"]["title"] is None
    assert [run["id"] for run in github.list_check_runs("issue-5")] == [run["id"] for run in runs]

    github_emulator.complete_check_run(queued, "success", title="Clean", repo=LOCAL)
    [lint] = [run for run in github.list_check_runs(sha) if run["name"] == "lint"]
    assert (lint["status"], lint["conclusion"], lint["output"]["title"]) == ("completed", "success", "Clean")

    [annotation] = github.list_check_run_annotations(rerun["id"])
    assert annotation == {"path": "hello.py", "start_line": 2, "end_line": 2, "annotation_level": "failure",
                          "message": "NameError", "title": None, "raw_details": None, "start_column": None,
                          "end_column": None, "blob_href": f"https://github.com/{LOCAL}/blob/{sha}/hello.py"}
    with pytest.raises(GitHubNotFoundError, match="^Check run 4242 not found"):
        github.list_check_run_annotations(4242)
    with pytest.raises(GitHubError, match="422.*No commit found for SHA: no-such-branch"):
        github.list_check_runs("no-such-branch")


def test_annotations_every_page(github_emulator, client):
    sha = "a" * 40
    run = github_emulator.add_check_run(sha, "lint", "failure", annotations=[
        {"path": f"src/m{i}.py", "start_line": i + 1, "end_line": i + 2, "annotation_level": "warning",
         "title": "E501", "message": f"line too long ({i})"} for i in range(120)])
    annotations = client.list_check_run_annotations(run)
    assert [a["message"] for a in annotations] == [f"line too long ({i})" for i in range(120)]
    fifth = annotations[5]
    assert (fifth["path"], fifth["start_line"], fifth["end_line"], fifth["title"]) == ("src/m5.py", 6, 7, "E501")
    assert {a["annotation_level"] for a in annotations} == {"warning"}


def test_combined_status(github_emulator, client):
    sha = "b" * 40
    empty = client.get_combined_status(sha)
    assert (empty["state"], empty["sha"], empty["total_count"], empty["statuses"]) == ("pending", sha, 0, [])
    github_emulator.add_status(sha, "ci/build", "pending", "Building")
    github_emulator.add_status(sha, "ci/build", "success", "Built", target_url="https://ci.example/1")
    github_emulator.add_status(sha, "ci/deploy", "success")
    combined = client.get_combined_status(sha)
    assert combined["state"] == "success" and combined["total_count"] == 2
    build = combined["statuses"][0]
    assert (build["context"], build["state"], build["description"], build["target_url"]) == (
        "ci/build", "success", "Built", "https://ci.example/1")
    assert build["id"] and build["created_at"]
    github_emulator.add_status(sha, "ci/lint", "error", "Crashed")
    assert client.get_combined_status(sha)["state"] == "failure"

    for i in range(110):  # the statuses of every page
        github_emulator.add_status(sha, f"ci/{i}", "success")
    mark = len(github_emulator.requests)
    combined = client.get_combined_status(sha)
    assert len(new_requests(github_emulator, mark)) == 2
    assert combined["total_count"] == 113 and len(combined["statuses"]) == 113 and combined["state"] == "failure"


def test_cached_pull_request_calls_cost_nothing_until_something_changes(github_emulator, local):
    github, _ = local
    number = open_pull(github)["number"]
    github.create_comment(number, "Opened")
    sha = github.get_pull(number)["head"]["sha"]
    github_emulator.add_review(number, "maintainer", "COMMENTED", "Hm", repo=LOCAL,
                               comments=[{"path": "hello.py", "line": 1, "body": "Why?"}])
    github_emulator.add_check_run(sha, "tests", "success", repo=LOCAL)
    github_emulator.add_status(sha, "ci", "success", repo=LOCAL)

    def follow():
        """What following a pull request asks, one request each."""
        return [github.get_pull(number, cached=True), github.list_reviews(number, cached=True),
                github.list_review_comments(number, cached=True), github.list_comments(number, cached=True),
                github.list_check_runs(sha, cached=True), github.get_combined_status(sha, cached=True)]

    mark = len(github_emulator.requests)
    first = follow()
    assert statuses(github_emulator, mark) == [(200, 1)] * 6
    mark = len(github_emulator.requests)
    assert follow() == first
    assert statuses(github_emulator, mark) == [(304, 0)] * 6
    assert all("if-none-match" in r.headers for r in new_requests(github_emulator, mark))

    # A review changes the reviews, the review comments (an inline one) and the pull request's updated_at.
    github_emulator.add_review(number, "maintainer", "CHANGES_REQUESTED", "Please rename", repo=LOCAL,
                               comments=[{"path": "hello.py", "line": 2, "body": "greeting?"}])
    mark = len(github_emulator.requests)
    pull, reviews, review_comments, comments, runs, combined = follow()
    assert statuses(github_emulator, mark) == [(200, 1), (200, 1), (200, 1), (304, 0), (304, 0), (304, 0)]
    assert pull["updated_at"] > first[0]["updated_at"] and reviews[-1]["state"] == "CHANGES_REQUESTED"
    assert review_comments[-1]["body"] == "greeting?" and comments == first[3]

    # A check run changes only the check runs: not the pull request (as on GitHub).
    github_emulator.add_check_run(sha, "lint", "failure", repo=LOCAL)
    mark = len(github_emulator.requests)
    again = follow()
    assert statuses(github_emulator, mark) == [(304, 0)] * 4 + [(200, 1), (304, 0)]
    assert [run["name"] for run in again[4]] == ["tests", "lint"] and again[0] == pull

    # A status, a conversation comment: each its own.
    github_emulator.add_status(sha, "ci", "failure", repo=LOCAL)
    github_emulator.add_comment(number, "Any news?", user="maintainer", repo=LOCAL)
    mark = len(github_emulator.requests)
    again = follow()
    assert statuses(github_emulator, mark) == [(200, 1), (304, 0), (304, 0), (200, 1), (304, 0), (200, 1)]
    assert again[5]["state"] == "failure" and again[3][-1]["body"] == "Any news?"

    # The answers are the caller's to change; a new client answers from the file.
    again[1].clear()
    with GitHubClient(TOKEN, LOCAL, github_emulator.url, poll_cache_file=github.poll_cache_file) as later:
        mark = len(github_emulator.requests)
        assert later.list_reviews(number, cached=True) == reviews
    assert statuses(github_emulator, mark) == [(304, 0)]


def test_a_cached_list_sees_a_new_page_behind_a_full_last_page(github_emulator, local):
    github, _ = local
    number = open_pull(github)["number"]
    for i in range(100):
        github_emulator.add_review(number, "maintainer", "COMMENTED", f"Review {i}", repo=LOCAL)
    mark = len(github_emulator.requests)
    assert len(github.list_reviews(number, cached=True)) == 100
    assert statuses(github_emulator, mark) == [(200, 1), (200, 1)]  # and the empty page after it
    mark = len(github_emulator.requests)
    assert len(github.list_reviews(number, cached=True)) == 100
    assert statuses(github_emulator, mark) == [(304, 0), (304, 0)]
    github_emulator.add_review(number, "maintainer", "APPROVED", "One more", repo=LOCAL)
    mark = len(github_emulator.requests)
    assert github.list_reviews(number, cached=True)[-1]["body"] == "One more"
    assert statuses(github_emulator, mark) == [(304, 0), (200, 1)]


def test_cached_calls_without_a_poll_cache_are_plain_gets(github_emulator):
    number = github_emulator.add_issue("Work", is_pull_request=True)
    with GitHubClient(TOKEN, REPO, github_emulator.url) as github:
        for _ in range(2):
            assert github.get_pull(number, cached=True)["number"] == number
            assert github.list_reviews(number, cached=True) == []
    assert [("if-none-match" in r.headers, r.status) for r in github_emulator.requests] == [(False, 200)] * 4


def test_merged_and_closed_pull_requests(github_emulator, local, origin_repo):
    github, _ = local
    issue = github_emulator.add_issue("Say hello", repo=LOCAL)
    other = github_emulator.add_issue("Unrelated", repo=LOCAL)
    number = open_pull(github, body=f"Fixes #{issue}\n\nSee also #{other}.")["number"]
    before = github.get_pull(number, cached=True)
    sha = github_emulator.merge_pull(number, repo=LOCAL)
    pull = github.get_pull(number, cached=True)
    assert pull["state"] == "closed" and pull["merged"] is True and pull["merged_at"] == pull["closed_at"]
    assert pull["merge_commit_sha"] == sha and pull["merged_by"]["login"] == "maintainer" and not pull["draft"]
    assert pull["updated_at"] > before["updated_at"] and pull["head"]["sha"] == before["head"]["sha"]
    assert git(origin_repo, "rev-parse", "refs/heads/trunk") == sha  # a merge commit, in the origin
    assert read_file(origin_repo, "trunk", "hello.py").startswith("print('hello')")
    assert github.get_issue(number)["pull_request"]["merged_at"] == pull["merged_at"]
    # Merged into the default branch, it closes the issues it names with a closing keyword.
    assert github.get_issue(issue)["state"] == "closed" and github.get_issue(other)["state"] == "open"
    assert [e["event"] for e in github_emulator.events(issue, repo=LOCAL)] == ["closed"]

    commit_to(origin_repo, "issue-6", {"other.py": "pass\n"}, "Other")
    second = github.create_pull_request("issue-6", "trunk", "Other", f"Closes #{other}")
    head = second["head"]["sha"]
    github_emulator.close_pull(second["number"], repo=LOCAL)
    commit_to(origin_repo, "issue-6", {"other.py": "pass  # again\n"}, "Pushed after the close")
    closed = github.get_pull(second["number"])
    assert (closed["state"], closed["merged"], closed["merged_at"]) == ("closed", False, None)
    assert closed["head"]["sha"] == head  # a closed pull request keeps its head
    assert github.get_issue(other)["state"] == "open"


def test_a_version_1_cache_file_is_read_as_empty_without_a_warning(github_emulator, client, tmp_path, caplog):
    # Version 1 (the poll's pages and issues only, before pull requests were followed) costs one
    # full round of requests after the upgrade, like a missing file.
    number = github_emulator.add_issue("Issue", labels=[READY])
    cache_file = tmp_path / "poll-cache.json"
    cache_file.write_text(json.dumps({"version": 1, "polls": {}, "issues": {
        f"{github_emulator.url}/repos/{REPO}/issues/{number}": {"etag": '"x"', "issue": {}, "used": time.time()}}}))
    mark = len(github_emulator.requests)
    assert client.get_issue_cached(number)["title"] == "Issue"
    assert [i["title"] for i in client.list_issues_with_label(READY)] == ["Issue"]
    assert [("if-none-match" in r.headers, r.status) for r in new_requests(github_emulator, mark)] == [(False, 200)] * 2
    assert "poll cache" not in caplog.text
    assert json.loads(cache_file.read_text())["version"] == 2


def test_the_cache_holds_twenty_followed_pull_requests_and_the_reconciled_issues():
    assert github_poll_cache.GET_CACHE_MAX >= 20 * 6 + 200


# ------------------------------------------------------------------------------------------------
# Keeping pull requests mergeable: the listing by update, a branch's tip, compare, update-branch
# ------------------------------------------------------------------------------------------------


def test_pull_requests_listed_most_recently_updated_first_each_page_conditional(github_emulator, local, origin_repo):
    github, _ = local
    numbers = []
    for name in ("a", "b", "c"):
        commit_to(origin_repo, f"topic-{name}", {f"{name}.txt": name}, f"Add {name}")
        numbers.append(github_emulator.add_pull(f"topic-{name}", f"Add {name}", repo=LOCAL))
    time.sleep(1.1)  # GitHub's stamps are in seconds
    commit_to(origin_repo, "topic-a", {"a.txt": "a, again"}, "Again")  # a push moves updated_at
    mark = len(github_emulator.requests)
    pages = list(github.pull_pages())
    assert [pull["number"] for pull in pages[0]] == [numbers[0], numbers[2], numbers[1]]
    assert "merged" not in pages[0][0] and pages[0][0]["head"]["sha"] == git(origin_repo, "rev-parse", "topic-a")
    assert list(github.pull_pages()) == pages
    assert statuses(github_emulator, mark) == [(200, 1), (304, 0)]
    github_emulator.merge_pull(numbers[1], repo=LOCAL)
    listed = next(github.pull_pages())
    assert listed[0]["number"] == numbers[1] and listed[0]["state"] == "closed" and listed[0]["merged_at"]


def test_base_sha_of_a_pull_request_does_not_follow_its_base_but_its_tip_does(github_emulator, local, origin_repo):
    github, _ = local
    number = open_pull(github)["number"]
    first = github.get_pull(number)
    tip = commit_to(origin_repo, "trunk", {"NEWS.md": "news\n"}, "News")
    assert github.branch_tip("trunk") == tip and github.get_pull(number)["base"]["sha"] == first["base"]["sha"] != tip
    mark = len(github_emulator.requests)
    assert github.branch_tip("trunk") == tip
    assert statuses(github_emulator, mark) == [(304, 0)]
    with pytest.raises(GitHubNotFoundError, match=f"^Branch nope not found in {LOCAL}"):
        github.branch_tip("nope")


def test_mergeable_is_computed_lazily_from_the_origin_and_false_on_conflicts(github_emulator, local, origin_repo):
    github, _ = local
    number = open_pull(github)["number"]
    assert github.get_pull(number)["mergeable"] is True  # computed since the pull request was opened
    commit_to(origin_repo, "trunk", {"hello.py": "print('bonjour')\n"}, "French")  # the same file, other text
    first, second = github.get_pull(number), github.get_pull(number)
    assert (first["mergeable"], first["mergeable_state"]) == (None, "unknown")  # the first read after a change
    assert (second["mergeable"], second["mergeable_state"]) == (False, "dirty")
    compared = github.compare("trunk", "issue-5")
    assert (compared["status"], compared["ahead_by"], compared["behind_by"]) == ("diverged", 1, 1)
    assert compared["merge_base_commit"]["sha"] == git(origin_repo, "merge-base", "trunk", "issue-5")


def test_update_branch_merges_the_base_in_or_says_why_not(github_emulator, local, origin_repo):
    github, _ = local
    number = open_pull(github)["number"]
    head = git(origin_repo, "rev-parse", "issue-5")
    assert github.update_branch(number, head) == (422, "There are no new commits on the base branch.")
    tip = commit_to(origin_repo, "trunk", {"NEWS.md": "news\n"}, "News")
    assert github.update_branch(number, "0" * 40) == (422, "expected head sha didn't match current head ref.")
    status, message = github.update_branch(number, head)
    assert (status, message) == (202, "Updating pull request branch.")
    merged = git(origin_repo, "rev-parse", "issue-5")
    assert git(origin_repo, "rev-list", "--parents", "-n", "1", merged).split()[1:] == [head, tip]
    assert git(origin_repo, "log", "-1", "--format=%s", merged) == "Merge branch 'trunk' into issue-5"
    assert github.get_pull(number)["head"]["sha"] == merged
    commit_to(origin_repo, "trunk", {"hello.py": "print('bonjour')\n"}, "French")
    assert github.update_branch(number, merged) == (422, "merge conflict between base and head")
    assert git(origin_repo, "rev-parse", "issue-5") == merged

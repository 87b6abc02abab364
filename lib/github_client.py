"""GitHub REST client for the orchestrator: `GitHubClient`, the calls made against one repository,
and `Trust`, who may direct the agent (label an issue, have their comments read).

Under the calls: lib/github_connection.py (one requests.Session with retries and timeouts, the
token only in the Authorization header, pages, conditional GETs), lib/github_errors.py (every
failure a GitHubError in one sentence), lib/github_poll_cache.py (the ETags and answers of
conditional GETs, github-poll-cache.json).

The calls that follow pull requests for almost nothing (lib.pull_watch), at the class's end:
`pull_pages`, the repository's pull requests of every state, most recently updated first, a page at a
time, each asked conditionally (GitHub moves `updated_at` on a push, a review, a comment, a label, an
edit, a merge or a close, so the first page shows what changed, and an unchanged page is a free 304);
`branch_tip`, a branch's commit, asked conditionally (a base that moves changes none of its pull
requests); `compare` (behind_by, ahead_by); `update_branch` (GitHub merges the base into the branch:
202, or 422 for a conflict, an up-to-date branch, or a head that moved).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Collection, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from lib.github_connection import PER_PAGE, GitHubConnection
from lib.github_errors import Timeout, github_errors, github_message
from lib.github_poll_cache import PollCache

log = logging.getLogger(__name__)

#: Opens a hidden HTML comment in everything the orchestrator writes on GitHub, so its own comments
#: are never taken for a human's reply (the token may be a maintainer's own account).
COMMENT_MARKER = "<!-- claude-issue-orchestrator"


class GitHubClient:
    """The REST calls the orchestrator makes against one repository (github.com or Enterprise)."""

    def __init__(self, token: str, repo: str, api_url: str = "https://api.github.com", *,
                 poll_cache_file: Union[str, os.PathLike, None] = None, timeout: Timeout = (5, 30),
                 retries: int = 3, backoff_factor: float = 0.5, user_agent: str = "issue-orchestrator"):
        self.repo = repo
        self.owner = repo.split("/", 1)[0]
        self.api_url = api_url.rstrip("/")
        self.poll_cache_file = Path(poll_cache_file) if poll_cache_file else None
        self.timeout = timeout
        self.retries = retries
        self.last_poll_was_cached = False
        self._repo_path = "/repos/" + "/".join(quote(part, safe="") for part in repo.split("/", 1))
        self._http = GitHubConnection(token, repo, self.api_url, timeout=timeout, retries=retries,
                                      poll_cache=PollCache(self.poll_cache_file) if self.poll_cache_file else None,
                                      backoff_factor=backoff_factor, user_agent=user_agent)

    @property
    def rate_limit_remaining(self) -> Optional[int]:
        """What GitHub's last answer said is left of the rate limit (None before the first)."""
        return self._http.rate_limit_remaining

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "GitHubClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------
    # Account and repository
    # ------------------------------------------------------------------------------------------

    def get_authenticated_user(self) -> Dict[str, Any]:
        return self._http.request_json("GET", "/user")

    def get_repository(self) -> Dict[str, Any]:
        return self._http.request_json("GET", self._repo_path)

    def user_role(self, login: str) -> str:
        """admin, maintain, write, triage or read; "none" for someone who is no collaborator."""
        response = self._http.request("GET", f"{self._repo_path}/collaborators/{quote(login, safe='')}/permission",
                                      accept=(404,))
        if response.status_code == 404:
            return "none"
        data = self._http.json(response)
        # The legacy `permission` field reports maintain as write and triage as read.
        return data.get("role_name") or data.get("permission") or "none"

    # ------------------------------------------------------------------------------------------
    # Issues
    # ------------------------------------------------------------------------------------------

    def list_issues_with_label(self, label: str) -> List[Dict[str, Any]]:
        """Open issues (not pull requests) carrying `label`, oldest first, every page.

        With a poll cache, each page is asked for conditionally: an unchanged page is a 304 that
        costs no rate limit and is answered from the cache, items and next link alike.
        """
        self.last_poll_was_cached = False
        items = self._http.get_all(f"{self._repo_path}/issues", {"labels": label, "state": "open", "sort": "created",
                                                                 "direction": "asc"}, cached=True)
        self.last_poll_was_cached = self._http.pages_cached
        return [item for item in items if "pull_request" not in item]

    def get_issue(self, number: int) -> Dict[str, Any]:
        return self._http.request_json("GET", f"{self._repo_path}/issues/{int(number)}",
                                       not_found=self._issue_not_found(number))

    def get_issue_cached(self, number: int) -> Dict[str, Any]:
        """The issue, as fresh as get_issue's, but asked for conditionally when a poll cache is set.

        GitHub validates every ask: an unchanged issue is a 304 that costs no rate limit and is
        answered from the poll cache; a changed one (labels, state, comments, text) is a 200 whose
        issue and ETag replace the cached ones. Without a poll cache this is get_issue.
        """
        return self._http.get_cached(f"{self._repo_path}/issues/{int(number)}",
                                     not_found=self._issue_not_found(number))

    def list_comments(self, number: int, since: Union[str, datetime, None] = None,
                      cached: bool = False) -> List[Dict[str, Any]]:
        """Every comment on the issue (a pull request's conversation too), oldest first; with
        `since`, only those updated at or after it. `cached`: every page asked conditionally."""
        params = {"since": since.isoformat() if isinstance(since, datetime) else since} if since else None
        return self._http.get_all(f"{self._repo_path}/issues/{int(number)}/comments", params,
                                  not_found=self._issue_not_found(number), cached=cached)

    def create_comment(self, number: int, body: str) -> Dict[str, Any]:
        return self._http.request_json("POST", f"{self._repo_path}/issues/{int(number)}/comments",
                                       json_body={"body": body}, not_found=self._issue_not_found(number))

    def last_labeler(self, number: int, label: str) -> Optional[str]:
        """Login of whoever last added `label` to the issue (None if nobody, or a deleted account)."""
        events = self._http.get_all(f"{self._repo_path}/issues/{int(number)}/events",
                                    not_found=self._issue_not_found(number))
        for event in reversed(events):  # GitHub lists events oldest first
            if event.get("event") == "labeled" and \
                    (event.get("label") or {}).get("name", "").casefold() == label.casefold():
                return (event.get("actor") or {}).get("login")
        return None

    # ------------------------------------------------------------------------------------------
    # Labels
    # ------------------------------------------------------------------------------------------

    def add_labels(self, number: int, labels: Sequence[str]) -> List[Dict[str, Any]]:
        """Add labels to the issue; returns the labels it now has."""
        return self._http.request_json("POST", f"{self._repo_path}/issues/{int(number)}/labels",
                                       json_body={"labels": list(labels)}, not_found=self._issue_not_found(number))

    def remove_label(self, number: int, label: str) -> None:
        """Take a label off the issue; a label it does not carry is no error."""
        path = f"{self._repo_path}/issues/{int(number)}/labels/{quote(label, safe='')}"
        response = self._http.request("DELETE", path, accept=(404,))
        if response.status_code == 404:
            if github_message(response) != "Label does not exist":
                raise self._http.error(response, "DELETE", path, self._issue_not_found(number))
            log.debug("Issue #%s did not carry label %r", number, label)

    def list_labels(self) -> List[Dict[str, Any]]:
        return self._http.get_all(f"{self._repo_path}/labels")

    def ensure_labels(self, specs: Mapping[str, Tuple[str, str]]) -> List[str]:
        """Create the labels of `specs` (name -> (color, description)) the repository lacks.

        Returns the names created. GitHub compares label names case-insensitively, and so does this.
        """
        existing = {label["name"].casefold() for label in self.list_labels()}
        created = []
        path = f"{self._repo_path}/labels"
        for name, (color, description) in specs.items():
            if name.casefold() in existing:
                continue
            response = self._http.request("POST", path, accept=(422,), json_body={
                "name": name, "color": color.lstrip("#"), "description": description})
            if response.status_code == 422:
                if any(e.get("code") == "already_exists" for e in github_errors(response)):
                    continue  # created meanwhile by someone else
                raise self._http.error(response, "POST", path)
            created.append(name)
        return created

    # ------------------------------------------------------------------------------------------
    # Pull requests
    # ------------------------------------------------------------------------------------------

    def create_pull_request(self, head: str, base: str, title: str, body: str,
                            draft: bool = True) -> Dict[str, Any]:
        """Open a pull request; if one is already open for `head`, return that one."""
        path = f"{self._repo_path}/pulls"
        response = self._http.request("POST", path, accept=(422,), json_body={
            "title": title, "head": head, "base": base, "body": body, "draft": draft})
        if response.status_code == 422 and draft and any(
                "draft pull requests are not supported" in str(e.get("message", "")).casefold()
                for e in github_errors(response)):
            # Draft pull requests need a paid plan on private repositories: open a ready one.
            log.info("Draft pull requests are not available here; opening a regular one")
            return self.create_pull_request(head, base, title, body, draft=False)
        if response.status_code == 422:
            if any("A pull request already exists" in str(e.get("message", "")) for e in github_errors(response)):
                existing = self.find_open_pull_request(head)
                if existing is not None:
                    log.info("A pull request for %s is already open: %s", head, existing.get("html_url"))
                    return existing
            raise self._http.error(response, "POST", path)
        return self._http.json(response)

    def find_open_pull_request(self, head: str) -> Optional[Dict[str, Any]]:
        """The open pull request from branch `head` ("branch" or "owner:branch"), if any."""
        qualified = head if ":" in head else f"{self.owner}:{head}"
        pulls = self._http.request_json("GET", f"{self._repo_path}/pulls",
                                        params={"state": "open", "head": qualified, "per_page": PER_PAGE})
        return pulls[0] if pulls else None

    # Following a pull request. `cached`: asked for conditionally (every page), as get_issue_cached
    # is: an unchanged answer is a 304 that costs no rate limit and is answered from the poll cache.

    def get_pull(self, number: int, cached: bool = False) -> Dict[str, Any]:
        """The pull request: number, state ("open"/"closed"), merged, merged_at, head {ref, sha},
        base {ref}, html_url, draft, user, updated_at (a new review, comment or push changes it)."""
        path, not_found = f"{self._repo_path}/pulls/{int(number)}", self._pull_not_found(number)
        if cached:
            return self._http.get_cached(path, not_found=not_found)
        return self._http.request_json("GET", path, not_found=not_found)

    def list_reviews(self, number: int, cached: bool = False) -> List[Dict[str, Any]]:
        """Oldest first: id, user, body, state (APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED,
        PENDING), submitted_at, commit_id, html_url."""
        return self._http.get_all(f"{self._repo_path}/pulls/{int(number)}/reviews",
                                  not_found=self._pull_not_found(number), cached=cached)

    def list_review_comments(self, number: int, cached: bool = False) -> List[Dict[str, Any]]:
        """Comments on lines of the diff, oldest first: id, pull_request_review_id, user, body, path,
        line, side, diff_hunk, commit_id...; a reply has in_reply_to_id (its thread's first comment)."""
        return self._http.get_all(f"{self._repo_path}/pulls/{int(number)}/comments",
                                  not_found=self._pull_not_found(number), cached=cached)

    def reply_to_review_comment(self, number: int, comment_id: int, body: str) -> Dict[str, Any]:
        """Answer in a review thread (201: the reply, a review comment with in_reply_to_id).

        `comment_id` must be the thread's first comment: GitHub has no replies to replies, and
        answers 404 (GitHubNotFoundError) for one, as for a comment of another pull request.
        """
        path = f"{self._repo_path}/pulls/{int(number)}/comments/{int(comment_id)}/replies"
        not_found = (f"Review comment {comment_id} is not the first comment of a review thread of pull request"
                     f" #{number} in {self.repo}, or the token cannot see it")
        return self._http.request_json("POST", path, json_body={"body": body}, not_found=not_found)

    def list_check_runs(self, ref: str, cached: bool = False) -> List[Dict[str, Any]]:
        """The latest run of each check on commit `ref` (sha, branch or tag): id, name, head_sha, status,
        conclusion (None until completed), output {title, summary, text, annotations_count}, html_url."""
        return self._http.get_all(f"{self._repo_path}/commits/{quote(ref, safe='')}/check-runs",
                                  not_found=self._ref_not_found(ref), cached=cached, items_key="check_runs")

    def list_check_run_annotations(self, check_run_id: int) -> List[Dict[str, Any]]:
        """path, start_line, end_line, annotation_level (notice, warning, failure), title, message."""
        return self._http.get_all(f"{self._repo_path}/check-runs/{int(check_run_id)}/annotations",
                                  not_found=f"Check run {check_run_id} not found in {self.repo}, or the token cannot see it")

    def get_combined_status(self, ref: str, cached: bool = False) -> Dict[str, Any]:
        """state (failure, pending, success), sha, total_count, statuses (every page's: the latest of
        each context, {id, context, state (error, failure, pending, success), description, target_url})."""
        first, *more = self._http.pages(f"{self._repo_path}/commits/{quote(ref, safe='')}/status",
                                        not_found=self._ref_not_found(ref), cached=cached)
        for page in more:
            first["statuses"].extend(page["statuses"])
        return first

    def _issue_not_found(self, number: int) -> str:
        return f"Issue #{number} not found in {self.repo}, or the token cannot see it"

    def _pull_not_found(self, number: int) -> str:
        return f"Pull request #{number} not found in {self.repo}, or the token cannot see it"

    def _ref_not_found(self, ref: str) -> str:
        return f"Commit {ref} not found in {self.repo}, or the token cannot see it"

    # --- following pull requests for almost nothing (lib.pull_watch) --------------------------------

    def pull_pages(self) -> Iterator[List[Dict[str, Any]]]:
        """Pages of "simple" pull requests (number, state, updated_at, merged_at, draft, head {ref, sha},
        base {ref}), every state, most recently updated first; stop reading when you have seen enough."""
        yield from self._http.pages(f"{self._repo_path}/pulls", {"state": "all", "sort": "updated",
                                                                 "direction": "desc"}, cached=True)

    def branch_tip(self, branch: str) -> str:
        """The sha `branch` points to, asked conditionally."""
        ref = self._http.get_cached(f"{self._repo_path}/git/ref/heads/{quote(branch, safe='/')}",
                                    not_found=f"Branch {branch} not found in {self.repo}")
        return ref["object"]["sha"]

    def compare(self, base: str, head: str) -> Dict[str, Any]:
        """status (ahead, behind, diverged, identical), ahead_by, behind_by, merge_base_commit {sha} of
        `head` against `base` (shas or branches); one commit listed at most (the figures are what is asked)."""
        path = f"{self._repo_path}/compare/{quote(base, safe='')}...{quote(head, safe='')}"
        return self._http.request_json("GET", path, params={"per_page": 1},
                                       not_found=f"{base} and {head} cannot be compared in {self.repo}")

    def update_branch(self, number: int, expected_head_sha: str) -> Tuple[int, str]:
        """Ask GitHub to merge the base into pull request `number`'s branch, if its head is still
        `expected_head_sha`: (202, GitHub's message) when taken, (422, why not) when not."""
        response = self._http.request("PUT", f"{self._repo_path}/pulls/{int(number)}/update-branch",
                                      json_body={"expected_head_sha": expected_head_sha}, accept=(422,),
                                      not_found=f"Pull request #{number} not found in {self.repo}")
        data = self._http.json(response)
        return response.status_code, str(data.get("message") or "") if isinstance(data, dict) else ""


class Trust:
    """Who may direct the agent: a user whose role is in github.trusted_roles, or who is in
    github.allowed_users. Roles are asked once per login and kept for the life of this object."""

    def __init__(self, github: GitHubClient, trusted_roles: Sequence[str], allowed_users: Sequence[str]):
        self.github = github
        self.trusted_roles = set(trusted_roles)
        self.allowed_users = set(allowed_users)
        self._roles: Dict[str, str] = {}

    def __call__(self, login: Optional[str]) -> bool:
        if not login:
            return False
        if login in self.allowed_users:
            return True
        if login not in self._roles:
            self._roles[login] = self.github.user_role(login)
        return self._roles[login] in self.trusted_roles

    def human_comments(self, number: int, after_id: Optional[int] = None,
                       ours: Collection[int] = ()) -> List[Dict[str, Any]]:
        """Comments by trusted users, oldest first, newer than comment `after_id`; never ours, but for
        those whose id is in `ours` (the chat answers we posted: lib/answers.py)."""
        comments = []
        for comment in self.github.list_comments(number):
            if after_id is not None and comment["id"] <= after_id:
                continue
            if COMMENT_MARKER in (comment.get("body") or ""):
                if comment["id"] in ours:
                    comments.append(comment)
                continue
            if self((comment.get("user") or {}).get("login")):
                comments.append(comment)
        return comments

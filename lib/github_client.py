"""GitHub REST client for the orchestrator, on one requests.Session.

Every call has a timeout; connection failures and 5xx answers are retried with backoff inside
urllib3; every failure surfaces as a GitHubError whose message is one sentence for the user. The
token travels only in the Authorization header: never in a URL, a log record or an exception.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Collection, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.exceptions import (ConnectTimeoutError, MaxRetryError, NameResolutionError, NewConnectionError,
                                ProtocolError, ReadTimeoutError)
from urllib3.util.retry import Retry

from lib.files import atomic_write
from lib.github_pulls import PullRequestCalls
from lib.models import OrchestratorError

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
PER_PAGE = 100  # GitHub's maximum page size
RETRY_STATUSES = (500, 502, 503, 504)
# Methods urllib3 may send again after the request reached GitHub (read error, 5xx answer). POST is
# left out: a POST whose answer was lost may still have created its comment, label or pull request,
# and sending it again would make a duplicate. Connect errors are retried for every method (urllib3
# does so: nothing reached GitHub). DELETE is safe to repeat: a second label removal answers 404,
# which remove_label accepts.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# GitHub's advice for a secondary rate limit that names no wait: at least a minute.
SECONDARY_LIMIT_WAIT = timedelta(seconds=60)
_POLL_CACHE_VERSION = 2  # 2: every conditional GET in "gets" (a version 1 file is read as empty)
_GET_KEYS = frozenset({"etag", "json", "used"})  # and "next": the page's next link, if any
#: The poll cache keeps at most this many GETs (the poll's pages, issues, pull requests, their reviews,
#: comments and checks; all repositories together), the most recently asked.
GET_CACHE_MAX = 500
#: A GET not asked for this long (seconds) is dropped from the poll cache.
GET_CACHE_IDLE = 24 * 3600
#: An unchanged answer's "last asked" time is written back at most this often (seconds), so that an
#: unchanged tick does not rewrite the cache file.
GET_CACHE_TOUCH = 3600

Timeout = Union[float, Tuple[float, float]]


#: Opens a hidden HTML comment in everything the orchestrator writes on GitHub, so its own comments
#: are never taken for a human's reply (the token may be a maintainer's own account).
COMMENT_MARKER = "<!-- claude-issue-orchestrator"


class GitHubError(OrchestratorError):
    """GitHub could not be reached or refused a request. `status` is the HTTP status, if any."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class GitHubAuthError(GitHubError):
    """The token was rejected."""

    def __init__(self, message: str = "GitHub rejected the token (401)", status: Optional[int] = 401):
        super().__init__(message, status)


class GitHubNotFoundError(GitHubError):
    """404: the repository (or the item) does not exist, or the token cannot see it."""

    def __init__(self, message: str, status: Optional[int] = 404):
        super().__init__(message, status)


class RateLimitError(GitHubError):
    """GitHub's primary or secondary rate limit; nothing should be asked before `reset_at` (UTC)."""

    def __init__(self, reset_at: datetime, status: Optional[int] = 403, secondary: bool = False):
        what = "GitHub secondary rate limit hit" if secondary else "GitHub rate limit exhausted"
        super().__init__(f"{what}; rate limited until {reset_at.astimezone(timezone.utc):%H:%M} UTC", status)
        self.reset_at = reset_at


class _BearerAuth(AuthBase):
    """Sets the Authorization header on each request, so the token lives nowhere else."""

    def __init__(self, token: str):
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:  # keep the token out of any repr that ends up in a log
        return "<BearerAuth>"


class GitHubClient(PullRequestCalls):
    """The REST calls the orchestrator makes against one repository (github.com or Enterprise); those
    of following pull requests cheaply are in lib/github_pulls.py."""

    def __init__(self, token: str, repo: str, api_url: str = "https://api.github.com", *,
                 poll_cache_file: Union[str, os.PathLike, None] = None, timeout: Timeout = (5, 30),
                 retries: int = 3, backoff_factor: float = 0.5, user_agent: str = "issue-orchestrator"):
        self.repo = repo
        self.owner = repo.split("/", 1)[0]
        self.api_url = api_url.rstrip("/")
        self.poll_cache_file = Path(poll_cache_file) if poll_cache_file else None
        self.timeout = timeout
        self.retries = retries
        self.rate_limit_remaining: Optional[int] = None
        self.last_poll_was_cached = False
        # The poll cache file as last read or written, and that file's stat (None: it was missing).
        self._cache: Dict[str, Any] = {"gets": {}}
        self._pages_cached = False  # the last list asked for was all 304s
        self._cache_stamp: Optional[Tuple[int, int, int]] = None
        self._cache_read = False
        self._cache_write_warned = False
        self._repo_path = "/repos/" + "/".join(quote(part, safe="") for part in repo.split("/", 1))
        self._origin = tuple(urlsplit(self.api_url)[:2])  # (scheme, host[:port])

        retry = Retry(
            total=retries,
            backoff_factor=backoff_factor,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=IDEMPOTENT_METHODS,
            # 403/429 rate limits are answered with RateLimitError for the caller to wait out; a
            # tick must not sleep inside urllib3 for a Retry-After of minutes.
            respect_retry_after_header=False,
            # After the last retry, hand back the 5xx answer so its status makes the error message.
            raise_on_status=False,
        )
        self._session = requests.Session()
        self._session.mount("https://", HTTPAdapter(max_retries=retry))
        self._session.mount("http://", HTTPAdapter(max_retries=retry))
        self._session.auth = _BearerAuth(token)
        self._session.headers.update({
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": user_agent,
        })

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "GitHubClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------
    # Account and repository
    # ------------------------------------------------------------------------------------------

    def get_authenticated_user(self) -> Dict[str, Any]:
        return self._json(self._request("GET", "/user"))

    def get_repository(self) -> Dict[str, Any]:
        return self._json(self._request("GET", self._repo_path))

    def user_role(self, login: str) -> str:
        """admin, maintain, write, triage or read; "none" for someone who is no collaborator."""
        response = self._request("GET", f"{self._repo_path}/collaborators/{quote(login, safe='')}/permission",
                                 accept=(404,))
        if response.status_code == 404:
            return "none"
        data = self._json(response)
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
        items = self._get_all(f"{self._repo_path}/issues", {"labels": label, "state": "open", "sort": "created",
                                                            "direction": "asc"}, cached=True)
        self.last_poll_was_cached = self._pages_cached
        return [item for item in items if "pull_request" not in item]

    def get_issue(self, number: int) -> Dict[str, Any]:
        return self._json(self._request("GET", f"{self._repo_path}/issues/{int(number)}",
                                        not_found=self._issue_not_found(number)))

    def get_issue_cached(self, number: int) -> Dict[str, Any]:
        """The issue, as fresh as get_issue's, but asked for conditionally when a poll cache is set.

        GitHub validates every ask: an unchanged issue is a 304 that costs no rate limit and is
        answered from the poll cache; a changed one (labels, state, comments, text) is a 200 whose
        issue and ETag replace the cached ones. Without a poll cache this is get_issue.
        """
        return self._get_cached(f"{self._repo_path}/issues/{int(number)}", not_found=self._issue_not_found(number))

    def list_comments(self, number: int, since: Union[str, datetime, None] = None,
                      cached: bool = False) -> List[Dict[str, Any]]:
        """Every comment on the issue (a pull request's conversation too), oldest first; with
        `since`, only those updated at or after it. `cached`: every page asked conditionally."""
        params = {"since": since.isoformat() if isinstance(since, datetime) else since} if since else None
        return self._get_all(f"{self._repo_path}/issues/{int(number)}/comments", params,
                             not_found=self._issue_not_found(number), cached=cached)

    def create_comment(self, number: int, body: str) -> Dict[str, Any]:
        return self._json(self._request("POST", f"{self._repo_path}/issues/{int(number)}/comments",
                                        json_body={"body": body}, not_found=self._issue_not_found(number)))

    def last_labeler(self, number: int, label: str) -> Optional[str]:
        """Login of whoever last added `label` to the issue (None if nobody, or a deleted account)."""
        events = self._get_all(f"{self._repo_path}/issues/{int(number)}/events",
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
        return self._json(self._request("POST", f"{self._repo_path}/issues/{int(number)}/labels",
                                        json_body={"labels": list(labels)}, not_found=self._issue_not_found(number)))

    def remove_label(self, number: int, label: str) -> None:
        """Take a label off the issue; a label it does not carry is no error."""
        path = f"{self._repo_path}/issues/{int(number)}/labels/{quote(label, safe='')}"
        response = self._request("DELETE", path, accept=(404,))
        if response.status_code == 404:
            if _github_message(response) != "Label does not exist":
                raise self._error(response, "DELETE", path, self._issue_not_found(number))
            log.debug("Issue #%s did not carry label %r", number, label)

    def list_labels(self) -> List[Dict[str, Any]]:
        return self._get_all(f"{self._repo_path}/labels")

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
            response = self._request("POST", path, accept=(422,), json_body={
                "name": name, "color": color.lstrip("#"), "description": description})
            if response.status_code == 422:
                if any(e.get("code") == "already_exists" for e in _github_errors(response)):
                    continue  # created meanwhile by someone else
                raise self._error(response, "POST", path)
            created.append(name)
        return created

    # ------------------------------------------------------------------------------------------
    # Pull requests
    # ------------------------------------------------------------------------------------------

    def create_pull_request(self, head: str, base: str, title: str, body: str,
                            draft: bool = True) -> Dict[str, Any]:
        """Open a pull request; if one is already open for `head`, return that one."""
        path = f"{self._repo_path}/pulls"
        response = self._request("POST", path, accept=(422,), json_body={
            "title": title, "head": head, "base": base, "body": body, "draft": draft})
        if response.status_code == 422 and draft and any(
                "draft pull requests are not supported" in str(e.get("message", "")).casefold()
                for e in _github_errors(response)):
            # Draft pull requests need a paid plan on private repositories: open a ready one.
            log.info("Draft pull requests are not available here; opening a regular one")
            return self.create_pull_request(head, base, title, body, draft=False)
        if response.status_code == 422:
            if any("A pull request already exists" in str(e.get("message", "")) for e in _github_errors(response)):
                existing = self.find_open_pull_request(head)
                if existing is not None:
                    log.info("A pull request for %s is already open: %s", head, existing.get("html_url"))
                    return existing
            raise self._error(response, "POST", path)
        return self._json(response)

    def find_open_pull_request(self, head: str) -> Optional[Dict[str, Any]]:
        """The open pull request from branch `head` ("branch" or "owner:branch"), if any."""
        qualified = head if ":" in head else f"{self.owner}:{head}"
        pulls = self._json(self._request("GET", f"{self._repo_path}/pulls",
                                         params={"state": "open", "head": qualified, "per_page": PER_PAGE}))
        return pulls[0] if pulls else None

    # Following a pull request. `cached`: asked for conditionally (every page), as get_issue_cached
    # is: an unchanged answer is a 304 that costs no rate limit and is answered from the poll cache.

    def get_pull(self, number: int, cached: bool = False) -> Dict[str, Any]:
        """The pull request: number, state ("open"/"closed"), merged, merged_at, head {ref, sha},
        base {ref}, html_url, draft, user, updated_at (a new review, comment or push changes it)."""
        path, not_found = f"{self._repo_path}/pulls/{int(number)}", self._pull_not_found(number)
        if cached:
            return self._get_cached(path, not_found=not_found)
        return self._json(self._request("GET", path, not_found=not_found))

    def list_reviews(self, number: int, cached: bool = False) -> List[Dict[str, Any]]:
        """Oldest first: id, user, body, state (APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED,
        PENDING), submitted_at, commit_id, html_url."""
        return self._get_all(f"{self._repo_path}/pulls/{int(number)}/reviews", not_found=self._pull_not_found(number),
                             cached=cached)

    def list_review_comments(self, number: int, cached: bool = False) -> List[Dict[str, Any]]:
        """Comments on lines of the diff, oldest first: id, pull_request_review_id, user, body, path,
        line, side, diff_hunk, commit_id...; a reply has in_reply_to_id (its thread's first comment)."""
        return self._get_all(f"{self._repo_path}/pulls/{int(number)}/comments", not_found=self._pull_not_found(number),
                             cached=cached)

    def reply_to_review_comment(self, number: int, comment_id: int, body: str) -> Dict[str, Any]:
        """Answer in a review thread (201: the reply, a review comment with in_reply_to_id).

        `comment_id` must be the thread's first comment: GitHub has no replies to replies, and
        answers 404 (GitHubNotFoundError) for one, as for a comment of another pull request.
        """
        path = f"{self._repo_path}/pulls/{int(number)}/comments/{int(comment_id)}/replies"
        not_found = (f"Review comment {comment_id} is not the first comment of a review thread of pull request"
                     f" #{number} in {self.repo}, or the token cannot see it")
        return self._json(self._request("POST", path, json_body={"body": body}, not_found=not_found))

    def list_check_runs(self, ref: str, cached: bool = False) -> List[Dict[str, Any]]:
        """The latest run of each check on commit `ref` (sha, branch or tag): id, name, head_sha, status,
        conclusion (None until completed), output {title, summary, text, annotations_count}, html_url."""
        return self._get_all(f"{self._repo_path}/commits/{quote(ref, safe='')}/check-runs",
                             not_found=self._ref_not_found(ref), cached=cached, items_key="check_runs")

    def list_check_run_annotations(self, check_run_id: int) -> List[Dict[str, Any]]:
        """path, start_line, end_line, annotation_level (notice, warning, failure), title, message."""
        return self._get_all(f"{self._repo_path}/check-runs/{int(check_run_id)}/annotations",
                             not_found=f"Check run {check_run_id} not found in {self.repo}, or the token cannot see it")

    def get_combined_status(self, ref: str, cached: bool = False) -> Dict[str, Any]:
        """state (failure, pending, success), sha, total_count, statuses (every page's: the latest of
        each context, {id, context, state (error, failure, pending, success), description, target_url})."""
        first, *more = self._pages(f"{self._repo_path}/commits/{quote(ref, safe='')}/status",
                                   not_found=self._ref_not_found(ref), cached=cached)
        for page in more:
            first["statuses"].extend(page["statuses"])
        return first

    # ------------------------------------------------------------------------------------------
    # HTTP
    # ------------------------------------------------------------------------------------------

    def _get_all(self, path: str, params: Optional[Dict[str, Any]] = None, not_found: Optional[str] = None,
                 *, cached: bool = False, items_key: Optional[str] = None) -> List[Any]:
        """Every page of a list; `items_key`: pages are objects with the list under that key."""
        items: List[Any] = []
        for page in self._pages(path, params, not_found=not_found, cached=cached):
            items.extend(page[items_key] if items_key else page)
        return items

    def _pages(self, path: str, params: Optional[Dict[str, Any]] = None, *, not_found: Optional[str] = None,
               cached: bool = False) -> Iterator[Any]:
        """The JSON of each page, following the Link header; `cached` (with a poll cache): each page
        asked for conditionally, the cache written once at the end. The ETag covers the body, not the
        Link header: a full last page may have grown a next page without changing, so the page after
        a full last page is asked for too (conditionally: once known, an empty one is a free 304)."""
        url: Optional[str] = self.api_url + path
        query: Optional[Dict[str, Any]] = dict(params or {}, per_page=PER_PAGE)
        cached = self._pages_cached = cached and self.poll_cache_file is not None
        if cached:
            url, query = f"{url}?{urlencode(query)}", None
        updates: Dict[str, Optional[Dict[str, Any]]] = {}
        try:
            while url:
                if cached:
                    data, next_url, hit = self._cached_page(url, not_found, updates)
                    self._pages_cached &= hit
                    if next_url is None and isinstance(data, list) and len(data) >= PER_PAGE:
                        next_url = _next_page_url(url)
                else:
                    response = self._request("GET", url, params=query, not_found=not_found)
                    data, next_url = self._json(response), response.links.get("next", {}).get("url")
                yield data
                url, query = next_url, None  # the next link has the query
        finally:
            if updates:
                self._update_cache(updates)

    def _request(self, method: str, path_or_url: str, *, params: Optional[Dict[str, Any]] = None,
                 json_body: Any = None, headers: Optional[Dict[str, str]] = None, accept: Sequence[int] = (),
                 not_found: Optional[str] = None) -> requests.Response:
        """Send one request; answers >= 400 raise a GitHubError unless their status is in `accept`."""
        if path_or_url.startswith(("http://", "https://")):
            # A Link from GitHub's answer: follow its path on the configured host. The token goes
            # nowhere else, and an Enterprise server reached by another name than its own still pages.
            url = urlunsplit(self._origin + urlsplit(path_or_url)[2:])
        else:
            url = self.api_url + path_or_url
        try:
            response = self._session.request(method, url, params=params, json=json_body, headers=headers,
                                             timeout=self.timeout)
        except requests.RequestException as exc:
            raise GitHubError(f"Could not reach GitHub at {self.api_url}: {self._reason(exc)}") from exc
        remaining = response.headers.get("X-RateLimit-Remaining")
        if remaining is not None and remaining.isdigit():
            self.rate_limit_remaining = int(remaining)
        log.debug("%s %s -> %s (rate limit remaining %s)", method, self._where(response.url),
                  response.status_code, self.rate_limit_remaining)
        if response.status_code < 400 or response.status_code in accept:
            return response
        raise self._error(response, method, response.url, not_found)

    def _error(self, response: requests.Response, method: str, url: str,
               not_found: Optional[str] = None) -> GitHubError:
        status = response.status_code
        where = f"{method} {self._where(url)}"
        message = _github_message(response)
        if status == 401:
            return GitHubAuthError()
        if status in (403, 429):
            limit = _rate_limit(response, message)
            if limit is not None:
                return limit
        if status == 404:
            return GitHubNotFoundError(not_found or f"{self.repo} not found, or the token cannot see it")
        if status >= 500:
            retried = status in RETRY_STATUSES and method in IDEMPOTENT_METHODS and self.retries
            tries = f" (tried {self.retries + 1} times)" if retried else ""
            return GitHubError(f"GitHub answered {status} {response.reason} for {where}{tries}", status)
        details = [message] + [str(e.get("message") or e.get("code") or "") for e in _github_errors(response)]
        detail = "; ".join(d for d in details if d)
        if status == 403:
            return GitHubError(f"GitHub refused {where} (403): {detail or 'permission denied'}", status)
        return GitHubError(f"GitHub answered {status} for {where}: {detail or response.reason}", status)

    def _issue_not_found(self, number: int) -> str:
        return f"Issue #{number} not found in {self.repo}, or the token cannot see it"

    def _pull_not_found(self, number: int) -> str:
        return f"Pull request #{number} not found in {self.repo}, or the token cannot see it"

    def _ref_not_found(self, ref: str) -> str:
        return f"Commit {ref} not found in {self.repo}, or the token cannot see it"

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise GitHubError(f"GitHub answered {response.status_code} for {self._where(response.url)}"
                              " with something that is not JSON", response.status_code) from None

    def _where(self, url: str) -> str:
        """The API path of `url`, for messages: no host, no query."""
        path = urlsplit(url).path
        prefix = urlsplit(self.api_url).path
        return path[len(prefix):] if prefix and path.startswith(prefix) else path

    def _reason(self, exc: requests.RequestException) -> str:
        """A few words on why a request got no answer."""
        reason: Any = exc.args[0] if exc.args else exc
        if isinstance(reason, MaxRetryError):  # the last error urllib3 gave up on
            reason = reason.reason
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout, self.timeout)
        if isinstance(reason, NameResolutionError):
            return "the host name does not resolve"
        if isinstance(reason, NewConnectionError):
            text = str(reason).split("Failed to establish a new connection: ")[-1]
            return re.sub(r"\[Errno -?\d+\]\s*", "", text).lower() or "no connection"
        if isinstance(reason, ConnectTimeoutError) or isinstance(exc, requests.ConnectTimeout):
            return f"no connection within {connect:g} s"
        if isinstance(reason, ReadTimeoutError) or isinstance(exc, requests.ReadTimeout):
            return f"no answer within {read:g} s"
        if isinstance(reason, ProtocolError):
            return "the connection closed without an answer"
        if isinstance(exc, requests.exceptions.SSLError):
            return "the TLS handshake failed"
        return type(reason).__name__

    # ------------------------------------------------------------------------------------------
    # Poll cache: {"version": 2, "gets": {URL: {etag, json, used[, next]}}}
    # Keyed by URL, so the clients of several repositories share one file; each change is written
    # into the file as it is then, so none loses another's entries.
    # ------------------------------------------------------------------------------------------

    def _get_cached(self, path: str, params: Optional[Dict[str, Any]] = None, *,
                    not_found: Optional[str] = None) -> Any:
        """GET `path`, asked for conditionally with a poll cache (else a plain GET): GitHub validates
        every ask; an unchanged answer is a free 304 answered from the cache (a copy, the caller's)."""
        url = self.api_url + path + (f"?{urlencode(params)}" if params else "")
        if self.poll_cache_file is None:
            return self._json(self._request("GET", url, not_found=not_found))
        updates: Dict[str, Optional[Dict[str, Any]]] = {}
        data = self._cached_page(url, not_found, updates)[0]
        if updates:
            self._update_cache(updates)
        return data

    def _cached_page(self, url: str, not_found: Optional[str],
                     updates: Dict[str, Optional[Dict[str, Any]]]) -> Tuple[Any, Optional[str], bool]:
        """(JSON, next link, whether a 304) of `url` asked for conditionally; cache changes go to `updates`."""
        cached = self._cache_data()["gets"].get(url)
        etag = cached["etag"] if cached else None
        response = self._request("GET", url, headers={"If-None-Match": etag} if etag else None, not_found=not_found)
        now = int(time.time())
        if response.status_code == 304 and etag:
            assert cached is not None
            if now - cached["used"] >= GET_CACHE_TOUCH:
                updates[url] = dict(cached, used=now)
            return copy.deepcopy(cached["json"]), cached.get("next"), True
        data = self._json(response)
        next_url = response.links.get("next", {}).get("url")
        etag = response.headers.get("ETag")
        if etag or cached:  # an answer without an ETag cannot be validated: forget the old one
            entry = dict({"etag": etag, "json": data, "used": now}, **({"next": next_url} if next_url else {}))
            updates[url] = entry if etag else None
        return copy.deepcopy(data), next_url, False

    def _cache_data(self) -> Dict[str, Any]:
        """The poll cache, read again only if the file changed since this client last read or wrote it."""
        if self.poll_cache_file is None:
            return self._cache
        stamp = _file_stamp(self.poll_cache_file)
        if not self._cache_read or stamp != self._cache_stamp:
            self._cache, self._cache_stamp, self._cache_read = self._load_poll_cache(), stamp, True
        return self._cache

    def _load_poll_cache(self) -> Dict[str, Any]:
        """The cache file's contents; an unreadable one is empty, with one warning."""
        path = self.poll_cache_file
        assert path is not None
        empty: Dict[str, Any] = {"gets": {}}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != _POLL_CACHE_VERSION:
                return empty
            gets = data["gets"]
            if not all(_GET_KEYS <= entry.keys() and isinstance(entry["etag"], str)
                       and isinstance(entry["json"], (dict, list)) and isinstance(entry["used"], (int, float))
                       and isinstance(entry.get("next", ""), str) for entry in gets.values()):
                raise ValueError("unknown layout")
        except FileNotFoundError:
            return empty
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("Ignoring unreadable GitHub poll cache %s (%s); the next poll rebuilds it", path, exc)
            return empty
        return {"gets": gets}

    def _update_cache(self, gets: Dict[str, Optional[Dict[str, Any]]]) -> None:
        """Write these entries (None: drop it) into the cache file as it is now.

        The file is read again first if it changed since this client read it (another repository's
        client wrote it), so that their entries survive. GETs not asked for GET_CACHE_IDLE are
        dropped, and beyond GET_CACHE_MAX the least recently asked.
        """
        data = self._cache_data()
        for key, entry in gets.items():
            data["gets"].pop(key, None)
            if entry is not None:
                data["gets"][key] = entry  # last: of entries asked in the same second, it stays
        recent = int(time.time()) - GET_CACHE_IDLE
        kept = sorted((item for item in data["gets"].items() if item[1]["used"] >= recent),
                      key=lambda item: item[1]["used"])  # stable: the order of insertion breaks ties
        data["gets"] = dict(kept[-GET_CACHE_MAX:])
        self._save_poll_cache(data)

    def _save_poll_cache(self, data: Dict[str, Any]) -> None:
        """Readable by the owner only: it holds issue texts of maybe private repositories."""
        path = self.poll_cache_file
        assert path is not None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps({"version": _POLL_CACHE_VERSION, **data}))
        except OSError as exc:
            # The cache only saves rate limit; the request itself succeeded. Once per client: a
            # tick may save several times.
            if not self._cache_write_warned:
                log.warning("Could not write the GitHub poll cache %s: %s", path, exc)
                self._cache_write_warned = True
            return
        self._cache_stamp = _file_stamp(path)


def _next_page_url(url: str) -> str:
    """`url` with its page parameter one more (a missing one is page 1)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    number = next((int(value) for key, value in query if key == "page" and value.isdigit()), 1)
    query = [(key, value) for key, value in query if key != "page"] + [("page", str(number + 1))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _file_stamp(path: Path) -> Optional[Tuple[int, int, int]]:
    """What changes when the file is rewritten (atomic_write makes a new inode); None if missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _github_message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    return str(data.get("message") or "") if isinstance(data, dict) else ""


def _github_errors(response: requests.Response) -> List[Dict[str, Any]]:
    """The `errors` list of a 422 answer (dicts only; GitHub sometimes sends plain strings)."""
    try:
        data = response.json()
    except ValueError:
        return []
    errors = data.get("errors") if isinstance(data, dict) else None
    return [e if isinstance(e, dict) else {"message": str(e)} for e in errors or []]


def _rate_limit(response: requests.Response, message: str) -> Optional[RateLimitError]:
    """The RateLimitError a 403/429 answer stands for, or None for a plain permission refusal."""
    status = response.status_code
    now = datetime.now(timezone.utc)
    if response.headers.get("X-RateLimit-Remaining") == "0":
        reset = response.headers.get("X-RateLimit-Reset", "")
        reset_at = datetime.fromtimestamp(int(reset), timezone.utc) if reset.isdigit() else now + SECONDARY_LIMIT_WAIT
        return RateLimitError(reset_at, status)
    retry_after = response.headers.get("Retry-After")
    if retry_after is not None:
        wait = timedelta(seconds=int(retry_after)) if retry_after.isdigit() else SECONDARY_LIMIT_WAIT
        return RateLimitError(now + wait, status, secondary=True)
    if status == 429 or "rate limit" in message.lower():
        return RateLimitError(now + SECONDARY_LIMIT_WAIT, status, secondary=True)
    return None


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

"""A GitHub REST API emulator on 127.0.0.1, for driving the real client through real HTTP.

It answers the endpoints the orchestrator uses the way api.github.com does (shapes from GitHub's
REST reference), under `/` and under the Enterprise prefix `/api/v3`:

    GET  /user
    GET  /repos/{owner}/{repo}
    GET  /repos/{owner}/{repo}/issues                      state, labels, sort, direction, since
    GET  /repos/{owner}/{repo}/issues/{n}
    GET  /repos/{owner}/{repo}/issues/{n}/comments         since
    POST /repos/{owner}/{repo}/issues/{n}/comments         422 "body is too long" past 65,536 characters
    POST /repos/{owner}/{repo}/issues/{n}/labels           unknown labels are created, as on GitHub
    DELETE /repos/{owner}/{repo}/issues/{n}/labels/{name}  404 "Label does not exist" when absent
    GET  /repos/{owner}/{repo}/issues/{n}/events
    GET  /repos/{owner}/{repo}/labels
    POST /repos/{owner}/{repo}/labels                      422 already_exists
    GET  /repos/{owner}/{repo}/pulls                       state, head, base, sort, direction (the "simple" pull)
    POST /repos/{owner}/{repo}/pulls                       422 "A pull request already exists for ..."
    GET  /repos/{owner}/{repo}/pulls/{n}                   merged, merged_at, mergeable (lazily), commits, ...
    PUT  /repos/{owner}/{repo}/pulls/{n}/update-branch     202; 422 on conflicts, up to date, expected_head_sha
    GET  /repos/{owner}/{repo}/pulls/{n}/reviews           oldest first; PENDING ones only to their author
    GET  /repos/{owner}/{repo}/pulls/{n}/comments          sort, direction, since (review comments)
    POST /repos/{owner}/{repo}/pulls/{n}/comments/{id}/replies   404 unless a thread's first comment
    GET  /repos/{owner}/{repo}/commits/{ref}/check-runs    check_name, status, filter (latest, all)
    GET  /repos/{owner}/{repo}/commits/{ref}/status        the latest status of each context, combined
    GET  /repos/{owner}/{repo}/check-runs/{id}
    GET  /repos/{owner}/{repo}/git/ref/heads/{branch}      a branch's tip
    GET  /repos/{owner}/{repo}/compare/{base}...{head}     status, ahead_by, behind_by, merge_base_commit
    GET  /repos/{owner}/{repo}/check-runs/{id}/annotations
    GET  /repos/{owner}/{repo}/collaborators/{login}/permission

A pull request is an issue with a pull record. When the repository's clone_url is a local git
repository (the tests' bare origins), a pull request's head.sha is read from it at each request
(`refs/heads/<head ref>`), so a push moves it (and the pull request's updated_at, as on GitHub);
otherwise shas are made up from the branch names. `{ref}` of the commits endpoints is a sha, a
branch or a tag, resolved the same way (422 "No commit found for SHA: ..." when it is none). A
submitted review, a reply in a review thread, a merge or a close updates the pull request's
updated_at; check runs and commit statuses do not (they belong to the commit), and neither does the
base branch moving on: `base.sha` is the base's tip when the pull request was opened or its head last
moved, as on GitHub, where it does not follow the base. `mergeable` is computed from the origin with
`git merge-tree`, lazily as GitHub does: the first GET of a pull request after its head or its base
moved answers null ("unknown"), and the next one the result (false with "dirty" on conflicts; else
true, with "draft", "behind" when the repository requires branches to be up to date, "unstable" when
a check or status fails on the head, or "clean"). update-branch makes the merge commit of the base
into the head on the origin, as GitHub's button does.

Lists are paginated with `Link` headers whose URLs use `/repositories/{id}/...` like GitHub's; the
issues list includes pull requests, as GitHub's does. Every answer carries X-RateLimit-* headers;
a GET answer carries an ETag computed from its body (strong, or weak as GitHub mostly sends them
with `weak_etags`), so any change to what it shows (an issue's labels, state, comments, text)
changes it; a matching If-None-Match, strong or weak, is a 304 that costs no rate limit. Points are
counted as GitHub does: every authenticated answer within the budget costs one, 404s and 422s too,
except a 304 (`points_used`, and `points` of each recorded request; injected faults cost none).
Tokens outside `tokens` get 401 "Bad credentials"; an exhausted budget gets 403 (or 429).

Faults are queued and consumed by the requests they match: status bursts, slow answers, dropped
connections and secondary rate limits. Every request is kept in `requests` for assertions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import pytest

TOKEN = "ghp_testtoken"
REPO = "octo/widgets"
ENTERPRISE_PREFIX = "/api/v3"
MAX_COMMENT_CHARS = 65_536  # GitHub's limit on a comment's body
API_VERSION = "2022-11-28"
DOCS = "https://docs.github.com/rest"
# The legacy `permission` field knows only admin/write/read: maintain shows as write, triage as read.
LEGACY_PERMISSION = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read"}

Answer = Tuple[int, Dict[str, str], bytes]


@dataclass
class RecordedRequest:
    """One request as the emulator saw it. Header names are lower-cased."""

    method: str
    path: str  # as sent, query string included
    headers: Dict[str, str]
    body: bytes
    status: Optional[int] = None  # None: the connection was dropped without an answer
    points: int = 0  # rate-limit points the answer cost
    at: float = field(default_factory=time.time)  # when it arrived (for benchmarks' latencies)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class _Fault:
    kind: str  # "status" | "slow" | "drop" | "secondary_limit"
    count: int
    method: Optional[str]  # None matches every method
    path: Optional[str]  # a substring of the request path; None matches every path
    status: int = 502
    seconds: float = 0.0
    message: Optional[str] = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or self.path in path)


@dataclass
class _Issue:
    number: int
    id: int
    title: str
    body: Optional[str]
    user: str
    created_at: str
    updated_at: str
    labels: List[str] = field(default_factory=list)  # casefolded keys into _Repo.labels
    state: str = "open"
    closed_at: Optional[str] = None
    comments: List[Dict[str, Any]] = field(default_factory=list)
    events: List[Dict[str, Any]] = field(default_factory=list)
    pull: Optional[Dict[str, Any]] = None  # a pull request's record: see _new_pull


@dataclass
class _Repo:
    id: int
    owner: str
    name: str
    default_branch: str
    clone_url: str
    private: bool = False
    drafts: bool = True  # False: a private repository on a plan without draft pull requests
    push: bool = True  # the token's account may push (a read-only collaborator: False)
    issues: Dict[int, _Issue] = field(default_factory=dict)
    labels: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # casefolded name -> label
    check_runs: List[Dict[str, Any]] = field(default_factory=list)
    statuses: List[Dict[str, Any]] = field(default_factory=list)
    check_suites: Dict[Tuple[str, str], int] = field(default_factory=dict)  # (sha, app slug) -> suite id
    up_to_date_required: bool = False  # branch protection: a pull request behind its base is "behind"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _touch(issue: _Issue) -> str:
    """Set the issue's updated_at to now, always later than before (GitHub's stamps are in
    seconds; two changes within one second still change it, so that its ETag changes)."""
    stamp = _now()
    if stamp <= issue.updated_at:
        stamp = (_parse(issue.updated_at) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    issue.updated_at = stamp
    return stamp


def _new_pull(head_ref: str, head_label: str, base_ref: str, draft: bool) -> Dict[str, Any]:
    return {"head_ref": head_ref, "head_label": head_label, "base_ref": base_ref, "draft": draft,
            "head_sha": None,  # the head's last known sha (read from a local origin at each request)
            "base_sha": None,  # the base's tip when the pull request was opened or its head last moved
            "merge_check": None,  # {"pair": (base tip, head), "clean": bool}: mergeability, computed lazily
            "merged": False, "merged_at": None, "merged_by": None, "merge_commit_sha": None,
            "reviews": [], "review_comments": []}


#: The GitHub App every check run comes from unless a test names another.
ACTIONS_APP = "github-actions"
REVIEW_STATES = ("APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED", "PENDING")
CHECK_STATUSES = ("queued", "in_progress", "completed", "waiting", "requested", "pending")
CHECK_CONCLUSIONS = ("success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required",
                     "stale")
STATUS_STATES = ("error", "failure", "pending", "success")
ANNOTATION_LEVELS = ("notice", "warning", "failure")
_SHA = re.compile(r"[0-9a-f]{40}")
# GitHub's closing keywords, in a pull request's body: "Closes #5", "fixes octo/widgets#5"...
_CLOSING = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s*:?\s+(?:([\w.-]+/[\w.-]+))?#(\d+)\b",
                      re.IGNORECASE)
_GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": "GitHub", "GIT_AUTHOR_EMAIL": "noreply@github.com",
            "GIT_COMMITTER_NAME": "GitHub", "GIT_COMMITTER_EMAIL": "noreply@github.com"}


def _fake_sha(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def _git_dir(clone_url: str) -> Optional[str]:
    """The git folder of a clone_url that is a local repository (bare, or a work tree), else None."""
    if "://" in clone_url:
        if not clone_url.startswith("file://"):
            return None
        clone_url = unquote(urlsplit(clone_url).path)
    if os.path.isdir(os.path.join(clone_url, "objects")) and os.path.isfile(os.path.join(clone_url, "HEAD")):
        return clone_url
    if os.path.isdir(os.path.join(clone_url, ".git")):
        return os.path.join(clone_url, ".git")
    return None


def _git(git_dir: str, *args: str) -> Tuple[int, str]:
    """Run git on `git_dir` without this machine's configuration: (exit status, stdout stripped)."""
    done = subprocess.run(["git", "--git-dir", git_dir, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, **_GIT_ENV})
    return done.returncode, done.stdout.strip()


#: Answers about commits named by their sha alone: objects never change, so each question is asked of git once.
_SETTLED: Dict[Tuple[str, ...], Tuple[int, str]] = {}
_SHA_REVISION = re.compile(r"[0-9a-f]{40}(?:\.\.\.?[0-9a-f]{40}|:.+|\^\{commit\})?")


def _git_settled(git_dir: str, *args: str, answers: Tuple[int, ...] = (0,)) -> Tuple[int, str]:
    """`_git` for a question whose every revision is a sha (`sha`, `sha..sha`, `sha...sha`, `sha:path`,
    `sha^{commit}`), remembered when its exit status is one of `answers` (a missing object is not one)."""
    key = (git_dir, *args)
    if key in _SETTLED:
        return _SETTLED[key]
    done = _git(git_dir, *args)
    if done[0] in answers and all(_SHA_REVISION.fullmatch(arg) for arg in args[1:] if not arg.startswith("-")):
        _SETTLED[key] = done
    return done


def _branch_refs(git_dir: str) -> Dict[str, str]:
    """Every branch of a local repository and its sha, read as git stores them (packed-refs, then the loose
    files that override it) rather than asked of a git process: the emulator asks on almost every request."""
    branches: Dict[str, str] = {}
    try:
        with open(os.path.join(git_dir, "packed-refs"), encoding="utf-8") as packed:
            for line in packed:
                sha, _, name = line.strip().partition(" ")
                if name.startswith("refs/heads/") and _SHA.fullmatch(sha):
                    branches[name[len("refs/heads/"):]] = sha
    except FileNotFoundError:
        pass
    heads = os.path.join(git_dir, "refs", "heads")
    for folder, _, files in os.walk(heads):
        for name in files:
            if name.endswith(".lock"):
                continue  # an update under way: the ref is its old value until the rename
            path = os.path.join(folder, name)
            try:
                with open(path, encoding="utf-8") as loose:
                    sha = loose.read().strip()
            except FileNotFoundError:
                continue  # deleted meanwhile
            if _SHA.fullmatch(sha):
                branches[os.path.relpath(path, heads)] = sha
    return branches


class _NotFound(Exception):
    """Routing found no resource: GitHub's plain 404."""


class GitHubEmulator:
    """In-memory GitHub behind a ThreadingHTTPServer on an ephemeral loopback port."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tokens: set = set()
        self.login = "orchestrator-bot"  # the user every accepted token authenticates as
        self.roles: Dict[str, str] = {}  # login -> role_name, for every repository
        self.requests: List[RecordedRequest] = []
        self.errors: List[str] = []  # tracebacks of emulator bugs (answered 500)
        self.rate_limit = 5000
        self.rate_remaining = 5000
        self.rate_reset = int(time.time()) + 3600
        self.rate_limit_status = 403  # GitHub answers 403 or 429 when the budget is gone
        self.points_used = 0  # rate-limit points charged since the start
        self.weak_etags = False  # True: ETags are W/"...", as GitHub sends most of them
        self._repos: Dict[str, _Repo] = {}  # casefolded full name -> repo
        self._default_repo: Optional[str] = None
        self._faults: List[_Fault] = []
        self._ids = itertools.count(1001)
        self._user_ids: Dict[str, int] = {}
        self._stopping = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._port: Optional[int] = None

    # ------------------------------------------------------------------------------------------
    # Life cycle
    # ------------------------------------------------------------------------------------------

    def start(self) -> "GitHubEmulator":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.emulator = self
        self._port = self._server.server_address[1]
        # A short poll interval: shutdown() waits for the serve loop to notice, once per test.
        threading.Thread(target=self._server.serve_forever, args=(0.02,), name="GitHubEmulator",
                         daemon=True).start()
        return self

    def close(self) -> None:
        self._stopping.set()  # wakes slow answers still sleeping
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "GitHubEmulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def url(self) -> str:
        assert self._port is not None, "start() the emulator first"
        return f"http://127.0.0.1:{self._port}"

    # ------------------------------------------------------------------------------------------
    # Data helpers
    # ------------------------------------------------------------------------------------------

    def add_repo(self, owner_name: str, default_branch: str = "trunk", clone_url: Optional[str] = None,
                 private: bool = False, drafts: bool = True, push: bool = True,
                 up_to_date_required: bool = False) -> None:
        owner, name = owner_name.split("/")
        with self.lock:
            self._repos[owner_name.casefold()] = _Repo(
                next(self._ids), owner, name, default_branch,
                clone_url or f"https://github.com/{owner_name}.git", private, drafts, push,
                up_to_date_required=up_to_date_required)
            self._default_repo = self._default_repo or owner_name

    def add_issue(self, title: str, body: Optional[str] = None, labels: Iterable[str] = (), user: str = "alice",
                  is_pull_request: bool = False, labeled_by: str = "maintainer",
                  repo: Optional[str] = None) -> int:
        """Open an issue (or a pull request) as `user`; `labeled_by` adds each label. Returns its number."""
        with self.lock:
            r = self._repo(repo)
            stamp = _now()
            issue = _Issue(len(r.issues) + 1, next(self._ids), title, body, user, stamp, stamp)
            if is_pull_request:
                ref = f"pr-{issue.number}"
                issue.pull = _new_pull(ref, f"{r.owner}:{ref}", r.default_branch, False)
                self._head_sha(r, issue)
            r.issues[issue.number] = issue
            for label in labels:
                self._label(r, issue, label, labeled_by)
            return issue.number

    def add_pull(self, head: str, title: str = "A change", body: Optional[str] = None, base: Optional[str] = None,
                 user: str = "orchestrator-bot", draft: bool = False, repo: Optional[str] = None) -> int:
        """`user` opens a pull request from branch `head` (of a local origin: its real commits) into
        `base` (default: the default branch). Returns its number."""
        with self.lock:
            r = self._repo(repo)
            stamp = _now()
            issue = _Issue(len(r.issues) + 1, next(self._ids), title, body, user, stamp, stamp)
            issue.pull = _new_pull(head, f"{r.owner}:{head}", base or r.default_branch, draft)
            r.issues[issue.number] = issue
            self._head_sha(r, issue)
            return issue.number

    def add_label_event(self, number: int, label: str, actor: str, event: str = "labeled",
                        repo: Optional[str] = None) -> None:
        """`actor` adds (event="labeled") or removes ("unlabeled") a label, as on github.com."""
        with self.lock:
            r = self._repo(repo)
            issue = r.issues[number]
            if event == "labeled":
                self._label(r, issue, label, actor)
            else:
                self._unlabel(r, issue, label.casefold(), actor)

    def set_role(self, login: str, role_name: str) -> None:
        """Make `login` a collaborator: admin, maintain, write, triage or read."""
        assert role_name in LEGACY_PERMISSION, role_name
        with self.lock:
            self.roles[login] = role_name

    def add_comment(self, number: int, body: str, user: str = "alice", repo: Optional[str] = None) -> Dict[str, Any]:
        with self.lock:
            r = self._repo(repo)
            return self._comment_json(r, r.issues[number], self._add_comment(r.issues[number], body, user), self.url)

    def close_issue(self, number: int, actor: str = "maintainer", repo: Optional[str] = None) -> None:
        with self.lock:
            r = self._repo(repo)
            issue = r.issues[number]
            if issue.pull is not None:
                self._head_sha(r, issue)  # what it was when closed: a closed pull request's head stays
            issue.state, issue.closed_at = "closed", _touch(issue)
            issue.events.append(self._event("closed", actor, None))

    def issue(self, number: int, repo: Optional[str] = None) -> Dict[str, Any]:
        """The issue as GET /repos/{owner}/{repo}/issues/{n} would answer."""
        with self.lock:
            r = self._repo(repo)
            return self._issue_json(r, r.issues[number], self.url)

    def issue_labels(self, number: int, repo: Optional[str] = None) -> List[str]:
        with self.lock:
            r = self._repo(repo)
            return [r.labels[key]["name"] for key in r.issues[number].labels]

    def comments(self, number: int, repo: Optional[str] = None) -> List[Dict[str, Any]]:
        with self.lock:
            r = self._repo(repo)
            issue = r.issues[number]
            return [self._comment_json(r, issue, c, self.url) for c in issue.comments]

    def events(self, number: int, repo: Optional[str] = None) -> List[Dict[str, Any]]:
        with self.lock:
            return [self._event_json(e, self.url) for e in self._repo(repo).issues[number].events]

    def labels(self, repo: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
        """The repository's labels by name."""
        with self.lock:
            return {label["name"]: dict(label) for label in self._repo(repo).labels.values()}

    def pulls(self, repo: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every pull request, as GET /repos/{owner}/{repo}/pulls/{n} would answer each."""
        with self.lock:
            r = self._repo(repo)
            return [self._pull_json(r, i, self.url, full=True) for i in r.issues.values() if i.pull is not None]

    def pull(self, pr_number: int, repo: Optional[str] = None) -> Dict[str, Any]:
        """The pull request as GET /repos/{owner}/{repo}/pulls/{n} would answer."""
        with self.lock:
            r = self._repo(repo)
            return self._pull_json(r, self._pull_issue(r, pr_number), self.url, full=True)

    # --- pull request reviews, review comments, checks -----------------------------------------

    def add_review(self, pr_number: int, user: str, state: str, body: str = "",
                   comments: Sequence[Dict[str, Any]] = (), repo: Optional[str] = None,
                   commit_id: Optional[str] = None) -> int:
        """`user` submits a review (state APPROVED, CHANGES_REQUESTED, COMMENTED, or PENDING: not
        submitted, seen by its author only) on the head commit (or `commit_id`), with inline
        `comments` [{"path", "line", "body"[, "side"]}]. A submitted review updates the pull
        request's updated_at, as on GitHub. Returns the review's id."""
        assert state in REVIEW_STATES and state != "DISMISSED", f"{state}: dismiss_review() dismisses"
        with self.lock:
            r = self._repo(repo)
            issue = self._pull_issue(r, pr_number)
            sha = commit_id or self._head_sha(r, issue)
            stamp = _now()
            review = {"id": next(self._ids), "user": user, "state": state, "body": body, "commit_id": sha,
                      "submitted_at": None if state == "PENDING" else stamp}
            issue.pull["reviews"].append(review)
            for spec in comments:
                line = int(spec["line"])
                comment = {"id": next(self._ids), "review_id": review["id"], "user": user, "body": spec["body"],
                           "path": spec["path"], "line": line, "original_line": line,
                           "side": spec.get("side", "RIGHT"), "commit_id": sha, "original_commit_id": sha,
                           "diff_hunk": self._diff_hunk(r, sha, spec["path"], line), "position": line,
                           "in_reply_to_id": None, "created_at": stamp, "updated_at": stamp}
                issue.pull["review_comments"].append(comment)
            if state != "PENDING":
                _touch(issue)
            return review["id"]

    def dismiss_review(self, pr_number: int, review_id: int, repo: Optional[str] = None) -> None:
        """A maintainer dismisses an approval or a change request: its state becomes DISMISSED."""
        with self.lock:
            issue = self._pull_issue(self._repo(repo), pr_number)
            review = next(rv for rv in issue.pull["reviews"] if rv["id"] == review_id)
            assert review["state"] in ("APPROVED", "CHANGES_REQUESTED"), review["state"]
            review["state"] = "DISMISSED"
            _touch(issue)

    def add_review_comment_reply(self, pr_number: int, comment_id: int, body: str, user: str = "alice",
                                 repo: Optional[str] = None) -> int:
        """`user` answers in the thread of review comment `comment_id` (a reply to a reply joins
        its thread, as the web page does). Returns the reply's id."""
        with self.lock:
            r = self._repo(repo)
            issue = self._pull_issue(r, pr_number)
            comment = next(c for c in issue.pull["review_comments"] if c["id"] == comment_id)
            if comment["in_reply_to_id"] is not None:
                comment = next(c for c in issue.pull["review_comments"] if c["id"] == comment["in_reply_to_id"])
            return self._reply(r, issue, comment, body, user)["id"]

    def reviews(self, pr_number: int, repo: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every review, as its author sees them (PENDING ones too)."""
        with self.lock:
            r = self._repo(repo)
            issue = self._pull_issue(r, pr_number)
            return [self._review_json(r, issue, rv, self.url) for rv in issue.pull["reviews"]]

    def review_comments(self, pr_number: int, repo: Optional[str] = None) -> List[Dict[str, Any]]:
        with self.lock:
            r = self._repo(repo)
            issue = self._pull_issue(r, pr_number)
            return [self._review_comment_json(r, issue, c, self.url) for c in issue.pull["review_comments"]]

    def review_comment_replies(self, pr_number: int, repo: Optional[str] = None) -> List[Dict[str, Any]]:
        """The review comments that are replies in a thread (they have in_reply_to_id), oldest first."""
        return [c for c in self.review_comments(pr_number, repo) if "in_reply_to_id" in c]

    def add_check_run(self, sha: str, name: str, conclusion: Optional[str], status: str = "completed",
                      title: str = "", summary: str = "", annotations: Sequence[Dict[str, Any]] = (),
                      repo: Optional[str] = None, text: Optional[str] = None, app: str = ACTIONS_APP) -> int:
        """A check run on commit `sha` (a sha, or a branch: its current sha). `conclusion` only when
        completed. `annotations`: [{"path", "start_line"[, "end_line"], "message"[,
        "annotation_level" (default failure), "title"]}]. As on GitHub, it does not change the pull
        request. Returns the check run's id."""
        assert status in CHECK_STATUSES, status
        assert (conclusion in CHECK_CONCLUSIONS) if status == "completed" else conclusion is None, conclusion
        with self.lock:
            r = self._repo(repo)
            head = self._resolve(r, sha)
            assert head is not None, f"no commit {sha} in {r.full_name}"
            stamp = _now()
            suite = r.check_suites.setdefault((head, app), next(self._ids))
            run = {"id": next(self._ids), "sha": head, "name": name, "status": status, "conclusion": conclusion,
                   "title": title, "summary": summary, "text": text, "app": app, "suite": suite,
                   "started_at": None if status in ("queued", "waiting", "requested", "pending") else stamp,
                   "completed_at": stamp if status == "completed" else None, "annotations": []}
            self._annotate(run, annotations)
            r.check_runs.append(run)
            return run["id"]

    def complete_check_run(self, check_run_id: int, conclusion: str, title: Optional[str] = None,
                           summary: Optional[str] = None, annotations: Sequence[Dict[str, Any]] = (),
                           repo: Optional[str] = None) -> None:
        """A queued or running check run completes with `conclusion` (and more annotations)."""
        assert conclusion in CHECK_CONCLUSIONS, conclusion
        with self.lock:
            run = next(c for c in self._repo(repo).check_runs if c["id"] == check_run_id)
            stamp = _now()
            run.update(status="completed", conclusion=conclusion, completed_at=stamp,
                       started_at=run["started_at"] or stamp)
            if title is not None:
                run["title"] = title
            if summary is not None:
                run["summary"] = summary
            self._annotate(run, annotations)

    def add_status(self, sha: str, context: str, state: str, description: str = "",
                   repo: Optional[str] = None, target_url: Optional[str] = None, creator: str = "ci-bot") -> int:
        """A commit status (error, failure, pending, success) on `sha` (or a branch's current sha);
        the latest of each context counts. Returns its id."""
        assert state in STATUS_STATES, state
        with self.lock:
            r = self._repo(repo)
            head = self._resolve(r, sha)
            assert head is not None, f"no commit {sha} in {r.full_name}"
            stamp = _now()
            status = {"id": next(self._ids), "sha": head, "context": context, "state": state,
                      "description": description or None, "target_url": target_url, "creator": creator,
                      "created_at": stamp, "updated_at": stamp}
            r.statuses.append(status)
            return status["id"]

    def merge_pull(self, pr_number: int, repo: Optional[str] = None, by: str = "maintainer",
                   close_issues: bool = True) -> str:
        """`by` merges the pull request (a draft is made ready first, as the web page asks): with a
        local origin, a merge commit of head into base is made there. The pull request is closed,
        merged, with merged_at and merge_commit_sha; as on GitHub, merged into the default branch
        it closes the issues its body names with a closing keyword ("Closes #5"). Returns the merge
        commit's sha."""
        with self.lock:
            r = self._repo(repo)
            issue = self._pull_issue(r, pr_number)
            pull = issue.pull
            assert issue.state == "open", f"pull request #{pr_number} is {issue.state}"
            head = self._head_sha(r, issue)
            sha = self._merge_commit(r, issue, head)
            stamp = _touch(issue)
            pull.update(draft=False, merged=True, merged_at=stamp, merged_by=by, merge_commit_sha=sha)
            issue.state, issue.closed_at = "closed", stamp
            issue.events.append(dict(self._event("merged", by, None), commit_id=sha))
            issue.events.append(dict(self._event("closed", by, None), commit_id=sha))
            if close_issues and pull["base_ref"] == r.default_branch:
                for owner_name, number in _CLOSING.findall(issue.body or ""):
                    target = r.issues.get(int(number))
                    if (owner_name and owner_name.casefold() != r.full_name.casefold()) or target is None \
                            or target.pull is not None or target.state != "open":
                        continue
                    target.state, target.closed_at = "closed", _touch(target)
                    target.events.append(dict(self._event("closed", by, None), commit_id=sha))
            return sha

    def close_pull(self, pr_number: int, repo: Optional[str] = None, actor: str = "maintainer") -> None:
        """Close the pull request without merging it."""
        with self.lock:
            self._pull_issue(self._repo(repo), pr_number)
        self.close_issue(pr_number, actor=actor, repo=repo)

    # ------------------------------------------------------------------------------------------
    # Fault injection: each fault answers the next `count` requests it matches
    # ------------------------------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 502, method: Optional[str] = None,
                  path: Optional[str] = None, message: Optional[str] = None) -> None:
        """Answer `status`: 502-504 with the HTML page GitHub's edge sends, others with a JSON message."""
        self._add_fault(_Fault("status", count, method, path, status=status, message=message))

    def slow_next(self, seconds: float, count: int = 1, method: Optional[str] = None,
                  path: Optional[str] = None) -> None:
        """Sleep `seconds` before answering normally."""
        self._add_fault(_Fault("slow", count, method, path, seconds=seconds))

    def drop_next(self, count: int = 1, method: Optional[str] = None, path: Optional[str] = None) -> None:
        """Read the request, then close the connection without a byte of answer."""
        self._add_fault(_Fault("drop", count, method, path))

    def secondary_limit_next(self, retry_after: int = 60, count: int = 1, method: Optional[str] = None,
                             path: Optional[str] = None) -> None:
        """403 with Retry-After, as GitHub's secondary (abuse) rate limit answers."""
        self._add_fault(_Fault("secondary_limit", count, method, path, seconds=retry_after))

    def _add_fault(self, fault: _Fault) -> None:
        with self.lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> Optional[_Fault]:
        with self.lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------------------------------------
    # Request handling
    # ------------------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Dict[str, str], body: bytes) -> Optional[Answer]:
        """Answer one request; None means drop the connection."""
        record = RecordedRequest(method, raw_path, {k.lower(): v for k, v in headers.items()}, body)
        with self.lock:
            self.requests.append(record)
        answer = self._answer(method, raw_path, record.headers, body, record)
        record.status = answer[0] if answer else None
        return answer

    def _answer(self, method: str, raw_path: str, headers: Dict[str, str], body: bytes,
                record: RecordedRequest) -> Optional[Answer]:
        fault = self._take_fault(method, raw_path)
        if fault is not None and fault.kind == "drop":
            return None
        if fault is not None and fault.kind == "slow" and self._stopping.wait(fault.seconds):
            return None  # closed while sleeping: the client is long gone
        if fault is not None and fault.kind == "status":
            if fault.status in (502, 503, 504):  # GitHub's edge answers these with HTML, not JSON
                return self._send(fault.status, None, raw=b"<html><body><h1>Unicorn!</h1></body></html>",
                                  content_type="text/html; charset=utf-8")
            return self._send(fault.status, {"message": fault.message or HTTPStatus(fault.status).phrase,
                                             "documentation_url": DOCS})

        split = urlsplit(raw_path)
        path = split.path
        prefix = ENTERPRISE_PREFIX if path == ENTERPRISE_PREFIX or path.startswith(ENTERPRISE_PREFIX + "/") else ""
        path = path[len(prefix):] or "/"
        base = self.url + prefix
        query = dict(parse_qsl(split.query, keep_blank_values=True))

        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() not in ("bearer", "token") or token not in self.tokens:
            return self._send(401, {"message": "Bad credentials", "documentation_url": DOCS})
        version = headers.get("x-github-api-version")
        if version is not None and version != API_VERSION:
            return self._send(400, {"message": f"Unsupported 'X-GitHub-Api-Version' header '{version}'.",
                                    "documentation_url": f"{DOCS}/overview/api-versions"})
        if fault is not None and fault.kind == "secondary_limit":
            return self._send(403, {"message": "You have exceeded a secondary rate limit. Please wait a few"
                                               " minutes before you try again.",
                                    "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api"},
                              {"Retry-After": str(int(fault.seconds))})

        with self.lock:
            if self.rate_remaining <= 0:
                return self._send(self.rate_limit_status, {
                    "message": f"API rate limit exceeded for user ID {self._user_id(self.login)}.",
                    "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api"})
            try:
                status, payload, extra = self._route(method, path, query, body, base)
            except _NotFound:
                status, payload, extra = 404, {"message": "Not Found", "documentation_url": DOCS}, {}
            data = json.dumps(payload).encode("utf-8")
            if method == "GET" and status == 200:
                opaque = '"' + hashlib.sha256(data).hexdigest()[:40] + '"'
                etag = "W/" + opaque if self.weak_etags else opaque
                extra["ETag"] = etag
                if opaque in _etags(headers.get("if-none-match", "")):  # the weak comparison GitHub makes
                    return self._send(304, None, {"ETag": etag}, raw=b"")
            self.rate_remaining -= 1
            self.points_used += 1
            record.points = 1
            return self._send(status, payload, extra, raw=data)

    def _send(self, status: int, payload: Any, extra: Optional[Dict[str, str]] = None, *,
              raw: Optional[bytes] = None, content_type: str = "application/json; charset=utf-8") -> Answer:
        with self.lock:
            headers = {
                "Content-Type": content_type,
                "X-GitHub-Media-Type": "github.v3; format=json",
                "X-RateLimit-Limit": str(self.rate_limit),
                "X-RateLimit-Remaining": str(max(self.rate_remaining, 0)),
                "X-RateLimit-Reset": str(self.rate_reset),
                "X-RateLimit-Used": str(self.rate_limit - max(self.rate_remaining, 0)),
                "X-RateLimit-Resource": "core",
            }
        headers.update(extra or {})
        if raw is None:
            raw = json.dumps(payload).encode("utf-8")
        return status, headers, raw

    def _route(self, method: str, path: str, query: Dict[str, str], body: bytes,
               base: str) -> Tuple[int, Any, Dict[str, str]]:
        # Split before unquoting: a label name may hold an encoded "/".
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if segments == ["user"] and method == "GET":
            return 200, dict(self._user_json(self.login, base), name="Orchestrator Bot"), {}
        if len(segments) >= 3 and segments[0] == "repos":
            repo, rest = self._repos.get(f"{segments[1]}/{segments[2]}".casefold()), segments[3:]
        elif len(segments) >= 2 and segments[0] == "repositories":
            repo = next((r for r in self._repos.values() if str(r.id) == segments[1]), None)
            rest = segments[2:]
        else:
            raise _NotFound()
        if repo is None:
            raise _NotFound()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            return 400, {"message": "Problems parsing JSON", "documentation_url": DOCS}, {}
        if method == "GET" and rest == []:
            return 200, self._repo_json(repo, base), {}
        if method == "GET" and rest == ["issues"]:
            return self._list_issues(repo, query, base)
        if rest[:1] == ["issues"] and len(rest) >= 2:
            if not rest[1].isdigit() or int(rest[1]) not in repo.issues:
                raise _NotFound()
            return self._issue_route(method, repo, repo.issues[int(rest[1])], rest[2:], query, data, base)
        if method == "GET" and rest == ["labels"]:
            return self._paged(repo, "labels", [self._label_json(l, base, repo) for l in repo.labels.values()],
                               query, base)
        if method == "POST" and rest == ["labels"]:
            return self._create_label(repo, data if isinstance(data, dict) else {}, base)
        if method == "GET" and rest == ["pulls"]:
            return self._list_pulls(repo, query, base)
        if method == "POST" and rest == ["pulls"]:
            return self._create_pull(repo, data if isinstance(data, dict) else {}, base)
        if rest[:1] == ["pulls"] and len(rest) >= 2:
            issue = repo.issues.get(int(rest[1])) if rest[1].isdigit() else None
            if issue is None or issue.pull is None:
                raise _NotFound()
            return self._pull_route(method, repo, issue, rest[2:], query, data, base)
        if method == "GET" and len(rest) >= 3 and rest[0] == "commits" and rest[-1] in ("check-runs", "status"):
            ref = "/".join(rest[1:-1])  # a branch name may come with its slashes unencoded
            sha = self._resolve(repo, ref)
            if sha is None:
                return 422, {"message": f"No commit found for SHA: {ref}",
                             "documentation_url": f"{DOCS}/commits/commits"}, {}
            sub = f"commits/{quote(ref, safe='')}/{rest[-1]}"
            if rest[-1] == "check-runs":
                return self._list_check_runs(repo, sha, sub, query, base)
            return self._combined_status(repo, sha, sub, query, base)
        if method == "GET" and rest[:1] == ["check-runs"] and len(rest) in (2, 3) and rest[2:] in ([], ["annotations"]):
            run = next((c for c in repo.check_runs if str(c["id"]) == rest[1]), None)
            if run is None:
                raise _NotFound()
            if len(rest) == 2:
                return 200, self._check_run_json(repo, run, base), {}
            return self._paged(repo, f"check-runs/{run['id']}/annotations",
                               [self._annotation_json(repo, run, a) for a in run["annotations"]], query, base)
        if method == "GET" and len(rest) >= 4 and rest[:3] == ["git", "ref", "heads"]:
            branch = "/".join(rest[3:])
            sha = self._branch_tip(repo, branch)
            if sha is None:
                raise _NotFound()
            return 200, {"ref": f"refs/heads/{branch}", "node_id": f"REF_{_fake_sha(branch)[:12]}",
                         "url": f"{base}/repos/{repo.full_name}/git/refs/heads/{quote(branch)}",
                         "object": {"sha": sha, "type": "commit",
                                    "url": f"{base}/repos/{repo.full_name}/git/commits/{sha}"}}, {}
        if method == "GET" and len(rest) >= 2 and rest[0] == "compare":
            return self._compare(repo, "/".join(rest[1:]), query, base)
        if method == "GET" and len(rest) == 3 and rest[0] == "collaborators" and rest[2] == "permission":
            role = self.roles.get(rest[1])
            if role is None:
                raise _NotFound()
            user = dict(self._user_json(rest[1], base), role_name=role)
            return 200, {"permission": LEGACY_PERMISSION[role], "role_name": role, "user": user}, {}
        raise _NotFound()

    def _issue_route(self, method: str, repo: _Repo, issue: _Issue, rest: List[str], query: Dict[str, str],
                     data: Any, base: str) -> Tuple[int, Any, Dict[str, str]]:
        sub = f"issues/{issue.number}"
        if method == "GET" and rest == []:
            return 200, self._issue_json(repo, issue, base), {}
        if method == "GET" and rest == ["comments"]:
            since = query.get("since")
            items = [c for c in issue.comments if not since or _parse(c["updated_at"]) >= _parse(since)]
            return self._paged(repo, f"{sub}/comments", [self._comment_json(repo, issue, c, base) for c in items],
                               query, base)
        if method == "POST" and rest == ["comments"]:
            if not isinstance(data, dict) or not data.get("body"):
                return _validation_failed("IssueComment", "missing_field", "body")
            if len(data["body"]) > MAX_COMMENT_CHARS:
                return 422, {"message": "Validation Failed", "errors": [
                    {"resource": "IssueComment", "code": "custom", "field": "body",
                     "message": f"body is too long (maximum is {MAX_COMMENT_CHARS} characters)"}],
                    "documentation_url": DOCS}, {}
            comment = self._add_comment(issue, data["body"], self.login)
            return 201, self._comment_json(repo, issue, comment, base), {}
        if method == "GET" and rest == ["events"]:
            return self._paged(repo, f"{sub}/events", [self._event_json(e, base) for e in issue.events], query, base)
        if method == "POST" and rest == ["labels"]:
            names = data.get("labels") if isinstance(data, dict) else data
            if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
                return _validation_failed("Label", "invalid", "labels")
            for name in names:
                self._label(repo, issue, name, self.login)
            return 200, [self._label_json(repo.labels[k], base, repo) for k in issue.labels], {}
        if method == "DELETE" and len(rest) == 2 and rest[0] == "labels":
            key = rest[1].casefold()
            if key not in issue.labels:
                return 404, {"message": "Label does not exist",
                             "documentation_url": f"{DOCS}/issues/labels#remove-a-label-from-an-issue"}, {}
            self._unlabel(repo, issue, key, self.login)
            return 200, [self._label_json(repo.labels[k], base, repo) for k in issue.labels], {}
        raise _NotFound()

    def _pull_route(self, method: str, repo: _Repo, issue: _Issue, rest: List[str], query: Dict[str, str],
                    data: Any, base: str) -> Tuple[int, Any, Dict[str, str]]:
        pull = issue.pull
        assert pull is not None
        sub = f"pulls/{issue.number}"
        if method == "GET" and rest == []:
            return 200, self._pull_json(repo, issue, base, full=True), {}
        if method == "GET" and rest == ["reviews"]:
            items = [self._review_json(repo, issue, rv, base) for rv in pull["reviews"]
                     if rv["state"] != "PENDING" or rv["user"] == self.login]  # chronological
            return self._paged(repo, f"{sub}/reviews", items, query, base)
        if method == "GET" and rest == ["comments"]:
            since = query.get("since")
            items = [c for c in pull["review_comments"] if self._visible(pull, c)
                     and (not since or _parse(c["updated_at"]) >= _parse(since))]
            if "sort" in query or "direction" in query:  # without either: ascending by id
                field_name = "updated_at" if query.get("sort") == "updated" else "created_at"
                items.sort(key=lambda c: (c[field_name], c["id"]), reverse=query.get("direction", "desc") != "asc")
            return self._paged(repo, f"{sub}/comments", [self._review_comment_json(repo, issue, c, base)
                                                         for c in items], query, base)
        if method == "PUT" and rest == ["update-branch"]:
            return self._update_branch(repo, issue, data if isinstance(data, dict) else {})
        if method == "POST" and len(rest) == 3 and rest[0] == "comments" and rest[2] == "replies":
            # Only a thread's first comment takes replies ("Replies to replies are not supported"): 404.
            comment = next((c for c in pull["review_comments"] if str(c["id"]) == rest[1]
                            and c["in_reply_to_id"] is None and self._visible(pull, c)), None)
            if comment is None:
                raise _NotFound()
            if not isinstance(data, dict) or not isinstance(data.get("body"), str) or not data["body"]:
                return _validation_failed("PullRequestReviewComment", "missing_field", "body")
            reply = self._reply(repo, issue, comment, data["body"], self.login)
            return 201, self._review_comment_json(repo, issue, reply, base), {}
        raise _NotFound()

    def _update_branch(self, repo: _Repo, issue: _Issue, data: Dict[str, Any]) -> Tuple[int, Any, Dict[str, str]]:
        """Merge the base's tip into the head, as GitHub's "Update branch" does (a merge commit)."""
        pull = issue.pull
        assert pull is not None
        docs = f"{DOCS}/pulls/pulls#update-a-pull-request-branch"
        head = self._head_sha(repo, issue)
        expected = data.get("expected_head_sha")
        if issue.state != "open":
            return 422, {"message": "Pull request is not open.", "documentation_url": docs}, {}
        if expected is not None and expected != head:
            return 422, {"message": "expected head sha didn't match current head ref.", "documentation_url": docs}, {}
        tip = self._branch_sha(repo, pull["base_ref"])
        if self._contains(repo, head, tip):
            return 422, {"message": "There are no new commits on the base branch.", "documentation_url": docs}, {}
        git_dir = _git_dir(repo.clone_url)
        if git_dir is None:
            pull["head_sha"] = _fake_sha(f"update {head} {tip}")
            _touch(issue)
        else:
            status, tree = _git(git_dir, "merge-tree", "--write-tree", head, tip)
            if status != 0:
                return 422, {"message": "merge conflict between base and head", "documentation_url": docs}, {}
            status, sha = _git(git_dir, "commit-tree", tree.split()[0], "-p", head, "-p", tip, "-m",
                               f"Merge branch '{pull['base_ref']}' into {pull['head_ref']}")
            assert status == 0, "git commit-tree failed"
            status, _ = _git(git_dir, "update-ref", f"refs/heads/{pull['head_ref']}", sha, head)
            assert status == 0, "git update-ref failed"
        return 202, {"message": "Updating pull request branch.",
                     "url": f"https://github.com/repos/{repo.full_name}/pulls/{issue.number}"}, {}

    def _compare(self, repo: _Repo, basehead: str, query: Dict[str, str], base: str) -> Tuple[int, Any, Dict[str, str]]:
        """GET /compare/{base}...{head}: how `head` stands against `base`, its commits paginated."""
        left, dots, right = basehead.partition("...")
        older, newer = self._resolve(repo, left), self._resolve(repo, right)
        if not dots or older is None or newer is None:
            raise _NotFound()
        git_dir = _git_dir(repo.clone_url)
        if git_dir is None:
            fork, ahead, behind, listed = older, int(older != newer), 0, [] if older == newer else [newer]
        else:
            fork = _git_settled(git_dir, "merge-base", older, newer)[1]
            ahead = int(_git_settled(git_dir, "rev-list", "--count", f"{older}..{newer}")[1] or 0)
            behind = int(_git_settled(git_dir, "rev-list", "--count", f"{newer}..{older}")[1] or 0)
            listed = _git_settled(git_dir, "rev-list", "--reverse", f"{older}..{newer}")[1].split()
        status = ("identical" if not ahead and not behind else "ahead" if not behind else
                  "behind" if not ahead else "diverged")
        page, headers = self._page(repo, f"compare/{basehead}", [{"sha": sha} for sha in listed], query, base)
        full = repo.full_name
        return 200, {"url": f"{base}/repos/{full}/compare/{basehead}",
                     "html_url": f"https://github.com/{full}/compare/{basehead}",
                     "permalink_url": f"https://github.com/{full}/compare/{older[:7]}...{newer[:7]}",
                     "diff_url": f"https://github.com/{full}/compare/{basehead}.diff",
                     "patch_url": f"https://github.com/{full}/compare/{basehead}.patch",
                     "base_commit": {"sha": older}, "merge_base_commit": {"sha": fork}, "status": status,
                     "ahead_by": ahead, "behind_by": behind, "total_commits": ahead, "commits": page,
                     "files": []}, headers

    def _visible(self, pull: Dict[str, Any], comment: Dict[str, Any]) -> bool:
        """A comment of a pending review is seen by its author only."""
        review = next(rv for rv in pull["reviews"] if rv["id"] == comment["review_id"])
        return review["state"] != "PENDING" or review["user"] == self.login

    def _reply(self, repo: _Repo, issue: _Issue, comment: Dict[str, Any], body: str, user: str) -> Dict[str, Any]:
        """A reply in the thread of `comment`: as on GitHub, a review of its own (COMMENTED, no body)."""
        pull = issue.pull
        assert pull is not None
        stamp = _now()
        review = {"id": next(self._ids), "user": user, "state": "COMMENTED", "body": "",
                  "commit_id": self._head_sha(repo, issue), "submitted_at": stamp}
        pull["reviews"].append(review)
        reply = dict(comment, id=next(self._ids), review_id=review["id"], user=user, body=body,
                     in_reply_to_id=comment["id"], created_at=stamp, updated_at=stamp)
        pull["review_comments"].append(reply)
        _touch(issue)
        return reply

    def _annotate(self, run: Dict[str, Any], annotations: Sequence[Dict[str, Any]]) -> None:
        for spec in annotations:
            level = spec.get("annotation_level", "failure")
            assert level in ANNOTATION_LEVELS, level
            start = int(spec["start_line"])
            run["annotations"].append({"path": spec["path"], "start_line": start,
                                       "end_line": int(spec.get("end_line", start)), "annotation_level": level,
                                       "title": spec.get("title"), "message": spec["message"],
                                       "raw_details": spec.get("raw_details")})

    # --- git: real shas when the repository's clone_url is a local repository ---------------------

    def _pull_issue(self, repo: _Repo, number: int) -> _Issue:
        issue = repo.issues[number]
        assert issue.pull is not None, f"#{number} is an issue, not a pull request"
        return issue

    def _head_sha(self, repo: _Repo, issue: _Issue, branches: Optional[Dict[str, str]] = None) -> str:
        """The head's sha: read from a local origin while the pull request is open (a push moves it,
        updates the pull request's updated_at, and takes the base's tip as its base.sha); a closed one
        keeps the last it had. `branches`: the origin's branch -> sha, read once for many pull requests."""
        pull = issue.pull
        assert pull is not None
        git_dir = _git_dir(repo.clone_url)
        if git_dir is not None and issue.state == "open":
            if branches is None:
                branches = _branch_refs(git_dir)
            status, sha = (0, branches[pull["head_ref"]]) if pull["head_ref"] in branches else (1, "")
            if status == 0 and sha != pull["head_sha"]:
                if pull["head_sha"] is not None:
                    _touch(issue)  # new commits pushed
                pull["head_sha"] = sha
                pull["base_sha"] = branches.get(pull["base_ref"])
        if pull["head_sha"] is None:
            pull["head_sha"] = _fake_sha(pull["head_ref"])
        if pull["base_sha"] is None:
            pull["base_sha"] = self._branch_sha(repo, pull["base_ref"])
        return pull["head_sha"]

    def _branches(self, repo: _Repo) -> Optional[Dict[str, str]]:
        """Every branch of a local origin and its sha, else None."""
        git_dir = _git_dir(repo.clone_url)
        return None if git_dir is None else _branch_refs(git_dir)

    def _branch_tip(self, repo: _Repo, branch: str) -> Optional[str]:
        """The sha branch `branch` points to, None when there is no such branch."""
        if _git_dir(repo.clone_url) is not None:
            return (self._branches(repo) or {}).get(branch)
        known = {repo.default_branch} | {i.pull[k] for i in repo.issues.values() if i.pull is not None
                                         for k in ("head_ref", "base_ref")}
        return _fake_sha(branch) if branch in known else None

    def _mergeability(self, repo: _Repo, issue: _Issue, tip: str, head: str) -> Tuple[Optional[bool], str]:
        """(mergeable, mergeable_state) of an open pull request, computed lazily as GitHub does: the
        first read after the head or the base moved starts the computation and answers (None, "unknown")."""
        pull = issue.pull
        assert pull is not None
        check = pull["merge_check"]
        if check is None or check["pair"] != [tip, head]:
            pull["merge_check"] = {"pair": [tip, head], "clean": self._merges_cleanly(repo, tip, head)}
            return None, "unknown"
        if not check["clean"]:
            return False, "dirty"
        if pull["draft"]:
            return True, "draft"
        if repo.up_to_date_required and not self._contains(repo, head, tip):
            return True, "behind"
        return True, "unstable" if self._failing(repo, head) else "clean"

    def _merges_cleanly(self, repo: _Repo, tip: str, head: str) -> bool:
        git_dir = _git_dir(repo.clone_url)
        return git_dir is None or _git_settled(git_dir, "merge-tree", "--write-tree", tip, head, answers=(0, 1))[0] == 0

    def _contains(self, repo: _Repo, head: str, commit: str) -> bool:
        """`head` has `commit` in its history."""
        git_dir = _git_dir(repo.clone_url)
        return head == commit if git_dir is None else \
            _git_settled(git_dir, "merge-base", "--is-ancestor", commit, head, answers=(0, 1))[0] == 0

    def _failing(self, repo: _Repo, sha: str) -> bool:
        """A check run or a commit status (the latest of its context) fails on `sha`."""
        latest: Dict[str, str] = {}
        for status in repo.statuses:
            if status["sha"] == sha:
                latest[status["context"]] = status["state"]
        return any(run["sha"] == sha and run["conclusion"] in ("failure", "timed_out", "cancelled")
                   for run in repo.check_runs) or bool(set(latest.values()) & {"failure", "error"})

    def _branch_sha(self, repo: _Repo, branch: str) -> str:
        git_dir = _git_dir(repo.clone_url)
        sha = _branch_refs(git_dir).get(branch) if git_dir is not None else None
        return sha or _fake_sha(branch)

    def _resolve(self, repo: _Repo, ref: str) -> Optional[str]:
        """The commit `ref` (a sha, a branch, a tag) names, or None."""
        if not ref or ref.startswith("-"):
            return None
        known = {i.pull["head_sha"] for i in repo.issues.values() if i.pull is not None}
        git_dir = _git_dir(repo.clone_url)
        if git_dir is not None:
            branch = _branch_refs(git_dir).get(ref)
            if branch:
                return branch
            status, sha = (_git_settled if _SHA.fullmatch(ref) else _git)(
                git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
            if status == 0:
                return sha
            return ref.lower() if _SHA.fullmatch(ref.lower()) and ref.lower() in known else None
        if _SHA.fullmatch(ref.lower()):
            return ref.lower()
        branches = {repo.default_branch} | {i.pull[k] for i in repo.issues.values() if i.pull is not None
                                             for k in ("head_ref", "base_ref")}
        return _fake_sha(ref) if ref in branches else None

    def _diff_hunk(self, repo: _Repo, sha: str, path: str, line: int) -> str:
        """A diff hunk ending at `line` of `path`: the file's own lines when the origin is local."""
        git_dir = _git_dir(repo.clone_url)
        lines: List[str] = []
        if git_dir is not None:
            status, text = _git_settled(git_dir, "show", f"{sha}:{path}")
            if status == 0:
                lines = text.split("\n")
        start = max(line - 3, 1)
        wanted = [lines[i - 1] if i - 1 < len(lines) else "" for i in range(start, line + 1)] if lines else \
            [f"line {i}" for i in range(start, line + 1)]
        body = [" " + text for text in wanted[:-1]] + ["+" + wanted[-1]]
        return f"@@ -{start},{len(wanted) - 1} +{start},{len(wanted)} @@\n" + "\n".join(body)

    def _merge_commit(self, repo: _Repo, issue: _Issue, head: str) -> str:
        """Merge head into base in a local origin (a merge commit, as GitHub's merge button makes)."""
        pull = issue.pull
        assert pull is not None
        git_dir = _git_dir(repo.clone_url)
        message = f"Merge pull request #{issue.number} from {pull['head_label'].replace(':', '/', 1)}\n\n{issue.title}"
        if git_dir is None:
            return _fake_sha(f"merge {issue.number} {head}")
        base_ref = f"refs/heads/{pull['base_ref']}"
        status, base_sha = _git(git_dir, "rev-parse", "--verify", "--quiet", f"{base_ref}^{{commit}}")
        assert status == 0, f"no branch {pull['base_ref']} in {git_dir}"
        status, tree = _git(git_dir, "merge-tree", "--write-tree", base_sha, head)
        assert status == 0, f"pull request #{issue.number} does not merge cleanly: {tree}"
        status, sha = _git(git_dir, "commit-tree", tree.split()[0], "-p", base_sha, "-p", head, "-m", message)
        assert status == 0, "git commit-tree failed"
        status, _ = _git(git_dir, "update-ref", base_ref, sha, base_sha)
        assert status == 0, "git update-ref failed"
        return sha

    # --- lists --------------------------------------------------------------------------------

    def _list_issues(self, repo: _Repo, query: Dict[str, str], base: str) -> Tuple[int, Any, Dict[str, str]]:
        state = query.get("state", "open")
        wanted = [name.strip().casefold() for name in query.get("labels", "").split(",") if name.strip()]
        since = query.get("since")
        items = [i for i in repo.issues.values()
                 if (state == "all" or i.state == state)
                 and all(name in i.labels for name in wanted)
                 and (not since or _parse(i.updated_at) >= _parse(since))]
        sort = query.get("sort", "created")
        keys = {"created": lambda i: (i.created_at, i.number), "updated": lambda i: (i.updated_at, i.number),
                "comments": lambda i: (len(i.comments), i.number)}
        items.sort(key=keys.get(sort, keys["created"]), reverse=query.get("direction", "desc") != "asc")
        return self._paged(repo, "issues", [self._issue_json(repo, i, base) for i in items], query, base)

    def _list_pulls(self, repo: _Repo, query: Dict[str, str], base: str) -> Tuple[int, Any, Dict[str, str]]:
        state = query.get("state", "open")
        head, base_ref = query.get("head"), query.get("base")
        items = [i for i in repo.issues.values() if i.pull is not None
                 and (state == "all" or i.state == state)
                 and (head is None or head == (i.pull["head_label"] if ":" in head else i.pull["head_ref"]))
                 and (base_ref is None or base_ref == i.pull["base_ref"])]
        branches = self._branches(repo)
        for issue in items:  # a push since the last look moves updated_at: before the sort
            self._head_sha(repo, issue, branches)
        sort = query.get("sort", "created")
        keys = {"created": lambda i: (i.created_at, i.number), "updated": lambda i: (i.updated_at, i.number),
                "popularity": lambda i: (len(i.comments), i.number),
                "long-running": lambda i: (i.created_at, i.number)}
        # GitHub's default direction: desc when sorting by creation (or not at all), else asc.
        direction = query.get("direction", "desc" if sort == "created" else "asc")
        items.sort(key=keys.get(sort, keys["created"]), reverse=direction != "asc")
        return self._paged(repo, "pulls", [self._pull_json(repo, i, base, branches=branches) for i in items],
                           query, base)

    def _list_check_runs(self, repo: _Repo, sha: str, sub: str, query: Dict[str, str],
                         base: str) -> Tuple[int, Any, Dict[str, str]]:
        runs = [c for c in repo.check_runs if c["sha"] == sha
                and ("check_name" not in query or c["name"] == query["check_name"])
                and ("status" not in query or c["status"] == query["status"])]
        if query.get("filter", "latest") == "latest":  # the most recent run of each check
            latest = {(c["app"], c["name"]): c["id"] for c in runs}
            runs = [c for c in runs if latest[(c["app"], c["name"])] == c["id"]]
        page, headers = self._page(repo, sub, runs, query, base)
        heads = self._open_pulls_by_head(repo, base)
        return 200, {"total_count": len(runs),
                     "check_runs": [self._check_run_json(repo, c, base, heads) for c in page]}, headers

    def _combined_status(self, repo: _Repo, sha: str, sub: str, query: Dict[str, str],
                         base: str) -> Tuple[int, Any, Dict[str, str]]:
        latest: Dict[str, Dict[str, Any]] = {}
        for status in repo.statuses:
            if status["sha"] == sha:
                latest.pop(status["context"], None)
                latest[status["context"]] = status
        states = {status["state"] for status in latest.values()}
        state = "failure" if states & {"error", "failure"} else "pending" if not states or "pending" in states \
            else "success"
        page, headers = self._page(repo, sub, list(latest.values()), query, base)
        return 200, {"state": state, "statuses": [self._status_json(repo, st, base) for st in page], "sha": sha,
                     "total_count": len(latest), "repository": self._repo_json(repo, base),
                     "commit_url": f"{base}/repos/{repo.full_name}/commits/{sha}",
                     "url": f"{base}/repos/{repo.full_name}/commits/{sha}/status"}, headers

    def _paged(self, repo: _Repo, sub: str, items: List[Any], query: Dict[str, str],
               base: str) -> Tuple[int, Any, Dict[str, str]]:
        """One page of `items` and GitHub's Link header."""
        page, headers = self._page(repo, sub, items, query, base)
        return 200, page, headers

    def _page(self, repo: _Repo, sub: str, items: List[Any], query: Dict[str, str],
              base: str) -> Tuple[List[Any], Dict[str, str]]:
        """One page of `items` and GitHub's Link header (first/prev/next/last, as they apply)."""
        per_page = min(max(_int(query.get("per_page"), 30), 1), 100)
        page = max(_int(query.get("page"), 1), 1)
        last = max(math.ceil(len(items) / per_page), 1)

        def link(number: int, rel: str) -> str:
            return f'<{base}/repositories/{repo.id}/{sub}?{urlencode(dict(query, page=number))}>; rel="{rel}"'

        rels = []
        if page > 1:
            rels += [link(page - 1, "prev"), link(1, "first")]
        if page < last:
            rels += [link(page + 1, "next"), link(last, "last")]
        headers = {"Link": ", ".join(rels)} if rels else {}
        return items[(page - 1) * per_page:page * per_page], headers

    # --- mutations ----------------------------------------------------------------------------

    def _label(self, repo: _Repo, issue: _Issue, name: str, actor: str) -> None:
        key = name.casefold()
        if key not in repo.labels:  # adding an unknown label to an issue creates it, as on GitHub
            repo.labels[key] = {"id": next(self._ids), "name": name, "color": "ededed", "description": None,
                                "default": False}
        if key not in issue.labels:
            issue.labels.append(key)
            _touch(issue)
            issue.events.append(self._event("labeled", actor, repo.labels[key]))

    def _unlabel(self, repo: _Repo, issue: _Issue, key: str, actor: str) -> None:
        if key in issue.labels:
            issue.labels.remove(key)
            _touch(issue)
            issue.events.append(self._event("unlabeled", actor, repo.labels[key]))

    def _add_comment(self, issue: _Issue, body: str, user: str) -> Dict[str, Any]:
        stamp = _now()
        comment = {"id": next(self._ids), "body": body, "user": user, "created_at": stamp, "updated_at": stamp}
        issue.comments.append(comment)
        _touch(issue)
        return comment

    def _event(self, kind: str, actor: str, label: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        return {"id": next(self._ids), "event": kind, "actor": actor, "created_at": _now(),
                "label": None if label is None else {"name": label["name"], "color": label["color"]}}

    def _create_label(self, repo: _Repo, data: Dict[str, Any], base: str) -> Tuple[int, Any, Dict[str, str]]:
        name = data.get("name")
        if not isinstance(name, str) or not name:
            return _validation_failed("Label", "missing_field", "name")
        color = str(data.get("color", "ededed")).lstrip("#")
        if len(color) != 6 or any(c not in "0123456789abcdefABCDEF" for c in color):
            return _validation_failed("Label", "invalid", "color")
        if name.casefold() in repo.labels:
            return _validation_failed("Label", "already_exists", "name")
        label = {"id": next(self._ids), "name": name, "color": color.lower(),
                 "description": data.get("description"), "default": False}
        repo.labels[name.casefold()] = label
        return 201, self._label_json(label, base, repo), {}

    def _create_pull(self, repo: _Repo, data: Dict[str, Any], base: str) -> Tuple[int, Any, Dict[str, str]]:
        for name in ("title", "head", "base"):
            if not data.get(name):
                return _validation_failed("PullRequest", "missing_field", name)
        owner, _, ref = data["head"].rpartition(":")
        label = f"{owner or repo.owner}:{ref}"
        for other in repo.issues.values():
            if (other.pull is not None and other.state == "open" and other.pull["head_label"] == label
                    and other.pull["base_ref"] == data["base"]):
                return 422, {"message": "Validation Failed",
                             "errors": [{"resource": "PullRequest", "code": "custom",
                                         "message": f"A pull request already exists for {label}."}],
                             "documentation_url": f"{DOCS}/pulls/pulls#create-a-pull-request"}, {}
        if data.get("draft") and not repo.drafts:
            return 422, {"message": "Validation Failed",
                         "errors": [{"resource": "PullRequest", "code": "custom",
                                     "message": "Draft pull requests are not supported in this repository."}],
                         "documentation_url": f"{DOCS}/pulls/pulls#create-a-pull-request"}, {}
        stamp = _now()
        issue = _Issue(len(repo.issues) + 1, next(self._ids), data["title"], data.get("body"), self.login,
                       stamp, stamp)
        issue.pull = _new_pull(ref, label, data["base"], bool(data.get("draft", False)))
        repo.issues[issue.number] = issue
        return 201, self._pull_json(repo, issue, base, full=True), {}

    # --- JSON shapes (GitHub's REST reference) ------------------------------------------------

    def _user_id(self, login: str) -> int:
        return self._user_ids.setdefault(login, 5000 + len(self._user_ids))

    def _user_json(self, login: Optional[str], base: str, kind: str = "User") -> Optional[Dict[str, Any]]:
        if login is None:
            return None
        uid = self._user_id(login)
        return {"login": login, "id": uid, "node_id": f"U_{uid}",
                "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4", "gravatar_id": "",
                "url": f"{base}/users/{login}", "html_url": f"https://github.com/{login}",
                "type": kind, "site_admin": False}

    def _repo_json(self, repo: _Repo, base: str) -> Dict[str, Any]:
        full = repo.full_name
        return {"id": repo.id, "node_id": f"R_{repo.id}", "name": repo.name, "full_name": full,
                "private": repo.private, "owner": self._user_json(repo.owner, base, "Organization"),
                "html_url": f"https://github.com/{full}", "description": None, "fork": False,
                "url": f"{base}/repos/{full}", "clone_url": repo.clone_url,
                "ssh_url": f"git@github.com:{full}.git", "default_branch": repo.default_branch,
                "visibility": "private" if repo.private else "public", "has_issues": True, "archived": False,
                "permissions": {"admin": False, "maintain": False, "push": repo.push, "triage": True, "pull": True}}

    def _label_json(self, label: Dict[str, Any], base: str, repo: _Repo) -> Dict[str, Any]:
        return {"id": label["id"], "node_id": f"LA_{label['id']}",
                "url": f"{base}/repos/{repo.full_name}/labels/{quote(label['name'], safe='')}", "name": label["name"],
                "color": label["color"], "default": label["default"], "description": label["description"]}

    def _association(self, login: str) -> str:
        return "COLLABORATOR" if login in self.roles else "NONE"

    def _issue_json(self, repo: _Repo, issue: _Issue, base: str) -> Dict[str, Any]:
        api = f"{base}/repos/{repo.full_name}/issues/{issue.number}"
        kind = "pull" if issue.pull is not None else "issues"
        if issue.pull is not None:
            self._head_sha(repo, issue)  # a push updates the pull request, its issue too
        data = {
            "url": api, "repository_url": f"{base}/repos/{repo.full_name}",
            "labels_url": f"{api}/labels{{/name}}", "comments_url": f"{api}/comments",
            "events_url": f"{api}/events", "html_url": f"https://github.com/{repo.full_name}/{kind}/{issue.number}",
            "id": issue.id, "node_id": f"I_{issue.id}", "number": issue.number, "title": issue.title,
            "user": self._user_json(issue.user, base),
            "labels": [self._label_json(repo.labels[k], base, repo) for k in issue.labels],
            "state": issue.state, "locked": False, "assignee": None, "assignees": [], "milestone": None,
            "comments": len(issue.comments), "created_at": issue.created_at, "updated_at": issue.updated_at,
            "closed_at": issue.closed_at, "author_association": self._association(issue.user),
            "active_lock_reason": None, "body": issue.body,
            "state_reason": "completed" if issue.state == "closed" else None,
        }
        if issue.pull is not None:
            pulls = f"{base}/repos/{repo.full_name}/pulls/{issue.number}"
            html = f"https://github.com/{repo.full_name}/pull/{issue.number}"
            data["draft"] = issue.pull["draft"]
            data["pull_request"] = {"url": pulls, "html_url": html, "diff_url": f"{html}.diff",
                                    "patch_url": f"{html}.patch", "merged_at": issue.pull["merged_at"]}
        return data

    def _comment_json(self, repo: _Repo, issue: _Issue, comment: Dict[str, Any], base: str) -> Dict[str, Any]:
        kind = "pull" if issue.pull is not None else "issues"
        return {"id": comment["id"], "node_id": f"IC_{comment['id']}",
                "url": f"{base}/repos/{repo.full_name}/issues/comments/{comment['id']}",
                "html_url": f"https://github.com/{repo.full_name}/{kind}/{issue.number}"
                            f"#issuecomment-{comment['id']}",
                "issue_url": f"{base}/repos/{repo.full_name}/issues/{issue.number}",
                "body": comment["body"], "user": self._user_json(comment["user"], base),
                "created_at": comment["created_at"], "updated_at": comment["updated_at"],
                "author_association": self._association(comment["user"])}

    def _event_json(self, event: Dict[str, Any], base: str) -> Dict[str, Any]:
        data = {"id": event["id"], "node_id": f"LE_{event['id']}", "url": f"{base}/events/{event['id']}",
                "actor": self._user_json(event["actor"], base), "event": event["event"],
                "commit_id": event.get("commit_id"), "commit_url": None, "created_at": event["created_at"],
                "performed_via_github_app": None}
        if event["label"] is not None:
            data["label"] = dict(event["label"])
        return data

    def _pull_json(self, repo: _Repo, issue: _Issue, base: str, full: bool = False,
                   branches: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        """A pull request as the list answers it ("pull-request-simple"); `full`: as GET
        /pulls/{n} (and POST /pulls) answer, with merged, mergeable, merged_by and the counts."""
        full_name = repo.full_name
        api = f"{base}/repos/{full_name}/pulls/{issue.number}"
        html = f"https://github.com/{full_name}/pull/{issue.number}"
        pull = issue.pull
        assert pull is not None
        head_sha = self._head_sha(repo, issue, branches)
        base_sha = pull["base_sha"]  # not the base's tip: GitHub's does not follow the base

        def ref(label: str, name: str, sha: str) -> Dict[str, Any]:
            return {"label": label, "ref": name, "sha": sha,
                    "user": self._user_json(label.split(":")[0], base, "Organization"),
                    "repo": self._repo_json(repo, base)}

        issue_api = f"{base}/repos/{full_name}/issues/{issue.number}"
        data = {"url": api, "id": issue.id, "node_id": f"PR_{issue.id}", "html_url": html,
                "diff_url": f"{html}.diff", "patch_url": f"{html}.patch", "issue_url": issue_api,
                "commits_url": f"{api}/commits", "review_comments_url": f"{api}/comments",
                "review_comment_url": f"{base}/repos/{full_name}/pulls/comments{{/number}}",
                "comments_url": f"{issue_api}/comments",
                "statuses_url": f"{base}/repos/{full_name}/statuses/{head_sha}",
                "number": issue.number, "state": issue.state, "locked": False, "title": issue.title,
                "user": self._user_json(issue.user, base), "body": issue.body,
                "labels": [self._label_json(repo.labels[k], base, repo) for k in issue.labels], "milestone": None,
                "active_lock_reason": None, "created_at": issue.created_at, "updated_at": issue.updated_at,
                "closed_at": issue.closed_at, "merged_at": pull["merged_at"],
                "merge_commit_sha": pull["merge_commit_sha"], "assignee": None, "assignees": [],
                "requested_reviewers": [], "requested_teams": [], "draft": pull["draft"],
                "head": ref(pull["head_label"], pull["head_ref"], head_sha),
                "base": ref(f"{repo.owner}:{pull['base_ref']}", pull["base_ref"], base_sha),
                "_links": {"self": {"href": api}, "html": {"href": html}, "issue": {"href": issue_api},
                           "comments": {"href": f"{issue_api}/comments"},
                           "review_comments": {"href": f"{api}/comments"},
                           "review_comment": {"href": f"{base}/repos/{full_name}/pulls/comments{{/number}}"},
                           "commits": {"href": f"{api}/commits"},
                           "statuses": {"href": f"{base}/repos/{full_name}/statuses/{head_sha}"}},
                "author_association": self._association(issue.user), "auto_merge": None}
        if full:
            is_open = issue.state == "open"
            tip = self._branch_sha(repo, pull["base_ref"])
            commits, additions, deletions, changed = self._diff_stat(repo, tip, head_sha)
            mergeable, state = self._mergeability(repo, issue, tip, head_sha) if is_open else (None, "unknown")
            data.update({
                "merged": pull["merged"], "mergeable": mergeable, "rebaseable": mergeable,
                "mergeable_state": state,
                "merged_by": self._user_json(pull["merged_by"], base), "comments": len(issue.comments),
                "review_comments": sum(1 for c in pull["review_comments"] if self._visible(pull, c)),
                "maintainer_can_modify": False, "commits": commits, "additions": additions,
                "deletions": deletions, "changed_files": changed})
        return data

    def _diff_stat(self, repo: _Repo, base_sha: str, head_sha: str) -> Tuple[int, int, int, int]:
        """(commits, additions, deletions, changed files) of head over base, from a local origin."""
        git_dir = _git_dir(repo.clone_url)
        if git_dir is None:
            return 1, 0, 0, 0
        status, count = _git_settled(git_dir, "rev-list", "--count", f"{base_sha}..{head_sha}")
        status2, numstat = _git_settled(git_dir, "diff", "--numstat", f"{base_sha}...{head_sha}")
        if status != 0 or status2 != 0:
            return 1, 0, 0, 0
        rows = [line.split("\t") for line in numstat.splitlines() if line.strip()]
        added = sum(int(row[0]) for row in rows if row[0].isdigit())
        deleted = sum(int(row[1]) for row in rows if row[1].isdigit())
        return int(count), added, deleted, len(rows)

    def _review_json(self, repo: _Repo, issue: _Issue, review: Dict[str, Any], base: str) -> Dict[str, Any]:
        html = f"https://github.com/{repo.full_name}/pull/{issue.number}#pullrequestreview-{review['id']}"
        pull_url = f"{base}/repos/{repo.full_name}/pulls/{issue.number}"
        data = {"id": review["id"], "node_id": f"PRR_{review['id']}", "user": self._user_json(review["user"], base),
                "body": review["body"], "state": review["state"], "html_url": html, "pull_request_url": pull_url,
                "author_association": self._association(review["user"]),
                "_links": {"html": {"href": html}, "pull_request": {"href": pull_url}},
                "commit_id": review["commit_id"]}
        if review["submitted_at"] is not None:  # a pending review has none
            data["submitted_at"] = review["submitted_at"]
        return data

    def _review_comment_json(self, repo: _Repo, issue: _Issue, comment: Dict[str, Any],
                             base: str) -> Dict[str, Any]:
        url = f"{base}/repos/{repo.full_name}/pulls/comments/{comment['id']}"
        html = f"https://github.com/{repo.full_name}/pull/{issue.number}#discussion_r{comment['id']}"
        pull_url = f"{base}/repos/{repo.full_name}/pulls/{issue.number}"
        data = {"url": url, "pull_request_review_id": comment["review_id"], "id": comment["id"],
                "node_id": f"PRRC_{comment['id']}", "diff_hunk": comment["diff_hunk"], "path": comment["path"],
                "position": comment["position"], "original_position": comment["position"],
                "commit_id": comment["commit_id"], "original_commit_id": comment["original_commit_id"],
                "user": self._user_json(comment["user"], base), "body": comment["body"],
                "created_at": comment["created_at"], "updated_at": comment["updated_at"], "html_url": html,
                "pull_request_url": pull_url, "author_association": self._association(comment["user"]),
                "_links": {"self": {"href": url}, "html": {"href": html}, "pull_request": {"href": pull_url}},
                "start_line": None, "original_start_line": None, "start_side": None, "line": comment["line"],
                "original_line": comment["original_line"], "side": comment["side"], "subject_type": "line"}
        if comment["in_reply_to_id"] is not None:  # only replies have it
            data["in_reply_to_id"] = comment["in_reply_to_id"]
        return data

    def _app_json(self, slug: str, base: str) -> Dict[str, Any]:
        app_id = 15368 if slug == ACTIONS_APP else 20000 + self._user_id(f"app/{slug}")
        name = "GitHub Actions" if slug == ACTIONS_APP else slug
        return {"id": app_id, "slug": slug, "node_id": f"MDM6QXBw{app_id}",
                "owner": self._user_json("github", base, "Organization"), "name": name, "description": "",
                "external_url": f"https://github.com/apps/{slug}", "html_url": f"https://github.com/apps/{slug}",
                "created_at": "2018-07-30T09:30:17Z", "updated_at": "2024-04-10T20:33:16Z",
                "permissions": {"checks": "write", "metadata": "read"}, "events": []}

    def _open_pulls_by_head(self, repo: _Repo, base: str) -> Dict[str, List[Dict[str, Any]]]:
        """head sha -> the open pull requests from it, as a check run's pull_requests shows them."""
        full_name = repo.full_name
        repo_ref = {"id": repo.id, "url": f"{base}/repos/{full_name}", "name": repo.name}
        heads: Dict[str, List[Dict[str, Any]]] = {}
        branches = self._branches(repo)  # one git call for every pull request
        for issue in repo.issues.values():
            if issue.pull is not None and issue.state == "open":
                sha = self._head_sha(repo, issue, branches)
                tip = branches.get(issue.pull["base_ref"]) if branches is not None else None
                heads.setdefault(sha, []).append({
                    "url": f"{base}/repos/{full_name}/pulls/{issue.number}", "id": issue.id, "number": issue.number,
                    "head": {"ref": issue.pull["head_ref"], "sha": sha, "repo": repo_ref},
                    "base": {"ref": issue.pull["base_ref"], "sha": tip or self._branch_sha(repo, issue.pull["base_ref"]),
                             "repo": repo_ref}})
        return heads

    def _check_run_json(self, repo: _Repo, run: Dict[str, Any], base: str,
                        heads: Optional[Dict[str, List[Dict[str, Any]]]] = None) -> Dict[str, Any]:
        full_name = repo.full_name
        url = f"{base}/repos/{full_name}/check-runs/{run['id']}"
        html = f"https://github.com/{full_name}/runs/{run['id']}"
        pulls = (heads if heads is not None else self._open_pulls_by_head(repo, base)).get(run["sha"], [])
        return {"id": run["id"], "head_sha": run["sha"], "node_id": f"CR_{run['id']}", "external_id": "",
                "url": url, "html_url": html, "details_url": html, "status": run["status"],
                "conclusion": run["conclusion"], "started_at": run["started_at"], "completed_at": run["completed_at"],
                "output": {"title": run["title"] or None, "summary": run["summary"] or None, "text": run["text"],
                           "annotations_count": len(run["annotations"]), "annotations_url": f"{url}/annotations"},
                "name": run["name"], "check_suite": {"id": run["suite"]}, "app": self._app_json(run["app"], base),
                "pull_requests": pulls}

    def _annotation_json(self, repo: _Repo, run: Dict[str, Any], annotation: Dict[str, Any]) -> Dict[str, Any]:
        return {"path": annotation["path"],
                "blob_href": f"https://github.com/{repo.full_name}/blob/{run['sha']}/{quote(annotation['path'])}",
                "start_line": annotation["start_line"], "end_line": annotation["end_line"],
                "start_column": None, "end_column": None, "annotation_level": annotation["annotation_level"],
                "title": annotation["title"], "message": annotation["message"],
                "raw_details": annotation["raw_details"]}

    def _status_json(self, repo: _Repo, status: Dict[str, Any], base: str) -> Dict[str, Any]:
        creator = self._user_json(status["creator"], base)
        assert creator is not None
        return {"url": f"{base}/repos/{repo.full_name}/statuses/{status['sha']}", "avatar_url": creator["avatar_url"],
                "id": status["id"], "node_id": f"SC_{status['id']}", "state": status["state"],
                "description": status["description"], "target_url": status["target_url"],
                "context": status["context"], "created_at": status["created_at"], "updated_at": status["updated_at"]}

    def _repo(self, repo: Optional[str]) -> _Repo:
        name = repo or self._default_repo
        assert name is not None, "add_repo() first"
        return self._repos[name.casefold()]


def _validation_failed(resource: str, code: str, field_name: str) -> Tuple[int, Any, Dict[str, str]]:
    return 422, {"message": "Validation Failed",
                 "errors": [{"resource": resource, "code": code, "field": field_name}],
                 "documentation_url": DOCS}, {}


def _etags(header: str) -> List[str]:
    """The entity tags of an If-None-Match header, weak ones compared by their opaque part."""
    return [tag.strip()[2:] if tag.strip().startswith("W/") else tag.strip() for tag in header.split(",")]


def _parse(stamp: str) -> datetime:
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _int(value: Optional[str], default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: GitHubEmulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up on a slow answer leaves a broken pipe: expected, and not worth a
        # traceback on stderr. Emulator bugs never get here: the handler answers them with a 500.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like api.github.com
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle holds the body back until
    # the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True
    server_version = "github.com"
    sys_version = ""

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        emulator = self.server.emulator  # type: ignore[attr-defined]
        try:
            answer = emulator.handle(self.command, self.path, dict(self.headers), body)
        except Exception:  # an emulator bug: answer it and keep it for the fixture's teardown check
            emulator.errors.append(traceback.format_exc())
            answer = (500, {"Content-Type": "text/plain"}, b"emulator error")
        if answer is None:
            self.close_connection = True
            return
        status, headers, data = answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 304:
            self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture
def github_emulator():
    """A started emulator accepting TOKEN, with REPO (default branch "trunk") added."""
    emulator = GitHubEmulator().start()
    emulator.tokens.add(TOKEN)
    emulator.add_repo(REPO, default_branch="trunk")
    try:
        yield emulator
    finally:
        emulator.close()
    assert not emulator.errors, "the GitHub emulator failed internally:\n" + "\n".join(emulator.errors)

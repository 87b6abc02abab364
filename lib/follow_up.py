"""Following a pull request the orchestrator opened: what is new on it, and what the agent is told.

The tick looks at each followed pull request with conditional requests (an unchanged one costs no
rate-limit point): merged or closed ends the following; a trusted review, inline comment or PR
comment that is newer than the last one seen, or a check that failed on the head commit (once per
commit, `follow_up.max_ci_fixes` per pull request), becomes the work of a follow-up that resumes the
same session. Our own comments carry the marker and never count; untrusted text never reaches a
prompt, and trusted text reaches it cleaned and capped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional

from lib.config import FollowUp
from lib.github_client import COMMENT_MARKER, GitHubClient
from lib.models import IssueState, ProcessStatus
from lib.prompts import clean_issue_text

FAILING_CONCLUSIONS = ("failure", "timed_out", "cancelled")
FAILING_STATES = ("failure", "error")
#: Caps on what one follow-up prompt quotes.
BODY_CHARS = 4000
HUNK_CHARS = 1500
SUMMARY_CHARS = 3000
ANNOTATIONS = 20
_ADDRESSED_RE = re.compile(r"^[ \t>*_`]*ADDRESSED[*_`]*\s+(\d+)\s*:[*_`]*[ \t]*(.*)$", re.M)


@dataclass
class PullNews:
    """What one look at a followed pull request found."""

    ended: Optional[ProcessStatus] = None  # MERGED or CLOSED
    work: Dict[str, Any] = field(default_factory=dict)  # the follow-up to run, if any
    marks: Dict[str, int] = field(default_factory=dict)  # the newest ids seen, to store
    bound: Optional[str] = None  # a bound was reached: say this once on the PR and stop following


def look(github: GitHubClient, trusted: Callable[[Optional[str]], bool], entry: IssueState,
         settings: FollowUp) -> PullNews:
    """What is new on entry's pull request since it was last looked at."""
    pull = github.get_pull(entry.pr_number, cached=True)
    if pull.get("state") == "closed":
        return PullNews(ended=ProcessStatus.MERGED if pull.get("merged") else ProcessStatus.CLOSED)
    marks = dict(entry.follow_marks)
    review_work = _review_work(github, trusted, entry.pr_number, settings, marks)
    if review_work:
        if entry.follow_rounds >= settings.max_rounds:
            return PullNews(marks=marks, bound=f"follow_up.max_rounds ({settings.max_rounds}) follow-ups ran for"
                                                " reviews and comments")
        return PullNews(work=review_work, marks=marks)
    sha = (pull.get("head") or {}).get("sha")
    if not sha or sha in entry.ci_fixed_shas:
        return PullNews(marks=marks)
    failures = _failing_checks(github, sha)
    if not failures:
        return PullNews(marks=marks)
    if entry.ci_fixes >= settings.max_ci_fixes:
        return PullNews(marks=marks, bound=f"follow_up.max_ci_fixes ({settings.max_ci_fixes}) follow-ups ran for"
                                            " failing checks")
    return PullNews(work={"kind": "ci", "sha": sha, "failures": failures}, marks=marks)


def _counts(body: Optional[str], settings: FollowUp) -> bool:
    if settings.trigger == "any":
        return True
    text = (body or "").strip()
    return any(text.startswith(mention) for mention in settings.mentions)


def _ours(body: Optional[str]) -> bool:
    return COMMENT_MARKER in (body or "")


def _review_work(github: GitHubClient, trusted, number: int, settings: FollowUp, marks: Dict[str, int]) -> dict:
    """Trusted reviews, inline comments and PR comments newer than the marks; the marks move past
    everything looked at, trusted or not, so nothing is judged twice."""
    reviews = [r for r in github.list_reviews(number, cached=True)
               if r["id"] > marks.get("review", 0) and r.get("state") != "PENDING"]
    inline = [c for c in github.list_review_comments(number, cached=True) if c["id"] > marks.get("review_comment", 0)]
    talk = [c for c in github.list_comments(number, cached=True) if c["id"] > marks.get("comment", 0)]
    for kind, items in (("review", reviews), ("review_comment", inline), ("comment", talk)):
        if items:
            marks[kind] = max(item["id"] for item in items)
    login = lambda item: (item.get("user") or {}).get("login")  # noqa: E731
    reviews = [r for r in reviews if trusted(login(r)) and not _ours(r.get("body"))
               and r.get("state") != "APPROVED" and (r.get("body") or "").strip() and _counts(r.get("body"), settings)]
    counted_reviews = {r["id"] for r in reviews}
    inline = [c for c in inline if trusted(login(c)) and not _ours(c.get("body"))
              and (_counts(c.get("body"), settings) or c.get("pull_request_review_id") in counted_reviews)]
    talk = [c for c in talk if trusted(login(c)) and not _ours(c.get("body")) and _counts(c.get("body"), settings)]
    if not (reviews or inline or talk):
        return {}
    return {"kind": "review",
            "reviews": [{"id": r["id"], "login": login(r), "state": r.get("state"), "body": r.get("body") or ""}
                        for r in reviews],
            "review_comments": [{"id": c["id"], "login": login(c), "path": c.get("path"), "line": c.get("line")
                                 or c.get("original_line"), "diff_hunk": c.get("diff_hunk") or "",
                                 "body": c.get("body") or ""} for c in inline],
            "comments": [{"id": c["id"], "login": login(c), "body": c.get("body") or ""} for c in talk]}


def _failing_checks(github: GitHubClient, sha: str) -> List[Dict[str, Any]]:
    failures = []
    for run in github.list_check_runs(sha, cached=True):
        if run.get("status") == "completed" and run.get("conclusion") in FAILING_CONCLUSIONS:
            output = run.get("output") or {}
            annotations = github.list_check_run_annotations(run["id"])[:ANNOTATIONS] \
                if output.get("annotations_count") else []
            failures.append({"name": run.get("name"), "conclusion": run.get("conclusion"),
                             "title": output.get("title") or "", "summary": output.get("summary") or "",
                             "annotations": [{"path": a.get("path"), "line": a.get("start_line"),
                                              "level": a.get("annotation_level"), "message": a.get("message") or ""}
                                             for a in annotations]})
    combined = github.get_combined_status(sha, cached=True)
    for status in combined.get("statuses") or []:
        if status.get("state") in FAILING_STATES:
            failures.append({"name": status.get("context"), "conclusion": status.get("state"),
                             "title": status.get("description") or "", "summary": "", "annotations": []})
    return failures


# ------------------------------------------------------------------------------------------------
# The prompt, and what the agent says it addressed
# ------------------------------------------------------------------------------------------------


def numbered_comments(work: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    """The inline comments in the order the prompt numbers them, 1 first."""
    return list(work.get("review_comments") or [])


def follow_prompt(work: Mapping[str, Any], pr_url: Optional[str], branch: str) -> str:
    if work.get("kind") == "ci":
        parts = [f"Checks failed on the head commit {work.get('sha', '')[:12]} of your pull request {pr_url or ''}"
                 f" (branch {branch}). Fix the cause, commit on the branch, and end with a short summary."]
        for failure in work.get("failures") or []:
            parts += ["", f"Check {clean_issue_text(failure['name'])!r}: {failure['conclusion']}"
                          f"{': ' + _cap(failure['title'], 300) if failure.get('title') else ''}"]
            if failure.get("summary"):
                parts.append(_cap(failure["summary"], SUMMARY_CHARS))
            parts += [f"- {a['path']}:{a['line']} {a['level']}: {_cap(a['message'], 500)}"
                      for a in failure.get("annotations") or []]
    else:
        parts = [f"Review feedback on your pull request {pr_url or ''} (branch {branch}), from people the project"
                 " trusts. Address it in the code, commit on the branch, and end with a short summary."]
        for review in work.get("reviews") or []:
            parts += ["", f"Review by @{clean_issue_text(review['login'])} ({review['state']}):",
                      _cap(review["body"], BODY_CHARS)]
        for number, comment in enumerate(numbered_comments(work), start=1):
            parts += ["", f"[{number}] @{clean_issue_text(comment['login'])} on {comment['path']} line {comment['line']}:",
                      "```diff", _cap(comment["diff_hunk"], HUNK_CHARS), "```", _cap(comment["body"], BODY_CHARS)]
        for comment in work.get("comments") or []:
            parts += ["", f"@{clean_issue_text(comment['login'])} on the pull request:", _cap(comment["body"], BODY_CHARS)]
        if numbered_comments(work):
            parts += ["", "For each numbered comment you addressed, end your final message with one line:",
                      "ADDRESSED <number>: <your reply to that comment>"]
    parts += ["", "Do not push: the orchestrator pushes the branch.",
              "If you cannot go on without an answer from a person, end your final message with one line:",
              "NEEDS_INPUT: <your question>"]
    return "\n".join(parts)


def _cap(text: Optional[str], limit: int) -> str:
    text = clean_issue_text(text)
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more characters]"


def addressed(final_text: Optional[str]) -> Dict[int, str]:
    """`ADDRESSED <n>: <reply>` lines of the agent's final message: comment number -> reply."""
    return {int(found.group(1)): found.group(2).strip() for found in _ADDRESSED_RE.finditer(final_text or "")
            if found.group(2).strip()}

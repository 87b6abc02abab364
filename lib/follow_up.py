"""Following a pull request the orchestrator opened: what counts on it, and what the agent is told.

What the tick asks, and when, is lib/pull_watch.py's. From what it found, this module takes the
work of a follow-up that resumes the same session: a trusted review, inline comment or PR comment
newer than the last one seen, or a check that failed on the head commit (once per commit,
`follow_up.max_ci_fixes` per pull request), or the conflicts a merge of the base stopped on. Our own
comments carry the marker and never count; untrusted text never reaches a prompt, and trusted text
(and the repository's, in a conflict) reaches it cleaned and capped.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from lib.config import FollowUp
from lib.github_client import COMMENT_MARKER, GitHubClient
from lib.prompts import clean_issue_text

FAILING_CONCLUSIONS = ("failure", "timed_out", "cancelled")
FAILING_STATES = ("failure", "error")
#: Caps on what one follow-up prompt quotes.
BODY_CHARS = 4000
HUNK_CHARS = 1500
SUMMARY_CHARS = 3000
ANNOTATIONS = 20
#: A conflicted file's conflict hunks, and the files and base commits a conflict prompt shows.
CONFLICT_CHARS = 6000
CONFLICT_FILES = 20
BASE_COMMITS = 20
_ADDRESSED_RE = re.compile(r"^[ \t>*_`]*ADDRESSED[*_`]*\s+(\d+)\s*:[*_`]*[ \t]*(.*)$", re.M)


def _counts(body: Optional[str], settings: FollowUp) -> bool:
    if settings.trigger == "any":
        return True
    text = (body or "").strip()
    return any(text.startswith(mention) for mention in settings.mentions)


def _ours(body: Optional[str]) -> bool:
    return COMMENT_MARKER in (body or "")


def review_work(github: GitHubClient, trusted, number: int, settings: FollowUp, marks: Dict[str, int]) -> dict:
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


def failing_checks(github: GitHubClient, sha: str) -> Tuple[List[Dict[str, Any]], bool, bool]:
    """(the failing checks of commit `sha`, whether some check is still queued or running (a pending
    status too), whether it has any check or status at all)."""
    failures = []
    runs = github.list_check_runs(sha, cached=True)
    for run in runs:
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
    statuses = combined.get("statuses") or []
    for status in statuses:
        if status.get("state") in FAILING_STATES:
            failures.append({"name": status.get("context"), "conclusion": status.get("state"),
                             "title": status.get("description") or "", "summary": "", "annotations": []})
    waiting = any(run.get("status") != "completed" for run in runs) \
        or any(status.get("state") == "pending" for status in statuses)
    return failures, waiting, bool(runs or statuses)


# ------------------------------------------------------------------------------------------------
# The prompt, and what the agent says it addressed
# ------------------------------------------------------------------------------------------------


def numbered_comments(work: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    """The inline comments in the order the prompt numbers them, 1 first."""
    return list(work.get("review_comments") or [])


def follow_prompt(work: Mapping[str, Any], pr_url: Optional[str], branch: str) -> str:
    if work.get("kind") == "conflict":
        parts = conflict_prompt(work, pr_url, branch)
    elif work.get("kind") == "ci":
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


def conflict_prompt(work: Mapping[str, Any], pr_url: Optional[str], branch: str) -> List[str]:
    """The merge of the base stopped on conflicts (lib/branch_merge.py): each conflicted file with both
    sides of each conflict, and the base's commits the branch lacks."""
    base, sha = clean_issue_text(work.get("base")), str(work.get("merged_sha") or work.get("base_sha") or "")[:12]
    conflicts = list(work.get("conflicts") or [])
    parts = [f"The base branch {base} moved on while your pull request {pr_url or ''} waited, and merging it"
             f" ({sha}) into your branch {branch} stopped on conflicts in {len(conflicts)} file(s). The merge is in"
             " progress in this working tree.",
             "", "Resolve every conflict so that the pull request still does what it did and the changes of"
             f" {base} are kept too. Remove every conflict marker (<<<<<<<, |||||||, =======, >>>>>>>), `git add`"
             " the files, and conclude the merge with `git commit --no-edit`. Do not rebase, reset, abort or"
             " restart the merge: the orchestrator checks the merge before it pushes your branch."]
    commits = work.get("base_commits") or []
    if commits:
        parts += ["", f"Commits of {base} that your branch lacks, newest first"
                      f" ({work.get('base_commit_count')} in all):"]
        parts += [f"- {_cap(line, 200)}" for line in commits[:BASE_COMMITS]]
    parts += ["", f"Conflicts (\"ours\" is your branch, \"theirs\" is {base}; \"base\" is where they forked):"]
    for number, conflict in enumerate(conflicts[:CONFLICT_FILES], start=1):
        parts += ["", f"[{number}] {clean_issue_text(conflict.get('path'))}: {conflict.get('how')}"]
        if conflict.get("hunks"):
            parts += ["```", _cap(conflict["hunks"], CONFLICT_CHARS), "```"]
    if len(conflicts) > CONFLICT_FILES:
        parts += ["", f"... and {len(conflicts) - CONFLICT_FILES} more conflicted file(s): `git status` lists them."]
    parts += ["", "End with a short summary of how you resolved each file."]
    return parts


def _cap(text: Optional[str], limit: int) -> str:
    text = clean_issue_text(text)
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more characters]"


def addressed(final_text: Optional[str]) -> Dict[int, str]:
    """`ADDRESSED <n>: <reply>` lines of the agent's final message: comment number -> reply."""
    return {int(found.group(1)): found.group(2).strip() for found in _ADDRESSED_RE.finditer(final_text or "")
            if found.group(2).strip()}

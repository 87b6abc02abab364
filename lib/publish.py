"""Publishing an issue's work: commit what the agent left, push the branch, open (or reuse) the pull
request (a merge of its base checked first), and, after a follow-up, answer on the pull request. Every GitHub write is made once: comments
carry a key, pull requests are reused. Called by the ending steps (lib.run_endings) and by a retry.
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple

from lib import comments
from lib.branch_merge import settle_merge
from lib.follow_up import addressed, numbered_comments
from lib.lifecycle import IssueStatus
from lib.models import IssueState, OrchestratorError, fault_point
from lib.outcomes import Outcome
from lib.run_context import Run
from lib.validation import is_test_file

log = logging.getLogger("lib.runner")


def save_work(run: Run, outcome: Outcome, duration: Optional[float]) -> Tuple[bool, Optional[str], Optional[str]]:
    """Commit what the agent left, push the branch when it is ahead, open (or reuse) the pull request.

    Returns (pushed, pr_url, error): error is a sentence when saving failed, else None.
    """
    entry, path = run.entry, run.slot_path
    if path is None or not (path / ".git").exists():
        return False, entry.pr_url, None
    try:
        run.collect(path)  # a lost runner's agent may have committed in its wall
        base = run.base_branch()
        unmerged = entry.follow_work.get("kind") == "conflict" and settle_merge(
            run.repos, path, entry.follow_work, entry.branch, run.clone_url())
        if unmerged:
            return False, entry.pr_url, unmerged
        if run.repos.commit_all(path, f"Work on #{run.number} left uncommitted by Claude Code"):
            log.info("Issue %s: committed changes the agent left uncommitted", run.ref)
        moved = run.repos.bring_branch_to_head(path, entry.branch)
        if moved:
            log.warning("Issue %s: %s", run.ref, moved)
            run.update(slot_notes=[*entry.slot_notes, moved])
        if run.repos.commits_ahead(path, base, entry.branch) == 0:
            return False, entry.pr_url, None
        run.repos.push_branch(path, entry.branch, run.clone_url())  # a fast-forward, never a force-push
        fault_point("after-push")
        if entry.follow_work:  # the pull request is there: the push updated it
            return True, entry.pr_url, None
        # Work whose checks still fail is shown as a draft (unless pull_request.on_failed_checks says none),
        # so that nothing the agent did is lost and a reviewer sees what fails.
        failing = outcome.status == IssueStatus.FAILED and bool(outcome.checks)
        wanted = outcome.status == IssueStatus.COMPLETED or (failing and run.config.pull_request_on_failed_checks
                                                              == "draft")
        if not wanted or not run.config.pull_request_create:
            return True, entry.pr_url, None
        tests = [name for name in run.repos.changed_files(path, base, entry.branch) if is_test_file(name)]
        pull = run.github.create_pull_request(
            head=entry.branch, base=base, title=comments.pr_title(run.issue()),
            draft=run.config.pull_request_draft or failing,
            body=comments.pr_body(run.number, outcome, duration, test_files=tests, followed=run.config.follow_up.enabled))
        fault_point("after-pr")
        pr_url = pull.get("html_url")
        run.update(pr_url=pr_url, pr_number=pull.get("number"), following=run.config.follow_up.enabled)
        return True, pr_url, None
    except OrchestratorError as exc:
        log.error("Issue %s: could not save the work: %s", run.ref, exc)
        return False, entry.pr_url, str(exc)


def report_follow_up(run: Run, entry: IssueState, outcome: Outcome, key: str, duration: Optional[float]) -> None:
    """On the pull request: a reply to each inline comment the agent says it addressed, then one summary
    with what changed and the figures (the summary stands for what it did not say)."""
    replies = addressed(outcome.summary)
    for number, comment in enumerate(numbered_comments(entry.follow_work), start=1):
        if outcome.status == IssueStatus.COMPLETED:
            reply = replies.get(number) or outcome.summary or "Done."  # it said nothing: the summary
            try:
                run.github.reply_to_review_comment(entry.pr_number, comment["id"], comments.keyed(
                    comments.quote_for_markdown(reply, limit=1000), f"reply:{comment['id']}"))
            except OrchestratorError as exc:
                log.warning("Issue %s: could not reply to review comment %s: %s", run.ref, comment["id"], exc)
    slot = run.slot_path
    head = run.repos.git(["rev-parse", "--short", "HEAD"], slot, check=False).stdout.strip() \
        if slot is not None and (slot / ".git").exists() else ""
    comments.post_once(run.github, entry.pr_number, f"follow-up:{key}",
                       comments.follow_up_comment(entry, outcome, head, duration))

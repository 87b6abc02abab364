"""The followed pull requests of one repository, looked at for almost nothing, and kept mergeable.

Per tick and repository, `PullWatch`:

1. `survey`: one conditional listing of the repository's pull requests, the most recently updated
   first (GitHubClient.pull_pages). GitHub moves a pull request's `updated_at` on a push, a review, a
   review comment, a comment, a label, an edit, a merge or a close. A followed pull request that is
   not on the pages read did not change when its last seen `updated_at` is not older than the oldest
   one on them, or when the first page is the very one it was last resolved against (no pull request
   changed since); pages are read only as deep as that takes, and one found on no page is asked for
   on its own. With nothing changed, the first page is a 304: no rate-limit point. Then one
   conditional GET of each base branch's tip: a base that moves changes none of its pull requests.
2. `look`, per followed pull request, only what its changes call for (its `upkeep` in the state
   holds what was learned):
   - merged or closed, as the listing shows: following ends, and it is never asked about again;
   - changed: its reviews, review comments and comments (conditional), for trusted feedback;
   - a new head or a new base tip: the pull request itself, for GitHub's `mergeable` (computed
     lazily: null means it is being computed, and the next tick asks again), and a compare for how
     far the head is behind the base;
   - checks: a check run or a commit status does not change the pull request, so the listing cannot
     show one. The head commit's check runs and combined status are asked (conditionally) while they
     have not settled: until every one completed, one failed, none came within CHECKS_QUIET_SECONDS
     of the push, or CHECKS_PATIENCE_SECONDS passed. A check re-run on a head whose checks settled is
     seen only when something else changes on the pull request (a comment, a push): that is the
     price of not asking two requests per pull request on every tick.
3. Upkeep: `mergeable` false (conflicts with the base) becomes a follow-up that merges the base into
   the branch in a slot (lib/branch_merge.py), at most `follow_up.max_conflict_fixes` per base
   commit; past it one comment asks a human, and the conflict is left alone until the base or the
   head moves. With `follow_up.update_branch` "always", a clean branch that is behind its base is
   brought up to date by GitHub's update-branch (a merge commit, never a rebase); "never" merges
   nothing and only shows the state.

Reviews go first, then conflicts, then failing checks. A tick with idle followed pull requests in a
repository makes two requests for them all: the listing's first page and the base's tip, both 304s.
GitHub's `updated_at` is in seconds: two changes within one second with a look between them leave it
as it was, and the second change is seen with the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from lib.comments import conflict_help_comment
from lib.config import FollowUp
from lib.follow_up import failing_checks, review_work
from lib.github_client import GitHubClient
from lib.github_errors import RateLimitError
from lib.models import IssueState, OrchestratorError, IssueStatus, parse_iso
from lib.pull_upkeep import conflict_fixes_used

log = logging.getLogger(__name__)

#: A head commit with no check run and no status this long after it was first seen has none coming.
CHECKS_QUIET_SECONDS = 3600
#: Checks still queued or running this long after the head was first seen are not waited for any more.
CHECKS_PATIENCE_SECONDS = 24 * 3600
#: A first page whose oldest pull request was updated less than this long ago (GitHub's stamps are in
#: seconds, and its clock is not ours) is no proof for the pull requests below it: they are looked for.
STAMP_MARGIN_SECONDS = 120


@dataclass
class PullNews:
    """What one look at a followed pull request found."""

    ended: Optional[IssueStatus] = None  # MERGED or CLOSED
    work: Dict[str, Any] = field(default_factory=dict)  # the follow-up to run, if any
    changes: Dict[str, Any] = field(default_factory=dict)  # entry fields to store (follow_marks, upkeep)
    bound: Optional[str] = None  # a bound was reached: say this once on the PR and stop following
    notice: Optional[Tuple[str, str]] = None  # (key, text): say it once on the PR; the following goes on


class PullWatch:
    """One tick's look at the followed pull requests of `github`'s repository: `survey` them all, then
    `look` at each. `dry_run` asks GitHub to change nothing (no update-branch)."""

    def __init__(self, github: GitHubClient, trusted: Callable[[Optional[str]], bool], settings: FollowUp, *,
                 dry_run: bool = False, now: Optional[datetime] = None):
        self.github = github
        self.trusted = trusted
        self.settings = settings
        self.dry_run = dry_run
        self.now = now or datetime.now(timezone.utc)
        self.pulls: Dict[int, Dict[str, Any]] = {}  # PR number -> as listed (or asked for), if it may have changed
        self.tips: Dict[str, str] = {}  # base branch -> its tip
        self.stamp: Optional[str] = None  # what identifies the listing's first page
        self.deep: Set[int] = set()  # pull requests resolved beyond the first page: they keep its stamp
        self.failed: Dict[int, str] = {}  # PR number -> why it could not be read

    def survey(self, entries: Sequence[IssueState]) -> None:
        """The listing, read as deep as the followed pull requests need, then each base's tip."""
        unresolved = {entry.pr_number: entry for entry in entries}
        with contextlib.closing(self.github.pull_pages()) as pages:
            for page in pages:
                first = self.stamp is None
                if first:
                    self.stamp = self._stamp(page)
                for pull in page:
                    if unresolved.pop(pull["number"], None) is not None:
                        self.pulls[pull["number"]] = pull
                        if not first:
                            self.deep.add(pull["number"])
                if not page:
                    break
                oldest = page[-1].get("updated_at") or ""
                unchanged = [number for number, entry in unresolved.items() if self._unchanged(entry, oldest)]
                for number in unchanged:
                    del unresolved[number]
                    self.deep.add(number)
                if not unresolved:
                    break
        for number in unresolved:  # on no page: asked for on its own
            try:
                self.pulls[number] = self.github.get_pull(number, cached=True)
            except RateLimitError:
                raise
            except OrchestratorError as exc:
                self.failed[number] = str(exc)
        bases = {(self.pulls[e.pr_number].get("base") or {}).get("ref") if e.pr_number in self.pulls
                 else e.upkeep.get("base") for e in entries
                 if self.pulls.get(e.pr_number, {}).get("state", "open") == "open"}
        for base in sorted(base for base in bases if base):
            try:
                self.tips[base] = self.github.branch_tip(base)
            except RateLimitError:
                raise
            except OrchestratorError as exc:  # its pull requests are looked at, their mergeability not
                log.warning("%s: the tip of %s could not be read: %s", self.github.repo, base, exc)

    def _unchanged(self, entry: IssueState, oldest: str) -> bool:
        """Not on the pages read, and provably as last seen: its updated_at then was not older than the
        oldest on them, or the first page is the one it was last resolved against."""
        seen = entry.upkeep.get("updated_at")
        return bool(seen) and (seen >= oldest or bool(self.stamp) and entry.upkeep.get("listing") == self.stamp)

    def _stamp(self, page: List[Dict[str, Any]]) -> str:
        """The first page's identity: which pull requests, updated when. A change to any pull request
        puts it first with a later updated_at, so an equal stamp means nothing changed in between; but
        only when the page's oldest was updated before the stamp was taken (a change in the very same
        second could sort below it), so a page as recent as STAMP_MARGIN_SECONDS gets none (""),
        which nothing matches."""
        oldest = parse_iso(page[-1].get("updated_at")) if page else None
        if oldest is None or (self.now - oldest).total_seconds() < STAMP_MARGIN_SECONDS:
            return ""
        listed = ",".join(f"{pull.get('number')}@{pull.get('updated_at')}" for pull in page)
        return hashlib.sha1(listed.encode()).hexdigest()[:16]

    def look(self, entry: IssueState) -> PullNews:
        """What is new on entry's pull request, and what its upkeep calls for."""
        if entry.pr_number in self.failed:
            raise OrchestratorError(self.failed[entry.pr_number])
        upkeep, marks = dict(entry.upkeep), dict(entry.follow_marks)
        news = PullNews()
        pull = self.pulls.get(entry.pr_number)
        if entry.pr_number in self.deep and self.stamp:
            upkeep["listing"] = self.stamp
        if pull is not None and pull.get("state") == "closed":
            news.ended = IssueStatus.MERGED if pull.get("merged_at") or pull.get("merged") else IssueStatus.CLOSED
            return _with_changes(news, entry, marks, upkeep)
        if pull is not None and (pull.get("updated_at") != upkeep.get("updated_at")
                                 or _head(pull) != upkeep.get("head_sha")):
            if _head(pull) != upkeep.get("head_sha"):
                upkeep["head_since"] = self.now.replace(microsecond=0).isoformat()
            upkeep.update(updated_at=pull.get("updated_at"), head_sha=_head(pull),
                          base=(pull.get("base") or {}).get("ref"))
            upkeep.pop("checks_done", None)  # something changed: the checks are looked at again, once
            work = review_work(self.github, self.trusted, entry.pr_number, self.settings, marks)
            if work and entry.follow_rounds >= self.settings.max_rounds:
                news.bound = (f"follow_up.max_rounds ({self.settings.max_rounds}) follow-ups ran for reviews"
                              " and comments")
            news.work = {} if news.bound else work
            if work:
                return _with_changes(news, entry, marks, upkeep)
        self._mergeability(entry, upkeep)
        self._keep_mergeable(entry, upkeep, news)
        if not (news.work or news.notice):
            self._checks(entry, upkeep, news)
        return _with_changes(news, entry, marks, upkeep)

    def _mergeability(self, entry: IssueState, upkeep: Dict[str, Any]) -> None:
        """GitHub's `mergeable` and how far behind the head is, asked again when the head or the base's
        tip moved, or while GitHub was still computing it."""
        tip, head = self.tips.get(upkeep.get("base") or ""), upkeep.get("head_sha")
        if not tip or not head or (upkeep.get("base_sha") == tip and upkeep.get("merge_head") == head
                                   and upkeep.get("mergeable") is not None):
            return
        pull = self.github.get_pull(entry.pr_number, cached=True)
        mergeable = pull.get("mergeable")
        upkeep.update(base_sha=tip, merge_head=_head(pull), mergeable=mergeable,
                      mergeable_state=pull.get("mergeable_state"), behind_by=None)
        if mergeable is not None:  # null: GitHub computes it in the background; the next tick asks again
            upkeep["behind_by"] = self.github.compare(tip, _head(pull)).get("behind_by")

    def _keep_mergeable(self, entry: IssueState, upkeep: Dict[str, Any], news: PullNews) -> None:
        """Conflicts become a follow-up (bounded per base commit, then one comment asks a human); with
        update_branch "always" a clean branch behind its base is brought up to date by GitHub."""
        mode, head, base_sha = self.settings.update_branch, upkeep.get("head_sha"), upkeep.get("base_sha")
        if mode == "never" or upkeep.get("merge_head") != head:  # not known for this head yet
            return
        ref = f"{self.github.repo}#{entry.issue_number}"
        if upkeep.get("mergeable") is False:
            used = conflict_fixes_used(upkeep)
            if used < self.settings.max_conflict_fixes:
                news.work = {"kind": "conflict", "base": upkeep.get("base"), "base_sha": base_sha}
            elif upkeep.get("asked_human") != base_sha:
                upkeep["asked_human"] = base_sha
                log.warning("Issue %s: its pull request still conflicts with %s after %s merge(s); a human is asked",
                            ref, upkeep.get("base"), used)
                news.notice = (f"conflict-help:{base_sha}", conflict_help_comment(
                    upkeep.get("base"), base_sha, self.settings.max_conflict_fixes))
        elif upkeep.get("mergeable") and mode == "always" and upkeep.get("behind_by") \
                and upkeep.get("updated_for") != f"{base_sha}:{head}":
            upkeep["updated_for"] = f"{base_sha}:{head}"  # asked once for this base tip and head
            if self.dry_run:
                log.info("[dry-run] issue %s: would bring its pull request up to date with %s", ref, upkeep.get("base"))
                return
            status, message = self.github.update_branch(entry.pr_number, head)
            log.info("Issue %s: update-branch of its pull request (%s behind %s): %s %s", ref, upkeep.get("behind_by"),
                     upkeep.get("base"), status, message)

    def _checks(self, entry: IssueState, upkeep: Dict[str, Any], news: PullNews) -> None:
        """The head commit's checks, while they have not settled; a failure becomes a follow-up."""
        head = upkeep.get("head_sha")
        if not head or head in entry.ci_fixed_shas or upkeep.get("checks_done") == head:
            return
        failures, waiting, found = failing_checks(self.github, head)
        since = parse_iso(upkeep.get("head_since")) or self.now
        age = (self.now - since).total_seconds()
        if failures or (found and not waiting) or age > CHECKS_PATIENCE_SECONDS \
                or (not found and age > CHECKS_QUIET_SECONDS):
            upkeep["checks_done"] = head
        if not failures:
            return
        if entry.ci_fixes >= self.settings.max_ci_fixes:
            news.bound = f"follow_up.max_ci_fixes ({self.settings.max_ci_fixes}) follow-ups ran for failing checks"
        else:
            news.work = {"kind": "ci", "sha": head, "failures": failures}


def look_at_each(entries: Sequence[IssueState], github: Callable[[Optional[str]], GitHubClient],
                 trust: Callable[[Optional[str]], Callable[[Optional[str]], bool]], settings: FollowUp,
                 dry_run: bool = False, now: Optional[datetime] = None
                 ) -> Iterator[Tuple[IssueState, Union[PullNews, str]]]:
    """(entry, what its look found) for each entry, its repository's pull requests surveyed at once
    (`github(repo)` and `trust(repo)` give that repository's client and trust); a look that failed
    gives the sentence why instead. A rate limit is raised: it ends the tick."""
    for repo in sorted({entry.repo for entry in entries}, key=str):
        mine = [entry for entry in entries if entry.repo == repo]
        try:
            watch = PullWatch(github(repo), trust(repo), settings, dry_run=dry_run, now=now)
            watch.survey(mine)
        except RateLimitError:
            raise
        except OrchestratorError as exc:  # no such repository, or its listing: none can be looked at
            yield from ((entry, str(exc)) for entry in mine)
            continue
        for entry in mine:
            try:
                yield entry, watch.look(entry)
            except RateLimitError:
                raise
            except OrchestratorError as exc:
                yield entry, str(exc)


def _head(pull: Dict[str, Any]) -> Optional[str]:
    return (pull.get("head") or {}).get("sha")


def _with_changes(news: PullNews, entry: IssueState, marks: Dict[str, int], upkeep: Dict[str, Any]) -> PullNews:
    news.changes = {name: value for name, value in (("follow_marks", marks), ("upkeep", upkeep))
                    if value != getattr(entry, name)}
    return news


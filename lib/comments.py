"""What the orchestrator writes on GitHub: the outcome comment, the question, the pull request.

Agent text is quoted inert (`quote_for_markdown`): bounded, no live HTML, no @-mentions, and no
way to forge the marker that tells our own comments from a human's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence

from lib.github_client import COMMENT_MARKER
from lib.figures import checks_line, figures_line
from lib.models import IssueState, IssueStatus

if TYPE_CHECKING:  # only its type: a tick that posts a comment loads none of the classifying
    from lib.outcomes import Outcome

#: Agent text quoted on GitHub is cut to this many characters.
SUMMARY_LIMIT = 3000
TITLE_CHARS = 200
TAIL_QUOTE_CHARS = 1500
FOLLOWED_NOTE = ("The orchestrator follows this pull request until it is merged or closed: a review or comment by"
                 " a maintainer, or a check that fails on its head commit, goes back to the same Claude Code"
                 " session.")


def quote_for_markdown(text: Optional[str], limit: int = SUMMARY_LIMIT) -> str:
    """Agent text as an inert Markdown quote: bounded, no live HTML, no @-mentions, no marker."""
    text = (text or "").strip()
    if len(text) > limit:
        text = text[:limit].rstrip() + " …(cut)"
    # Escaping `<` also defuses a forged COMMENT_MARKER: the agent never speaks in our name.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"@(?=[A-Za-z0-9])", "@\u200b", text)  # quoting a login must not notify its owner
    return "\n".join("> " + line if line.strip() else ">" for line in text.splitlines()) or "> (no text)"


def keyed(body: str, key: str) -> str:
    """`body` with the hidden marker that makes it ours and names it (`key`), so it is posted once."""
    return f"{body}\n\n{marker(key)}"


def marker(key: str) -> str:
    return f"{COMMENT_MARKER} {key} -->"


def post_once(github, number: int, key: str, body: str) -> Dict[str, Any]:
    """Comment on the issue unless a comment with this key is there already (a finalize that
    crashed after posting runs again and must not say it twice)."""
    for comment in github.list_comments(number):
        if marker(key) in (comment.get("body") or ""):
            return comment
    return github.create_comment(number, keyed(body, key))


def figures(outcome: Outcome, duration: Optional[float]) -> str:
    return figures_line(outcome.cost_usd, outcome.num_turns, duration)


def pr_title(issue: Mapping[str, Any]) -> str:
    title = " ".join(str(issue.get("title") or "").split()) or f"Issue {issue.get('number')}"
    return f"{title[:TITLE_CHARS]} (#{issue.get('number')})"


def pr_body(number: int, outcome: Outcome, duration: Optional[float], test_files: Sequence[str] = (),
            followed: bool = False) -> str:
    failing = failing_checks(outcome.checks)
    lines = [*failing, ""] if failing else []
    lines += [f"Closes #{number}", "", "Summary from Claude Code:", "", quote_for_markdown(outcome.summary), ""]
    if outcome.checks:
        # The checks prove their commands exit 0, not that the tests were left alone: show which changed.
        lines += [f"Checks: {checks_line(outcome.checks)}",
                  "Test files this change touches: " + (", ".join(f"`{name}`" for name in test_files) or "none"), ""]
    lines += [figures(outcome, duration), ""]
    if followed:
        lines += [FOLLOWED_NOTE, ""]
    return "\n".join([*lines, marker("pull-request")])


def failing_checks(checks: Sequence[Mapping[str, Any]]) -> list:
    """A heading and, for each failing check, how it failed and the end of its output, quoted inert."""
    failed = [check for check in checks if not check["passed"]]
    if not failed:
        return []
    lines = [f"⚠️ These checks still fail: {', '.join(check['name'] for check in failed)}."]
    for check in failed:
        lines += ["", f"`{check['name']}`: {check['reason']}", quote_for_markdown(check.get("tail") or "(no output)",
                                                                             limit=TAIL_QUOTE_CHARS)]
    return lines


def outcome_comment(entry: IssueState, outcome: Outcome, pr_url: Optional[str], pushed: bool,
                    duration: Optional[float]) -> str:
    headline = {
        IssueStatus.COMPLETED: "✅ Claude Code finished this issue.",
        IssueStatus.FAILED: f"❌ Claude Code could not finish this issue: {outcome.reason}.",
    }.get(outcome.status, f"⏹️ Stopped: {outcome.reason}. The work so far is saved.")
    lines = [headline, ""]
    if outcome.summary:
        lines += [quote_for_markdown(outcome.summary), ""]
    if pr_url:
        lines.append(f"Pull request: {pr_url}")
    elif pushed:
        lines.append(f"Branch: `{entry.branch}`")
    if outcome.checks:
        lines.append(f"Checks: {checks_line(outcome.checks)}")
        failing = failing_checks(outcome.checks)[1:]  # the headline already names the failing ones
        if failing:
            lines += [*failing, ""]
    lines.append(f"{figures(outcome, duration)} · Session: `{entry.session_id or 'n/a'}`")
    if entry.slot_notes:  # e.g. work of an earlier run kept on a backup ref: the reader should know
        lines += ["", "Notes from preparing the slot:", *(f"- {note}" for note in entry.slot_notes)]
    return "\n".join(lines)


def question_comment(question: Optional[str], *, trusted_roles: Sequence[str], allowed_users: Sequence[str],
                     input_wait_hours: float) -> str:
    return "\n".join([
        "⏳ Claude Code needs an answer to go on:", "", quote_for_markdown(question), "",
        f"Reply in a comment (someone with a role in {', '.join(trusted_roles)}"
        f"{' or a listed user' if allowed_users else ''}) and the same session resumes "
        f"on the next tick. Without an answer within {input_wait_hours:g} hours the "
        "work so far is pushed and the issue is marked failed."])


def refused_model_comment(label: str, prefix: Optional[str]) -> str:
    return "\n".join([
        f"⚠️ The label `{label.replace('`', '')}` does not name one model Claude Code can be run with, so this issue"
        " waits.",
        "",
        f"A model label is `{prefix}<name>` once, with a name of letters, digits, `.`, `_` and `-` that"
        " starts with a letter or digit. Fix or remove the label and the next tick takes the issue."])


def follow_up_comment(entry: IssueState, outcome: Outcome, head: str, duration: Optional[float]) -> str:
    """The summary of one follow-up, on the pull request."""
    work = entry.follow_work
    what = {"ci": "the failing checks", "conflict": f"merging `{inert(work.get('base'))}` into this branch"}.get(
        work.get("kind"), "the review")
    headline = {IssueStatus.COMPLETED: f"🔁 Claude Code worked on {what}.",
                IssueStatus.FAILED: f"❌ Claude Code could not finish {what}: {outcome.reason}."}.get(
        outcome.status, f"⏹️ Stopped: {outcome.reason}.")
    lines = [headline, ""]
    if work.get("kind") == "conflict":
        lines += [merge_lines(work, outcome), ""]
    if outcome.summary:
        lines += [quote_for_markdown(outcome.summary), ""]
    if head:
        lines.append(f"Branch `{entry.branch}` is at {head}.")
    if outcome.checks:
        lines.append(f"Checks: {checks_line(outcome.checks)}")
    lines.append(f"{figures(outcome, duration)} · Session: `{entry.session_id or 'n/a'}`")
    return "\n".join(lines)


def merge_lines(work: Mapping[str, Any], outcome: Outcome) -> str:
    """What a merge of the base brought in and which conflicts it met (file names are the repository's:
    shown inert)."""
    merged = f"`{inert(work.get('base'))}` at {str(work.get('merged_sha') or work.get('base_sha'))[:12]}"
    names = [f"`{inert(conflict.get('path'))}`" for conflict in work.get("conflicts") or []]
    if work.get("up_to_date"):
        return f"The branch already held {merged}: nothing was merged."
    if not names:
        return f"Merged {merged} (a merge commit): no conflict."
    files = f"{len(names)} file(s): {', '.join(names[:30])}{' ...' if len(names) > 30 else ''}"
    if outcome.status != IssueStatus.COMPLETED:
        return f"Merging {merged} into this branch met conflicts in {files}."
    return (f"Merged {merged} (a merge commit, never a rebase or a force-push); conflicts resolved by Claude Code"
            f" in {files}.")


def conflict_help_comment(base: Optional[str], base_sha: Optional[str], bound: int) -> str:
    """Said once when merges of the base by Claude Code reached follow_up.max_conflict_fixes."""
    return (f"⚠️ This pull request conflicts with `{inert(base)}` ({str(base_sha)[:12]}), and {bound} merge(s)"
            " of it by Claude Code (follow_up.max_conflict_fixes) did not resolve the conflicts. Please merge the"
            " base into this branch and resolve them by hand; Claude Code tries again when the base moves on.")


def inert(text: Any) -> str:
    """A name from the repository (a branch, a file) for inline code, which GitHub shows as it is: no
    backtick to close it, on one line, at most 200 characters."""
    return " ".join(str(text or "").replace("`", "'").split())[:200]

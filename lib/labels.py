"""The labels an issue shows for its status, set in one place for the tick and the runner alike.

    pending, preparing, running, validating, fixing   claude-working
    needs_input                                        claude-working + claude-needs-input
    waiting (back in the queue)                        ready-for-claude
    completed / failed                                 claude-completed / claude-failed
    cancelled                                          (none of ours)

`show_status` adds the status's label and takes the others of ours off, leaving every other label alone
(`ready-for-claude` too when a human put it back during a run: the next tick starts a new attempt).
Adding answers with the labels the issue then has, so only labels it carries are taken off.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from lib.lifecycle import LIVE_STATUSES, IssueStatus
from lib.settings import Labels


def for_status(labels: Labels, status: IssueStatus) -> Tuple[List[str], List[str]]:
    """(labels to add, labels to take off) for an issue in `status`."""
    ours = [labels.ready, labels.working, labels.completed, labels.failed, labels.needs_input]
    wanted: Dict[IssueStatus, List[Optional[str]]] = {
        IssueStatus.NEEDS_INPUT: [labels.working, labels.needs_input],
        IssueStatus.WAITING: [labels.ready],
        IssueStatus.COMPLETED: [labels.completed],
        IssueStatus.FAILED: [labels.failed],
        IssueStatus.CANCELLED: [],
    }
    add = [name for name in (wanted.get(status) if status not in LIVE_STATUSES else [labels.working]) or [] if name]
    # `ready` is the human's to give back while an issue is finished: the ending leaves it alone.
    keep = set(add) | ({labels.ready} if status in (IssueStatus.COMPLETED, IssueStatus.FAILED,
                                                       IssueStatus.CANCELLED) else set())
    return add, [name for name in ours if name and name not in keep]


def show_status(github, labels: Labels, number: int, status: IssueStatus) -> None:
    """Make issue `number` show `status` (github: a GitHubClient of its repository)."""
    add, remove = for_status(labels, status)
    carried = {label["name"] for label in github.add_labels(number, add)} if add else None
    for name in remove:
        if carried is None or name in carried:
            github.remove_label(number, name)


def unqueue(github, labels: Labels, number: int) -> None:
    """Take a queued issue out of the queue: its `ready` label off (an operator's cancel)."""
    github.remove_label(number, labels.ready)

"""The issue lifecycle: the statuses an issue goes through and every transition allowed between them.

The state keeps an issue's status; labels on GitHub show it (lib.labels). Who moves an issue:

* the tick: a claim (to pending), a queued issue withdrawn (to cancelled), a followed pull request
  merged or closed;
* its runner (lib.runner), step by step: each status of the runner's part has a step, a function
  that does that status's work and returns the next status, until one that ends the runner's part;
* an operator: --cancel, --retry, --free-slot.

```
            claim             prepared        agent done, checks configured
  (new) ──────────> pending ──> preparing ──> running ──────────────> validating ──> completed
     finished │                   ^  │          │ ^  │ question             │ ^     (pull request followed:
     waiting  ┘         retry     │  │          │ │  └──> needs_input       v │      a follow-up is a claim)
                     (crash, lost)└──┼──────────┘ └─ trusted answer ── fixing ┘
  any running status ──> waiting (a usage limit: back in the queue) | failed | cancelled
```

`TRANSITIONS` is the whole table (staying in a status is always allowed); the state stores refuse
any other change of status (a bug, never a user's mistake). The runner's modes are its entry points: `run` starts at preparing, `follow` at
preparing too (a follow-up on the pull request), `resume` at running (an answer came), `finalize`
judges a run whose runner is gone.
"""

from __future__ import annotations

from enum import Enum
from typing import Dict, FrozenSet, Optional


class IssueStatus(str, Enum):
    """The status of one issue: in the state, and as the monitor shows it. LOST and UNKNOWN are what
    the monitor sees and are never stored."""

    PENDING = "pending"  # claimed by a tick; its runner has not started yet
    PREPARING = "preparing"  # the runner makes the slot ready: fetch, clean, setup.sh, branch
    RUNNING = "running"  # the agent runs
    VALIDATING = "validating"  # the repository's checks run on the agent's work
    FIXING = "fixing"  # a check failed: the same session fixes it
    NEEDS_INPUT = "needs_input"  # the agent asked; the slot waits for a trusted answer
    WAITING = "waiting"  # back in the queue until `not_before` (usage limit, API outage)
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped by a human: issue closed, claude-working removed, --cancel
    MERGED = "merged"  # its pull request was merged: followed no more
    CLOSED = "closed"  # its pull request was closed unmerged: followed no more
    LOST = "lost"  # monitor: the state says it runs, but its runner is gone
    UNKNOWN = "unknown"  # monitor: a claude process in a slot that the state does not know of

    def __str__(self) -> str:  # f"{status}" is the value
        return self.value


S = IssueStatus
#: Statuses whose issue owns its slot and has a runner (or is about to).
LIVE_STATUSES = frozenset({S.PENDING, S.PREPARING, S.RUNNING, S.VALIDATING, S.FIXING})
#: Statuses whose issue owns its slot.
ACTIVE_STATUSES = LIVE_STATUSES | {S.NEEDS_INPUT}
#: Statuses after which nothing happens until a human labels the issue again (or its PR is followed).
FINISHED_STATUSES = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.MERGED, S.CLOSED})
_ENDS = {S.COMPLETED, S.FAILED, S.CANCELLED}

#: status -> the statuses it may become. None is an issue the state does not hold yet.
TRANSITIONS: Dict[Optional[IssueStatus], FrozenSet[IssueStatus]] = {
    None: frozenset({S.PENDING}),
    S.PENDING: frozenset({S.PREPARING, S.WAITING} | _ENDS),
    S.PREPARING: frozenset({S.RUNNING, S.WAITING} | _ENDS),
    S.RUNNING: frozenset({S.VALIDATING, S.NEEDS_INPUT, S.WAITING, S.PREPARING} | _ENDS),
    S.VALIDATING: frozenset({S.FIXING} | _ENDS),
    S.FIXING: frozenset({S.VALIDATING, S.NEEDS_INPUT, S.WAITING, S.PREPARING} | _ENDS),
    # A trusted answer resumes the session; a run taken over by another host starts it anew.
    S.NEEDS_INPUT: frozenset({S.RUNNING, S.PREPARING, S.WAITING} | _ENDS),
    S.WAITING: frozenset({S.PENDING} | _ENDS),
    # A finished issue starts again when labeled (a claim), when its pull request is followed up (a
    # claim too), or when an operator asks for a retry (back in the queue).
    S.COMPLETED: frozenset({S.PENDING, S.WAITING, S.MERGED, S.CLOSED}),
    S.FAILED: frozenset({S.PENDING, S.WAITING, S.MERGED, S.CLOSED}),
    S.CANCELLED: frozenset({S.PENDING, S.WAITING, S.MERGED, S.CLOSED}),
    S.MERGED: frozenset({S.PENDING, S.WAITING}),
    S.CLOSED: frozenset({S.PENDING, S.WAITING}),
}

#: The runner's modes, as the tick starts it (`python -m lib.runner <mode>`).
RUN, RESUME, FINALIZE, FOLLOW = "run", "resume", "finalize", "follow"
MODES = (RUN, RESUME, FINALIZE, FOLLOW)


class BadTransition(ValueError):
    """A change of status the lifecycle does not have: a bug in whatever asked for it."""


def check_transition(old: Optional[IssueStatus], new: IssueStatus, what: str = "an issue") -> None:
    if old != new and new not in TRANSITIONS.get(old, frozenset()):
        raise BadTransition(f"{what} cannot go from {old or 'nothing'} to {new} (lib/lifecycle.py TRANSITIONS)")

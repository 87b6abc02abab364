"""Routing labels: which queued issue goes first, and with which model it runs.

* A priority label (`labels.priorities`, e.g. `priority:high` = 1, `priority:low` = -1) ranks an
  issue; the queue is ordered by rank, then oldest first (`created_at`), across every repository.
* A model label (`labels.model_prefix` + name, e.g. `claude-model:opus`) runs the issue with
  `--model <name>`. Only names of `MODEL_NAME_RE` are passed on: no leading dash, no shell.

Both count only when a trusted user applied them; the tick asks who did (`trusted` below is the
set of the issue's labels that a trusted user applied) and this module decides with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping, Optional, Tuple

from lib.config import Labels

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def label_names(issue: Mapping[str, Any]) -> list:
    return [label["name"] for label in issue.get("labels") or [] if isinstance(label, Mapping) and "name" in label]


def routing_labels(issue: Mapping[str, Any], labels: Labels) -> list:
    """The issue's labels that route it (priority and model labels): the ones whose labeler matters."""
    return [name for name in label_names(issue)
            if name in labels.priorities or (labels.model_prefix and name.startswith(labels.model_prefix))]


def rank(issue: Mapping[str, Any], labels: Labels, trusted: Collection[str]) -> int:
    """The highest rank among the issue's priority labels that a trusted user applied; 0 without one."""
    ranks = [labels.priorities[name] for name in label_names(issue) if name in labels.priorities and name in trusted]
    return max(ranks) if ranks else 0


def queue_order(candidates: Iterable[Tuple[str, Mapping[str, Any], int]]):
    """(repo, issue, rank) in launch order: higher rank first, then the oldest, then by repository."""
    return sorted(candidates, key=lambda c: (-c[2], str(c[1].get("created_at") or ""), c[0].casefold(),
                                             c[1].get("number", 0)))


@dataclass
class ModelChoice:
    model: Optional[str] = None  # the model to run with; None: the repository's
    refused: Optional[str] = None  # a label that names no valid model: the issue waits until it is fixed


def model_choice(issue: Mapping[str, Any], labels: Labels, trusted: Collection[str]) -> ModelChoice:
    """The model a trusted `claude-model:<name>` label asks for. Untrusted ones are ignored; a trusted
    one with a name that could be read as an option or hold shell syntax is refused."""
    if not labels.model_prefix:
        return ModelChoice()
    asked = [name for name in label_names(issue) if name.startswith(labels.model_prefix) and name in trusted]
    for name in asked:
        if not MODEL_NAME_RE.match(name[len(labels.model_prefix):]):
            return ModelChoice(refused=name)
    if len(asked) > 1:
        return ModelChoice(refused=", ".join(sorted(asked)))
    return ModelChoice(model=asked[0][len(labels.model_prefix):] if asked else None)

"""What a followed pull request's `upkeep` (a state entry's field) holds, and how it reads.

lib/pull_watch.py fills it on each tick: `updated_at` and `head_sha` as the listing last showed them
(`head_since`: when that head was first seen; `listing`: the first page it was resolved against),
`base` and `base_sha` (the base's tip it was compared with), `merge_head`, `mergeable` (GitHub's: true,
false, or null while GitHub computes it), `mergeable_state` and `behind_by`; `checks_done`: the head
whose checks were judged; `conflict_base` and `conflict_rounds`: the merges of the base run for that
base commit; `asked_human`: the base commit a human was asked to merge by hand; `updated_for`: the base
commit and head GitHub's update-branch was asked for. The runner counts a merge when it ends; the
monitor and the dashboard show `upkeep_view`. Standard library only (and the settings), so that the
monitor stays light.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from lib.models import IssueState
from lib.settings import FollowUp


def conflict_fixes_used(upkeep: Dict[str, Any]) -> int:
    """The merges of the base that ran for its tip as last compared (a new base commit starts at 0)."""
    return int(upkeep.get("conflict_rounds") or 0) if upkeep.get("conflict_base") == upkeep.get("base_sha") else 0


def follow_up_counted(entry: IssueState) -> Dict[str, Any]:
    """The bounds' counters once a follow-up ended, whatever came of it, and its work cleared: a merge
    of the base counts for its base commit (and mergeability is asked again)."""
    work = entry.follow_work
    if not work:
        return {}
    if work.get("kind") == "ci":
        return {"follow_work": {}, "ci_fixes": entry.ci_fixes + 1,
                "ci_fixed_shas": [*entry.ci_fixed_shas, work.get("sha")][-20:]}
    if work.get("kind") != "conflict":
        return {"follow_work": {}, "follow_rounds": entry.follow_rounds + 1}
    upkeep = dict(entry.upkeep)
    if upkeep.get("conflict_base") != work.get("base_sha"):
        upkeep.update(conflict_base=work.get("base_sha"), conflict_rounds=0)
    upkeep["conflict_rounds"] = int(upkeep.get("conflict_rounds") or 0) + 1
    upkeep.pop("merge_head", None)
    return {"follow_work": {}, "upkeep": upkeep}


def upkeep_view(entry: IssueState, settings: FollowUp) -> Optional[Dict[str, Any]]:
    """A followed pull request's upkeep for the monitor and the dashboard: the figures and one line."""
    if not (entry.following and entry.pr_number):
        return None
    upkeep = entry.upkeep
    base, mergeable, behind = upkeep.get("base") or "its base", upkeep.get("mergeable"), upkeep.get("behind_by")
    used = conflict_fixes_used(upkeep)
    parts = [f"PR #{entry.pr_number}"]
    if "mergeable" not in upkeep:
        parts.append("not looked at yet")
    elif mergeable is None:
        parts.append("mergeable: GitHub is computing it")
    else:
        parts.append("mergeable" if mergeable else f"conflicts with {base}")
    if behind:
        parts.append(f"behind {base} by {behind} commit(s)")
    elif behind == 0:
        parts.append(f"up to date with {base}")
    if used or mergeable is False:
        parts.append(f"conflict fixes {used} of {settings.max_conflict_fixes} for this base commit"
                     + (", a human is asked" if upkeep.get("asked_human") == upkeep.get("base_sha") else ""))
    return {"pr_number": entry.pr_number, "base": upkeep.get("base"), "mergeable": mergeable,
            "mergeable_state": upkeep.get("mergeable_state"), "behind_by": behind, "conflict_fixes_used": used,
            "max_conflict_fixes": settings.max_conflict_fixes, "summary": ", ".join(parts)}

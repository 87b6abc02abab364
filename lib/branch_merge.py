"""Merging a pull request's base branch into its branch in a slot: a merge commit, never a rebase,
never a force-push.

The tick found the pull request in conflict with its base (lib/pull_watch.py) and started a `follow`
runner whose work is {"kind": "conflict", "base", "base_sha"}. In the slot, prepared on
the branch as origin has it and with origin's base just fetched:

1. `merge_base`: `git merge --no-ff` of origin's base into the branch, with diff3 conflict markers
   (ours, the fork point, theirs). A clean merge is committed at once and goes on as any change
   (the repository's checks, the push, a comment) without Claude. Where git stops, the conflicted
   files with both sides of each conflict, and the base's commits the branch lacks, go into the
   work, for the conflict prompt (lib/follow_up.py) that the same session resolves them with.
2. `settle_merge`, before anything is committed or pushed (the runner's save_work): a merge the agent
   left staged is concluded here; then no conflict marker may be left in the conflicted files, and the
   branch must hold both its old head and the merged base commit. Else the attempt is kept on a backup
   ref, the branch goes back to its old head, and nothing is pushed.

Every git command goes through RepoManager.git (hooks and fsmonitor off). After the agent, git runs
on its work only once the store's config holds nothing that would run code (a merge driver, a clean
filter), the check a push makes too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Dict, List, Optional

from lib.git_commands import GitError
from lib.models import IssueStatus
from lib.outcomes import Outcome
from lib.repo_manager import RepoManager

#: How each kind of unmerged path (git status's two letters) is put to the agent ("ours" is the branch).
HOW = {"UU": "both sides changed it", "AA": "both sides added it",
       "DU": "your branch deleted it, the base changed it", "UD": "the base deleted it, your branch changed it",
       "AU": "your branch added it, a rename on the base clashes",
       "UA": "the base added it, a rename on your branch clashes",
       "DD": "both sides deleted it (renamed apart)"}
#: Lines shown around each conflict, and the most of a conflicted file that is read.
CONTEXT_LINES = 3
READ_BYTES = 1 << 20
BASE_COMMITS = 20
#: Conflict markers git writes at the start of a line (diff3 adds `|||||||`, and `=======` may be prose).
MARKERS = r"^(<<<<<<<|>>>>>>>)( |$)"


def merge_base(repos: RepoManager, path: Path, work: Dict[str, Any]) -> Dict[str, Any]:
    """Merge origin's `work["base"]` into the branch checked out in `path`. Returns the work with
    `before` (the head before the merge), `merged_sha`, and `conflicts` (each {path, how, hunks}),
    empty when the merge committed cleanly, there was nothing to merge (`up_to_date`), or git failed
    otherwise (`error`, a sentence)."""
    try:
        return _merge(repos, path, work)
    except GitError as exc:
        return dict(work, conflicts=[], error=str(exc))


def _merge(repos: RepoManager, path: Path, work: Dict[str, Any]) -> Dict[str, Any]:
    base = str(work.get("base"))
    branch = repos.git(["symbolic-ref", "--quiet", "--short", "HEAD"], path).stdout.strip()
    before = repos.git(["rev-parse", "--verify", "HEAD^{commit}"], path).stdout.strip()
    merged = repos.git(["rev-parse", "--verify", f"refs/remotes/origin/{base}^{{commit}}"], path).stdout.strip()
    result = dict(work, before=before, merged_sha=merged, conflicts=[])
    if repos.is_ancestor(path, merged, before):
        return dict(result, up_to_date=True)
    done = repos.git(["-c", "merge.conflictStyle=diff3", "merge", "--no-ff", "--no-edit", "--no-verify",
                      "-m", f"Merge branch '{base}' into {branch}", f"refs/remotes/origin/{base}"], path, check=False)
    if done.returncode == 0:
        return result
    conflicts = _conflicts(repos, path)
    if not conflicts:  # git stopped for another reason (an untracked file in the way, ...)
        repos.git(["merge", "--abort"], path, check=False)
        raise GitError(f"git merge of {base} into {branch} failed in {path}: {repos.last_words(done)}")
    count = int(repos.git(["rev-list", "--count", f"{before}..{merged}"], path).stdout.strip() or 0)
    commits = repos.git(["log", f"--max-count={BASE_COMMITS}", "--format=%h %s", f"{before}..{merged}"],
                        path).stdout.splitlines()
    return dict(result, conflicts=conflicts, base_commits=commits, base_commit_count=count)


def merged_cleanly(work: Dict[str, Any], branch: str) -> Outcome:
    """The outcome of a merge of the base that needed no agent (or that git could not even start)."""
    base, sha = work.get("base"), str(work.get("merged_sha"))[:12]
    if work.get("error"):
        return Outcome(status=IssueStatus.FAILED, reason=work["error"])
    return Outcome(status=IssueStatus.COMPLETED, summary=(
        f"{branch} already holds {base} ({sha}): nothing to merge." if work.get("up_to_date") else
        f"Merged {base} ({sha}) into {branch}: the merge was clean, no conflict to resolve."))


def _conflicts(repos: RepoManager, path: Path) -> List[Dict[str, Any]]:
    """The unmerged paths of the merge in progress, with the conflict hunks of the text files."""
    fields = repos.git(["status", "--porcelain=v1", "-z", "--untracked-files=no"], path).stdout.split("\0")
    found, skip = [], False
    for record in fields:
        if skip or len(record) < 4:  # the second path of a rename, or the end
            skip = False
            continue
        code, name = record[:2], record[3:]
        skip = code[0] in "RC"
        if code in HOW:
            found.append({"path": name, "how": HOW[code], "hunks": _hunks(path, name) if code in ("UU", "AA") else ""})
    return found


def _hunks(slot: Path, name: str) -> str:
    """Each conflict of a conflicted text file with a few lines around it; nothing for what is not a
    regular file inside the slot (a symlink is never followed) or not text."""
    full = slot / name
    if not os.path.realpath(full).startswith(os.path.realpath(slot) + os.sep):
        return ""
    try:
        descriptor = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return ""
            data = handle.read(READ_BYTES)
    except OSError:
        return ""
    if b"\0" in data:
        return "(a binary file: keep one side with `git checkout --ours` or `--theirs`, then `git add` it)"
    lines = data.decode("utf-8", "replace").split("\n")
    spans: List[List[int]] = []
    start: Optional[int] = None
    for number, line in enumerate(lines):
        if line.startswith("<<<<<<<"):
            start = number
        elif line.startswith(">>>>>>>") and start is not None:
            low, high = max(0, start - CONTEXT_LINES), min(len(lines), number + 1 + CONTEXT_LINES)
            if spans and low <= spans[-1][1]:
                spans[-1][1] = high
            else:
                spans.append([low, high])
            start = None
    return "\n...\n".join(f"(from line {low + 1})\n" + "\n".join(lines[low:high]) for low, high in spans)


def settle_merge(repos: RepoManager, path: Path, work: Dict[str, Any], branch: str, clone_url: str) -> Optional[str]:
    """Before the work on `branch` is committed and pushed: conclude a merge the agent left staged, then
    check it. Returns None when the branch holds a finished merge of the base without conflict markers
    (or no merge was started), else a sentence, with the attempt kept on a backup ref and the branch
    back at its old head."""
    before, merged = work.get("before"), work.get("merged_sha")
    git_dir = Path(repos.git(["rev-parse", "--absolute-git-dir"], path).stdout.strip())
    if not before or work.get("up_to_date"):
        if (git_dir / "MERGE_HEAD").exists():  # a runner died before it noted its merge: never commit that
            repos.git(["merge", "--abort"], path, check=False)
        return None
    risky = repos.store(clone_url).dangerous_settings()
    if risky:
        return (f"the store's config holds {', '.join(line.partition('=')[0] for line in risky)}, which could run"
                f" code in git; nothing was committed or pushed, the work is kept in {path}")
    if (git_dir / "MERGE_HEAD").exists():
        repos.git(["add", "--all"], path)
        repos.git(["commit", "--quiet", "--no-edit", "--no-verify"], path, check=False)
    names = [conflict["path"] for conflict in work.get("conflicts") or []]
    problem = None
    if (git_dir / "MERGE_HEAD").exists():
        problem = "the merge could not be concluded"
    elif not repos.is_ancestor(path, before, "HEAD"):
        problem = "the branch no longer holds its own commits (rebased or reset)"
    elif not repos.is_ancestor(path, merged, "HEAD"):
        problem = f"{work.get('base')} was not merged (the merge was abandoned)"
    elif names:
        marked = repos.git(["--literal-pathspecs", "grep", "-l", "-E", MARKERS, "HEAD", "--", *names], path,
                           check=False).stdout.splitlines()
        if marked:
            problem = "conflict markers are left in " + ", ".join(line.partition(":")[2] for line in marked)
    if problem is None:
        return None
    kept = repos.backup(path, f"{branch}-merge", "HEAD")
    if (git_dir / "MERGE_HEAD").exists():
        repos.git(["merge", "--abort"], path, check=False)
    repos.git(["checkout", "--quiet", "--force", "--no-track", "-B", branch, before], path)
    repos.git(["clean", "-ffd", "--quiet"], path)
    return f"{problem}; the attempt is kept on {kept}, and nothing of it was pushed"

"""A slot's object store as its sandbox shows it, and what the runner takes back after the sandbox ended.

A commit in the wall writes objects, the slot's worktree metadata and its branch's ref. Objects are
content-addressed and the metadata is the slot's own, so both are bound into the wall as they are.
The refs are not: with the store's `refs/` writable an agent could move another issue's branch, whose
runner would then push its commits in that issue's pull request. So the wall gets a private root at
the store's path (`<name>.sandbox/<slot>/view`) holding a snapshot of the refs it needs (origin's
branches, tags, its own branch), a copy of HEAD and a minimal config (no remote, no hooks, `gc.auto` 0);
the real objects and the slot's worktree metadata are bound into it.

`collect` runs after every walled command, before any git command of the runner touches the slot:

* the slot's branch moves to the commit the agent left it on, a commit checked to exist, with the
  value it had at launch as the expected old one; a HEAD the agent pointed at another branch of its
  view is detached at that commit, for RepoManager.bring_branch_to_head to judge;
* everything in the worktree that would make git outside the wall run the agent's code is taken away:
  a nested repository (its config may name a clean filter that `git status` or `git add` of the slot
  would run; the runner's GIT_CONFIG_* settings do not reach into it) loses its `.git`; an
  `objects/info/alternates` of the store is removed;
* the empty files Claude Code's own sandbox leaves as mount points (`.gitmodules`, `package.json`, ...)
  are removed when they were not there before.

Every file read here was writable by the agent: read without following links, with a size bound.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Callable, List, Optional

from lib.sandbox import StoreView

log = logging.getLogger(__name__)

#: The empty files Claude Code's sandbox creates as mount points where they did not exist (2.1.x).
CLAUDE_MASK_NAMES = (".gitconfig", ".gitmodules", ".bashrc", ".bash_profile", ".zshrc", ".zprofile", ".profile",
                     ".ripgreprc", ".mcp.json", ".claude.json", "package.json", "yarn.lock", "package-lock.json",
                     "pnpm-lock.yaml", ".npmrc", ".yarnrc", ".env", ".env.local", ".env.development",
                     ".env.production", ".env.test")
_SHA = re.compile(rb"^[0-9a-f]{40}([0-9a-f]{24})?$")
#: A ref file or packed-refs larger than this is not one git wrote.
MAX_REFS_BYTES = 4 * 1024 * 1024
MINIMAL_CONFIG = "[core]\n\trepositoryformatversion = {version}\n\tbare = true\n{extensions}[gc]\n\tauto = 0\n"


def views_folder(store: Path) -> Path:
    """`<base_repo_path>/<name>.sandbox`, beside `<name>.store.git`."""
    return store.with_name(store.name[:-len(".store.git")] + ".sandbox")


def make_view(git: Callable, store: Path, slot: Path, branch: str) -> StoreView:
    """A fresh view of `store` for a wall around `slot` on `branch` (run `collect` first: an earlier
    wall's commits would be lost)."""
    folder = views_folder(store) / slot.name
    root = folder / "view"
    shutil.rmtree(folder, ignore_errors=True)
    git_dir = worktree_git_dir(slot)
    for sub in ("objects", f"worktrees/{git_dir.name}", "refs/heads", "refs/tags", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    wanted = ["refs/remotes/origin/", "refs/tags/", f"refs/heads/{branch}"]
    listing = git(["for-each-ref", "--format=%(objectname) %(refname)", *wanted], store).stdout.splitlines()
    (root / "packed-refs").write_text("# pack-refs with: sorted \n" + "".join(
        f"{line}\n" for line in sorted(listing, key=lambda line: line.split(" ", 1)[-1])))
    (root / "HEAD").write_bytes((store / "HEAD").read_bytes())
    (root / "config").write_text(_minimal_config(git(["config", "--file", str(store / "config"), "--list"],
                                                     store).stdout))
    start = next((line.split(" ")[0] for line in listing if line.endswith(f" refs/heads/{branch}")), "-")
    absent = [name for name in CLAUDE_MASK_NAMES if not os.path.lexists(slot / name)]
    (folder / "launched").write_text(f"{branch} {start}\n{' '.join(absent)}\n")  # outside the view: not the agent's
    return StoreView(store=store, root=root, worktree_git_dir=git_dir)


def worktree_git_dir(slot: Path) -> Path:
    """The slot's worktree metadata folder, from its `.git` pointer (which its walls keep read-only)."""
    pointer = (slot / ".git").read_text(encoding="utf-8", errors="replace").strip()
    if not pointer.startswith("gitdir: "):
        raise ValueError(f"{slot}/.git is not a worktree's pointer")
    target = Path(pointer[len("gitdir: "):])
    return target if target.is_absolute() else (slot / target).resolve()


def _minimal_config(listing: str) -> str:
    """The view's config: the store's format version and extensions (git needs them to read the
    objects), nothing else."""
    settings = dict(line.partition("=")[::2] for line in listing.splitlines())
    extensions = "".join(f"\t{key.split('.', 1)[1]} = {value}\n" for key, value in settings.items()
                         if key.startswith("extensions.") and key != "extensions.worktreeconfig")
    return MINIMAL_CONFIG.format(version=settings.get("core.repositoryformatversion", "0"),
                                 extensions=f"[extensions]\n{extensions}" if extensions else "")


def collect(git: Callable, store: Path, slot: Path) -> List[str]:
    """Bring home what a wall around `slot` left (see the module docstring); returns notes for the
    slot, each a sentence. Does nothing when no wall ran since the last call."""
    folder = views_folder(store) / slot.name
    try:
        first, _, second = (folder / "launched").read_text().partition("\n")
    except FileNotFoundError:
        return []
    branch, start = first.split()
    root = folder / "view"
    notes: List[str] = []
    if (slot / ".git").is_file():
        _follow_head(git, slot, root, branch, notes)
        new = _view_ref(root, f"refs/heads/{branch}")
        if new and new != start and _is_commit(git, store, new):
            moved = git(["update-ref", f"refs/heads/{branch}", new, "" if start == "-" else start], store, check=False)
            if moved.returncode != 0:
                notes.append(f"the agent's commit {new[:12]} on {branch} could not be kept: {branch} moved meanwhile")
    notes += _take_away_alternates(store) + _take_away_nested_repositories(git, slot)
    notes += _remove_mask_files(git, slot, second.split())
    (folder / "launched").unlink()
    for note in notes:
        log.warning("Slot %s: %s", slot, note)
    return notes


def _read_bounded(path: Path) -> Optional[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_REFS_BYTES + 1)
    return data if len(data) <= MAX_REFS_BYTES else None


def _view_ref(root: Path, ref: str) -> Optional[str]:
    """The commit `ref` names in the view: its loose file, else its packed-refs line."""
    loose = _read_bounded(root / ref)
    if loose is not None:
        value = loose.strip()
        return value.decode() if _SHA.match(value) else None
    for line in (_read_bounded(root / "packed-refs") or b"").splitlines():
        sha, _, name = line.partition(b" ")
        if name == ref.encode() and _SHA.match(sha):
            return sha.decode()
    return None


def _is_commit(git: Callable, store: Path, sha: str) -> bool:
    return git(["cat-file", "-e", f"{sha}^{{commit}}"], store, check=False).returncode == 0


def _follow_head(git: Callable, slot: Path, root: Path, branch: str, notes: List[str]) -> None:
    """A HEAD the agent moved to another branch of its view points at nothing outside: detach it at that
    commit (bring_branch_to_head then decides), or leave it when that is no commit."""
    head_file = worktree_git_dir(slot) / "HEAD"
    head = (_read_bounded(head_file) or b"").strip()
    if not head.startswith(b"ref: ") or head == f"ref: refs/heads/{branch}".encode():
        return
    target = head[5:].decode(errors="replace")
    sha = _view_ref(root, target) if re.fullmatch(r"refs/heads/[A-Za-z0-9._/-]+", target) else None
    if sha and _is_commit(git, slot, sha):
        git(["update-ref", "--no-deref", "HEAD", sha], slot)
    else:
        git(["checkout", "--quiet", "--force", branch], slot, check=False)
        notes.append(f"the agent left HEAD on {target[:80]!r}, which holds no commit; put back on {branch}")


def _take_away_alternates(store: Path) -> List[str]:
    found = [store / "objects" / "info" / name for name in ("alternates", "http-alternates")]
    notes = []
    for path in found:
        if os.path.lexists(path):
            path.unlink()
            notes.append(f"removed {path.name} that the agent wrote into the store's objects")
    return notes


def _take_away_nested_repositories(git: Callable, slot: Path) -> List[str]:
    """Nested repositories (untracked, or gitlinks in the index) lose their `.git`: git outside the wall
    would read their config. `ls-files` reads the index only: it runs nothing of theirs."""
    untracked = git(["ls-files", "-z", "--others", "--exclude-standard"], slot).stdout.split("\0")
    staged = git(["ls-files", "-z", "--stage"], slot).stdout.split("\0")
    nested = {line.rstrip("/") for line in untracked if line.endswith("/")}
    nested |= {line.split("\t", 1)[1] for line in staged if line.startswith("160000 ") and "\t" in line}
    notes = []
    for relative in sorted(nested):
        dot_git = slot / relative / ".git"
        if not os.path.lexists(dot_git):
            continue
        if dot_git.is_dir() and not dot_git.is_symlink():
            shutil.rmtree(dot_git)
        else:
            dot_git.unlink()
        notes.append(f"removed the .git of a nested repository at {relative[:200]!r} (git outside the sandbox"
                     " would run what its config names)")
    return notes


def _remove_mask_files(git: Callable, slot: Path, absent: List[str]) -> List[str]:
    untracked = set(git(["ls-files", "-z", "--others", "--exclude-standard", "--", *absent], slot).stdout.split("\0")
                    ) if absent else set()
    removed = []
    for name in absent:
        path = slot / name
        if name in untracked and path.is_file() and not path.is_symlink() and path.stat().st_size == 0:
            path.unlink()
            removed.append(name)
    if removed:
        log.info("Slot %s: removed the empty mount points Claude Code's sandbox left: %s", slot, ", ".join(removed))
    return []

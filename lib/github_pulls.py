"""The GitHub calls that make following pull requests cheap and keep them mergeable.

`PullRequestCalls` is mixed into `GitHubClient` (lib/github_client.py), whose connection (its
requests, pages, errors in words and ETag cache: lib/github_connection.py) they use:

* `pull_pages`: the repository's pull requests of every state, most recently updated first, one
  page at a time, each asked conditionally. GitHub moves a pull request's `updated_at` on a push, a
  review, a review comment, a comment, a label, an edit, a merge or a close, so the first page shows
  every pull request that changed, and an unchanged page is a 304 that costs no rate-limit point.
* `branch_tip`: the commit a branch points to (`git/ref/heads/<branch>`), asked conditionally. A base
  branch that moves changes neither its pull requests' `updated_at` nor, reliably, their `base.sha`.
* `compare`: how far a head is behind and ahead of a base (`behind_by`, `ahead_by`).
* `update_branch`: GitHub merges the base into the pull request's branch (202); a 422 answers a
  conflict, a branch already up to date, or a head that is not `expected_head_sha` any more.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Tuple
from urllib.parse import quote


class PullRequestCalls:
    """Mixed into GitHubClient, whose `repo`, `_repo_path` and `_http` (its GitHubConnection) it uses."""

    def pull_pages(self) -> Iterator[List[Dict[str, Any]]]:
        """Pages of "simple" pull requests (number, state, updated_at, merged_at, draft, head {ref, sha},
        base {ref}), every state, most recently updated first; stop reading when you have seen enough."""
        yield from self._http.pages(f"{self._repo_path}/pulls", {"state": "all", "sort": "updated",
                                                                 "direction": "desc"}, cached=True)

    def branch_tip(self, branch: str) -> str:
        """The sha `branch` points to, asked conditionally."""
        ref = self._http.get_cached(f"{self._repo_path}/git/ref/heads/{quote(branch, safe='/')}",
                                    not_found=f"Branch {branch} not found in {self.repo}")
        return ref["object"]["sha"]

    def compare(self, base: str, head: str) -> Dict[str, Any]:
        """status (ahead, behind, diverged, identical), ahead_by, behind_by, merge_base_commit {sha} of
        `head` against `base` (shas or branches); one commit listed at most (the figures are what is asked)."""
        path = f"{self._repo_path}/compare/{quote(base, safe='')}...{quote(head, safe='')}"
        return self._http.request_json("GET", path, params={"per_page": 1},
                                       not_found=f"{base} and {head} cannot be compared in {self.repo}")

    def update_branch(self, number: int, expected_head_sha: str) -> Tuple[int, str]:
        """Ask GitHub to merge the base into pull request `number`'s branch, if its head is still
        `expected_head_sha`: (202, GitHub's message) when taken, (422, why not) when not."""
        response = self._http.request("PUT", f"{self._repo_path}/pulls/{int(number)}/update-branch",
                                      json_body={"expected_head_sha": expected_head_sha}, accept=(422,),
                                      not_found=f"Pull request #{number} not found in {self.repo}")
        data = self._http.json(response)
        return response.status_code, str(data.get("message") or "") if isinstance(data, dict) else ""

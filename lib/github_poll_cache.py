"""The poll cache: the answers of conditional GETs with their ETags (github-poll-cache.json).

`{"version": 2, "gets": {URL: {etag, json, used[, next]}}}`: an answer GitHub says is unchanged (a
304, which costs no rate limit) is served from here, its page's next link too. Keyed by URL, so the
clients of several repositories share one file; each change is written into the file as it is then
(read again if another client wrote it), so none loses another's entries. Bounded: the GET_CACHE_MAX
most recently asked, none idle longer than GET_CACHE_IDLE. Mode 0600: it holds issue texts of maybe
private repositories. An unreadable file is empty, with one warning; the next poll rebuilds it.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from lib.files import atomic_write

log = logging.getLogger("lib.github_client")  # GitHub's lines keep the logger name they always had

_POLL_CACHE_VERSION = 2  # 2: every conditional GET in "gets" (a version 1 file is read as empty)
_GET_KEYS = frozenset({"etag", "json", "used"})  # and "next": the page's next link, if any
#: The poll cache keeps at most this many GETs (the poll's pages, issues, pull requests, their reviews,
#: comments and checks; all repositories together), the most recently asked.
GET_CACHE_MAX = 500
#: A GET not asked for this long (seconds) is dropped from the poll cache.
GET_CACHE_IDLE = 24 * 3600
#: An unchanged answer's "last asked" time is written back at most this often (seconds), so that an
#: unchanged tick does not rewrite the cache file.
GET_CACHE_TOUCH = 3600

#: Changes to write, URL -> its new entry (None: drop it); collected over a call's pages, written once.
Changes = Dict[str, Optional[Dict[str, Any]]]


class PollCache:
    """The cache file at `path`, as this client last read or wrote it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._data: Dict[str, Any] = {"gets": {}}
        self._stamp: Optional[Tuple[int, int, int]] = None  # the file's, as last read or written (None: missing)
        self._read = False
        self._write_warned = False

    def entry(self, url: str) -> Optional[Dict[str, Any]]:
        """The cached answer of `url` ({etag, json, used[, next]}), if any: its ETag is asked with."""
        return self._current()["gets"].get(url)

    @staticmethod
    def unchanged(url: str, cached: Dict[str, Any], changes: Changes) -> Tuple[Any, Optional[str]]:
        """(JSON, next link) of `url`, which GitHub answered 304 to `cached`'s ETag: a copy, the caller's."""
        now = int(time.time())
        if now - cached["used"] >= GET_CACHE_TOUCH:
            changes[url] = dict(cached, used=now)
        return copy.deepcopy(cached["json"]), cached.get("next")

    @staticmethod
    def answered(url: str, cached: Optional[Dict[str, Any]], etag: Optional[str], data: Any,
                 next_url: Optional[str], changes: Changes) -> None:
        """`url` was answered anew: kept with its ETag. An answer without one cannot be validated:
        the `cached` one is forgotten."""
        if etag or cached:
            entry = dict({"etag": etag, "json": data, "used": int(time.time())}, **({"next": next_url} if next_url else {}))
            changes[url] = entry if etag else None

    def write(self, changes: Changes) -> None:
        """Write `changes` into the cache file as it is now.

        The file is read again first if it changed since this client read it (another repository's
        client wrote it), so that their entries survive. GETs not asked for GET_CACHE_IDLE are
        dropped, and beyond GET_CACHE_MAX the least recently asked.
        """
        data = self._current()
        for key, entry in changes.items():
            data["gets"].pop(key, None)
            if entry is not None:
                data["gets"][key] = entry  # last: of entries asked in the same second, it stays
        recent = int(time.time()) - GET_CACHE_IDLE
        kept = sorted((item for item in data["gets"].items() if item[1]["used"] >= recent),
                      key=lambda item: item[1]["used"])  # stable: the order of insertion breaks ties
        data["gets"] = dict(kept[-GET_CACHE_MAX:])
        self._save(data)

    def _current(self) -> Dict[str, Any]:
        """The cache, read again only if the file changed since this client last read or wrote it."""
        stamp = _file_stamp(self.path)
        if not self._read or stamp != self._stamp:
            self._data, self._stamp, self._read = self._load(), stamp, True
        return self._data

    def _load(self) -> Dict[str, Any]:
        """The file's contents; an unreadable one is empty, with one warning."""
        empty: Dict[str, Any] = {"gets": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != _POLL_CACHE_VERSION:
                return empty
            gets = data["gets"]
            if not all(_GET_KEYS <= entry.keys() and isinstance(entry["etag"], str)
                       and isinstance(entry["json"], (dict, list)) and isinstance(entry["used"], (int, float))
                       and isinstance(entry.get("next", ""), str) for entry in gets.values()):
                raise ValueError("unknown layout")
        except FileNotFoundError:
            return empty
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("Ignoring unreadable GitHub poll cache %s (%s); the next poll rebuilds it", self.path, exc)
            return empty
        return {"gets": gets}

    def _save(self, data: Dict[str, Any]) -> None:
        """Readable by the owner only (atomic_write's mode)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps({"version": _POLL_CACHE_VERSION, **data}))
        except OSError as exc:
            # The cache only saves rate limit; the request itself succeeded. Once per client: a
            # tick may save several times.
            if not self._write_warned:
                log.warning("Could not write the GitHub poll cache %s: %s", self.path, exc)
                self._write_warned = True
            return
        self._stamp = _file_stamp(self.path)


def _file_stamp(path: Path) -> Optional[Tuple[int, int, int]]:
    """What changes when the file is rewritten (atomic_write makes a new inode); None if missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)

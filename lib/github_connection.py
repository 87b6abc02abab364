"""The HTTP side of GitHub's REST API, for lib/github_client.py: one requests.Session per client.

Every call has a timeout; connection failures and 5xx answers are retried with backoff inside
urllib3 (a POST only when it never reached GitHub); every failure surfaces as a GitHubError in
words (lib/github_errors.py). The token travels only in the Authorization header: never in a URL, a
log record or an exception. Lists are read page by page along the Link header; with a poll cache
(lib/github_poll_cache.py), GETs are asked for conditionally, and an unchanged answer is a 304
that costs no rate limit.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.util.retry import Retry

from lib.github_errors import GitHubError, Timeout, answer_error, no_answer_reason
from lib.github_poll_cache import Changes, PollCache

log = logging.getLogger("lib.github_client")  # GitHub's lines keep the logger name they always had

API_VERSION = "2022-11-28"
PER_PAGE = 100  # GitHub's maximum page size
RETRY_STATUSES = (500, 502, 503, 504)
# Methods urllib3 may send again after the request reached GitHub (read error, 5xx answer). POST is
# left out: a POST whose answer was lost may still have created its comment, label or pull request,
# and sending it again would make a duplicate. Connect errors are retried for every method (urllib3
# does so: nothing reached GitHub). DELETE is safe to repeat: a second label removal answers 404,
# which remove_label accepts.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class _BearerAuth(AuthBase):
    """Sets the Authorization header on each request, so the token lives nowhere else."""

    def __init__(self, token: str):
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:  # keep the token out of any repr that ends up in a log
        return "<BearerAuth>"


class GitHubConnection:
    """Requests to `api_url` for repository `repo` (named in the default 404 sentence)."""

    def __init__(self, token: str, repo: str, api_url: str, *, poll_cache: Optional[PollCache], timeout: Timeout,
                 retries: int, backoff_factor: float, user_agent: str):
        self.repo = repo
        self.api_url = api_url
        self.poll_cache = poll_cache
        self.timeout = timeout
        self.retries = retries
        self.rate_limit_remaining: Optional[int] = None
        self.pages_cached = False  # the last list asked for was all 304s
        self._origin = tuple(urlsplit(self.api_url)[:2])  # (scheme, host[:port])

        retry = Retry(
            total=retries,
            backoff_factor=backoff_factor,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=IDEMPOTENT_METHODS,
            # 403/429 rate limits are answered with RateLimitError for the caller to wait out; a
            # tick must not sleep inside urllib3 for a Retry-After of minutes.
            respect_retry_after_header=False,
            # After the last retry, hand back the 5xx answer so its status makes the error message.
            raise_on_status=False,
        )
        self._session = requests.Session()
        self._session.mount("https://", HTTPAdapter(max_retries=retry))
        self._session.mount("http://", HTTPAdapter(max_retries=retry))
        self._session.auth = _BearerAuth(token)
        self._session.headers.update({
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": user_agent,
        })

    def close(self) -> None:
        self._session.close()

    def request(self, method: str, path_or_url: str, *, params: Optional[Dict[str, Any]] = None,
                json_body: Any = None, headers: Optional[Dict[str, str]] = None, accept: Sequence[int] = (),
                not_found: Optional[str] = None) -> requests.Response:
        """Send one request; answers >= 400 raise a GitHubError unless their status is in `accept`."""
        if path_or_url.startswith(("http://", "https://")):
            # A Link from GitHub's answer: follow its path on the configured host. The token goes
            # nowhere else, and an Enterprise server reached by another name than its own still pages.
            url = urlunsplit(self._origin + urlsplit(path_or_url)[2:])
        else:
            url = self.api_url + path_or_url
        try:
            response = self._session.request(method, url, params=params, json=json_body, headers=headers,
                                             timeout=self.timeout)
        except requests.RequestException as exc:
            raise GitHubError(f"Could not reach GitHub at {self.api_url}: {no_answer_reason(exc, self.timeout)}") from exc
        remaining = response.headers.get("X-RateLimit-Remaining")
        if remaining is not None and remaining.isdigit():
            self.rate_limit_remaining = int(remaining)
        log.debug("%s %s -> %s (rate limit remaining %s)", method, self._where(response.url),
                  response.status_code, self.rate_limit_remaining)
        if response.status_code < 400 or response.status_code in accept:
            return response
        raise self.error(response, method, response.url, not_found)

    def error(self, response: requests.Response, method: str, url: str,
              not_found: Optional[str] = None) -> GitHubError:
        """The GitHubError of an answer >= 400 to `method url`; `not_found`: the sentence for a 404."""
        retried = response.status_code in RETRY_STATUSES and method in IDEMPOTENT_METHODS and self.retries
        return answer_error(response, f"{method} {self._where(url)}", tries=self.retries + 1 if retried else 0,
                            not_found=not_found or f"{self.repo} not found, or the token cannot see it")

    def request_json(self, method: str, path_or_url: str, **request: Any) -> Any:
        """The JSON of `request`'s answer."""
        return self.json(self.request(method, path_or_url, **request))

    def json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise GitHubError(f"GitHub answered {response.status_code} for {self._where(response.url)}"
                              " with something that is not JSON", response.status_code) from None

    def get_all(self, path: str, params: Optional[Dict[str, Any]] = None, not_found: Optional[str] = None,
                *, cached: bool = False, items_key: Optional[str] = None) -> List[Any]:
        """Every page of a list; `items_key`: pages are objects with the list under that key."""
        items: List[Any] = []
        for page in self.pages(path, params, not_found=not_found, cached=cached):
            items.extend(page[items_key] if items_key else page)
        return items

    def pages(self, path: str, params: Optional[Dict[str, Any]] = None, *, not_found: Optional[str] = None,
              cached: bool = False) -> Iterator[Any]:
        """The JSON of each page, following the Link header; `cached` (with a poll cache): each page
        asked for conditionally, the cache written once at the end. The ETag covers the body, not the
        Link header: a full last page may have grown a next page without changing, so the page after
        a full last page is asked for too (conditionally: once known, an empty one is a free 304)."""
        url: Optional[str] = self.api_url + path
        query: Optional[Dict[str, Any]] = dict(params or {}, per_page=PER_PAGE)
        cached = self.pages_cached = cached and self.poll_cache is not None
        if cached:
            url, query = f"{url}?{urlencode(query)}", None
        changes: Changes = {}
        try:
            while url:
                if cached:
                    data, next_url, hit = self._cached_page(url, not_found, changes)
                    self.pages_cached &= hit
                    if next_url is None and isinstance(data, list) and len(data) >= PER_PAGE:
                        next_url = _next_page_url(url)
                else:
                    response = self.request("GET", url, params=query, not_found=not_found)
                    data, next_url = self.json(response), response.links.get("next", {}).get("url")
                yield data
                url, query = next_url, None  # the next link has the query
        finally:
            if changes:
                self.poll_cache.write(changes)

    def get_cached(self, path: str, params: Optional[Dict[str, Any]] = None, *,
                   not_found: Optional[str] = None) -> Any:
        """GET `path`, asked for conditionally with a poll cache (else a plain GET): GitHub validates
        every ask; an unchanged answer is a free 304 answered from the cache (a copy, the caller's)."""
        url = self.api_url + path + (f"?{urlencode(params)}" if params else "")
        if self.poll_cache is None:
            return self.json(self.request("GET", url, not_found=not_found))
        changes: Changes = {}
        data = self._cached_page(url, not_found, changes)[0]
        if changes:
            self.poll_cache.write(changes)
        return data

    def _cached_page(self, url: str, not_found: Optional[str], changes: Changes) -> Tuple[Any, Optional[str], bool]:
        """(JSON, next link, whether a 304) of `url` asked for conditionally; cache changes go to `changes`."""
        assert self.poll_cache is not None
        cached = self.poll_cache.entry(url)
        etag = cached["etag"] if cached else None
        response = self.request("GET", url, headers={"If-None-Match": etag} if etag else None, not_found=not_found)
        if response.status_code == 304 and etag:
            assert cached is not None
            return (*self.poll_cache.unchanged(url, cached, changes), True)
        data = self.json(response)
        next_url = response.links.get("next", {}).get("url")
        self.poll_cache.answered(url, cached, response.headers.get("ETag"), data, next_url, changes)
        return copy.deepcopy(data), next_url, False

    def _where(self, url: str) -> str:
        """The API path of `url`, for messages: no host, no query."""
        path = urlsplit(url).path
        prefix = urlsplit(self.api_url).path
        return path[len(prefix):] if prefix and path.startswith(prefix) else path


def _next_page_url(url: str) -> str:
    """`url` with its page parameter one more (a missing one is page 1)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    number = next((int(value) for key, value in query if key == "page" and value.isdigit()), 1)
    query = [(key, value) for key, value in query if key != "page"] + [("page", str(number + 1))]
    return urlunsplit(parts._replace(query=urlencode(query)))

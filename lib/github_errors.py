"""GitHub's failures, each a GitHubError whose message is one sentence for the user.

`GitHubError` and its kinds (a rejected token, a 404, a rate limit with the time it resets), and
the words for them: `answer_error` for an answer GitHub refused with (its message and `errors`
read out), `no_answer_reason` for a request that got no answer at all. Nothing here knows the
token: it travels only in the Authorization header (lib/github_connection.py).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple, Union

import requests
from urllib3.exceptions import (ConnectTimeoutError, MaxRetryError, NameResolutionError, NewConnectionError,
                                ProtocolError, ReadTimeoutError)

from lib.models import OrchestratorError

# GitHub's advice for a secondary rate limit that names no wait: at least a minute.
SECONDARY_LIMIT_WAIT = timedelta(seconds=60)

Timeout = Union[float, Tuple[float, float]]


class GitHubError(OrchestratorError):
    """GitHub could not be reached or refused a request. `status` is the HTTP status, if any."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class GitHubAuthError(GitHubError):
    """The token was rejected."""

    def __init__(self, message: str = "GitHub rejected the token (401)", status: Optional[int] = 401):
        super().__init__(message, status)


class GitHubNotFoundError(GitHubError):
    """404: the repository (or the item) does not exist, or the token cannot see it."""

    def __init__(self, message: str, status: Optional[int] = 404):
        super().__init__(message, status)


class RateLimitError(GitHubError):
    """GitHub's primary or secondary rate limit; nothing should be asked before `reset_at` (UTC)."""

    def __init__(self, reset_at: datetime, status: Optional[int] = 403, secondary: bool = False):
        what = "GitHub secondary rate limit hit" if secondary else "GitHub rate limit exhausted"
        super().__init__(f"{what}; rate limited until {reset_at.astimezone(timezone.utc):%H:%M} UTC", status)
        self.reset_at = reset_at


def answer_error(response: requests.Response, where: str, *, not_found: str, tries: int) -> GitHubError:
    """The GitHubError an answer >= 400 stands for. `where`: "METHOD /path"; `not_found`: the
    sentence for a 404; `tries`: how often a 5xx answer was asked for (0: not retried)."""
    status = response.status_code
    message = github_message(response)
    if status == 401:
        return GitHubAuthError()
    if status in (403, 429):
        limit = _rate_limit(response, message)
        if limit is not None:
            return limit
    if status == 404:
        return GitHubNotFoundError(not_found)
    if status >= 500:
        tried = f" (tried {tries} times)" if tries else ""
        return GitHubError(f"GitHub answered {status} {response.reason} for {where}{tried}", status)
    details = [message] + [str(e.get("message") or e.get("code") or "") for e in github_errors(response)]
    detail = "; ".join(d for d in details if d)
    if status == 403:
        return GitHubError(f"GitHub refused {where} (403): {detail or 'permission denied'}", status)
    return GitHubError(f"GitHub answered {status} for {where}: {detail or response.reason}", status)


def no_answer_reason(exc: requests.RequestException, timeout: Timeout) -> str:
    """A few words on why a request got no answer."""
    reason: Any = exc.args[0] if exc.args else exc
    if isinstance(reason, MaxRetryError):  # the last error urllib3 gave up on
        reason = reason.reason
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    if isinstance(reason, NameResolutionError):
        return "the host name does not resolve"
    if isinstance(reason, NewConnectionError):
        text = str(reason).split("Failed to establish a new connection: ")[-1]
        return re.sub(r"\[Errno -?\d+\]\s*", "", text).lower() or "no connection"
    if isinstance(reason, ConnectTimeoutError) or isinstance(exc, requests.ConnectTimeout):
        return f"no connection within {connect:g} s"
    if isinstance(reason, ReadTimeoutError) or isinstance(exc, requests.ReadTimeout):
        return f"no answer within {read:g} s"
    if isinstance(reason, ProtocolError):
        return "the connection closed without an answer"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed"
    return type(reason).__name__


def github_message(response: requests.Response) -> str:
    """The `message` of GitHub's answer ("" when it has none)."""
    try:
        data = response.json()
    except ValueError:
        return ""
    return str(data.get("message") or "") if isinstance(data, dict) else ""


def github_errors(response: requests.Response) -> List[Dict[str, Any]]:
    """The `errors` list of a 422 answer (dicts only; GitHub sometimes sends plain strings)."""
    try:
        data = response.json()
    except ValueError:
        return []
    errors = data.get("errors") if isinstance(data, dict) else None
    return [e if isinstance(e, dict) else {"message": str(e)} for e in errors or []]


def _rate_limit(response: requests.Response, message: str) -> Optional[RateLimitError]:
    """The RateLimitError a 403/429 answer stands for, or None for a plain permission refusal."""
    status = response.status_code
    now = datetime.now(timezone.utc)
    if response.headers.get("X-RateLimit-Remaining") == "0":
        reset = response.headers.get("X-RateLimit-Reset", "")
        reset_at = datetime.fromtimestamp(int(reset), timezone.utc) if reset.isdigit() else now + SECONDARY_LIMIT_WAIT
        return RateLimitError(reset_at, status)
    retry_after = response.headers.get("Retry-After")
    if retry_after is not None:
        wait = timedelta(seconds=int(retry_after)) if retry_after.isdigit() else SECONDARY_LIMIT_WAIT
        return RateLimitError(now + wait, status, secondary=True)
    if status == 429 or "rate limit" in message.lower():
        return RateLimitError(now + SECONDARY_LIMIT_WAIT, status, secondary=True)
    return None

"""The dispatcher: each event goes to every configured notifier, and none can fail or stall a run.

Modelled on borgmatic's monitoring hooks: every notifier is a `lib.events.Notifier` in a module of
its own, listed in NOTIFIERS; the dispatcher calls them all in parallel and turns any failure into
one warning line. A notification is never worth failing or stalling a run for.

Only the standard library is imported here: a notifier's module (and python-telegram-bot or
slack_sdk with it) is imported by `Notifications.from_config` only when that notifier is
configured, so an idle tick loads neither.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from lib.events import DEFAULT_TIMEOUT, Event, Notifier, NotifierError, one_line
from lib.redaction import redact

logger = logging.getLogger(__name__)

#: Notifier name -> (its module, the config attributes that must all be set to turn it on).
#: A module offers `from_config(config, timeout) -> Notifier`.
NOTIFIERS = {
    "telegram": ("lib.telegram_notifier", ("telegram_bot_token", "telegram_chat_id")),
    "slack": ("lib.slack_notifier", ("slack_bot_token", "slack_channel_id")),
}


class Notifications:
    """Sends each event to every notifier, in parallel, within `timeout` seconds in all.

    A notifier that fails costs one warning line; one that has not answered by the deadline is
    left behind on its daemon thread (its own timeouts end it soon after) and costs one warning too.
    """

    def __init__(self, notifiers: List[Notifier], timeout: float = DEFAULT_TIMEOUT, repo: str = ""):
        self.notifiers = list(notifiers)
        self.timeout = timeout
        self.repo = repo  # for the test message

    @classmethod
    def from_config(cls, config, timeout: Optional[float] = None) -> "Notifications":
        """The notifiers a Config-like object configures (attributes only; None = unset). A notifier's
        module (and its library) is imported only when it is configured."""
        if timeout is None:
            timeout = getattr(config, "notification_timeout_seconds", DEFAULT_TIMEOUT)
        notifiers = [importlib.import_module(module).from_config(config, timeout)
                     for module, needed in NOTIFIERS.values() if all(getattr(config, key, None) for key in needed)]
        return cls(notifiers, timeout=timeout, repo=getattr(config, "github_repo", "") or "")

    @property
    def names(self) -> List[str]:
        return [n.name for n in self.notifiers]

    def notify(self, event: Event) -> Dict[str, Tuple[str, str]]:
        """Send `event` everywhere. Never raises; logs one warning line per notifier that failed.
        Returns where each delivered message went that a reply can be read from: service ("telegram",
        "slack") -> (chat, message id)."""
        sent = {}
        for name, where, error in within(self.timeout, [(n.name, lambda n=n: n.send(event)) for n in self.notifiers]):
            if error is not None:
                logger.warning("%s notification for %s not sent: %s", event.label, event.issue_ref, error)
            elif where:
                sent[name.lower()] = where
        return sent

    def test_all(self) -> List[Tuple[str, Optional[str]]]:
        """Send a test message through each notifier: [(name, None if delivered else the error)]."""
        return [(name, error) for name, _, error in
                within(self.timeout, [(n.name, lambda n=n: n.send_test(self.repo)) for n in self.notifiers])]


def within(timeout: float, calls: Sequence[Tuple[str, Callable[[], Any]]]) -> List[Tuple[str, Any, Optional[str]]]:
    """Run each (name, call) on a daemon thread of its own, all within `timeout` seconds in all:
    [(name, what it returned, None)], or (name, None, the error in one line, redacted) for a call that
    raised or had not returned by the deadline (it is left behind; its own timeouts end it soon after)."""
    results: List[Any] = [None for _ in calls]
    errors: List[Optional[str]] = ["" for _ in calls]  # "" = still running

    def run(i: int, name: str, call) -> None:
        try:
            results[i] = call()
            errors[i] = None
        except NotifierError as exc:
            errors[i] = one_line(redact(str(exc)))
        except Exception as exc:  # a bug in a notifier must not cost the run
            errors[i] = one_line(redact(f"{name}: unexpected {type(exc).__name__}: {exc}"))

    threads = []
    for i, (name, call) in enumerate(calls):
        thread = threading.Thread(target=run, args=(i, name, call), name=f"notify-{name}", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [(name, results[i] if errors[i] is None else None,
             f"{name}: no answer within {timeout:g} s" if errors[i] == "" else errors[i])
            for i, (name, _) in enumerate(calls)]

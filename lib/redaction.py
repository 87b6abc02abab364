"""Secrets: one registry of what to hide, the log filter that hides it, and environments without it.

Every token the process learns (the config's, a notifier's, git's Basic-auth form of the GitHub
token) is registered once; `redact` and the log filter replace each with `***` wherever it shows up:
our log lines, a library's (a Telegram URL holds the bot token in its path), a traceback, an error
message built from git's or an API's words. `without_tokens` is the environment for code we did not
write (the agent, a repository's setup.sh and checks).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import threading
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import quote

REDACTED = "***"
#: Shorter values ("xy", "1") would turn ordinary words into *** and hide nothing worth hiding.
MIN_SECRET_LENGTH = 6

#: Environment variables that carry the orchestrator's tokens; code we did not write never gets them.
TOKEN_ENV_VARS = ("GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN",
                  "TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN")

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
#: Libraries that log request URLs at INFO (the Telegram token is in its URL path): kept at WARNING.
NOISY_LOGGERS = ("urllib3", "httpx", "httpcore", "telegram", "slack_sdk")

# Longest first, so a token that contains another is replaced whole. Replaced, never mutated, so
# readers on other threads (notifiers send in parallel) need no lock.
_secrets: Tuple[str, ...] = ()
_secrets_lock = threading.Lock()


def register_secret(*secrets: Optional[str]) -> None:
    """Remember tokens so that `redact` and the log filter hide them (also percent-encoded, as in a URL)."""
    global _secrets
    wanted = {form for secret in secrets if secret and len(secret) >= MIN_SECRET_LENGTH
              for form in (secret, quote(secret, safe=""))}
    if not wanted - set(_secrets):
        return
    with _secrets_lock:
        _secrets = tuple(sorted(set(_secrets) | wanted, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with every registered token replaced by ***."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def without_tokens(env: Mapping[str, str]) -> Dict[str, str]:
    """`env` minus the token variables and any variable whose value holds a registered token."""
    return {name: value for name, value in env.items()
            if name not in TOKEN_ENV_VARS and redact(value) == value}


class RedactingFilter(logging.Filter):
    """Rewrites any record that holds a registered token: its message and its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_filter = RedactingFilter()


def protect_loggers(prefixes: Iterable[str]) -> None:
    """Put the redacting filter on every existing logger under `prefixes`.

    A logger's filter only sees records created on that very logger, not its children's, so each
    one is covered. Libraries create their loggers at import time: call this after importing them.
    """
    prefixes = tuple(prefixes)
    names = {name for name in list(logging.root.manager.loggerDict)
             if any(name == p or name.startswith(p + ".") for p in prefixes)}
    for name in names | set(prefixes):
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)


def configure_logging(secrets: Iterable[Optional[str]] = (), log_file: Optional[Path] = None, *,
                      verbose: bool = False, stream=None, console: bool = True) -> None:
    """Log to stderr (or `stream`, unless `console` is false) and optionally to `log_file`, with
    every registered token (and `secrets`) redacted in every handler.

    The file handler is a WatchedFileHandler so logrotate can move the file under a running tick.
    """
    register_secret(*secrets)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
    handlers: List[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)] if console else []
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.handlers.WatchedFileHandler(log_file, encoding="utf-8"))
        except OSError as exc:
            print(f"warning: cannot write the log file {log_file}: {exc}", file=sys.stderr)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_filter)
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)

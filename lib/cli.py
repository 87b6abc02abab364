"""The command line of run_orchestrator.py (and issue_orchestrator.py, `python -m lib.orchestrator`):
one tick by default; --check, setting up (--init, --cron-line, --systemd) and operator commands.

Exit codes: 0 ran (or another tick holds the lock), 1 something failed, 2 config or usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

from lib.config import Config, default_config_path, print_error
from lib.models import OrchestratorError, UsageError
from lib.orchestrator import EXIT_FAILED, EXIT_OK, IssueOrchestrator
from lib.redaction import configure_logging

# --check, --init, --cron-line, --systemd, the operator commands and --worker import what they use when
# asked for: a cron tick loads only what a tick runs (tests/test_lazy_imports.py counts it).

log = logging.getLogger("lib.orchestrator")  # the tick's lines keep the logger name they always had


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Process GitHub issues labeled ready-for-claude with Claude Code (one tick).",
        epilog="Exit codes: 0 ran (or another tick holds the lock), 1 something failed, 2 config or usage.",
    )
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $ORCHESTRATOR_CONFIG, else config.json beside this script)")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and check what a first run needs, then exit")
    parser.add_argument("--notify-test", action="store_true",
                        help="with --check: send one test message to each configured notifier")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what the tick would do and change nothing")
    parser.add_argument("--wait", action="store_true",
                        help="block until the runners started end, printing progress (manual runs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    setup = parser.add_argument_group("setting up")
    setup.add_argument("--init", action="store_true",
                       help="write config.json (mode 0600) from the flags below, or ask on a terminal; then --check")
    setup.add_argument("--repo", action="append", default=[], metavar="OWNER/NAME",
                       help="with --init: a repository to work on (again for several)")
    setup.add_argument("--base-repo-path", metavar="DIR", help="with --init: the folder for the slot clones")
    setup.add_argument("--api-url", default="https://api.github.com", metavar="URL",
                       help="with --init: GitHub Enterprise's API, e.g. https://HOST/api/v3")
    for service, target in (("telegram", "chat-id"), ("slack", "channel-id")):
        setup.add_argument(f"--{service}-{target}", metavar="ID",
                           help=f"with --init: {service}.{target.replace('-', '_')}; the bot token comes from"
                                f" ${service.upper()}_BOT_TOKEN (never the command line, which others can read)")
    setup.add_argument("--no-store-token", action="store_true",
                       help="with --init: keep the GitHub token out of config.json (each tick takes it from the"
                            " environment or gh)")
    setup.add_argument("--force", action="store_true", help="with --init: replace a config.json that was edited")
    setup.add_argument("--cron-line", action="store_true", help="print the crontab line of this install")
    setup.add_argument("--systemd", action="store_true", help="print the systemd service and timer of this install")
    hosts = parser.add_argument_group("several hosts (executor.type celery; see docs/deployment.md)")
    hosts.add_argument("--worker", action="store_true",
                       help="run this host's Celery worker: it takes runs from the shared queue and its own")
    hosts.add_argument("--host", metavar="NAME",
                       help="this host's name (default: $ORCHESTRATOR_HOST, executor.host, else the machine's)")
    operate = parser.add_argument_group("operating (each says what it did in one line)")
    operate.add_argument("--pause", nargs="?", const="", metavar="UNTIL",
                         help="launch nothing new until UNTIL (30m, 2h, 1d, or an ISO time), or until --unpause")
    operate.add_argument("--unpause", action="store_true", help="end a pause (an operator's or a usage limit's)")
    operate.add_argument("--cancel", metavar="ISSUE", help="stop an issue's agent (N, or OWNER/NAME#N); the work is saved")
    operate.add_argument("--retry", metavar="ISSUE", help="queue a finished issue again (a new attempt on its branch)")
    operate.add_argument("--free-slot", type=int, metavar="I",
                         help="end what holds slot I (of --repo, default the first repository) and mark it failed")
    return parser


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    config_path = Path(args.config) if args.config else default_config_path()
    if args.host:
        os.environ["ORCHESTRATOR_HOST"] = args.host  # the runners this worker starts inherit it
    try:
        if args.notify_test and not args.check:
            raise UsageError("--notify-test goes with --check")
        if args.init:
            return _init(config_path, args)
        if args.check:
            from lib.checks import run_checks

            return run_checks(config_path, notify_test=args.notify_test)
        if args.cron_line or args.systemd:
            from lib import install

            config = Config(config_path, require_token=False)
            print(install.cron_line(config) if args.cron_line else install.systemd_units(config))
            return EXIT_OK
        config = Config(config_path)
        operation = _operation(config, args)
        if operation is not None:
            print(operation())
            return EXIT_OK
    except OrchestratorError as exc:
        return print_error(exc)

    log_file = config.folder / "orchestrator.log"
    # Under the seed README's `>> orchestrator.log 2>&1` stdout already is the log: write it once.
    configure_logging(config.secrets, log_file, verbose=args.verbose, stream=sys.stdout,
                      console=not _stdout_is(log_file))
    for warning in config.warnings:
        log.warning("config: %s", warning)
    try:
        if args.worker:
            from lib import celery_app

            return celery_app.run_worker(config, loglevel="DEBUG" if args.verbose else "INFO")
        orchestrator = IssueOrchestrator(config, dry_run=args.dry_run)
        summary = orchestrator.run()
        if args.wait and not args.dry_run and not summary.lock_held:
            orchestrator.wait_for_runners()
    except OrchestratorError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except Exception:  # a bug: the traceback goes to the log, the user gets one line
        log.exception("Unexpected error; please report it with this traceback")
        return EXIT_FAILED
    return summary.exit_code


def _operation(config: Config, args: argparse.Namespace):
    """The operator command the arguments ask for, ready to run; None for a tick."""
    asked = [(args.pause is not None, lambda operations: operations.pause(args.pause)),
             (args.unpause, lambda operations: operations.unpause()),
             (args.cancel is not None, lambda operations: operations.cancel(args.cancel)),
             (args.retry is not None, lambda operations: operations.retry(args.retry)),
             (args.free_slot is not None,
              lambda operations: operations.free_slot(args.free_slot, args.repo[0] if args.repo else None))]
    chosen = [run for wanted, run in asked if wanted]
    if len(chosen) > 1:
        raise UsageError("give one of --pause, --unpause, --cancel, --retry, --free-slot at a time")
    if not chosen:
        return None
    from lib.operations import Operations

    operations = Operations(config)
    return lambda: chosen[0](operations)


def _init(path: Path, args: argparse.Namespace) -> int:
    from lib import install

    notifiers = {}
    for service, target in (("telegram", "chat_id"), ("slack", "channel_id")):
        destination, token = getattr(args, f"{service}_{target}"), os.environ.get(f"{service.upper()}_BOT_TOKEN")
        if destination and not token:
            raise UsageError(f"--{service}-{target.replace('_', '-')} needs ${service.upper()}_BOT_TOKEN in the"
                             " environment")
        if destination:
            notifiers[service] = {"bot_token": token, target: destination}
    asks = not (args.repo and args.base_repo_path)
    return install.init(path, repos=args.repo, base_repo_path=args.base_repo_path, api_url=args.api_url,
                        notifiers=notifiers, store_token=not args.no_store_token, force=args.force,
                        ask=install.ask_on_terminal if asks else None)


def _stdout_is(path: Path) -> bool:
    """True when stdout already appends to `path` (the seed README's `>> orchestrator.log 2>&1`)."""
    try:
        out, target = os.fstat(sys.stdout.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (out.st_dev, out.st_ino) == (target.st_dev, target.st_ino)

#!/usr/bin/env python3
"""Show what the orchestrator's Claude Code agents do.

    claude_monitor.py [--config PATH] [--format text|json] [--repo OWNER/NAME]   active work, or recent runs
    claude_monitor.py monitor                                  every instance
    claude_monitor.py status --issue N                         one issue and its last messages
    claude_monitor.py history --issue N [--limit N] [--full]   its conversation
    claude_monitor.py follow --issue N                         its activity as it happens
    claude_monitor.py costs [--since 7d|DATE] [--by day|issue|repo]   cost, turns, time and outcomes
    claude_monitor.py serve [--host 127.0.0.1] [--port 8765]   the dashboard, a read-only web page
    claude_monitor.py prune [--dry-run]                        delete what is older than its retention

Exit codes: 0 done, 1 nothing to show (unknown issue, no state file, no conversation), or a prune
that could not remove everything or found a tick running, 2 bad config or usage, 130 follow
interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lib.claude_monitor import MESSAGES_SHOWN, OUTPUT_FORMATS, ClaudeMonitor
from lib.costs import DEFAULT_SINCE, GROUPINGS, cost_report
from lib.config import print_error
from lib.models import OrchestratorError, UsageError, issue_ref

EXIT_NOTHING, EXIT_INTERRUPTED = 1, 130


def build_parser() -> argparse.ArgumentParser:
    # --config and --format are accepted before and after the command; SUPPRESS keeps a value given
    # before the command from being reset by the subcommand's default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="config file or orchestrator folder (default: $ORCHESTRATOR_CONFIG,"
                             " else config.json beside this script)")
    common.add_argument("--format", choices=OUTPUT_FORMATS, default=argparse.SUPPRESS,
                        help="output format (default: text)")
    common.add_argument("--repo", metavar="OWNER/NAME", default=argparse.SUPPRESS,
                        help="only this repository's runs (when the config has several)")
    issue = argparse.ArgumentParser(add_help=False)
    issue.add_argument("--issue", required=True, metavar="N",
                       help="issue number, or OWNER/NAME#N when two repositories have that number")

    parser = argparse.ArgumentParser(
        prog="claude_monitor.py", parents=[common],
        description="Show the orchestrator's Claude Code instances and their conversations."
                    " Without a command: active work, or the most recent runs when nothing is active.",
        epilog="Exit codes: 0 done, 1 unknown issue / no state file / no conversation / a prune that could not"
               " remove everything or found a tick running, 2 bad config or usage, 130 follow interrupted.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("monitor", parents=[common], help="every active and finished instance")
    commands.add_parser("status", parents=[common, issue], help="one issue: process facts and last messages")
    history = commands.add_parser("history", parents=[common, issue], help="the conversation of one issue")
    history.add_argument("--limit", type=int, default=MESSAGES_SHOWN, metavar="N",
                         help=f"show the last N entries (default {MESSAGES_SHOWN}; 0: all)")
    history.add_argument("--full", action="store_true", help="do not shorten tool calls and tool results")
    follow = commands.add_parser("follow", parents=[common, issue],
                                 help="print a running agent's activity as it happens (Ctrl-C stops)")
    follow.add_argument("--lines", type=int, default=10, metavar="N",
                        help="start with the last N entries (default 10)")
    costs = commands.add_parser("costs", parents=[common],
                                help="cost, turns, duration and outcomes of the runs, with totals")
    costs.add_argument("--since", default=DEFAULT_SINCE, metavar="7d|DATE",
                       help="from N days ago (7d: today and the 6 days before) or a date, UTC"
                            f" (default {DEFAULT_SINCE})")
    costs.add_argument("--by", choices=GROUPINGS, default="day",
                       help="one row per day, issue or repository (default day)")
    serve = commands.add_parser("serve", parents=[common], help="serve the dashboard, a read-only web page")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; any other needs dashboard.token)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    prune = commands.add_parser("prune", parents=[common], help="delete logs, transcripts, history, backup refs and"
                                " set-aside copies older than their retention, except those of issues in use")
    prune.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    output_format = getattr(args, "format", "text")
    try:
        monitor = ClaudeMonitor(getattr(args, "config", None), output_format=output_format,
                                repo=getattr(args, "repo", None))
        if args.command == "follow":
            for message in monitor.follow(args.issue, backlog=args.lines):
                print(monitor.render(message), flush=True)
            return 0
        if args.command == "costs":
            report = cost_report(monitor.config, since=args.since, by=args.by, repo=getattr(args, "repo", None))
            print(json.dumps(report.to_dict(), indent=2) if output_format == "json" else report.to_text())
        elif args.command == "prune":
            from lib.retention import prune_command  # what deletes, only when asked for

            if getattr(args, "repo", None):
                raise UsageError("prune works on the whole install: --repo does not apply to it.")
            report = prune_command(monitor.config, dry_run=args.dry_run, claude_config_dir=monitor.claude_config_dir)
            print(json.dumps(report.to_dict(), indent=2) if output_format == "json" else report.to_text())
            return EXIT_NOTHING if report.errors else 0
        elif args.command == "serve":
            from lib.dashboard import serve  # the web server only when asked for

            return serve(monitor, host=args.host, port=args.port)
        elif args.command == "monitor":
            print(monitor.render(monitor.monitor_all()))
        elif args.command == "status":
            print(monitor.render(monitor.get_status(args.issue)))
        elif args.command == "history":
            history = monitor.history(args.issue, limit=args.limit, full=args.full)
            if history.source is None and history.host:  # the Celery mode: it ran on another host
                print(monitor.render(history), file=sys.stderr)
                return EXIT_NOTHING
            if history.source is None:
                print(f"Issue {issue_ref(history.repo, history.issue_number)}: no conversation found (no transcript and"
                      " no stream log).", file=sys.stderr)
                return EXIT_NOTHING
            print(monitor.render(history))
        else:
            print(monitor.render(monitor.overview()))
    except OrchestratorError as exc:
        return print_error(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `... | head` closed the pipe: stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())

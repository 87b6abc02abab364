#!/usr/bin/env python3
"""Run one orchestrator tick (cron calls this every 5 minutes). See --help for the options."""

import sys

from lib.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="run_orchestrator.py"))

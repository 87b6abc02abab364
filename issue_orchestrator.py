#!/usr/bin/env python3
"""Legacy entry point, kept for existing crontabs: the same as run_orchestrator.py."""

import sys

from lib.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="issue_orchestrator.py"))

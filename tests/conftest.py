"""Shared fixtures, one place: each module below defines the fixtures of one stand-in.

- claude_standin: `claude_standin` (the stand-in CLI and its transcripts), `slot_repo`
- git_fixtures: `git_isolation` (a private git config), `origin_repo` (a local bare origin)
- github_emulator: `github_emulator` (GitHub's REST API on 127.0.0.1)
- chat_standins: `telegram_api`, `slack_api`, `silent_server` (a server that never answers)
- world: `world` (a whole installation: emulator, origin, stand-in, config, real ticks)
- redis_fixtures: `redis_server` (a real redis-server), `celery_world` (a world with Celery workers)
"""

import sys

# Keep byte-code even where the environment says not to (PYTHONDONTWRITEBYTECODE): otherwise every
# pytest-xdist worker parses, rewrites and compiles each test module and lib/ again, 3 s of CPU apiece.
sys.dont_write_bytecode = False

pytest_plugins = ["claude_standin", "git_fixtures", "github_emulator", "chat_standins", "world", "redis_fixtures"]


def pytest_collection_modifyitems(items):
    """A test through real ticks (the `world` fixture) is slow: processes, git and waits of its own.
    The fast tier, `pytest -m "not slow"`, is every other test."""
    import pytest

    for item in items:
        if "world" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)

"""The sandboxes of one issue's slot (lib.sandbox): what its agent, its setup.sh and its checks may see,
write and reach, made from the config.

* Hidden whatever the configured paths show: the config file and its folder, the state, locks, logs
  and history, every repository's slot folder (the wall shows its own slot again), the credential
  places of the home folder, the user's own Claude Code config dir.
* The tools (setup.sh, the checks) get the slot, the store's view, a private /tmp under the issue's
  log folder, the repository's `agent.env` and `agent.allowed_hosts`, and a git identity.
* The agent gets the same, plus the Claude Code install (read-only), its session's config dir
  (`<issue log folder>/claude`, shown as ~/.claude: transcripts, never the user's settings or hooks),
  the model API's hosts, its own sandbox's settings (lib.sandbox.claude_settings, read-only), and
  CLAUDE_CODE_SUBPROCESS_ENV_SCRUB so that its tools do not inherit the model API key.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import List, Optional

from lib import sandbox
from lib.config import Config
from lib.repo_manager import RepoManager, issue_branch
from lib.settings import Repository
from lib.transcripts import default_claude_config_dir, session_config_dir

#: The variables Claude Code is given inside its wall on top of the tools' environment.
AGENT_ENV = {"CLAUDE_CONFIG_DIR": sandbox.CLAUDE_CONFIG_DIR, "CLAUDE_CODE_SUBPROCESS_ENV_SCRUB": "1",
             "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}


def private_paths(config: Config) -> List[Path]:
    """The orchestrator's own files and the user's credentials."""
    home = Path.home()
    return [config.path, config.folder, config.state_file, config.state_file.parent, config.log_dir,
            config.lock_file, default_claude_config_dir(), *(home / name for name in sandbox.HIDDEN_IN_HOME)]


def hidden_paths(config: Config) -> List[Path]:
    """Never visible in a wall, even under a path the config shows: the private paths and every
    repository's slot folder (a wall shows its own slot again)."""
    return [*private_paths(config), *(repository.base_repo_path for repository in config.repositories)]


class Walls:
    """The walls of one issue's slots. None from each method: the sandbox is off (sandbox.mode)."""

    def __init__(self, config: Config, repository: Repository, repos: RepoManager, issue_dir: Path,
                 issue_number: int):
        self.config = config
        self.repository = repository
        self.repos = repos
        self.issue_dir = issue_dir
        self.branch = issue_branch(issue_number)

    @property
    def enabled(self) -> bool:
        return self.config.sandbox.enabled

    def for_tools(self, slot: Path) -> Optional[sandbox.Wall]:
        """setup.sh and the checks: the slot, the store's view, the repository's hosts."""
        if not self.enabled:
            return None
        settings = self.config.sandbox
        tmp = self.issue_dir / "tmp"
        tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = {**sandbox.agent_env(os.environ, self.repository.agent), **self.repos.identity()}
        return sandbox.Wall(cwd=slot, slot=slot, writable=tuple(settings.writable_paths),
                            read_only=tuple(settings.read_only_paths), pinned=(slot / ".git",),
                            hidden=tuple(hidden_paths(self.config)), store=self.repos.sandbox_view(slot, self.branch),
                            tmp=tmp, env=env, allowed_hosts=tuple(self.repository.agent.allowed_hosts))

    def for_agent(self, slot: Path, executable: str) -> Optional[sandbox.Wall]:
        """Claude Code: the tools' wall, its install, its session's config dir, the model API."""
        wall = self.for_tools(slot)
        if wall is None:
            return None
        config_dir = session_config_dir(self.issue_dir)
        config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        hosts = self.repository.agent.allowed_hosts
        settings_file = self.issue_dir / "claude-settings.json"
        settings_file.write_text(json.dumps(sandbox.claude_settings(self._denied(slot), hosts), indent=2))
        install = Path(os.path.realpath(shutil.which(executable) or executable)).parent
        return (wall.with_read_only(install).with_env(**AGENT_ENV)
                .with_hosts(sandbox.model_hosts(self.config.sandbox, os.environ))
                .with_placed((config_dir, sandbox.CLAUDE_CONFIG_DIR, True), (settings_file, sandbox.CLAUDE_SETTINGS_PATH, False)))

    def _denied(self, slot: Path) -> List[Path]:
        """What Claude Code's permission rules refuse to read or edit: the hidden paths, the other slots,
        the store's config and hooks (the wall hides them all the same)."""
        base, name = self.repository.base_repo_path, self.repository.name
        count = max(self.repository.max_concurrent, self.config.executor.slots, 1) + 1
        others = [self.repository.slot_path(i) for i in range(count) if self.repository.slot_path(i) != slot]
        store = base / f"{name}.store.git"
        return [*private_paths(self.config), *others, store / "config", store / "hooks"]

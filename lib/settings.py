"""The settings a Config is made of: frozen dataclasses, one per section or repository, with their
defaults. `lib.config` validates the file and builds them (and exports them under its own name too).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

from lib import processes

DEFAULT_LABELS = {
    "ready": "ready-for-claude",
    "working": "claude-working",
    "completed": "claude-completed",
    "failed": "claude-failed",
    "needs_input": "claude-needs-input",
}

DEFAULT_PRIORITIES = {"priority:high": 1, "priority:low": -1}

#: A git network call (clone, fetch, push) may take this long.
NETWORK_TIMEOUT = 600
#: A check of `validate` without a timeout_seconds of its own may take this long.
CHECK_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class Labels:
    ready: str = DEFAULT_LABELS["ready"]
    working: str = DEFAULT_LABELS["working"]
    completed: str = DEFAULT_LABELS["completed"]
    failed: str = DEFAULT_LABELS["failed"]
    needs_input: Optional[str] = DEFAULT_LABELS["needs_input"]  # None: no needs-input label
    model_prefix: Optional[str] = "claude-model:"  # `claude-model:opus` runs with --model opus; None: off
    #: label -> rank: a higher rank is launched first, unlabeled issues rank 0, then oldest first
    priorities: Dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))


@dataclass(frozen=True)
class FollowUp:
    """Following the pull requests the orchestrator opened, until they are merged or closed."""

    enabled: bool = True
    trigger: str = "any"  # "any": every trusted review or comment; "mention": only those starting with a mention
    mentions: List[str] = field(default_factory=lambda: ["@claude", "/claude"])
    max_rounds: int = 5  # follow-ups for reviews and comments, per pull request
    max_ci_fixes: int = 2  # follow-ups for failing checks, per pull request (one per head commit)
    max_conflict_fixes: int = 2  # merges of the base that stopped on conflicts, per base commit
    #: "on_conflict": merge the base in when the pull request has conflicts; "always": also bring a branch
    #: that fell behind up to date (GitHub's update-branch); "never": show the state, merge nothing
    update_branch: str = "on_conflict"


@dataclass(frozen=True)
class Executor:
    """Where runners run: `local` (detached processes, processing-state.json) or `celery` (tasks on a
    Redis broker, workers on any number of hosts, the state in Redis)."""

    type: str = "local"
    broker_url: Optional[str] = None
    state_url: Optional[str] = None  # None: the broker's Redis
    queue: str = "claude-orchestrator"
    host: str = ""  # this host's name: ORCHESTRATOR_HOST, executor.host, else the machine's name
    slots: int = 1  # agents this host's worker runs at once
    heartbeat_seconds: float = 10
    lost_after_seconds: float = 60  # a runner whose heartbeat is older is lost (Redis's clock)
    connect_timeout_seconds: float = 5
    visibility_timeout_seconds: float = 0  # set from the longest run when not given

    @property
    def celery(self) -> bool:
        return self.type == "celery"

    def host_queue(self, host: str) -> str:
        """Resumes go to the host holding the session's transcript and slot."""
        return f"{self.queue}.host.{host}"

    @property
    def host_marker(self) -> str:
        """What this host's agents carry in RUN_HOST_VAR: the host within this installation (its shared state
        and queue), so that a worker that starts never takes another installation's agents on the same
        machine for ones its host left. Opaque: an agent sees it, and must not see where Redis is."""
        where = urlsplit(self.state_url or self.broker_url or "")
        place = f"{where.hostname}:{where.port}{where.path}|{self.queue}"  # the password left out
        return f"{self.host}@{hashlib.sha256(place.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Limits:
    """A spend ceiling: no new launch once this much (USD) is spent in the UTC day or month; None: none."""

    daily_usd: Optional[float] = None
    monthly_usd: Optional[float] = None

    @property
    def configured(self) -> bool:
        return self.daily_usd is not None or self.monthly_usd is not None


@dataclass(frozen=True)
class Sandbox:
    """The OS sandbox every agent process runs in (lib.sandbox): `bwrap`, or `off` only when asked."""

    mode: str = "bwrap"
    read_only_paths: List[Path] = field(default_factory=list)  # toolchains outside the system folders
    writable_paths: List[Path] = field(default_factory=list)  # e.g. a package cache shared by every run
    model_hosts: List[str] = field(default_factory=list)  # what Claude Code itself reaches: the model API

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


@dataclass(frozen=True)
class Agent:
    """What a repository lets into its sandbox: environment variables by name, and hosts its tools,
    setup.sh and checks may reach (a package registry)."""

    env: List[str] = field(default_factory=list)
    allowed_hosts: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class ClaudeSettings:
    """How Claude Code runs: the `claude` section, with a repository's overrides applied."""

    executable: str = "claude"
    timeout_seconds: float = 3600
    check_interval: float = 5
    model: Optional[str] = None
    max_turns: Optional[int] = None
    max_budget_usd: Optional[float] = None
    permission_mode: Optional[str] = None
    allowed_tools: List[str] = field(default_factory=list)
    disallowed_tools: List[str] = field(default_factory=list)
    extra_args: List[str] = field(default_factory=list)
    prompt_template: Optional[Path] = None
    idle_timeout_seconds: Optional[float] = None
    append_system_prompt: Optional[str] = None
    input_wait_hours: float = 72
    max_retries: int = 1
    inherit_tokens: bool = False
    kill_grace_seconds: float = processes.KILL_GRACE_SECONDS
    result_grace_seconds: float = 5.0


@dataclass(frozen=True)
class Repository:
    """One repository the install serves: its slots, caps, setup and Claude settings."""

    repo: str  # "owner/name"
    base_repo_path: Path
    max_concurrent: int
    claude: ClaudeSettings
    clone_url: Optional[str] = None
    base_branch: Optional[str] = None  # None: the repository's default branch
    setup_command: Optional[str] = None  # None: the clone's own setup.sh, if it has one
    validate: List[Dict[str, Any]] = field(default_factory=list)  # the checks run before work is done
    limits: Limits = Limits()  # this repository's own spend ceiling (the global one bounds them all)
    agent: Agent = Agent()  # what its sandbox lets in

    @property
    def owner(self) -> str:
        return self.repo.split("/")[0]

    @property
    def name(self) -> str:
        return self.repo.split("/")[1]

    def longest_run(self, setup_timeout_seconds: float, max_fix_rounds: int) -> float:
        """The one bound on a runner of this repository, every limit it can reach added up: per attempt
        (the first, each retry after a crash, a fresh session after a lost one) its git network calls,
        setup.sh and Claude Code's own timeout (fix rounds share it), and the checks of every round.
        A tick ends a local runner older than this; a Celery task is invisible to other workers this long."""
        attempts = self.claude.max_retries + 2
        checks = sum(check.get("timeout_seconds") or CHECK_TIMEOUT_SECONDS for check in self.validate)
        return (attempts * (2 * NETWORK_TIMEOUT + setup_timeout_seconds + self.claude.timeout_seconds)
                + checks * (max_fix_rounds + 1))

    def slot_path(self, index: int) -> Path:
        """Slot i is its own working tree: `<base_repo_path>/<repo_name>_<i>`."""
        return self.base_repo_path / f"{self.name}_{index}"


@dataclass(frozen=True)
class Retention:
    """How many days each kind of leftover is kept (None: for ever); lib.retention prunes them."""

    logs_days: Optional[float] = 30  # an issue's log folder, from its last write
    transcripts_days: Optional[float] = 30  # Claude Code's session transcripts of the slots
    history_days: Optional[float] = 365  # run-history records (the costs report reads them)
    backups_days: Optional[float] = 90  # refs/orchestrator/backup/* holding commits origin lacks
    damaged_days: Optional[float] = 30  # slots, stores and state files set aside as damaged
    full_clones_days: Optional[float] = 14  # full-clone slots of an earlier version, set aside
    orchestrator_log_days: Optional[float] = 30  # orchestrator.log, rotated daily

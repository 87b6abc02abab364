"""The OS sandbox around everything an agent runs: Claude Code and its tools, setup.sh, the checks.

Issue text is written by strangers, so the agent is treated as hostile. Each of its processes runs in a
wall built as an allow-list with bubblewrap, inside a PID namespace of its own (`unshare --pid
--mount-proc`, so that Claude Code's own bubblewrap, nested inside, may mount a fresh /proc):

* visible read-only: the system folders (/usr, /etc with its secrets masked, /opt), the paths
  `sandbox.read_only_paths` names, the Claude Code install;
* writable: the slot, what a commit writes in the store (objects, the slot's worktree metadata, a
  private view of the refs: RepoManager.sandbox_view), a private /tmp, the session's Claude config dir,
  `sandbox.writable_paths`; the slot's `.git` pointer and `commondir` stay read-only;
* not there at all: everything else - the orchestrator's config, state, logs and locks, the other
  slots and repositories, the store's config and hooks, $HOME (an empty tmpfs), the credential places
  `HIDDEN_IN_HOME` names, the other processes of the machine;
* the environment: an allow-list (`agent_env`), never a token of the orchestrator's;
* the network: a namespace of its own; the only way out is the launcher's proxy (lib.egress) to the
  model API and the hosts the repository lists (`agent.allowed_hosts`).

The launcher (lib.sandbox_launcher) is the process between a runner and the wall: it holds the proxy
and reads its plan from a pipe, so no environment value ever shows in a command line. `unavailable`
tells whether a wall can be built on this machine; where it cannot, no agent starts (fail closed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from lib import processes, spawn
from lib.models import OrchestratorError
from lib.redaction import TOKEN_ENV_VARS, redact
from lib.settings import Agent, Sandbox

#: The system folders every wall shows, read-only (a symlink, as /bin on merged-/usr systems, stays one).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
#: What of /etc stays hidden: password hashes, the host's SSH keys, private TLS keys.
HIDDEN_SYSTEM_PATHS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
                       "/etc/sudoers.d", "/etc/ssh", "/etc/ssl/private", "/etc/security/opasswd")
#: Credential places under a home folder, hidden even when a configured path shows their folder.
HIDDEN_IN_HOME = (".ssh", ".gnupg", ".netrc", ".git-credentials", ".gitconfig", ".config/git", ".config/gh",
                  ".config/hub", ".docker", ".aws", ".azure", ".config/gcloud", ".kube", ".npmrc", ".yarnrc",
                  ".pypirc", ".config/pip", ".cargo/credentials", ".cargo/credentials.toml", ".gem/credentials",
                  ".m2/settings.xml", ".gradle/gradle.properties", ".terraform.d", ".vault-token",
                  ".local/share/keyrings", ".password-store", ".config/op", ".claude", ".claude.json",
                  ".bash_history", ".zsh_history", ".python_history")
#: The environment an agent gets from the runner's, by name or prefix; nothing else passes but what a
#: repository's `agent.env` names. The model API's own variables are the agent's: they pass.
PASSED_ENV = ("PATH", "LANG", "LANGUAGE", "TERM", "TZ", "COLORTERM", "NO_COLOR", "MAX_THINKING_TOKENS",
              "API_TIMEOUT_MS", "BASH_DEFAULT_TIMEOUT_MS", "BASH_MAX_TIMEOUT_MS", "CLOUD_ML_REGION",
              "DISABLE_AUTOUPDATER", "DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING")
PASSED_PREFIXES = ("LC_", "ANTHROPIC_", "CLAUDE_CODE_", "VERTEX_REGION_")
#: The model API when neither sandbox.model_hosts nor ANTHROPIC_BASE_URL says otherwise.
DEFAULT_MODEL_HOST = "api.anthropic.com"
#: Inside the wall: its home, where the session's Claude config dir shows, where the proxy listens.
HOME = "/home/agent"
CLAUDE_CONFIG_DIR = f"{HOME}/.claude"
RUNTIME_DIR = "/run/orchestrator"
CLAUDE_SETTINGS_PATH = "/run/claude-settings.json"  # the session's own sandbox settings (--settings)
PROXY_PORT = 3128
#: The uid and gid inside (not root: bubblewrap then drops every capability).
INNER_ID = 1000
PROBE_TIMEOUT_SECONDS = 20
#: The launcher runs as `python -m lib.sandbox_launcher` from here.
PROJECT_DIR = Path(__file__).resolve().parent.parent

_probed: Dict[Tuple, Optional[str]] = {}


class SandboxUnavailable(OrchestratorError):
    """No wall can be built here; the message says what is missing and how to fix it."""


@dataclass(frozen=True)
class StoreView:
    """The object store as a wall shows it: `root`, a private folder, stands at the store's path with
    copies of its refs, HEAD and a minimal config; the real objects and the slot's worktree metadata
    are bound into it, writable, with the metadata's redirects (commondir, gitdir) read-only."""

    store: Path
    root: Path
    worktree_git_dir: Path


@dataclass(frozen=True)
class Wall:
    """What one sandboxed command may see, write and reach."""

    cwd: Path
    slot: Optional[Path] = None  # writable, with `pinned` read-only in it
    writable: Tuple[Path, ...] = ()  # configured (sandbox.writable_paths): writable at their own path
    read_only: Tuple[Path, ...] = ()
    #: Shown at another path inside: (host path, path inside, writable).
    placed: Tuple[Tuple[Path, str, bool], ...] = ()
    #: Kept read-only although under the slot (its .git pointer).
    pinned: Tuple[Path, ...] = ()
    hidden: Tuple[Path, ...] = ()
    store: Optional[StoreView] = None
    tmp: Optional[Path] = None
    env: Mapping[str, str] = field(default_factory=dict)
    allowed_hosts: Tuple[str, ...] = ()

    def with_read_only(self, *paths: Path) -> "Wall":
        return dataclasses.replace(self, read_only=(*self.read_only, *paths))

    def with_env(self, **values: str) -> "Wall":
        return dataclasses.replace(self, env={**self.env, **values})

    def with_placed(self, *placed: Tuple[Path, str, bool]) -> "Wall":
        return dataclasses.replace(self, placed=(*self.placed, *placed))

    def with_hosts(self, hosts: Iterable[str]) -> "Wall":
        return dataclasses.replace(self, allowed_hosts=tuple(dict.fromkeys((*self.allowed_hosts, *hosts))))


# ------------------------------------------------------------------------------------------------
# What passes
# ------------------------------------------------------------------------------------------------


def agent_env(base: Mapping[str, str], agent: Agent) -> Dict[str, str]:
    """The allow-listed part of `base`: PATH, locale, the model API's variables, and what `agent.env`
    names; never a token variable, nor any value that holds a registered secret."""
    named = set(agent.env)
    env = {name: value for name, value in base.items()
           if (name in PASSED_ENV or name.startswith(PASSED_PREFIXES) or name in named)
           and name not in TOKEN_ENV_VARS and redact(value) == value}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=HOME, TMPDIR="/tmp", GIT_TERMINAL_PROMPT="0")
    return env


def model_hosts(settings: Sandbox, env: Mapping[str, str]) -> List[str]:
    """Where Claude Code itself may connect: `sandbox.model_hosts`, else ANTHROPIC_BASE_URL's host (and
    port), else api.anthropic.com."""
    if settings.model_hosts:
        return list(settings.model_hosts)
    base = env.get("ANTHROPIC_BASE_URL")
    if base:
        try:
            parts = urlsplit(base)
            if parts.hostname:
                host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
                return [f"{host}:{parts.port}" if parts.port else host]
        except ValueError:
            pass
    return [DEFAULT_MODEL_HOST]


def claude_settings(denied: Sequence[Path], hosts: Sequence[str]) -> Dict:
    """Claude Code's own settings for a session, on top of the wall: its sandbox on and required (no
    retry outside it), its network limited to the repository's hosts, and reads and edits of `denied`
    refused. The wall holds whatever these settings do."""
    rules = [f"{tool}(/{path}{tail})" for path in denied for tool in ("Read", "Edit") for tail in ("", "/**")]
    return {
        "sandbox": {"enabled": True, "failIfUnavailable": True, "allowUnsandboxedCommands": False,
                    "autoAllowBashIfSandboxed": True, "network": {"allowedDomains": list(hosts)}},
        "permissions": {"deny": rules},
    }


# ------------------------------------------------------------------------------------------------
# The wall as bubblewrap arguments
# ------------------------------------------------------------------------------------------------


def _real(path: os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _under(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == folder or path.is_relative_to(folder) for folder in folders)


def _system_args() -> List[str]:
    args: List[str] = []
    for name in SYSTEM_PATHS:
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    return args


def _hide(path: Path) -> List[str]:
    if path.is_dir():
        return ["--tmpfs", str(path)]
    return ["--ro-bind", os.devnull, str(path)] if path.exists() else []


def bwrap_args(wall: Wall, runtime: Optional[Path]) -> List[str]:
    """bubblewrap's arguments for `wall` (the command follows `--`); `runtime` is the folder of the
    proxy's socket, shown at RUNTIME_DIR. Later mounts lie over earlier ones: the system, the
    configured paths, then what is hidden, then what the session needs."""
    args = ["bwrap", "--unshare-user", "--uid", str(INNER_ID), "--gid", str(INNER_ID), "--unshare-ipc",
            "--unshare-uts", "--unshare-net", "--unshare-cgroup-try", "--die-with-parent", "--cap-drop", "ALL",
            "--hostname", "sandbox", *_system_args(), "--dev", "/dev", "--bind", "/proc", "/proc",
            "--tmpfs", HOME, "--dir", "/var", "--tmpfs", "/var/tmp"]
    args += ["--bind", str(wall.tmp), "/tmp"] if wall.tmp else ["--tmpfs", "/tmp"]
    shown = [_real("/etc"), _real("/opt")]
    for option, paths in (("--ro-bind", wall.read_only), ("--bind", wall.writable)):
        for path in map(_real, paths):
            if path.exists():
                args += [option, str(path), str(path)]
                shown.append(path)
    for path in sorted({*map(Path, HIDDEN_SYSTEM_PATHS), *map(_real, wall.hidden)}):
        if _under(path, shown):
            args += _hide(path)
    if wall.store is not None:
        args += _store_args(wall.store)
    if wall.slot is not None:
        args += ["--bind", str(_real(wall.slot)), str(_real(wall.slot))]
    for path in map(_real, wall.pinned):
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    for source, inside, writable in wall.placed:
        args += ["--bind" if writable else "--ro-bind", str(source), inside]
    if runtime is not None:
        args += ["--ro-bind", str(runtime), RUNTIME_DIR]
    return args + ["--chdir", str(_real(wall.cwd))]


def _store_args(view: StoreView) -> List[str]:
    store, git_dir = _real(view.store), _real(view.worktree_git_dir)
    args = ["--bind", str(view.root), str(store), "--bind", str(store / "objects"), str(store / "objects"),
            "--bind", str(git_dir), str(git_dir)]
    for name in ("config", "HEAD"):  # the view's own copies, read-only as the real ones would be to it
        args += ["--ro-bind", str(view.root / name), str(store / name)]
    for redirect in ("commondir", "gitdir"):  # where git outside the wall looks: never the agent's to move
        if (git_dir / redirect).exists():
            args += ["--ro-bind", str(git_dir / redirect), str(git_dir / redirect)]
    return args


def _loopback_ports(hosts: Sequence[str]) -> List[int]:
    """Ports of allowed hosts on this machine's loopback (a local model gateway, a test server): the
    wall's own 127.0.0.1 is not the machine's, so each gets a bridge through the proxy at the same port."""
    ports = []
    for host in hosts:
        name, _, port = host.rpartition(":")
        if name in ("127.0.0.1", "localhost") and port.isdigit() and int(port) != PROXY_PORT:
            ports.append(int(port))
    return ports


def _inner_command(command: Sequence[str], hosts: Sequence[str]) -> List[str]:
    """The command, once socat listens on 127.0.0.1:PROXY_PORT for the proxy's socket (and on each
    loopback port of the allow-list, tunnelled through the proxy by CONNECT)."""
    if not hosts:
        return list(command)
    bridges = [f"socat TCP-LISTEN:{PROXY_PORT},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{RUNTIME_DIR}/egress.sock"]
    ports = [PROXY_PORT, *_loopback_ports(hosts)]
    bridges += [f"socat TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"
                f" PROXY:127.0.0.1:127.0.0.1:{port},proxyport={PROXY_PORT}" for port in ports[1:]]
    listening = " ".join(f"0100007F:{port:04X}" for port in ports)
    script = ("".join(f"{bridge} 2>/dev/null & " for bridge in bridges) +
              f"for port in {listening}; do i=0; while [ $i -lt 500 ] && ! grep -q \"$port 00000000:0000 0A\""
              ' /proc/net/tcp; do sleep 0.01; i=$((i+1)); done; done; exec "$@"')
    return ["/bin/sh", "-c", script, "sandbox", *command]


def proxy_env() -> Dict[str, str]:
    url = f"http://127.0.0.1:{PROXY_PORT}"
    return {"HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url,
            "NO_PROXY": "localhost,127.0.0.1,::1", "no_proxy": "localhost,127.0.0.1,::1"}


def plan(wall: Wall, command: Sequence[str]) -> Dict:
    """What the launcher is told: the command line that builds the wall, the environment inside, and
    the proxy's socket folder and allow-list (none when nothing may be reached)."""
    runtime = Path(tempfile.mkdtemp(prefix="orch-sbx-")) if wall.allowed_hosts else None
    env = dict(wall.env)
    if runtime is not None:
        env.update(proxy_env())
    argv = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--kill-child", "--",
            *bwrap_args(wall, runtime), "--", *_inner_command(command, wall.allowed_hosts)]
    return {"argv": argv, "env": env, "runtime": str(runtime) if runtime else None,
            "allowed_hosts": list(wall.allowed_hosts)}


def launch(command: Sequence[str], *, wall: Optional[Wall], cwd: os.PathLike, env: Mapping[str, str],
           **start_args) -> subprocess.Popen:
    """Start `command` inside `wall` through the launcher (inside, the wall's environment replaces
    `env`, keeping only the run marker), or as it is when `wall` is None. `start_args` are
    spawn.start's."""
    if wall is None:
        return spawn.start(command, cwd=cwd, env=env, **start_args)
    marker = {name: env[name] for name in (processes.SESSION_MARKER_VAR, processes.RUN_HOST_VAR) if name in env}
    data = json.dumps(plan(wall.with_env(**marker), command)).encode()
    read_end, write_end = os.pipe()
    try:
        if len(data) > 60_000:  # a pipe's buffer holds it whole, so the write never waits on the reader
            raise SandboxUnavailable("The sandbox's plan is too large (over 60 kB); list fewer paths or hosts.")
        os.write(write_end, data)
        os.close(write_end)
        write_end = -1
        launcher_env = {"PATH": env.get("PATH", os.defpath), "LANG": env.get("LANG", "C.UTF-8"), **marker}
        return spawn.start([sys.executable, "-E", "-s", "-m", "lib.sandbox_launcher", str(read_end)],
                               cwd=PROJECT_DIR, env=launcher_env, pass_fds=(read_end,), **start_args)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


# ------------------------------------------------------------------------------------------------
# Can a wall be built here?
# ------------------------------------------------------------------------------------------------

FIX_PACKAGES = "install bubblewrap and socat (Debian/Ubuntu: apt-get install bubblewrap socat)"


def unavailable(settings: Sandbox) -> Optional[str]:
    """None when walls can be built on this machine (or the sandbox is off); else one sentence: what is
    missing and the fix. Asked once per process: a real wall is started around `true`."""
    if not settings.enabled:
        return None
    key = (sys.platform, os.environ.get("PATH"))
    if key not in _probed:
        _probed[key] = _probe()
    return _probed[key]


def _probe() -> Optional[str]:
    if not sys.platform.startswith("linux"):
        return ("The agent sandbox needs Linux (bubblewrap and user namespaces); run the orchestrator on Linux,"
                ' or set "sandbox": {"mode": "off"} to run agents unsandboxed.')
    missing = [tool for tool in ("bwrap", "socat", "unshare") if shutil.which(tool) is None]
    if missing:
        return f"The agent sandbox needs {', '.join(missing)}, not found on PATH: {FIX_PACKAGES}."
    wall = Wall(cwd=Path("/"))
    command = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--kill-child", "--",
               *bwrap_args(wall, None), "--", "true"]
    try:
        done = processes.run(command, cwd="/", env={"PATH": os.environ.get("PATH", os.defpath)},
                             timeout=PROBE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return f"The agent sandbox did not start within {PROBE_TIMEOUT_SECONDS} s (bubblewrap hung)."
    if done.returncode == 0:
        return None
    said = (done.stderr or "").strip().splitlines()
    return f"The agent sandbox cannot start here: {said[-1] if said else f'exit {done.returncode}'}. {_userns_fix()}"


def _read_sysctl(name: str) -> Optional[str]:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def _userns_fix() -> str:
    """How to allow unprivileged user namespaces, by what turned them off."""
    if _read_sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor restricts unprivileged user namespaces (Ubuntu 23.10 and later): allow them for bwrap with"
                " an AppArmor profile (docs/security.md), or run"
                " `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`.")
    if _read_sysctl("kernel.unprivileged_userns_clone") == "0":
        return "Unprivileged user namespaces are off: run `sysctl -w kernel.unprivileged_userns_clone=1`."
    if _read_sysctl("user.max_user_namespaces") == "0":
        return "User namespaces are off: run `sysctl -w user.max_user_namespaces=15000`."
    return ("User namespaces are not allowed here (a container without them?): allow them (docker: --security-opt"
            ' seccomp=unconfined --security-opt apparmor=unconfined), or set "sandbox": {"mode": "off"}.')

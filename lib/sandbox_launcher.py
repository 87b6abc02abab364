"""`python -E -s -m lib.sandbox_launcher FD`: the process between a runner and an agent's wall.

It reads its plan (lib.sandbox.plan: the unshare + bubblewrap command line, the environment inside,
the allow-list) as JSON from the pipe FD, so no environment value shows in any command line; serves
the egress proxy (lib.egress) on a socket in the plan's runtime folder, which the wall shows at
/run/orchestrator; starts the wall, which dies with it; and exits as the wall's command did. A signal
to the process group reaches the command inside as well: the launcher lets it end and then ends
too. It imports only the standard library, lib.egress and lib.spawn, so it starts fast.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Optional

from lib.egress import EgressProxy
from lib.spawn import start


def _read_plan(fd: int) -> dict:
    with os.fdopen(fd, "rb") as pipe:
        return json.loads(pipe.read())


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list) -> int:
    plan = _read_plan(int(argv[1]))
    runtime: Optional[str] = plan.get("runtime")
    proxy = None
    try:
        if runtime:
            proxy = EgressProxy(os.path.join(runtime, "egress.sock"), plan["allowed_hosts"], _say)
            proxy.start()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            # The process group's signal reached the command inside too: wait for it to end.
            signal.signal(signum, lambda *_: None)
        try:
            # The wall (unshare, then bubblewrap with --kill-child and --die-with-parent) ends with its
            # launcher, which holds its only way out; it keeps the launcher's stdin, stdout and stderr.
            wall = start(plan["argv"], cwd="/", env=plan["env"], stdin=0, stdout=1, stderr=2, own_session=False,
                         die_with_parent=True)
        except OSError as exc:
            _say(f"sandbox: could not start {plan['argv'][0]}: {exc.strerror}")
            return 127
        code = wall.wait()
        return code if code >= 0 else 128 - code  # unshare itself killed: as a shell reports it
    finally:
        if proxy is not None:
            proxy.close()
        if runtime:  # the folder holds the socket only
            for remove, path in ((os.remove, os.path.join(runtime, "egress.sock")), (os.rmdir, runtime)):
                try:
                    remove(path)
                except OSError:
                    pass


if __name__ == "__main__":
    sys.exit(main(sys.argv))

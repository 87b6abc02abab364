#!/usr/bin/env bash
# Idempotent setup: a virtualenv with the requirements. `run_orchestrator.py --init` writes config.json.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "setup.sh: Python 3.10 or newer is needed, as python-telegram-bot 22 requires it ($PYTHON: $("$PYTHON" --version 2>&1 || echo 'not found'))" >&2
    exit 1
fi

if [ ! -x venv/bin/python ]; then
    echo "Creating venv/ ..."
    "$PYTHON" -m venv venv
fi
# Reinstall only when requirements.txt changed since the last successful install.
stamp=venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "Installing requirements.txt ..."
    venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
    echo "$want" > "$stamp"
fi

# The agent sandbox (bubblewrap, socat): installed where this user can, else named; --check says whether it works.
missing=""
for tool in bwrap socat; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing bubblewrap and socat (the agent sandbox) ..."
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap socat >/dev/null) \
            || echo "setup.sh: could not install bubblewrap and socat; agents will not start until they are" >&2
    else
        echo "setup.sh: the agent sandbox needs bubblewrap and socat (missing:$missing); install them," \
             "e.g. sudo apt-get install bubblewrap socat (agents do not start without them)" >&2
    fi
fi

echo "Setup done. Next, write config.json (mode 0600) and check it:"
echo "    ./venv/bin/python run_orchestrator.py --init --repo OWNER/NAME --base-repo-path DIR"
echo "then add the tick to cron, with the line that prints:"
echo "    ./venv/bin/python run_orchestrator.py --cron-line"

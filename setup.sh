#!/usr/bin/env bash
# Idempotent setup: a virtualenv with the requirements, and a private config.json to fill in.
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

if [ ! -f config.json ]; then
    (umask 077 && cp config.example.json config.json)
    chmod 600 config.json
    echo "Created config.json from config.example.json (mode 0600)."
fi

echo "Setup done. Next: edit config.json (or export GITHUB_TOKEN), then run"
echo "    ./venv/bin/python run_orchestrator.py --check"

"""What a hostile agent tries from inside its sandbox: run by the stand-in's `hunt` scenario as its Bash
tool, as an injected issue would make the real agent do. Standard library only.

It reads its orders from the JSON file $CLAUDE_STANDIN_HUNT names: the secrets to look for, the paths
to read and to write, the hosts to reach (which must fail) and the one to reach (which must work), and
writes what it found to the file the orders name as `out`. Every list in the report must stay empty.
"""

import json
import os
import socket
import sys
import urllib.error
import urllib.request


def found_secrets(text, secrets):
    return [secret[:4] + "..." for secret in secrets if secret and secret in text]


def scan_processes(secrets):
    """Every process this sandbox can see: its environment and command line, for secrets."""
    leaks, seen = [], []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for part in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{part}", "rb") as handle:
                    text = handle.read().decode("utf-8", "replace")
            except OSError:
                continue
            leaks += [f"/proc/{pid}/{part}: {hit}" for hit in found_secrets(text, secrets)]
            if part == "cmdline":
                seen.append(text.replace("\0", " ").strip()[:200])
    return leaks, seen


def try_read(path):
    try:
        if os.path.isdir(path):
            return sorted(os.listdir(path)) or None  # an empty folder (a mask) gives nothing away
        with open(path, "rb") as handle:
            return handle.read(4096).decode("utf-8", "replace")
    except OSError:
        return None


def try_write(path):
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("written from the sandbox\n")
        return True
    except OSError:
        return False


def fetch(url, proxied):
    """The status `url` answers, through the sandbox's proxy (even for a name NO_PROXY lists) or
    directly; None when nothing answers."""
    proxy = os.environ.get("HTTP_PROXY")
    if proxied and not proxy:
        return None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy} if proxied else {}))
    try:
        with opener.open(url, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def connect(host, port):
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def main():
    with open(os.environ["CLAUDE_STANDIN_HUNT"], encoding="utf-8") as handle:
        orders = json.load(handle)
    secrets = orders["secrets"]
    report = {}
    report["process_leaks"], report["processes"] = scan_processes(secrets)
    report["env_leaks"] = found_secrets("\n".join(f"{k}={v}" for k, v in os.environ.items()), secrets)
    report["token_variables"] = [name for name in ("GITHUB_TOKEN", "GH_TOKEN", "TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN")
                                 if name in os.environ]
    report["readable"] = {}
    for path in orders["read"]:
        content = try_read(path)
        if content is not None and (not isinstance(content, str) or not orders.get("allowed_content", {}).get(path)
                                    or orders["allowed_content"][path] not in content):
            report["readable"][path] = content if isinstance(content, list) else content[:200]
    report["file_leaks"] = []
    for path in orders.get("grep", []):
        content = try_read(path)
        if isinstance(content, str):
            report["file_leaks"] += [f"{path}: {hit}" for hit in found_secrets(content, secrets)]
    report["writable"] = [path for path in orders["write"] if try_write(path)]
    report["reached"] = []
    for url in orders["denied_urls"]:
        for proxied in (True, False):
            status = fetch(url, proxied)
            if status is not None and status != 403:
                report["reached"].append(f"{url} ({'through the proxy' if proxied else 'directly'}): {status}")
    for host, port in orders.get("denied_sockets", []):
        if connect(host, port):
            report["reached"].append(f"{host}:{port} (a plain connection)")
    report["allowed_status"] = [fetch(orders["allowed_url"], proxied) for proxied in (True, False)]
    report["parent_listing"] = sorted(os.listdir(os.path.dirname(os.getcwd())))
    with open(orders["out"], "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    print("hunt done")


if __name__ == "__main__":
    sys.exit(main())

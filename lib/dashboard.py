"""`claude_monitor.py serve`: the dashboard, a read-only web page of what the monitor knows.

The standard library's ThreadingHTTPServer serves it: a page refreshed every few seconds, a run
page with its conversation, and the JSON they are made of. No dependency and no build step: the
HTML is written here, the charts are inline SVG, and the pages carry no script at all (the
Content-Security-Policy forbids any), so nothing a run wrote can become code.

Everything shown goes through `show` (html.escape after the secrets are redacted): an issue title
or an agent's message is text, never markup. No page shows a config value other than repository
names and slot folders.

Access: on a loopback address anyone on this machine may look, as with the monitor itself (and a
Host header that is not loopback is refused, so a web page elsewhere cannot reach it through DNS
rebinding). Anywhere else a token is required (`dashboard.token`, or ORCHESTRATOR_DASHBOARD_TOKEN):
in an `Authorization: Bearer` header, or in an HttpOnly, SameSite=Strict cookie that the login form
sets (it holds an HMAC of the token, not the token). A token in the URL counts for nothing: URLs end
up in logs and histories. Once a token is configured it is asked for on loopback too.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import json
import re
import sys
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, quote, urlsplit

from lib.claude_monitor import ClaudeMonitor
from lib.costs import CostFigures, CostReport, parse_since
from lib.ledger import Record, RunHistory
from lib.models import (ACTIVE_STATUSES, IssueState, Message, OrchestratorError, IssueStatus, StateError, UsageError,
                        clock, format_cost, format_duration, issue_ref, parse_iso, seconds_between, utc_now_iso)
from lib.monitor_text import message_to_text
from lib.pull_upkeep import upkeep_view
from lib.redaction import redact

REFRESH_SECONDS = 10
RECENT_RUNS = 20
CHART_DAYS = 14
#: A run page shows the last entries of its conversation (of a huge one, read from its end).
RUN_PAGE_MESSAGES = 200
SESSION_COOKIE = "dashboard_session"
MAX_FORM_BYTES = 4096
_RUN_PATH = re.compile(r"^/(api/)?run/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)/(\d+)$")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self';"
                               " base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def show(value: Any) -> str:
    """A value as HTML text: secrets redacted, then escaped (quotes too, so it may go in an attribute)."""
    return html.escape(redact("" if value is None else str(value)), quote=True)


def is_loopback(host: str) -> bool:
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return False


def session_value(token: str) -> str:
    """What the login cookie holds: proof of the token, not the token."""
    return hmac.new(token.encode("utf-8"), b"claude-monitor dashboard session", hashlib.sha256).hexdigest()


# ------------------------------------------------------------------------------------------------
# The data: what the pages show and the JSON endpoints return
# ------------------------------------------------------------------------------------------------


class DashboardData:
    """Reads the monitor and the run history; every figure the pages show comes from here."""

    def __init__(self, monitor: ClaudeMonitor):
        self.monitor = monitor
        self.history = RunHistory.for_config(monitor.config)

    def run_figures(self, records: List[Record], entry: IssueState) -> CostFigures:
        """The invocations this run (this attempt, since it started: a follow-up starts anew) finished."""
        started = parse_iso(entry.start_time)
        figures = CostFigures()
        for record in records:
            if (record.get("type") == "invocation" and record.get("repo") == entry.repo
                    and record.get("issue") == entry.issue_number and record.get("attempt") == entry.attempt
                    and (started is None or parse_iso(record["at"]) >= started)):
                figures.add(record)
        return figures

    def overview(self) -> Dict[str, Any]:
        states = self.monitor.load_states()
        by_key = {(entry.repo, entry.issue_number): entry for entry in states.values()}
        instances = {(i.repo, i.issue_number): i for i in self.monitor.get_active_instances()
                     if i.issue_number is not None}
        finished = [by_key[(i.repo, i.issue_number)] for i in self.monitor.recent_finished(RECENT_RUNS)]
        shown = [entry for entry in states.values() if not entry.is_finished] + finished
        # Back to the start of the oldest run shown: the history's end only, however long it is.
        records = self.history.read(min((parse_iso(e.start_time) for e in shown if e.start_time),
                                        default=datetime.now(timezone.utc)))

        def run(entry: IssueState) -> Dict[str, Any]:
            figures = self.run_figures(records, entry)
            return {"repo": entry.repo, "issue": entry.issue_number, "title": entry.title, "status": str(entry.status),
                    "cost_usd": round(figures.cost_usd, 6) if figures.invocations else None,
                    "unknown_cost": figures.unknown_cost, "page": run_page_path(entry.repo, entry.issue_number)}

        slots = []
        for repository, index, host, holder in self.slot_holders(states):
            slot: Dict[str, Any] = {"repo": repository.repo, "slot": index, "host": host,
                                    "cwd": None if host else str(repository.slot_path(index)), "run": None}
            if holder is not None:
                instance = instances.get((holder.repo, holder.issue_number))
                slot["run"] = {**run(holder), "status": str(instance.status if instance else holder.status),
                               "runtime_seconds": instance.runtime_seconds if instance else None,
                               "last_activity": instance.last_activity if instance else holder.last_activity}
            slots.append(slot)
        waiting = sorted((e for e in states.values() if e.status == IssueStatus.WAITING),
                         key=lambda e: e.not_before or "")
        queue = [{**run(e), "not_before": e.not_before, "reason": e.error} for e in waiting]
        questions = [{**run(e), "question": e.question, "asked": e.end_time}
                     for e in states.values() if e.status == IssueStatus.NEEDS_INPUT]
        recent = [{**run(entry), "pr_url": entry.pr_url, "ended": entry.end_time,
                   "duration_seconds": seconds_between(entry.start_time, entry.end_time), "error": entry.error}
                  for entry in finished]
        settings = self.monitor.config.follow_up
        followed = [{"repo": e.repo, "issue": e.issue_number, "title": e.title, "pr_url": e.pr_url,
                     "page": run_page_path(e.repo, e.issue_number), **(upkeep_view(e, settings) or {})}
                    for e in sorted(states.values(), key=lambda e: (e.repo or "", e.issue_number)) if e.following]
        return {"generated": utc_now_iso(), "slots": slots, "queue": queue, "questions": questions,
                "recent": recent, "followed": followed}

    def slot_holders(self, states: Dict[Any, IssueState]):
        """(repository, slot index, host, the active entry or None): every slot of this machine; in the
        Celery mode the slots of every host that hold a run (each host has its own slot 0)."""
        repositories = [r for r in self.monitor.config.repositories
                        if self.monitor.repo is None or r.repo == self.monitor.repo]
        active = [e for e in states.values() if e.status in ACTIVE_STATUSES and e.slot is not None]
        if self.monitor.config.executor.celery:
            by_name = {r.repo: r for r in repositories}
            return [(by_name[e.repo], e.slot, e.host, e) for e in
                    sorted(active, key=lambda e: (e.host or "", e.repo or "", e.slot)) if e.repo in by_name]
        return [(repository, index, None, next((e for e in active if e.repo == repository.repo
                                                 and e.slot == index), None))
                for repository in repositories for index in range(repository.max_concurrent)]

    def costs(self, since: str = f"{CHART_DAYS}d") -> CostReport:
        now = datetime.now(timezone.utc)
        start = parse_since(since, now)
        return CostReport.build(self.history.read(start), since=start, until=now, by="day", repo=self.monitor.repo)

    def run(self, repo: str, number: int) -> Dict[str, Any]:
        history = self.monitor.history(issue_ref(repo, number), limit=RUN_PAGE_MESSAGES)
        entry = self.monitor.entry(issue_ref(repo, number))
        figures = self.run_figures(self.history.read(parse_iso(entry.start_time)), entry)
        return {"repo": entry.repo, "issue": entry.issue_number, "title": entry.title, "status": str(entry.status),
                "pr_url": entry.pr_url, "error": entry.error, "question": entry.question,
                "start_time": entry.start_time, "end_time": entry.end_time,
                "cost_usd": round(figures.cost_usd, 6) if figures.invocations else None,
                "unknown_cost": figures.unknown_cost, "history": history.to_dict()}


def run_page_path(repo: Optional[str], number: int) -> str:
    return f"/run/{quote(repo or '', safe='/')}/{number}"


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f24;background:#fafbfc}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f3f4f6}
.muted{color:#6a737d}.charts{display:flex;gap:2em;flex-wrap:wrap}.charts figure{margin:0}pre{white-space:pre-wrap;margin:0}
.msg{border-left:3px solid #d0d7de;padding:2px 8px;margin:6px 0;background:#fff}
.assistant{border-color:#0969da}.user{border-color:#1a7f37}.error{border-color:#cf222e}
"""


def page(title: str, body: str, refresh: bool = True) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}<title>{show(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def _money(cost: Optional[float], unknown: int = 0) -> str:
    text = format_cost(cost) if cost is not None else "?"
    return text + (f" (+{unknown} unknown)" if unknown and cost is not None else "")


def _link(run: Dict[str, Any]) -> str:
    return f'<a href="{show(run["page"])}">{show(issue_ref(run["repo"], run["issue"]))}</a>'


def _pull_link(url: Optional[str]) -> str:
    return f'<a href="{show(url)}">{show(url)}</a>' if str(url or "").startswith("https://") else show(url or "")


def _table(headers: List[str], rows: List[List[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{show(empty)}</p>'
    head = "".join(f"<th>{show(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def bar_chart(title: str, bars: List[Tuple[str, float, str, str]], width: int = 520, height: int = 140) -> str:
    """Inline SVG: one bar per (label, value, the value as text, what its tooltip says)."""
    top = max((value for _, value, _, _ in bars), default=0) or 1
    step = (width - 24) / max(len(bars), 4)  # room at the right for the last label
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height + 44}"'
             f' viewBox="0 0 {width} {height + 44}"><title>{show(title)}</title>']
    for i, (label, value, figure, tip) in enumerate(bars):
        tall = value / top * height
        x, middle = i * step + step * 0.15, i * step + step * 0.5
        parts.append(f'<rect x="{x:.1f}" y="{height - tall + 16:.1f}" width="{step * 0.7:.1f}" height="{tall:.1f}"'
                     f' fill="#0969da"><title>{show(tip)}</title></rect>')
        if value:
            parts.append(f'<text x="{middle:.1f}" y="{height - tall + 12:.1f}" font-size="10" text-anchor="middle">'
                         f"{show(figure)}</text>")
        parts.append(f'<text x="{middle:.1f}" y="{height + 32}" font-size="10" text-anchor="middle">'
                     f"{show(label)}</text>")
    if not bars:
        parts.append(f'<text x="10" y="{height / 2:.0f}" font-size="12">nothing recorded yet</text>')
    return "".join(parts) + "</svg>"


def days_of(costs: CostReport) -> List[Tuple[str, float, str, str]]:
    """Every day of the report, those without a run too, so that the bars keep their place."""
    rows = {row.key: row for row in costs.rows}
    day, last, bars = costs.since.date(), costs.until.date(), []
    while day <= last:
        row = rows.get(day.isoformat()) or CostFigures(key=day.isoformat())
        bars.append((day.strftime("%m-%d"), row.cost_usd, format_cost(row.cost_usd) if row.cost_usd else "",
                     f"{row.key}: {format_cost(row.cost_usd)}, {row.invocations} invocation(s)"))
        day += timedelta(days=1)
    return bars


def overview_html(data: Dict[str, Any], costs: CostReport) -> str:
    slots = [[show(f'{s["repo"]} slot {s["slot"]}' + (f' on {s["host"]}' if s.get("host") else "")),
              _link(s["run"]) if s["run"] else '<span class="muted">free</span>',
              show(s["run"]["title"]) if s["run"] else "", show(s["run"]["status"]) if s["run"] else "",
              show(format_duration(s["run"]["runtime_seconds"])) if s["run"] and s["run"]["runtime_seconds"] is not None
              else "", show(clock(s["run"]["last_activity"])) if s["run"] else "",
              show(_money(s["run"]["cost_usd"], s["run"]["unknown_cost"])) if s["run"] else ""]
             for s in data["slots"]]
    queue = [[_link(q), show(q["title"]), show(clock(q["not_before"])), show(q["reason"])] for q in data["queue"]]
    questions = [[_link(q), show(q["title"]), f'<pre>{show(q["question"])}</pre>', show(clock(q["asked"]))]
                 for q in data["questions"]]
    recent = [[_link(r), show(r["title"]), show(r["status"]), _pull_link(r["pr_url"]),
               show(_money(r["cost_usd"], r["unknown_cost"])),
               show(format_duration(r["duration_seconds"])) if r["duration_seconds"] is not None else "",
               show(clock(r["ended"]))] for r in data["recent"]]
    followed = [[_link(f), _pull_link(f["pr_url"]), show({True: "yes", False: "no: conflicts"}.get(
        f.get("mergeable"), "not known yet")), show(f.get("behind_by") if f.get("behind_by") is not None else "?"),
        show(f'{f.get("conflict_fixes_used", 0)} of {f.get("max_conflict_fixes")}')] for f in data["followed"]]
    outcomes = [(status, count, str(count), f"{status}: {count} run(s)")
                for status, count in sorted(costs.total.outcomes.items())]
    body = (f'<h1>Claude Code agents</h1><p class="muted">{show(clock(data["generated"]))} · refreshes every'
            f' {REFRESH_SECONDS} s · <a href="/api/overview">JSON</a></p>'
            "<h2>Slots</h2>" + _table(["slot", "issue", "title", "status", "runtime", "last activity", "cost"], slots,
                                      "No slot configured.")
            + "<h2>Queue</h2>" + _table(["issue", "title", "not before", "why"], queue, "Nothing waits for a launch.")
            + "<h2>Questions waiting for an answer</h2>"
            + _table(["issue", "title", "question", "asked"], questions, "No question waits.")
            + "<h2>Followed pull requests</h2>"
            + _table(["issue", "pull request", "mergeable", "behind base by", "conflict fixes (this base commit)"],
                     followed, "No pull request is followed.")
            + "<h2>Recent runs</h2>"
            + _table(["issue", "title", "outcome", "pull request", "cost", "duration", "ended"], recent,
                     "No run finished yet.")
            + f'<h2>The last {CHART_DAYS} days</h2><p>{show(_money(costs.total.cost_usd, costs.total.unknown_cost))}'
              f' in {costs.total.invocations} invocation(s) · <a href="/api/costs">JSON</a></p><div class="charts">'
            + f"<figure>{bar_chart('Cost per day (USD)', days_of(costs))}<figcaption>Cost per day</figcaption></figure>"
            + f"<figure>{bar_chart('Runs per outcome', outcomes)}<figcaption>Runs per outcome</figcaption></figure>"
            + "</div>")
    return page("Claude Code agents", body)


def run_html(run: Dict[str, Any]) -> str:
    history = run["history"]
    shown = len(history["messages"])
    count = history["message_count"]
    lines = "".join(f'<div class="msg {show(m["role"])}{" error" if m["is_error"] else ""}"><pre>'
                    f'{show(message_to_text(Message.from_dict(m)))}</pre></div>' for m in history["messages"])
    facts = [["status", show(run["status"])], ["started", show(clock(run["start_time"]))],
             ["ended", show(clock(run["end_time"]) if run["end_time"] else "")],
             ["cost", show(_money(run["cost_usd"], run["unknown_cost"]))], ["pull request", show(run["pr_url"])],
             ["question", show(run["question"])], ["error", show(run["error"])],
             ["session", show(history["session_id"])], ["conversation", show(history["conversation_path"])]]
    json_path = "/api" + run_page_path(run["repo"], run["issue"])
    body = (f'<p><a href="/">← all agents</a> · <a href="{show(json_path)}">JSON</a></p>'
            f'<h1>{show(issue_ref(run["repo"], run["issue"]))}: {show(run["title"])}</h1>'
            + _table(["", ""], [row for row in facts if row[1]], "")
            + f"<h2>Conversation</h2><p class=\"muted\">{show(count if count is not None else 'many')} messages"
              f"{show(f'; the last {shown} entries follow') if history['truncated'] else ''}</p>"
            + (lines or '<p class="muted">No conversation recorded (no transcript and no stream log).</p>'))
    return page(issue_ref(run["repo"], run["issue"]), body, refresh=IssueStatus(run["status"]) in ACTIVE_STATUSES)


def login_html(problem: Optional[str] = None) -> str:
    note = f"<p>{show(problem)}</p>" if problem else ""
    return page("Log in", f"<h1>Claude Code agents</h1>{note}<form method=\"post\" action=\"/login\">"
                          '<label>Token <input type="password" name="token" autocomplete="current-password"></label>'
                          ' <button type="submit">Log in</button></form>', refresh=False)


# ------------------------------------------------------------------------------------------------
# Serving
# ------------------------------------------------------------------------------------------------


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], data: DashboardData, token: Optional[str]):
        self.data = data
        self.token = token
        self.session = session_value(token) if token else None
        super().__init__(address, DashboardHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "claude-monitor"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a read-only page's requests are not worth a line each."""

    # --- answers ------------------------------------------------------------------------------

    def send(self, status: int, body: str, content_type: str, headers: Optional[Dict[str, str]] = None) -> None:
        payload = body.encode("utf-8")
        self.send_response(status)
        for name, value in {**SECURITY_HEADERS, "Content-Type": content_type, **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_json(self, status: int, value: Any) -> None:
        self.send(status, redact(json.dumps(value, ensure_ascii=False, indent=2)), "application/json; charset=utf-8")

    def send_html(self, status: int, body: str, headers: Optional[Dict[str, str]] = None) -> None:
        self.send(status, body, "text/html; charset=utf-8", headers)

    def refuse(self, status: int, why: str, path: str) -> None:
        if path.startswith("/api/"):
            self.send_json(status, {"error": why})
        elif status == HTTPStatus.UNAUTHORIZED:
            self.send_html(status, login_html(why))
        else:
            self.send_html(status, page("Error", f"<p>{show(why)}</p>", refresh=False))

    # --- access -------------------------------------------------------------------------------

    def allowed(self) -> Optional[str]:
        """None when the request may be answered, else why not."""
        if self.server.token is None:
            host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
            return None if is_loopback(host) else "This dashboard answers requests for a loopback address only."
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.casefold() == "bearer" and hmac.compare_digest(given.strip().encode(), self.server.token.encode()):
            return None
        try:
            cookie = SimpleCookie(self.headers.get("Cookie") or "").get(SESSION_COOKIE)
        except CookieError:
            cookie = None
        if cookie is not None and hmac.compare_digest(cookie.value.encode(), self.server.session.encode()):
            return None
        return "Log in with the dashboard token (dashboard.token in the config)."

    # --- requests -----------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/login":
            self.send_html(HTTPStatus.OK, login_html())
            return
        why = self.allowed()
        if why is not None:
            status = HTTPStatus.UNAUTHORIZED if self.server.token else HTTPStatus.FORBIDDEN
            self.refuse(status, why, path)
            return
        try:
            self.route(path, parse_qs(urlsplit(self.path).query))
        except UsageError as exc:
            self.refuse(HTTPStatus.BAD_REQUEST, str(exc), path)
        except StateError as exc:  # corrupt, or of a newer version: the next tick deals with it
            self.refuse(HTTPStatus.SERVICE_UNAVAILABLE, str(exc), path)
        except OrchestratorError as exc:  # no state file yet, an issue the state does not hold
            self.refuse(HTTPStatus.NOT_FOUND, str(exc), path)

    def route(self, path: str, query: Dict[str, List[str]]) -> None:
        data = self.server.data
        run = _RUN_PATH.match(path)
        if path == "/":
            self.send_html(HTTPStatus.OK, overview_html(data.overview(), data.costs()))
        elif path == "/api/overview":
            self.send_json(HTTPStatus.OK, data.overview())
        elif path == "/api/costs":
            self.send_json(HTTPStatus.OK, data.costs(query.get("since", [f"{CHART_DAYS}d"])[0]).to_dict())
        elif run:
            found = data.run(f"{run.group(2)}/{run.group(3)}", int(run.group(4)))
            if run.group(1):
                self.send_json(HTTPStatus.OK, found)
            else:
                self.send_html(HTTPStatus.OK, run_html(found))
        else:
            self.refuse(HTTPStatus.NOT_FOUND, f"Nothing at {path}.", path)

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/login" or self.server.token is None:
            self.refuse(HTTPStatus.METHOD_NOT_ALLOWED, "This dashboard is read-only.", self.path)
            return
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_FORM_BYTES:
            self.refuse(HTTPStatus.BAD_REQUEST, f"A login form is a number of bytes up to {MAX_FORM_BYTES}.",
                        self.path)
            return
        length = int(length)
        given = parse_qs(self.rfile.read(length).decode("utf-8", "replace")).get("token", [""])[0]
        if not hmac.compare_digest(given.encode(), self.server.token.encode()):
            self.send_html(HTTPStatus.UNAUTHORIZED, login_html("That is not the dashboard token."))
            return
        cookie = f"{SESSION_COOKIE}={self.server.session}; HttpOnly; SameSite=Strict; Path=/"
        self.send_html(HTTPStatus.SEE_OTHER, page("Logged in", '<a href="/">Go on</a>', refresh=False),
                       {"Location": "/", "Set-Cookie": cookie})


def serve(monitor: ClaudeMonitor, host: str = "127.0.0.1", port: int = 8765) -> int:
    """Serve until Ctrl-C. Off loopback without a configured token it refuses: exit 2, one line."""
    token = monitor.config.dashboard_token
    if token is None and not is_loopback(host):
        print(f"error: serving on {host} (not a loopback address) needs a token: set dashboard.token in the config"
              " or ORCHESTRATOR_DASHBOARD_TOKEN; or serve on 127.0.0.1.", file=sys.stderr)
        return UsageError.exit_code
    monitor.cpu_interval = 0  # a page must not wait for CPU samples
    try:
        server = DashboardServer((host, port), DashboardData(monitor), token)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}.", file=sys.stderr)
        return 1
    print(f"Dashboard on {server.url} ({'token required' if token else 'loopback only'}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0

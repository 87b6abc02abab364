"""The dashboard (`claude_monitor.py serve`) over real HTTP on 127.0.0.1, and in a real browser.

The installation is made in the test: a state file with a running run, a question, a queued issue
and a finished run, their transcripts and stream logs from the recorded CLI output, and a run
history. The server is the real one, on a free port; the browser is the distribution's Chromium.
"""

import http.client
import json
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

import psutil
import pytest

from lib.config import Config
from lib.dashboard import DashboardData, DashboardServer, is_loopback, session_value, show
from lib.ledger import RunHistory
from test_claude_monitor import QUESTION_SESSION, SUCCESS_SESSION, Setup

PROJECT = Path(__file__).resolve().parent.parent
HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
HOSTILE_QUESTION = "v1 or v2? <img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
HOSTILE_BASE = "main<b>"  # a base branch name comes from GitHub: text, never markup
REPO = "owner/my.project"
TOKEN = "dashboard-token-0123456789"
GITHUB_TOKEN = "ghp_test123456"
TELEGRAM_TOKEN = "123456:telegram-secret-token"


def ago(minutes: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(minutes=minutes)).replace(microsecond=0).isoformat()


def make_installation(root: Path, token=None) -> Setup:
    """#5 runs in slot 0 (its runner: this test's process), #7 asks a question in slot 1, #9 waits in
    the queue, #3 finished with a pull request; #5 and #3 have invocations in the history."""
    setup = Setup(root)
    settings = json.loads(setup.config_file.read_text())
    settings["telegram"] = {"bot_token": TELEGRAM_TOKEN, "chat_id": 42}
    if token:
        settings["dashboard"] = {"token": token}
    setup.config_file.write_text(json.dumps(settings))
    setup.config = Config(setup.config_file, env={})
    me = psutil.Process()
    slot0, slot1 = setup.slot(0), setup.slot(1)
    setup.transcript(setup.fixture("session-history.jsonl", slot1).replace(
        "should the fix for issue #7 go into the v1 API or the v2 API?", HOSTILE_QUESTION), QUESTION_SESSION, slot1)
    setup.stream_log(3, setup.fixture("stream-success.jsonl", slot0))
    setup.put(5, "running", title=HOSTILE_TITLE, slot=0, repo=REPO, start_time=ago(30),
              runner_pid=me.pid, runner_create_time=me.create_time(), last_activity=ago(1))
    setup.put(7, "needs_input", title="Which API?", slot=1, repo=REPO, session_id=QUESTION_SESSION,
              question=HOSTILE_QUESTION, start_time=ago(60), end_time=ago(50))
    setup.put(9, "waiting", title="Limited", repo=REPO, start_time=ago(20), not_before=ago(-60),
              error=f"usage limit reached (token {GITHUB_TOKEN} must never show)")
    setup.put(3, "completed", title="Done one", slot=0, repo=REPO, session_id=SUCCESS_SESSION,
              start_time=ago(200), end_time=ago(188), cost_usd=0.015, num_turns=3,
              pr_url="https://github.com/owner/my.project/pull/12", pr_number=12, following=True,
              upkeep={"base": HOSTILE_BASE, "base_sha": "b" * 40, "mergeable": False, "mergeable_state": "dirty",
                      "behind_by": 2, "conflict_base": "b" * 40, "conflict_rounds": 1})
    history = RunHistory.for_config(setup.config)
    for record in ({"type": "invocation", "issue": 3, "attempt": 1, "kind": "run", "cost_usd": 0.015, "num_turns": 3,
                    "duration_seconds": 700.0},
                   {"type": "outcome", "issue": 3, "attempt": 1, "status": "completed", "duration_seconds": 720.0},
                   {"type": "invocation", "issue": 5, "attempt": 1, "kind": "run", "cost_usd": 0.02, "num_turns": 4,
                    "duration_seconds": 60.0}):
        history.append({"repo": REPO, **record})
    return setup


@pytest.fixture
def installation(tmp_path):
    return make_installation(tmp_path)


def start_server(setup: Setup, host="127.0.0.1", token=None):
    monitor = setup.monitor()
    monitor.cpu_interval = 0
    server = DashboardServer((host, 0), DashboardData(monitor), token)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server


@pytest.fixture
def server(installation):
    server = start_server(installation)
    yield server
    server.shutdown()
    server.server_close()


def request(server, path, method="GET", headers=None, body=None):
    """(status, headers, text) over a real connection to 127.0.0.1."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode("utf-8")
    finally:
        connection.close()


def get_json(server, path, headers=None):
    status, headers, text = request(server, path, headers=headers)
    assert status == 200 and headers["Content-Type"].startswith("application/json"), (status, text)
    return json.loads(text)


# ------------------------------------------------------------------------------------------------
# Pages and JSON
# ------------------------------------------------------------------------------------------------


def test_the_overview_json_holds_slots_queue_questions_and_recent_runs(server):
    overview = get_json(server, "/api/overview")

    assert set(overview) == {"generated", "slots", "queue", "questions", "recent", "followed"}
    running, asking = overview["slots"]
    assert (running["repo"], running["slot"]) == (REPO, 0) and running["cwd"].endswith("my.project_0")
    run = running["run"]
    assert (run["issue"], run["title"], run["status"]) == (5, HOSTILE_TITLE, "running")
    assert run["cost_usd"] == 0.02 and run["unknown_cost"] == 0 and run["page"] == f"/run/{REPO}/5"
    assert run["runtime_seconds"] > 0 and run["last_activity"]  # the age of its live runner, as the monitor says
    assert (asking["slot"], asking["run"]["issue"], asking["run"]["status"]) == (1, 7, "needs_input")
    assert [(q["issue"], q["title"]) for q in overview["queue"]] == [(9, "Limited")]
    [question] = overview["questions"]
    assert (question["issue"], question["question"]) == (7, HOSTILE_QUESTION)
    [done] = overview["recent"]
    assert (done["issue"], done["status"], done["pr_url"]) == (3, "completed", "https://github.com/owner/my.project/pull/12")
    assert done["cost_usd"] == 0.015 and done["duration_seconds"] == 720.0
    [followed] = overview["followed"]
    assert (followed["issue"], followed["pr_number"], followed["mergeable"], followed["behind_by"]) == (3, 12, False, 2)
    assert (followed["conflict_fixes_used"], followed["max_conflict_fixes"]) == (1, 2)
    assert followed["summary"] == (f"PR #12, conflicts with {HOSTILE_BASE}, behind {HOSTILE_BASE} by 2 commit(s),"
                                   " conflict fixes 1 of 2 for this base commit")


def test_the_overview_page_shows_it_all_escaped_with_two_charts(server):
    status, headers, text = request(server, "/")

    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src" not in headers["Content-Security-Policy"] and "default-src 'none'" in headers[
        "Content-Security-Policy"]  # no script may run at all
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    assert '<meta http-equiv="refresh" content="10">' in text
    assert show(HOSTILE_TITLE) in text and "<img" not in text and "<script" not in text
    assert f'<a href="/run/{REPO}/5">{REPO}#5</a>' in text and "$0.0200" in text
    assert "Which API?" in text and show(HOSTILE_QUESTION) in text  # the question waiting
    assert "Limited" in text  # the queue
    assert '<a href="https://github.com/owner/my.project/pull/12">' in text and "$0.0150" in text and "12m 0s" in text
    assert "<h2>Followed pull requests</h2>" in text and "<td>no: conflicts</td><td>2</td><td>1 of 2</td>" in text
    assert text.count("<svg") == 2 and "<title>Cost per day (USD)</title>" in text
    assert "<title>completed: 1 run(s)</title>" in text


def test_the_costs_json_is_the_cost_report_of_the_last_two_weeks(server):
    costs = get_json(server, "/api/costs")
    assert costs["by"] == "day" and costs["total"]["cost_usd"] == 0.035 and costs["total"]["invocations"] == 2
    assert costs["total"]["outcomes"] == {"completed": 1}
    assert [row["key"] for row in costs["rows"]] == [datetime.now(timezone.utc).strftime("%Y-%m-%d")]
    status, _, text = request(server, "/api/costs?since=soon")
    assert status == 400 and json.loads(text) == {
        "error": "--since 'soon': give a number of days (7d) or a date (2026-11-01)."}


def test_a_run_page_shows_its_conversation_as_history_does(server, installation):
    expected = installation.monitor().history(f"{REPO}#7", limit=200).to_dict()

    found = get_json(server, f"/api/run/{REPO}/7")
    status, _, text = request(server, f"/run/{REPO}/7")

    assert found["history"] == expected and found["title"] == "Which API?" and found["status"] == "needs_input"
    assert status == 200 and "Put it in the v2 API." in text and "tool Write:" in text
    assert "Done: fixed issue #7 in the v2 API as you asked" in text
    assert show(HOSTILE_QUESTION) in text and "<img" not in text and "<script" not in text
    assert '<meta http-equiv="refresh"' in text  # the question still waits: the run is not over


def test_unknown_things_are_404_and_writes_405(server):
    assert request(server, f"/run/{REPO}/99")[0] == 404
    status, _, text = request(server, f"/api/run/{REPO}/99")
    assert status == 404 and "is not in the state file" in json.loads(text)["error"]
    assert request(server, "/nowhere")[0] == 404
    assert request(server, "/", method="POST", body="x")[0] == 405


def test_a_corrupt_state_file_is_503_and_a_missing_one_404(server, installation):
    installation.config.state_file.write_text("{not json")
    status, _, text = request(server, "/api/overview")
    assert status == 503 and "is corrupt" in json.loads(text)["error"]
    installation.config.state_file.unlink()
    status, _, text = request(server, "/")
    assert status == 404 and "No state file at" in text


def test_a_request_for_another_host_name_is_refused_on_loopback(server):
    """A page elsewhere that rebinds its name to 127.0.0.1 sends its own name as Host."""
    status, _, text = request(server, "/api/overview", headers={"Host": "attacker.example:8765"})
    assert status == 403 and "loopback" in json.loads(text)["error"]
    assert request(server, "/", headers={"Host": "localhost:8765"})[0] == 200


def test_no_token_or_secret_is_on_any_page(tmp_path):
    setup = make_installation(tmp_path, token=TOKEN)
    server = start_server(setup, token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        bodies = [request(server, path, headers=auth)[2] for path in
                  ("/", "/api/overview", "/api/costs", f"/run/{REPO}/9", f"/api/run/{REPO}/9", f"/run/{REPO}/7",
                   "/login", "/nowhere")]
    finally:
        server.shutdown()
        server.server_close()
    assert "must never show" in bodies[1]  # the entry's error is there, its token redacted
    for body in bodies:
        for secret in (TOKEN, GITHUB_TOKEN, TELEGRAM_TOKEN, session_value(TOKEN)):
            assert secret not in body


# ------------------------------------------------------------------------------------------------
# Access
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path):
    """Bound to every address (0.0.0.0), with a token: reached here through 127.0.0.1."""
    server = start_server(make_installation(tmp_path, token=TOKEN), host="0.0.0.0", token=TOKEN)
    yield server
    server.shutdown()
    server.server_close()


def test_off_loopback_nothing_is_shown_without_the_token(guarded):
    status, _, text = request(guarded, "/")
    assert status == 401 and '<form method="post" action="/login">' in text and HOSTILE_TITLE not in text
    status, _, text = request(guarded, "/api/overview")
    assert status == 401 and json.loads(text) == {"error": "Log in with the dashboard token (dashboard.token in the config)."}
    assert request(guarded, "/api/overview", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert request(guarded, "/api/overview", headers={"Cookie": "dashboard_session=guess"})[0] == 401


def test_the_token_in_a_header_works(guarded):
    assert get_json(guarded, "/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})["slots"]


def test_the_token_in_the_url_does_not(guarded):
    assert request(guarded, "/?" + urlencode({"token": TOKEN}))[0] == 401
    assert request(guarded, "/api/overview?" + urlencode({"access_token": TOKEN}))[0] == 401


def test_the_login_form_sets_a_strict_http_only_cookie_that_works(guarded):
    wrong = request(guarded, "/login", method="POST", body="token=nope",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert wrong[0] == 401 and "That is not the dashboard token." in wrong[2] and "Set-Cookie" not in wrong[1]

    for length in ("lots", "99999"):
        assert request(guarded, "/login", method="POST", headers={"Content-Length": length})[0] == 400

    status, headers, _ = request(guarded, "/login", method="POST", body=urlencode({"token": TOKEN}),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})

    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    value = cookie.split(";")[0]
    status, _, text = request(guarded, "/", headers={"Cookie": value})
    assert status == 200 and show(HOSTILE_TITLE) in text


def test_serving_off_loopback_without_a_token_refuses_to_start(installation):
    done = subprocess.run([sys.executable, "claude_monitor.py", "serve", "--host", "0.0.0.0", "--port", "0",
                           "--config", str(installation.config_file)], cwd=PROJECT, env=installation.env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: serving on 0.0.0.0 (not a loopback address) needs a token: set dashboard.token in the config or"
        " ORCHESTRATOR_DASHBOARD_TOKEN; or serve on 127.0.0.1."]


def test_loopback_names():
    assert all(map(is_loopback, ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST")))
    assert not any(map(is_loopback, ("0.0.0.0", "192.168.1.4", "::", "example.com", "")))


# ------------------------------------------------------------------------------------------------
# A real browser
# ------------------------------------------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no chromium on this machine (.ci/run installs it: apt-get install chromium)")
    return found


def browse(browser: str, profile: Path, url: str, *extra: str) -> str:
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", *extra, url],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_a_browser_shows_the_dashboard_and_a_conversation_and_runs_no_script(installation, tmp_path):
    browser = chromium()
    serve = subprocess.Popen([sys.executable, "claude_monitor.py", "serve", "--port", "0",
                              "--config", str(installation.config_file)], cwd=PROJECT, env=installation.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = serve.stdout.readline()
        assert started.startswith("Dashboard on http://127.0.0.1:"), started + serve.stderr.read()
        url = started.split()[2]

        dom = browse(browser, tmp_path / "profile", url, "--dump-dom")
        browse(browser, tmp_path / "profile", url, f"--screenshot={tmp_path / 'dash.png'}", "--window-size=1280,900")
        run_dom = browse(browser, tmp_path / "profile", f"{url}run/{REPO}/7", "--dump-dom")
    finally:
        serve.terminate()
        serve.wait(timeout=30)

    # What a person sees: the running issue, a chart, the question, the finished run.
    assert f"{REPO}#5" in dom and ">running<" in dom and "Which API?" in dom and f"{REPO}#3" in dom
    assert dom.count("<svg") == 2 and "<rect" in dom
    # The hostile title is text: no <img> element came of it, and no script changed the title.
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom and "<img" not in dom
    assert "<title>Claude Code agents</title>" in dom and "<title>pwned" not in dom
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom  # the question's script, as text
    # The run's page: its conversation.
    assert "Put it in the v2 API." in run_dom and "Done: fixed issue #7 in the v2 API" in run_dom
    assert "<title>owner/my.project#7</title>" in run_dom and "<img" not in run_dom and "<script" not in run_dom
    screenshot = tmp_path / "dash.png"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")

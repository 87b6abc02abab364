"""Costs: the run history (lib/ledger.py), the `costs` report, and the spend ceiling.

The history is written as the runner writes it (through Run.record_invocation and
FileRunHistory.append) or, where a test needs lines of past days, as the documented JSON lines.
The ceiling is proved in real ticks against the GitHub emulator.
"""

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lib.config import Config
from lib.costs import CostReport, ceilings, parse_since, period_bounds
from lib.ledger import FileRunHistory, RunHistory
from lib.models import ConfigError, IssueState, IssueStatus, UsageError
from lib.outcomes import Outcome
from lib.run_context import Run
from lib.state_manager import StateManager

PROJECT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 30, 15, 0, tzinfo=timezone.utc)


def make_config(folder: Path, **extra) -> Path:
    settings = {"github": {"token": "ghp_test123456", "repo": "acme/api", "base_repo_path": str(folder / "slots")}}
    settings.update(extra)
    path = folder / "config.json"
    path.write_text(json.dumps(settings))
    path.chmod(0o600)
    return path


def write_history(path: Path, records) -> None:
    """Lines as the runner writes them, with the times the test needs."""
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def at(days_ago: float, hour: int = 12) -> str:
    moment = datetime.now(timezone.utc).replace(hour=hour, minute=0, second=0, microsecond=0)
    return (moment - timedelta(days=days_ago)).isoformat()


def invocation(when: str, repo="acme/api", issue=7, cost=0.01, turns=2, seconds=30.0, kind="run"):
    return {"at": when, "type": "invocation", "repo": repo, "issue": issue, "attempt": 1, "kind": kind,
            "session_id": f"s-{issue}", "session_cost_usd": cost, "cost_usd": cost, "num_turns": turns,
            "duration_seconds": seconds}


def outcome(when: str, status="completed", repo="acme/api", issue=7):
    return {"at": when, "type": "outcome", "repo": repo, "issue": issue, "attempt": 1, "status": status,
            "pr_url": f"https://github.com/{repo}/pull/{issue}", "duration_seconds": 60.0}


# ------------------------------------------------------------------------------------------------
# The history file
# ------------------------------------------------------------------------------------------------


def test_append_stamps_the_time_and_read_gives_the_lines_since_oldest_first(tmp_path):
    history = FileRunHistory(tmp_path / "run-history.jsonl")
    history.append({"type": "invocation", "at": "1999-01-01T00:00:00+00:00", "cost_usd": 0.5})
    history.append({"type": "outcome", "status": "completed"})

    records = history.read()
    assert [r["type"] for r in records] == ["invocation", "outcome"]
    assert records[0]["at"].startswith(str(datetime.now(timezone.utc).year))  # not what the record said
    assert history.read(datetime.now(timezone.utc) + timedelta(minutes=1)) == []
    assert oct((tmp_path / "run-history.jsonl").stat().st_mode & 0o777) == "0o600"


def test_read_skips_a_line_cut_short(tmp_path):
    path = tmp_path / "run-history.jsonl"
    write_history(path, [invocation(at(1))])
    with open(path, "a") as handle:
        handle.write('{"at": "2026-11-30T10:00:00+00:00", "type": "invoc\n')
    assert [r["type"] for r in FileRunHistory(path).read()] == ["invocation"]


def test_a_full_file_is_rotated_once_and_both_are_read(tmp_path):
    history = FileRunHistory(tmp_path / "run-history.jsonl", max_bytes=1000)
    for number in range(30):  # about 60 bytes a line: rotated a few times
        history.append({"type": "outcome", "issue": number})

    assert (tmp_path / "run-history.jsonl").stat().st_size <= 1000
    assert (tmp_path / "run-history.jsonl.1").stat().st_size <= 1000
    assert not list(tmp_path.glob("run-history.jsonl.2"))
    issues = [r["issue"] for r in history.read()]
    assert issues == sorted(issues) and issues[-1] == 29 and len(issues) >= 1000 // 70


def test_many_writers_at_once_lose_no_line(tmp_path):
    path = tmp_path / "run-history.jsonl"
    script = ("import sys; from lib.ledger import FileRunHistory\n"
              "h = FileRunHistory(sys.argv[1], max_bytes=40000)\n"
              "for i in range(150): h.append({'type': 'outcome', 'writer': sys.argv[2], 'n': i})\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(path), str(w)], cwd=PROJECT) for w in range(4)]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0, 0]

    records = FileRunHistory(path, max_bytes=40000).read()
    assert len(records) == 600  # every line whole, none lost (the rotation happened under the lock too)
    for writer in "0123":
        assert [r["n"] for r in records if r["writer"] == writer] == list(range(150))


def test_a_busy_month_fits():
    """200 runs a day, 4 invocations and an outcome each, 30 days: within the one file kept whole."""
    line = json.dumps(invocation(at(0), repo="some-org/some-repository", issue=12345, cost=1.234567)
                      | {"session_id": "d4e36535-7fb3-4ea9-a3c8-4018f155a1be"}) + "\n"
    from lib.ledger import MAX_BYTES

    assert 200 * 5 * 30 * len(line) < MAX_BYTES


# ------------------------------------------------------------------------------------------------
# What the runner records: an invocation's own cost out of the session's running total
# ------------------------------------------------------------------------------------------------


def test_each_invocation_records_what_it_added_to_its_sessions_running_total(tmp_path):
    config = Config(make_config(tmp_path), env={})
    StateManager.for_config(config).put(IssueState(issue_number=7, status=IssueStatus.RUNNING, branch="issue-7",
                                                   start_time=NOW.isoformat(), session_id="s1", repo="acme/api"))
    runner = Run(config, 7)

    def ended(kind, total, turns=3, seconds=10.0):
        runner.record_invocation(kind, Outcome(status=IssueStatus.COMPLETED, cost_usd=total, num_turns=turns,
                                               duration_seconds=seconds))

    ended("run", 0.02)
    ended("fix-1", 0.05)  # the CLI says 0.05 for the session: this invocation cost 0.03
    ended("resume", None)  # no figure: unknown, and the next one is reckoned from the last known total
    runner.update(invocations=[])  # a follow-up starts its invocations afresh, and resumes the session
    ended("follow", 0.09)
    runner.update(session_id="s2")  # a fresh session (the old one was gone) counts from zero
    ended("run", 0.01)

    records = RunHistory.for_config(config).read()
    assert [(r["kind"], r["session_cost_usd"], r["cost_usd"]) for r in records] == [
        ("run", 0.02, 0.02), ("fix-1", 0.05, 0.03), ("resume", None, None), ("follow", 0.09, 0.04),
        ("run", 0.01, 0.01)]
    assert {(r["repo"], r["issue"], r["attempt"], r["num_turns"]) for r in records} == {("acme/api", 7, 1, 3)}
    assert runner.entry.session_spent == {"session_id": "s2", "cost_usd": 0.01}


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def installation(tmp_path):
    """acme/api and acme/web, a state file, and a history of known figures."""
    config = make_config(tmp_path, github={"token": "ghp_test123456", "base_repo_path": str(tmp_path / "slots")},
                         repositories=[{"repo": "acme/api"}, {"repo": "acme/web"}])
    (tmp_path / "processing-state.json").write_text('{"_schema": 1}')
    write_history(tmp_path / "run-history.jsonl", [
        invocation(at(20), cost=5.0),  # before --since 7d
        invocation(at(2), issue=7, cost=0.25, turns=10, seconds=600),
        invocation(at(2, 13), issue=7, cost=0.15, turns=4, seconds=120, kind="fix-1"),
        outcome(at(2, 13), issue=7),
        invocation(at(1), issue=8, cost=None, turns=3, seconds=60),  # the CLI gave no cost
        outcome(at(1), "failed", issue=8),
        invocation(at(0, 0), repo="acme/web", issue=3, cost=0.1, turns=1, seconds=5),
        outcome(at(0, 0), "completed", repo="acme/web", issue=3),
    ])
    return config


def costs(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT / "claude_monitor.py"), "costs", "--config", str(config),
                           *args], capture_output=True, text=True, timeout=30, cwd=PROJECT)


def test_costs_by_day_as_json(installation):
    done = costs(installation, "--format", "json")

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"since", "until", "by", "repo", "rows", "total"} and report["by"] == "day"
    assert [row["key"] for row in report["rows"]] == [at(2)[:10], at(1)[:10], at(0)[:10]]
    first = report["rows"][0]
    assert first == {"key": at(2)[:10], "cost_usd": 0.4, "invocations": 2, "unknown_cost": 0, "num_turns": 14,
                     "duration_seconds": 720.0, "outcomes": {"completed": 1}}
    assert report["total"] == {"cost_usd": 0.5, "invocations": 4, "unknown_cost": 1, "num_turns": 18,
                               "duration_seconds": 785.0, "outcomes": {"completed": 2, "failed": 1}}


def test_costs_by_issue_and_by_repo_as_text(installation):
    by_issue = costs(installation, "--by", "issue")
    by_repo = costs(installation, "--by", "repo")

    assert by_issue.returncode == 0 and by_repo.returncode == 0, by_issue.stderr + by_repo.stderr
    rows = by_issue.stdout.splitlines()
    assert rows[0].startswith("Costs since ") and rows[0].endswith("by issue (every repository)")
    keys = [line.split()[0] for line in rows[4:7]]
    assert keys == ["acme/api#7", "acme/web#3", "acme/api#8"]  # the most expensive first
    assert "$0.40" in rows[4] and "completed 1" in rows[4]
    assert "$0.0000 +1?" in rows[6] and "failed 1" in rows[6]  # its cost is unknown, not zero
    assert rows[-2].split()[:2] == ["total", "$0.50"]
    assert rows[-1] == "unknown cost: 1 invocation(s), not in the cost above"
    assert [line.split()[0] for line in by_repo.stdout.splitlines()[4:6]] == ["acme/api", "acme/web"]


def test_costs_since_and_repo(installation):
    everything = json.loads(costs(installation, "--since", at(30)[:10], "--format", "json").stdout)
    web = json.loads(costs(installation, "--repo", "ACME/web", "--by", "repo", "--format", "json").stdout)
    today = json.loads(costs(installation, "--since", "1d", "--format", "json").stdout)

    assert everything["total"]["cost_usd"] == 5.5 and everything["since"] == at(30)[:10] + "T00:00:00+00:00"
    assert web["repo"] == "acme/web" and [row["key"] for row in web["rows"]] == ["acme/web"]
    assert web["total"]["cost_usd"] == 0.1
    assert today["total"]["invocations"] == 1 and today["rows"][0]["key"] == at(0)[:10]


def test_costs_of_an_install_without_history_say_so(tmp_path):
    done = costs(make_config(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "No invocation or run recorded in the run history since then."


@pytest.mark.parametrize("args, line", [
    (["--since", "last week"], "error: --since 'last week': give a number of days (7d) or a date (2026-11-01)."),
    (["--repo", "acme/zzz"], "error: acme/zzz is not a repository of this config"),
])
def test_costs_bad_arguments_are_one_line(installation, args, line):
    done = costs(installation, *args)
    assert done.returncode in (1, 2) and done.stderr.startswith(line) and len(done.stderr.splitlines()) == 1


def test_since_forms():
    assert parse_since("7d", NOW) == datetime(2026, 11, 24, tzinfo=timezone.utc)
    assert parse_since("1d", NOW) == datetime(2026, 11, 30, tzinfo=timezone.utc)
    assert parse_since("2026-11-01", NOW) == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_since("2026-11-01T08:00:00+02:00", NOW) == datetime(2026, 11, 1, 6, tzinfo=timezone.utc)
    with pytest.raises(UsageError):
        CostReport.build([], since=NOW, until=NOW, by="week")


# ------------------------------------------------------------------------------------------------
# The spend ceiling
# ------------------------------------------------------------------------------------------------


def test_period_bounds_turn_at_utc_midnight_and_the_first_of_the_month():
    assert period_bounds("day", NOW) == (datetime(2026, 11, 30, tzinfo=timezone.utc),
                                         datetime(2026, 12, 1, tzinfo=timezone.utc))
    december = datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc)
    assert period_bounds("month", december) == (datetime(2026, 12, 1, tzinfo=timezone.utc),
                                                 datetime(2027, 1, 1, tzinfo=timezone.utc))


def test_ceilings_count_their_scope_and_period_only(tmp_path):
    config = Config(make_config(tmp_path, limits={"daily_usd": 1, "monthly_usd": 3},
                                github={"token": "ghp_test123456", "base_repo_path": str(tmp_path / "slots")},
                                repositories=[{"repo": "acme/api", "limits": {"daily_usd": 0.5}}, {"repo": "acme/web"}]),
                    env={})

    reads = []

    class Recorded(RunHistory):  # the records as they were; the interface's other side is the file's
        def append(self, record):
            raise AssertionError("a ceiling writes nothing")

        def drop_before(self, cutoff, *, dry_run=False):
            raise AssertionError("a ceiling drops nothing")

        def read(self, since=None):
            reads.append(since)
            return [r for r in records if since is None or datetime.fromisoformat(r["at"]) >= since]

    records = [invocation("2026-11-02T10:00:00+00:00", cost=2.0),  # this month, not today
               invocation("2026-11-30T09:00:00+00:00", cost=0.6),
               invocation("2026-11-30T10:00:00+00:00", repo="acme/web", cost=0.3),
               invocation("2026-11-30T11:00:00+00:00", cost=None)]

    found = {(c.repo, c.period): c for c in ceilings(config, Recorded(), now=NOW)}
    assert {key: (round(c.spent_usd, 6), c.reached) for key, c in found.items()} == {
        (None, "day"): (0.9, False), (None, "month"): (2.9, False), ("acme/api", "day"): (0.6, True)}
    assert found[("acme/api", "day")].sentence() == (
        "the limits of acme/api.daily_usd ($0.50) is reached: $0.60 spent today (UTC); no new run of acme/api"
        " starts until 2026-12-01 00:00 UTC")
    tomorrow = {(c.repo, c.period): c.spent_usd for c in ceilings(config, Recorded(), now=NOW + timedelta(days=1))}
    assert tomorrow == {(None, "day"): 0, (None, "month"): 0, ("acme/api", "day"): 0}  # December: all turned
    assert reads == [datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc)]
    (tmp_path / "unlimited").mkdir()
    assert ceilings(Config(make_config(tmp_path / "unlimited"), env={}), Recorded(), now=NOW) == []
    assert len(reads) == 2  # without a limit the history is not read


@pytest.mark.parametrize("settings, line", [
    ({"limits": {"daily_usd": -5}}, "limits.daily_usd: must be a number > 0, got -5"),
    ({"limits": {"monthly_usd": "100"}}, "limits.monthly_usd: must be a number > 0, got '100'"),
    ({"limits": [1]}, "limits: must be an object, got a list"),
    ({"repositories": [{"repo": "acme/api", "limits": {"daily_usd": 0}}]},
     "repositories[0].limits.daily_usd: must be a number > 0, got 0"),
    ({"repositories": [{"repo": "acme/api", "limits": 5}]}, "repositories[0].limits: must be an object, got 5"),
])
def test_a_bad_limit_is_one_line_naming_its_path(tmp_path, settings, line):
    data = {"github": {"token": "ghp_test123456", "base_repo_path": str(tmp_path)}, **settings}
    if "repositories" not in settings:
        data["github"]["repo"] = "acme/api"
    with pytest.raises(ConfigError) as caught:
        Config.from_dict(data, tmp_path)
    assert caught.value.errors == [line]


def test_the_ceiling_holds_new_launches_until_the_day_turns(world, telegram_api):
    world.chat(telegram=telegram_api)
    world.write_config(limits={"daily_usd": 0.001})  # the stand-in's first run costs more than that
    first = world.add_issue("First")
    assert world.tick().returncode == 0
    history = world.state_file.parent / "run-history.jsonl"
    assert world.entry(first)["status"] == "completed"
    [spent, done] = [json.loads(line) for line in history.read_text().splitlines()]
    assert spent["type"] == "invocation" and spent["cost_usd"] == spent["session_cost_usd"] > 0.001
    assert done["type"] == "outcome" and done["status"] == "completed" and done["pr_url"] == world.entry(first)["pr_url"]
    second = world.add_issue("Second")
    notes_before = len(telegram_api.messages)

    held = [world.tick(), world.tick()]

    for tick in held:
        assert tick.returncode == 0 and "0 launched" in tick.stdout and "1 queued" in tick.stdout, tick.stdout
    assert world.entry(second) == {} and "ready-for-claude" in world.labels(second)
    assert "limits.daily_usd ($0.0010) is reached" in world.log_text()
    [note] = [m for m in telegram_api.messages[notes_before:] if m["text"].startswith("💰")]
    assert "Spend limit reached" in note["text"] and "limits.daily_usd" in note["text"]

    # The day turns: yesterday's spend is the history's, moved back a day (the clock itself is the machine's).
    yesterday = [dict(json.loads(line), at=(datetime.fromisoformat(json.loads(line)["at"]) - timedelta(days=1))
                      .isoformat()) for line in history.read_text().splitlines()]
    write_history(history, yesterday)
    again = world.tick()

    assert "1 launched" in again.stdout, again.stdout
    assert world.entry(second)["status"] == "completed"
    assert [m for m in telegram_api.messages[notes_before:] if m["text"].startswith("💰")] == [note]


def test_a_repositorys_ceiling_holds_its_follow_ups_too_and_a_resumed_session_is_not_counted_twice(world):
    from github_emulator import REPO
    from world import MAINTAINER

    number = world.add_issue("Add a greeting")
    assert world.tick().returncode == 0
    pull = world.entry(number)["pr_number"]
    world.settings["github"].pop("repo")
    world.write_config(repositories=[{"repo": REPO, "limits": {"daily_usd": 0.001}}])
    world.github.add_review(pull, MAINTAINER, "CHANGES_REQUESTED", "Say hello, please.")

    held = world.tick()

    assert "followed up" not in held.stdout and "1 queued" in held.stdout, held.stdout
    assert len(world.standin.invocations()) == 1
    assert f"the limits of {REPO}.daily_usd ($0.0010) is reached" in world.log_text()

    history = world.state_file.parent / "run-history.jsonl"
    write_history(history, [dict(record, at=(datetime.fromisoformat(record["at"]) - timedelta(days=1)).isoformat())
                            for record in map(json.loads, history.read_text().splitlines())])
    again = world.tick()

    assert "1 followed up" in again.stdout, again.stdout
    first, follow = [r for r in map(json.loads, history.read_text().splitlines()) if r["type"] == "invocation"]
    assert (first["kind"], follow["kind"]) == ("run", "follow") and follow["session_id"] == first["session_id"]
    # The CLI's figure is the session's running total; the follow-up's own cost is what it added.
    assert follow["session_cost_usd"] > first["session_cost_usd"]
    assert follow["cost_usd"] == round(follow["session_cost_usd"] - first["session_cost_usd"], 6)
